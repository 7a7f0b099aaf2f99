"""Benchmark: does joining the federation pay? (issue: fair evaluation).

For each seed, on the built-in generator (3 institutions), exactly as the demo
runs it: generate data, provision the parties, release SDV validation samples,
run the federation with SecAgg+ and again with plain FedAvg
(``unsafe-plain``, every party opted in), then train local-only, pooled and
GBT models with the same budget and evaluate every model the same way on the
combined test set (threshold chosen on the synthetic validation set).

Printed per seed and as mean and spread (min-max) over seeds:

* federated AUC-PR / pooled AUC-PR (target >= 0.97);
* federated AUC-PR - best local-only AUC-PR (target >= 0.05);
* federated recall - best local-only recall at each model's threshold (target > 0);
* |AUC-ROC(SecAgg+) - AUC-ROC(plain FedAvg)| (target <= 0.002).

Usage::

    .venv/bin/python bench/bench_federated.py [--seeds 1 2 3] [--rows 20000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from fedfraud.comparison import build_comparison
import datetime as dt

from federation.settings import UNSAFE_OPT_IN, write_unsafe_opt_in
from fedfraud.simulation import SimulationRequest, default_run_config, project_dir, run_simulation
from fedfraud.sites import prepare_demo_sites, release_validation_data
from fraud.generator_files import ensure_federation_data

NAMES = ["bank-a", "bank-b", "insurer-c"]


def federate(workdir: Path, seed: int, rows: int, rounds: int, mode: str) -> Path:
    """Run one federation; return its run directory."""
    data = workdir / "data"
    ensure_federation_data(data, NAMES, rows, seed)
    sites = prepare_demo_sites(workdir / "parties", NAMES, project_dir() / "policies")
    release_validation_data(sites, data, NAMES, 1000, seed)
    for opt_in in [sites.server_dir, *(sites.site(n) for n in NAMES)]:
        if mode == "unsafe-plain":
            expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
            write_unsafe_opt_in(opt_in, "fedfraud-demo", expires)
        else:
            (opt_in / UNSAFE_OPT_IN).unlink(missing_ok=True)
    run_dir = workdir / f"run-{mode}"
    config = default_run_config()
    config.update(
        {
            "num-server-rounds": rounds,
            "seed": seed,
            "data-dir": str(data),
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(run_dir),
            "run-name": f"bench-{seed}-{mode}",
            "aggregation": mode,
        }
    )
    run_simulation(
        SimulationRequest(project_dir(), run_dir, config, num_institutions=len(NAMES))
    )
    return run_dir


def combined(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per model: AUC-PR, AUC-ROC and recall on the combined test set."""
    result, _, _ = build_comparison(run_dir)
    return {
        name: {
            "auc_pr": ev.combined.auc_pr,
            "auc_roc": ev.combined.auc_roc,
            "recall": ev.combined.recall,
        }
        for name, ev in result.models.items()
    }


def main() -> None:
    """Run every seed and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    for seed in args.seeds:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            secure = federate(workdir, seed, args.rows, args.rounds, "secagg+")
            plain = federate(workdir, seed, args.rows, args.rounds, "unsafe-plain")
            table = combined(secure)
            plain_table = combined(plain)
        fed = table["federated (secagg+)"]
        locals_ = {k: v for k, v in table.items() if k.startswith("local:")}
        best_local_pr = max(v["auc_pr"] for v in locals_.values())
        best_local_recall = max(v["recall"] for v in locals_.values())
        figures = {
            "fed/pooled AUC-PR": fed["auc_pr"] / table["pooled"]["auc_pr"],
            "fed - best local AUC-PR": fed["auc_pr"] - best_local_pr,
            "fed - best local recall": fed["recall"] - best_local_recall,
            "|AUC-ROC secagg - plain|": abs(fed["auc_roc"] - plain_table["federated (unsafe-plain)"]["auc_roc"]),
            "federated AUC-PR": fed["auc_pr"],
            "pooled AUC-PR": table["pooled"]["auc_pr"],
            "pooled-hgb AUC-PR": table["pooled-hgb"]["auc_pr"],
            "best local AUC-PR": best_local_pr,
        }
        for key, value in figures.items():
            results.setdefault(key, []).append(value)
        print(f"seed {seed} ({time.perf_counter() - started:.0f}s): " + json.dumps(
            {k: round(v, 4) for k, v in figures.items()}))
    print(f"\n{len(args.seeds)} seeds, {args.rows} rows x 3 institutions, {args.rounds} rounds")
    print(f"{'figure':<28} {'mean':>8} {'min':>8} {'max':>8}")
    for key, values in results.items():
        print(f"{key:<28} {statistics.mean(values):8.4f} {min(values):8.4f} {max(values):8.4f}")


if __name__ == "__main__":
    main()
