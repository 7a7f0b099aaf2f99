"""Benchmark: federated methods vs best local vs pooled on heterogeneous institutions (issue 13).

Two data sets, each over several seeds (default 3; medians reported):

(a) ``generator``: the built-in generator's ``heterogeneity="high"`` setting
    (:class:`fraud.generator.Heterogeneity`): three institutions with fraud
    rates 0.5 %, 5 % and 10 %, disjoint fraud typologies and shifted feature
    distributions; 20,000 rows each, split 70/15/15 (train / validation /
    test) per institution, as ``bench/bench_compare.py`` does.
(b) ``insurance``: ``../shared/data/insurance_claims/insurance_claims.csv``
    split into institutions by ``policy_state`` (:func:`fraud.byo_split.split_by_column`),
    read with the shipped schema ``fraud/schemas/insurance_claims.toml``,
    split 70/30 per institution (:func:`fraud.byo_read.train_test_split`) and
    encoded with the federation-wide scaling (:class:`fraud.byo_stats.NumericStats`
    summed, :meth:`fraud.byo_encode.FeatureSpec.from_stats`). The file is small
    (about 240 training rows per state), so it trains with mini-batches of 32;
    the threshold is chosen on the training rows (no rows to spare for a
    validation split; AUC-PR does not depend on the threshold).

Every model is scored on the **combined test set** of all institutions
(AUC-PR from the summed score histograms, :func:`fraud.compare.evaluate_model_scores`).
The baselines come from :func:`fraud.compare.run_comparison` with the same
MLP and budget (``rounds x local_epochs`` epochs): ``best-local`` is, per
seed, the best institution's own MLP on the combined test set; ``pooled`` is
one MLP on all training rows (the upper bound); ``pooled-hgb`` gradient
boosting on the pooled rows.

**The federation is simulated in-process, not run through Flower.** Each
round every institution loads the global weights, trains with
:func:`fraud.train.train_local` exactly as ``client/fraud_client.py`` does
(same :class:`~fraud.train.TrainConfig`, same per-round seed formula), and
the new global model is the average of the returned weights weighted by the
institutions' training-row counts, computed in float64. That is exactly what
fedfraud's SecAgg+ sum computes (weights ``n_i / max-weight`` with the auto
``max-weight`` = the federation's rows), up to its quantization error of at
most ``3 n c / Q`` per parameter (about 1.4e-6 here; ``secagg/params.py``),
which the benchmark ignores. Methods (``--methods``):

``fedavg``            plain FedAvg, each institution's own ``pos_weight`` (today's behaviour)
``fedprox-<mu>``      FedProx: local objective + ``mu/2 ||w - w_global||^2``
``fedavgm-<beta>``    server momentum (FedAvgM, Hsu et al. 2019) on the aggregate
                      only: ``v = beta v + (w_global - avg); w_global -= v``
``...+pw<k>``         every institution trains with the same ``pos_weight = k``
                      instead of its own ``n_neg / n_pos``
``...+ft``            each institution fine-tunes the last layer of the final global
                      model on its own training rows (``local_epochs`` epochs,
                      :func:`fraud.train.fine_tune_head`), then calibrates (``+cal``);
                      the personalised model stays at the institution
``...+cal``           each institution Platt-calibrates the final global model on
                      its own training rows (:func:`fraud.train.fit_platt_calibration`)
                      and scores its own validation and test rows with it; the
                      calibration never leaves the institution, and the
                      combined histograms are still a plain sum over institutions

Run::

    .venv/bin/python bench/bench_heterogeneous.py [--datasets generator insurance]
        [--seeds 1 2 3] [--methods fedavg fedprox-0.01 ...] [--json bench/results/heterogeneous.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fraud.byo_encode import FeatureSpec, encode  # noqa: E402
from fraud.byo_read import load_institution_csv, train_test_split  # noqa: E402
from fraud.byo_schema import builtin_schema  # noqa: E402
from fraud.byo_split import split_by_column  # noqa: E402
from fraud.byo_stats import local_numeric_stats  # noqa: E402
from fraud.compare import XY, LOCAL_PREFIX, POOLED, POOLED_HGB, add_model, evaluate_model_scores, run_comparison  # noqa: E402
from fraud.features import to_arrays  # noqa: E402
from fraud.generator import (  # noqa: E402
    DEFAULT_INSTITUTIONS,
    Heterogeneity,
    default_profiles,
    generate_institution,
    institution_seed,
    split_train_test,
)
from fraud.model import build_model, get_weights, set_weights  # noqa: E402
from fraud.train import TrainConfig, fine_tune_head, fit_platt_calibration, train_local  # noqa: E402

INSURANCE_CSV = ROOT.parent / "shared" / "data" / "insurance_claims" / "insurance_claims.csv"
DEFAULT_METHODS = (
    "fedavg",
    "fedprox-0.01",
    "fedprox-0.03",
    "fedprox-0.1",
    "fedprox-0.3",
    "fedprox-1",
    "fedavgm-0.5",
    "fedavg+cal",
    "fedprox-0.1+cal",
    "fedavg+ft",
    "fedprox-0.1+ft",
)
_METHOD_RE = re.compile(r"^(fedavg|fedprox-(?P<mu>[0-9.]+)|fedavgm-(?P<beta>[0-9.]+))(?P<pw>\+pw[0-9.]+)?(?P<ft>\+ft)?(?P<cal>\+cal)?$")


@dataclass(frozen=True)
class Method:
    """One federated training method, parsed from its name (see the module docstring)."""

    name: str
    prox_mu: float = 0.0
    server_momentum: float = 0.0
    pos_weight: float | None = None
    calibrate: bool = False
    fine_tune: bool = False

    @classmethod
    def parse(cls, name: str) -> Method:
        """Parse ``fedavg``, ``fedprox-<mu>``, ``fedavgm-<beta>``, optionally ``+pw<k>`` and ``+cal``."""
        match = _METHOD_RE.match(name)
        if not match:
            raise SystemExit(f"unknown method {name!r} (see --help)")
        return cls(
            name=name,
            prox_mu=float(match["mu"] or 0.0),
            server_momentum=float(match["beta"] or 0.0),
            pos_weight=float(match["pw"][3:]) if match["pw"] else None,
            calibrate=bool(match["cal"] or match["ft"]),
            fine_tune=bool(match["ft"]),
        )


@dataclass(frozen=True)
class Federation:
    """Per institution: training, validation and test arrays, plus training settings."""

    trains: dict[str, XY]
    validations: dict[str, XY]
    tests: dict[str, XY]
    batch_size: int
    lr: float


def generator_federation(seed: int, rows: int) -> Federation:
    """The generator's ``high`` heterogeneity setting, split 70/15/15 per institution."""
    trains: dict[str, XY] = {}
    vals: dict[str, XY] = {}
    tests: dict[str, XY] = {}
    for profile in default_profiles(DEFAULT_INSTITUTIONS, Heterogeneity.HIGH):
        inst_seed = institution_seed(seed, profile.name)
        frame = generate_institution(profile, rows, inst_seed)
        train, rest = split_train_test(frame, 0.3, inst_seed)
        val, test = split_train_test(rest, 0.5, inst_seed + 1)
        trains[profile.name], vals[profile.name], tests[profile.name] = to_arrays(train), to_arrays(val), to_arrays(test)
    return Federation(trains, vals, tests, batch_size=256, lr=3e-3)


