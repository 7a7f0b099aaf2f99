"""The comparison run: federated against local-only, pooled and a GBT reference.

After a simulated federation, this trains, with the same model and budget
(``rounds x local-epochs`` epochs): each institution's **local-only** model,
the **pooled** model (all training data in one place: the upper bound, which
exists only in simulation) and a pooled scikit-learn
``HistGradientBoostingClassifier`` ("what a central team would use"). All of
them and the **federated** model from the run are evaluated the same way: the
threshold chosen on the synthetic validation set, then held fixed for the
combined test set (A+B+...) and each institution's. ``report.md``, its
plots and ``report.html`` (the same, self-contained) go into ``<run-dir>/report/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from audit.record import RecordKind
from core.errors import InputError
from core.layout import DataLayout, RunLayout, ServerLayout
from fraud.compare import ComparisonResult, ThresholdRule, add_model, run_comparison
from fraud.features import FEATURE_COLUMNS, load_arrays
from fraud.model import build_model
from fraud.report import write_report
from fraud.synth import PrivacyCheck, SyntheticReport

XY = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]


def _split(path: Path) -> XY:
    return load_arrays(path, "data file")


def _synthetic_reports(validation_dir: Path) -> dict[str, SyntheticReport]:
    reports: dict[str, SyntheticReport] = {}
    for path in sorted(validation_dir.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))["report"]
        data["privacy"] = PrivacyCheck(**data["privacy"])
        reports[path.stem] = SyntheticReport(**data)
    return reports


def _validation(server_dir: Path) -> XY:
    # The server's own validation set: the union of the synthetic releases.
    from server.validation import ValidationSet, load_validation

    validation = load_validation(server_dir)
    if not isinstance(validation, ValidationSet):
        raise InputError(
            f"no synthetic validation releases in {server_dir / 'validation'}: the "
            "comparison chooses every model's threshold on them"
        )
    return validation.features, validation.labels


def _add_gbdt(
    result: ComparisonResult, run_dir: Path, config: dict[str, Any], train: dict[str, XY], model: Path | None
) -> ComparisonResult:
    """A gbdt run: the federated ensemble, and the same algorithm on the pooled rows.

    The pooled reference uses the run's hyper-parameters and tree count on the
    concatenated training splits (the bins from the same grid counts), so the
    two differ only by the secure sum's fixed-point rounding.
    """
    from fraud.gbdt import Ensemble, train_pooled

    path = model or RunLayout(run_dir).gbdt_model
    if not path.is_file():
        raise InputError(f"{path}: the run saved no boosted-tree model (no round grew a tree)")
    federated = Ensemble.from_json(path.read_bytes())
    result = add_model(result, "federated gbdt (secagg+)", federated.predict)
    pooled = train_pooled(list(train.values()), len(federated.trees), federated.params, federated.features)
    return add_model(result, "pooled gbdt (same algorithm)", pooled.predict)


def write_comparison(run_dir: Path, model: Path | None = None) -> Path:
    """Run the comparison for a finished simulated run; return ``report.md``'s path.

    ``model``: the federated model's weights (default: the run's ``model.npz``;
    in ``ckks`` mode an institution's decrypted copy, arrays in layer order).
    """
    result, rounds, reports = build_comparison(run_dir, model)
    return write_report(run_dir / "report", result, rounds, reports, provenance(run_dir))


def provenance(run_dir: Path) -> dict[str, str]:
    """The run, its federated model's hash and its audit log, from the run's model card (empty without one)."""
    path = RunLayout(run_dir).model_card_json
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the model card ({exc})") from exc
    def section(parent: Any, key: str) -> dict[str, Any]:
        value = parent.get(key) if isinstance(parent, dict) else None
        return value if isinstance(value, dict) else {}

    run, model, audit = section(card, "run"), section(card, "model"), section(card, "audit")
    log_id = section(audit, "log_id")
    fields = {
        "run": run.get("name") or log_id.get("run_id"),
        "federation": run.get("federation_id") or log_id.get("federation_id"),
        "model_file": model.get("file"),
        "model_hash": model.get("hash"),
        "audit_log": audit.get("log"),
        "audit_records": audit.get("records"),
        "audit_root": audit.get("merkle_root"),
        "witnessed_by": ", ".join(audit.get("final_checkpoint_witnessed_by") or []) or None,
    }
    out = {k: str(v) for k, v in fields.items() if v not in (None, "")}
    if out.get("model_hash") and out.get("audit_log"):
        out["model_hash_in_log"] = _closing_hash(Path(out["audit_log"]))
    return out


def _closing_hash(log: Path) -> str:
    """The ``final_model_hash`` of the log's ``run_closed`` record ("" when the log has none or cannot be read)."""
    try:
        with log.open(encoding="utf-8") as fh:
            for line in fh:
                if f'"{RecordKind.RUN_CLOSED.value}"' not in line:
                    continue
                record = json.loads(line).get("record", {})
                if record.get("kind") == RecordKind.RUN_CLOSED.value:
                    return str(record.get("body", {}).get("final_model_hash") or "")
    except (OSError, ValueError, AttributeError):
        return ""
    return ""


