"""Typed run settings, converted once from Flower's hyphenated run config.

Both entry points (the ServerApp and the ClientApp) call
:meth:`RunSettings.from_run_config`; nothing else reads raw run-config keys.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from fraud.datasets import DataFormat
from core.errors import ConfigError
from core.layout import UNSAFE_OPT_IN
from secagg.params import SecAggSettings


class ModelKind(str, Enum):
    """What a run trains."""

    MLP = "mlp"
    GBDT = "gbdt"


class Aggregation(str, Enum):
    """How model updates are protected on their way to the server."""

    SECAGG_PLUS = "secagg+"
    #: SecAgg+ masks, and every masked update encrypted with TenSEAL CKKS under
    #: a key only the institutions hold: the server sums ciphertexts and never
    #: sees an update, the aggregate or the model (:mod:`secagg.ckks`).
    CKKS = "ckks"
    #: No protection at all: the server sees every institution's update.
    #: For baselines and benchmarks only; every use warns, and an institution
    #: policy that requires protection refuses it.
    UNSAFE_PLAIN = "unsafe-plain"




def write_unsafe_opt_in(
    folder: Path, federation_id: str, expires: dt.datetime, run_name: str | None = None
) -> Path:
    """Write a party's bounded consent to an ``unsafe-plain`` run into ``folder``.

    The consent names the federation (and optionally one run name) and an
    expiry; it is worth nothing for any other federation, run or time.
    """
    if expires.tzinfo is None:
        raise ConfigError("the opt-in expiry must carry a time zone")
    import tomli_w

    consent: dict[str, Any] = {
        "federation": federation_id,
        "expires": expires.astimezone(dt.timezone.utc).replace(microsecond=0),
    }
    if run_name is not None:
        consent["run"] = run_name
    path = folder / UNSAFE_OPT_IN
    header = "# Consent to an UNPROTECTED benchmark run: the server sees every update.\n"
    path.write_text(header + tomli_w.dumps(consent), encoding="utf-8")
    return path


def check_unsafe_opt_in(path: Path, settings: RunSettings, now: dt.datetime) -> list[str]:
    """Every reason the opt-in at ``path`` does not cover this run ([] if it does)."""
    rule = "run.aggregation: 'unsafe-plain'"
    if not path.is_file():
        return [f"{rule} without this party's opt-in file {UNSAFE_OPT_IN}"]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return [f"{rule}: opt-in file {path} cannot be read ({exc})"]
    problems: list[str] = []
    unknown = set(data) - {"federation", "run", "expires"}
    if unknown:
        problems.append(f"{rule}: opt-in file {path} has unknown keys {sorted(unknown)}")
    if data.get("federation") != settings.federation_id:
        problems.append(
            f"{rule}: opt-in file {path} names federation {data.get('federation')!r}, "
            f"not {settings.federation_id!r}"
        )
    if "run" in data and data["run"] != settings.run_name:
        problems.append(f"{rule}: opt-in file {path} names run {data['run']!r}, not this run")
    expires = data.get("expires")
    if not isinstance(expires, dt.datetime) or expires.tzinfo is None:
        problems.append(f"{rule}: opt-in file {path} needs an offset date-time 'expires'")
    elif expires <= now:
        problems.append(f"{rule}: opt-in file {path} expired at {expires.isoformat()}")
    return problems


@dataclass(frozen=True)
class RunSettings:
    """Everything a run is configured with (see ``[tool.flwr.app.config]``)."""

    num_rounds: int
    institutions: tuple[str, ...]
    purpose: str
    federation_id: str
    data_dir: Path
    sites_dir: Path
    server_dir: Path
    run_dir: Path
    run_name: str
    seed: int
    local_epochs: int
    batch_size: int
    lr: float
    #: FedProx coefficient of each institution's local training (0 = plain
    #: FedAvg); see :class:`fraud.train.TrainConfig`. Local only: the server
    #: still sees just the SecAgg+ sum.
    fedprox_mu: float
    min_cohort: int
    fn_cost: float
    fp_cost: float
    #: If > 0, the threshold is the highest with at least this recall on the
    #: validation set, instead of the cost-minimising one.
    recall_target: float
    aggregation: Aggregation
    data_format: DataFormat
    secagg: SecAggSettings
    #: Whether this run may start while another holds the server folder
    #: (default: refused; see :mod:`server.busy`).
    concurrent_runs: bool = False
    #: What is trained: the MLP by federated averaging, or boosted trees
    #: from securely summed histograms (:mod:`fraud.gbdt`).
    model: ModelKind = ModelKind.MLP
    #: ``model = "gbdt"``: trees per round and the ensemble's hyper-parameters
    #: (the ``gbdt-*`` keys, as :class:`fraud.gbdt.GbdtParams` fields).
    gbdt_trees_per_round: int = 10
    #: Stop boosting after this many trees without a better validation loss
    #: (0, the default: never; needs the synthetic releases, whose loss is a
    #: noisy guide: on the demo data patience 10 stopped after 15-46 trees,
    #: below the quality of 100, see bench/results/gbdt.md).
    gbdt_early_stopping: int = 0
    gbdt: tuple[tuple[str, float], ...] = ()
    #: A previous run's ``model.npz`` to start from instead of the seeded
    #: initial MLP (run config ``initial-model``; None: the seeded model).
    #: The way on after a run stopped: every accepted round rewrites the
    #: run directory's ``model.npz``.
    initial_model: Path | None = None

    def gbdt_params(self) -> Any:
        """The run's :class:`fraud.gbdt.GbdtParams` (checked when the settings were read)."""
        from fraud.gbdt import GbdtParams

        values = dict(self.gbdt)
        for key in ("max_depth", "min_child_rows", "max_bins"):
            if key in values:
                values[key] = int(values[key])
        return GbdtParams(**values)  # type: ignore[arg-type]

    @classmethod
    def from_run_config(cls, config: Mapping[str, object]) -> RunSettings:
        """Convert and validate the run config; raise ConfigError naming the key."""
        institutions = tuple(
            name.strip() for name in _str(config, "institutions").split(",") if name.strip()
        )
        if len(institutions) < 2 or len(set(institutions)) != len(institutions):
            raise ConfigError(
                "run config 'institutions' must list at least two distinct names, "
                f"found {config.get('institutions')!r}"
            )
        aggregation_text = _str(config, "aggregation")
        try:
            aggregation = Aggregation(aggregation_text)
        except ValueError:
            known = ", ".join(mode.value for mode in Aggregation)
            raise ConfigError(
                f"run config 'aggregation' must be one of {known}, found {aggregation_text!r}"
            ) from None
        settings = cls(
            num_rounds=_int(config, "num-server-rounds", minimum=1),
            institutions=institutions,
            purpose=_str(config, "purpose"),
            federation_id=_str(config, "federation-id"),
            data_dir=Path(_str(config, "data-dir")),
            sites_dir=Path(_str(config, "sites-dir")),
            server_dir=Path(_str(config, "server-dir")),
            run_dir=Path(_str(config, "run-dir")),
            run_name=_str(config, "run-name"),
            seed=_int(config, "seed", minimum=0),
            local_epochs=_int(config, "local-epochs", minimum=1),
            batch_size=_int(config, "batch-size", minimum=1),
            lr=_positive(config, "lr"),
            fedprox_mu=_prox_mu(config, "fedprox-mu"),
            min_cohort=_int(config, "min-cohort", minimum=2),
            fn_cost=_positive(config, "fn-cost"),
            fp_cost=_positive(config, "fp-cost"),
            recall_target=_fraction(config, "recall-target"),
            aggregation=aggregation,
            data_format=_data_format(config),
            secagg=secagg_settings(config, len(institutions)),
            concurrent_runs=_bool(config, "concurrent-runs"),
            model=_model(config),
            gbdt_trees_per_round=_int(config, "gbdt-trees-per-round", minimum=1)
            if "gbdt-trees-per-round" in config else 10,
            gbdt=_gbdt(config),
            gbdt_early_stopping=_int(config, "gbdt-early-stopping", minimum=0)
            if "gbdt-early-stopping" in config else 0,
            initial_model=Path(_str(config, "initial-model")) if config.get("initial-model") else None,
        )
        if settings.initial_model is not None:
            if settings.model is not ModelKind.MLP or aggregation is Aggregation.CKKS:
                raise ConfigError(
                    "run config 'initial-model' starts an MLP run from a previous run's model.npz; "
                    f"it cannot be used with model {settings.model.value!r} and aggregation {aggregation.value!r} "
                    "(in ckks mode only the institutions hold the model)"
                )
            if not settings.initial_model.is_absolute():
                raise ConfigError(
                    f"run config 'initial-model' must be an absolute path, found {str(settings.initial_model)!r}"
                )
        if settings.model is ModelKind.GBDT:
            from secagg.protocol import MAX_TREES_PER_ROUND

            settings.gbdt_params()  # raises ConfigError naming the key
            if settings.gbdt_trees_per_round > MAX_TREES_PER_ROUND:
                raise ConfigError(
                    f"run config 'gbdt-trees-per-round' must be at most {MAX_TREES_PER_ROUND}, "
                    f"found {settings.gbdt_trees_per_round}"
                )
            if aggregation is not Aggregation.SECAGG_PLUS:
                raise ConfigError(
                    f"run config 'model' = 'gbdt' needs aggregation 'secagg+' (the server chooses "
                    f"splits from the summed histograms), found {aggregation.value!r}"
                )
        if settings.min_cohort > len(institutions):
            raise ConfigError(
                f"run config 'min-cohort' is {settings.min_cohort} but only "
                f"{len(institutions)} institutions take part"
            )
        settings.secagg.validate_for(len(institutions), dropouts_tolerated=settings.min_cohort < len(institutions))
        return settings