def insurance_federation(seed: int, csv_path: Path) -> Federation:
    """The insurance claims file, one institution per ``policy_state``, 70/30 per institution."""
    schema = builtin_schema("insurance_claims")
    with tempfile.TemporaryDirectory() as tmp:
        files = split_by_column(csv_path, "policy_state", tmp)
        frames = {name: load_institution_csv(path, schema) for name, path in files.items()}
    splits = {name: train_test_split(frame, schema, 0.3, seed) for name, frame in frames.items()}
    # Federation-wide scaling from summed statistics, as the secure statistics round computes it.
    stats = [local_numeric_stats(train, schema) for train, _ in splits.values()]
    total = stats[0]
    for extra in stats[1:]:
        total = total + extra
    spec = FeatureSpec.from_stats(schema, total)
    trains = {name: encode(train, schema, spec) for name, (train, _) in splits.items()}
    tests = {name: encode(test, schema, spec) for name, (_, test) in splits.items()}
    return Federation(trains, dict(trains), tests, batch_size=32, lr=3e-3)


def simulate_federation(
    fed: Federation, method: Method, rounds: int, local_epochs: int, seed: int
) -> list[npt.NDArray[np.float32]]:
    """Run ``rounds`` rounds of in-process federated training; return the final global weights."""
    n_features = next(iter(fed.trains.values()))[0].shape[1]
    model = build_model(n_features, seed)
    global_w = [w.astype(np.float64) for w in get_weights(model)]
    velocity = [np.zeros_like(w) for w in global_w]
    for server_round in range(1, rounds + 1):
        sums = [np.zeros_like(w) for w in global_w]
        total = 0
        for index, (X, y) in enumerate(fed.trains.values()):
            set_weights(model, [w.astype(np.float32) for w in global_w])
            config = TrainConfig(
                local_epochs=local_epochs,
                batch_size=fed.batch_size,
                lr=fed.lr,
                # The client's round_seed formula (client/fraud_client.py).
                seed=seed * 1_000_003 + server_round * 1_009 + index,
                pos_weight=method.pos_weight,
                prox_mu=method.prox_mu,
            )
            result = train_local(model, X, y, config)
            for acc, w in zip(sums, get_weights(model), strict=True):
                acc += result.num_examples * w.astype(np.float64)
            total += result.num_examples
        average = [acc / total for acc in sums]
        if method.server_momentum > 0:
            # FedAvgM: needs nothing but the aggregate and the previous global model.
            velocity = [method.server_momentum * v + (g - a) for v, g, a in zip(velocity, global_w, average, strict=True)]
            global_w = [g - v for g, v in zip(global_w, velocity, strict=True)]
        else:
            global_w = average
    return [w.astype(np.float32) for w in global_w]


