"""Benchmark: one training round in ``ckks`` mode vs hardened SecAgg+ vs plain FedAvg.

What is measured
----------------
One full aggregation round (wall time of the fit workflow call) for ``n``
institutions (default 10), each contributing a fixed update of ``--params``
float32 values (default 10k, 100k, 1M), in three modes, measured in the same
run of this script, alternating their order every repeat:

* *plain*: Flower's default fit workflow, no protection (the baseline);
* *hardened*: fedfraud's SecAgg+ (``secagg+`` mode);
* *ckks*: fedfraud's SecAgg+ masks under TenSEAL CKKS (``ckks`` mode): key
  ceremony, encryption and signing at every institution, signature checks
  and homomorphic addition at the server, decryption at every institution.

Messages go through the in-process grid of ``bench_hardened_secagg.py`` (no
transport, serialization or Ray time: the protocols' computation on both
sides, run one after another in one process). Every round's result is
checked against the plain mean of the updates within the quantization
bound (for ckks: the model the first institution decrypted). Reported:
medians, the ratios ckks / hardened and ckks / plain of the medians, and the
bytes each institution uploads per parameter (plain: its FitRes; hardened:
the masked vector; ckks: the ciphertexts).

Usage::

    .venv/bin/python bench/bench_ckks_round.py --sizes 10 --params 10000,100000,1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.clientapp import ClientApp
from flwr.server.workflow.default_workflows import default_fit_workflow

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_hardened_secagg as base  # noqa: E402

from audit.keys import load_private_key  # noqa: E402
from server.grid_tap import RefusalTap  # noqa: E402
from server.secagg_workflow import HardenedSecAggWorkflow  # noqa: E402

PLAIN, HARDENED, CKKS = "plain", base.HARDENED, "ckks"
MODES = (PLAIN, HARDENED, CKKS)


def progress(text: str) -> None:
    """One progress line on stderr."""
    print(f"[bench-ckks-round {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class CKKSFederation:
    """The hardened benchmark's federation, with the plain and ckks modes added."""

    def __init__(self, root: Path, n: int, rows: int, params: int) -> None:
        self.fed = base.make_federation(root / f"p{params}", n, rows, params)
        updates = self.fed.updates

        def client_fn(context: Any) -> Any:
            return base.FixedUpdateClient(updates[int(context.node_config["partition-id"])]).to_client()

        self.fed.apps[PLAIN] = ClientApp(client_fn=client_fn)
        self.fed.apps[CKKS] = self.fed.apps[HARDENED]
        self.fed.workflows[PLAIN] = default_fit_workflow
        self.fed.workflows[CKKS] = HardenedSecAggWorkflow(
            self.fed.settings, str(self.fed.run_config["federation-id"]), ckks_mode=True
        )
        self.sites = Path(str(self.fed.run_config["sites-dir"]))
        self.roster = {
            name: load_private_key(self.sites / name / "signing.key").public_key()
            for name in self.fed.names
        }
        self.ckks_config = {**self.fed.run_config, "aggregation": "ckks"}

    def model_of(self, run_id: int) -> list[npt.NDArray[Any]]:
        """The model the first institution decrypted in run ``run_id``."""
        path = self.sites / self.fed.names[0] / "state" / f"ckks-model-{run_id}.npz"
        with np.load(path) as archive:
            return [archive[f"arr_{i}"] for i in range(len(archive.files))]

    def round(self, mode: str, wrap: Callable[[Any], Any] | None = None) -> base.RoundResult:
        """One timed, checked round in ``mode``.

        ``wrap``, if given, sees the in-process grid first (``run_all.py``
        attaches its per-stage clock there); ckks mode's refusal tap wraps
        what it returns.
        """
        inner = wrap if wrap is not None else (lambda grid: grid)
        if mode != CKKS:
            return base.run_round(self.fed, mode, wrap=wrap)
        return base.run_round(
            self.fed,
            CKKS,
            run_config=self.ckks_config,
            wrap=lambda grid: RefusalTap(inner(grid), self.roster),
            extra_config={"ckks-model-id": "initial"},
            model_of=self.model_of,
        )


def bench(federation: CKKSFederation, repeats: int) -> dict[str, Any]:
    """Warm-up, then ``repeats`` rounds of each mode, order rotated every repeat."""
    fed = federation.fed
    for mode in MODES:
        progress(f"n={fed.n} params={fed.updates[0].size:,} warm-up {mode}: "
                 f"{federation.round(mode).seconds:.3f}s")
    results: dict[str, list[base.RoundResult]] = {m: [] for m in MODES}
    for index in range(repeats):
        order = MODES[index % 3:] + MODES[: index % 3]
        for mode in order:
            results[mode].append(federation.round(mode))
        progress(f"repeat {index + 1}/{repeats}: "
                 + ", ".join(f"{m} {results[m][-1].seconds:.3f}s" for m in MODES))
    medians = {m: statistics.median(r.seconds for r in results[m]) for m in MODES}
    return {
        "n": fed.n,
        "params": int(fed.updates[0].size),
        "repeats": repeats,
        "median_seconds": medians,
        "ckks_over_hardened": medians[CKKS] / medians[HARDENED],
        "ckks_over_plain": medians[CKKS] / medians[PLAIN],
        "upload_bytes_per_param": {m: results[m][-1].masked_bytes_per_param for m in MODES},
        "max_error": {m: max(r.max_error for r in results[m]) for m in MODES},
        "bound": fed.error_bound,
    }


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| n | params | repeats | plain (s) | SecAgg+ (s) | ckks (s) | ckks / SecAgg+ | ckks / plain "
        "| upload B/param plain | SecAgg+ | ckks | max err ckks | bound |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, b = r["median_seconds"], r["upload_bytes_per_param"]
        lines.append(
            f"| {r['n']} | {r['params']:,} | {r['repeats']} | {m[PLAIN]:.3f} | {m[HARDENED]:.3f} | "
            f"{m[CKKS]:.3f} | {r['ckks_over_hardened']:.2f}x | {r['ckks_over_plain']:.1f}x | "
            f"{b[PLAIN]:.2f} | {b[HARDENED]:.2f} | {b[CKKS]:.2f} | {r['max_error'][CKKS]:.2e} | "
            f"{r['bound']:.2e} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_ckks_round.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=base.parse_sizes, default=base.parse_sizes("10"),
                        help="comma list of cohort sizes, default 10")
    parser.add_argument("--params", type=base.parse_sizes, default=base.parse_sizes("10000,100000,1000000"),
                        help="comma list of update sizes (float32 values), default 10000,100000,1000000")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per mode, default 3")
    parser.add_argument("--rows", type=int, default=300, help="rows of data per institution, default 300")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ckks-round-"))
    rows = []
    try:
        for n in args.sizes:
            for params in args.params:
                progress(f"n={n} params={params:,}: preparing sites and data")
                rows.append(bench(CKKSFederation(workdir / f"n{n}", n, args.rows, params), args.repeats))
    except base.RoundFailed as exc:
        print(f"ROUND FAILED\n{exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