def build_comparison(
    run_dir: Path, model: Path | None = None
) -> tuple[ComparisonResult, list[dict[str, Any]], dict[str, SyntheticReport]]:
    """Train and evaluate every model for a finished run (see the module docstring)."""
    config = json.loads(RunLayout(run_dir).config.read_text(encoding="utf-8"))["run_config"]
    names = [n.strip() for n in str(config["institutions"]).split(",") if n.strip()]
    data_root = Path(config["data-dir"])
    validation_dir = ServerLayout(Path(config["server-dir"])).validation_dir
    byo = str(config.get("data-format", "builtin")) == "byo"
    if byo:
        # Bring-your-own data: every model sees the rows encoded with the
        # federation's agreed scaling (kept in the run's scoring file).
        from fraud.scoring import load_scoring
        from fraud.byo_encode import encode
        from fraud.byo_read import load_institution_csv

        scoring = load_scoring(run_dir)

        def split_of(path: Path) -> XY:
            return encode(load_institution_csv(path, scoring.schema), scoring.schema, scoring.spec)

        n_features = int(scoring.spec.n_features)
    else:
        split_of, n_features = _split, len(FEATURE_COLUMNS)
    train = {n: split_of(DataLayout(data_root / n).train) for n in names}
    test = {n: split_of(DataLayout(data_root / n).test) for n in names}
    if byo and not any(validation_dir.glob("*.csv")):
        # No synthetic releases: every model's threshold is chosen on the
        # institutions' pooled training rows, the data the federation's own
        # threshold came from (its securely summed training counts).
        validation: XY = (
            np.concatenate([xy[0] for xy in train.values()]),
            np.concatenate([xy[1] for xy in train.values()]),
        )
        validation_source = (
            "no synthetic releases: the institutions' pooled training rows, the data the "
            "federation's threshold came from; models that overfit their training rows look "
            "better there than on test"
        )
    elif byo:
        from fraud.datasets import spec_to_text
        from server.validation import ByoValidation, load_validation

        releases = load_validation(Path(config["server-dir"]), scoring.schema)
        if not isinstance(releases, ByoValidation):
            raise InputError(f"{validation_dir}: the releases could not be read as bring-your-own data")
        encoded = releases.encoded(spec_to_text(scoring.spec))
        validation = (encoded.features, encoded.labels)
        validation_source = "the institutions' synthetic releases, encoded with the agreed scaling"
    else:
        validation = _validation(Path(config["server-dir"]))
        validation_source = ""
    recall_target = float(config.get("recall-target", 0.0)) or None
    rule = ThresholdRule(
        fn_cost=float(config["fn-cost"]), fp_cost=float(config["fp-cost"]), recall_target=recall_target
    )
    result = run_comparison(
        train,
        test,
        validation,
        rounds=int(config["num-server-rounds"]),
        local_epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        lr=float(config["lr"]),
        seed=int(config["seed"]),
        rule=rule,
    )
    if byo and validation_source:
        from dataclasses import replace

        result = replace(result, settings={**result.settings, "validation": validation_source})
    mode = str(config.get("aggregation", "secagg+"))
    if str(config.get("model", "mlp")) == "gbdt":
        result = _add_gbdt(result, run_dir, config, train, model)
    else:
        layer_names = list(build_model(n_features, seed=0).state_dict().keys())
        with np.load(model or RunLayout(run_dir).weights) as archive:
            keys = layer_names if model is None else [f"arr_{i}" for i in range(len(layer_names))]
            weights = [np.asarray(archive[name]) for name in keys]
        result = add_model(result, f"federated ({mode})", weights)
    from server.rundir import read_rounds

    return result, read_rounds(run_dir), _synthetic_reports(validation_dir)
