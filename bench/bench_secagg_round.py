"""Benchmark: one SecAgg+ round against one plain FedAvg round.

Runs real simulated federations (Flower simulation engine) with the same
model, data and clients, once with ``aggregation = "secagg+"`` and once with
``aggregation = "unsafe-plain"``, for 3 and 10 institutions, and reports the
median *fit* time per round (training + aggregation, evaluation excluded) over
the rounds after the first (round 1 includes Ray start-up), and the ratio
SecAgg+ / plain measured in the same run of this script.

Usage::

    .venv/bin/python bench/bench_secagg_round.py [--rounds 6] [--rows 3000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from fedfraud.simulation import SimulationRequest, default_run_config, project_dir, run_simulation
import datetime as dt

from federation.settings import write_unsafe_opt_in
from fedfraud.sites import prepare_demo_sites
from fraud.generator_files import ensure_federation_data

from server.rundir import read_rounds


def fit_seconds(workdir: Path, names: list[str], mode: str, rounds: int) -> list[float]:
    """Run one federation; return the fit seconds of rounds 2..N."""
    run_dir = workdir / f"run-{len(names)}-{mode}"
    sites = prepare_demo_sites(workdir / f"parties-{len(names)}", names, project_dir() / "policies")
    if mode == "unsafe-plain":
        # The baseline needs every party's own, explicit opt-in.
        expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
        for folder in [sites.server_dir, *(sites.site(name) for name in names)]:
            write_unsafe_opt_in(folder, "fedfraud-demo", expires, run_dir.name)
    config = default_run_config()
    config.update(
        {
            "num-server-rounds": rounds,
            "institutions": ",".join(names),
            "data-dir": str(workdir / f"data-{len(names)}"),
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(run_dir),
            "run-name": run_dir.name,
            "local-epochs": 1,
            "aggregation": mode,
        }
    )
    run_simulation(
        SimulationRequest(
            project_dir=project_dir(),
            run_dir=run_dir,
            run_config=config,
            num_institutions=len(names),
        )
    )
    return [float(r["fit_seconds"]) for r in read_rounds(run_dir)[1:]]


def main() -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per run (>= 6)")
    parser.add_argument("--rows", type=int, default=3000, help="rows per institution")
    parser.add_argument("--sizes", default="3,10", help="federation sizes")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for size in (int(s) for s in args.sizes.split(",")):
            names = [f"inst-{i:02d}" for i in range(size)]
            ensure_federation_data(workdir / f"data-{size}", names, args.rows, 11)
            plain = fit_seconds(workdir, names, "unsafe-plain", args.rounds)
            secure = fit_seconds(workdir, names, "secagg+", args.rounds)
            rows.append(
                (size, statistics.median(plain), statistics.median(secure), len(plain))
            )
    print(f"{'institutions':>12} {'plain s':>9} {'secagg+ s':>10} {'ratio':>7} {'rounds':>7}")
    for size, plain_s, secure_s, count in rows:
        print(f"{size:>12} {plain_s:>9.3f} {secure_s:>10.3f} {secure_s / plain_s:>7.2f} {count:>7}")


if __name__ == "__main__":
    main()