def _personalised_evaluation(
    name: str, fed: Federation, weights: Sequence[npt.ArrayLike], rule: Any, fine_tune_epochs: int, seed: int
) -> Any:
    """Each institution (optionally fine-tunes the head,) calibrates on its own training rows, scores its own rows."""
    n_features = next(iter(fed.trains.values()))[0].shape[1]
    model = build_model(n_features, 0)
    val_scores: list[npt.NDArray[np.float64]] = []
    val_labels: list[npt.NDArray[np.float32]] = []
    tests: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]] = {}
    for index, (inst, (X, y)) in enumerate(fed.trains.items()):
        set_weights(model, weights)
        if fine_tune_epochs > 0:
            config = TrainConfig(
                local_epochs=fine_tune_epochs, batch_size=fed.batch_size, lr=fed.lr, seed=seed * 1_000_003 + index
            )
            fine_tune_head(model, X, y, config)
        calibration = fit_platt_calibration(model, X, y)
        X_val, y_val = fed.validations[inst]
        val_scores.append(calibration.scores(model, X_val))
        val_labels.append(y_val)
        X_test, y_test = fed.tests[inst]
        tests[inst] = (calibration.scores(model, X_test), y_test)
    return evaluate_model_scores(name, np.concatenate(val_scores), np.concatenate(val_labels), tests, rule)