def secagg_settings(config: Mapping[str, object], cohort_size: int | None = None) -> SecAggSettings:
    """The run's SecAgg+ settings from its run config (the seven keys of :class:`SecAggSettings`).

    Raises
    ------
    ConfigError
        Naming the key whose value has the wrong type, or every problem of the settings.
    """
    return SecAggSettings.resolve(
        num_shares=_int(config, "num-shares"),
        reconstruction_threshold=_int(config, "reconstruction-threshold"),
        clipping_range=_number(config, "clipping-range"),
        quantization_range=_int(config, "quantization-range"),
        modulus_range=_int(config, "modulus-range"),
        max_weight=_number(config, "max-weight"),
        timeout=_number(config, "timeout"),
        cohort_size=cohort_size,
    )


def _model(config: Mapping[str, object]) -> ModelKind:
    text = config.get("model", ModelKind.MLP.value)
    try:
        return ModelKind(text)
    except ValueError:
        known = ", ".join(m.value for m in ModelKind)
        raise ConfigError(f"run config 'model' must be one of {known}, found {text!r}") from None


#: Run-config keys of the boosted trees and their GbdtParams fields.
GBDT_KEYS = {
    "gbdt-max-depth": "max_depth",
    "gbdt-learning-rate": "learning_rate",
    "gbdt-l2": "l2",
    "gbdt-min-hessian": "min_hessian",
    "gbdt-min-child-rows": "min_child_rows",
    "gbdt-max-bins": "max_bins",
}