def run_seed(
    fed: Federation, methods: Sequence[Method], rounds: int, local_epochs: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Return ``{model: {"auc_pr": combined, "own": {institution: AUC-PR on its own test set}}}``."""
    validation = (
        np.concatenate([xy[0] for xy in fed.validations.values()]),
        np.concatenate([xy[1] for xy in fed.validations.values()]),
    )
    result = run_comparison(
        fed.trains, fed.tests, validation, rounds=rounds, local_epochs=local_epochs,
        batch_size=fed.batch_size, lr=fed.lr, seed=seed,
    )
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        started = time.perf_counter()
        weights = simulate_federation(fed, method, rounds, local_epochs, seed)
        if method.calibrate:
            evaluation = _personalised_evaluation(
                method.name, fed, weights, result.threshold_rule, local_epochs if method.fine_tune else 0, seed
            )
        else:
            evaluation = add_model(result, method.name, weights).models[method.name]
        out[method.name] = {
            "auc_pr": evaluation.combined.auc_pr,
            "own": {inst: m.auc_pr for inst, m in evaluation.per_institution.items()},
            "seconds": time.perf_counter() - started,
        }
    locals_ = {k[len(LOCAL_PREFIX):]: v for k, v in result.models.items() if k.startswith(LOCAL_PREFIX)}
    best = max(locals_, key=lambda k: locals_[k].combined.auc_pr)
    out["best-local"] = {
        "auc_pr": locals_[best].combined.auc_pr,
        "institution": best,
        # Each institution's own model on its own test set: what it has without federating.
        "own": {inst: ev.per_institution[inst].auc_pr for inst, ev in locals_.items()},
    }
    for name in (POOLED, POOLED_HGB):
        ev = result.models[name]
        out[name] = {"auc_pr": ev.combined.auc_pr, "own": {i: m.auc_pr for i, m in ev.per_institution.items()}}
    out["base_rate"] = {"auc_pr": result.base_rate}
    return out


def _median_table(per_seed: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    names = list(next(iter(per_seed.values())))
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        values = [per_seed[s][name]["auc_pr"] for s in per_seed]
        row: dict[str, Any] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        owns = [per_seed[s][name].get("own") for s in per_seed]
        if all(owns):
            row["own_median"] = {i: statistics.median(o[i] for o in owns) for i in owns[0]}  # type: ignore[index]
        table[name] = row
    return table


def main() -> None:
    """Run every data set and seed; print the table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=["generator", "insurance"], default=["generator", "insurance"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per institution (generator)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--csv", type=Path, default=INSURANCE_CSV)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "heterogeneous.json")
    args = parser.parse_args()
    methods = [Method.parse(m) for m in args.methods]

    report: dict[str, Any] = {
        "format": "fedfraud-bench-heterogeneous/1",
        "settings": {
            "seeds": args.seeds, "rows": args.rows, "rounds": args.rounds,
            "local_epochs": args.local_epochs, "methods": args.methods,
            "federation": "in-process FedAvg simulation (weights averaged by training rows), not Flower",
        },
        "datasets": {},
    }
    for dataset in args.datasets:
        per_seed: dict[int, dict[str, dict[str, Any]]] = {}
        for seed in args.seeds:
            started = time.perf_counter()
            fed = generator_federation(seed, args.rows) if dataset == "generator" else insurance_federation(seed, args.csv)
            per_seed[seed] = run_seed(fed, methods, args.rounds, args.local_epochs, seed)
            summary = {k: round(v["auc_pr"], 4) for k, v in per_seed[seed].items()}
            print(f"[{dataset}] seed {seed} ({time.perf_counter() - started:.0f}s): {json.dumps(summary)}", flush=True)
        table = _median_table(per_seed)
        report["datasets"][dataset] = {
            "institutions": {
                inst: {"train_rows": int(len(xy[1])), "train_fraud_rate": float(np.mean(xy[1]))}
                for inst, xy in fed.trains.items()
            },
            "median": table,
            "per_seed": {str(s): v for s, v in per_seed.items()},
        }
        print(f"\n[{dataset}] AUC-PR on the combined test set, median (min-max) over seeds {args.seeds}")
        print(f"{'model':<20} {'median':>7} {'min':>7} {'max':>7}   own test set, median per institution")
        for name, row in table.items():
            own = "  ".join(f"{i} {v:.3f}" for i, v in row.get("own_median", {}).items())
            print(f"{name:<20} {row['median']:7.4f} {row['min']:7.4f} {row['max']:7.4f}   {own}")
        print()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