def _gbdt(config: Mapping[str, object]) -> tuple[tuple[str, float], ...]:
    values: list[tuple[str, float]] = []
    for key, name in GBDT_KEYS.items():
        if key not in config:
            continue
        value = config[key]
        whole = name in ("max_depth", "min_child_rows", "max_bins")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            kind = "an integer" if whole else "a number"
            raise ConfigError(f"run config {key!r} must be {kind}, found {value!r}")
        values.append((name, float(value)))
    return tuple(values)


def _data_format(config: Mapping[str, object]) -> DataFormat:
    text = _str(config, "data-format")
    try:
        return DataFormat(text)
    except ValueError:
        known = ", ".join(f.value for f in DataFormat)
        raise ConfigError(f"run config 'data-format' must be one of {known}, found {text!r}") from None


def _fraction(config: Mapping[str, object], key: str) -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"run config {key!r} must be a number in [0, 1], found {value!r}")
    return float(value)


def _prox_mu(config: Mapping[str, object], key: str) -> float:
    # The bound lives in a module without torch: every ClientApp process reads
    # the settings, and most stages never train.
    from fraud.constants import MAX_PROX_MU

    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_PROX_MU:
        raise ConfigError(f"run config {key!r} must be a number in [0, {MAX_PROX_MU:g}], found {value!r}")
    return float(value)


def _str(config: Mapping[str, object], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"run config {key!r} must be a string, found {value!r}")
    return value


def _bool(config: Mapping[str, object], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"run config {key!r} must be true or false, found {value!r}")
    return value


def _int(config: Mapping[str, object], key: str, minimum: int | None = None) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ConfigError(f"run config {key!r} must be an integer{bound}, found {value!r}")
    return value


def _number(config: Mapping[str, object], key: str) -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"run config {key!r} must be a number, found {value!r}")
    return float(value)


def _positive(config: Mapping[str, object], key: str) -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"run config {key!r} must be a number > 0, found {value!r}")
    return float(value)
