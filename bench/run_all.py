"""Every aggregation benchmark in one run, within a time budget: one JSON and one Markdown table.

What it runs
------------
1. **Protocol compute grid** (in-process, no transport): one aggregation round
   for each of four modes, through the in-process Flower grid of
   ``bench_hardened_secagg.py`` and the federations of ``bench_ckks_round.py``:

   * ``plain``: Flower's default fit workflow (FedAvg, no protection);
   * ``stock``: Flower's ``SecAggPlusWorkflow`` + ``secaggplus_mod``;
   * ``hardened``: fedfraud's SecAgg+ (``secagg+`` mode);
   * ``ckks``: fedfraud's SecAgg+ masks under TenSEAL CKKS (``ckks`` mode).

   at 3, 10, 20 and 50 institutions and 10k, 100k and 1M float32 parameters,
   highest priority first (10 institutions / 100k parameters), as long as the
   budget allows. Each configuration: one untimed warm-up round per mode,
   then ``repeats`` rounds with the order of the modes rotated every repeat;
   each round is checked against the plain mean (the scripts' own check).
   Per round and mode it records, by attaching hooks to the grid:

   * the round's wall time (``configure_fit`` to ``aggregate_fit``);
   * per protocol stage (``setup``, ``share-keys``/``share_keys``,
     ``collect-masked-vectors`` (ckks: with encryption), ``consistency``,
     ``unmask``, ``decrypt`` (ckks), ``server-final``: the server's work after
     the last stage's replies, i.e. unmasking/aggregation): the stage's wall
     time, the institutions' compute (time inside each institution's
     ClientApp, less the copy of its reply; mean per institution) and the
     server's compute (the rest, less message copies);
   * the protocol's compute per institution per round (sum over stages) and
     the server's compute per round;
   * peak memory, in one more (untimed) round per mode with ``tracemalloc``
     on (Python and numpy allocations; TenSEAL's and OpenSSL's native memory
     is not traced, serialized ciphertexts are): for *one institution*, the
     largest rise while it handles one message, plus the message it received
     (its state kept between stages is not added); for the *server*, the
     largest traced memory outside the institutions' calls above the round's
     start (this includes the institutions' state kept between stages, which
     lives in the same process). Resident memory would be the better figure,
     but glibc reuses freed blocks of this size without growing the process,
     so per-message rises of resident memory read as zero; the process's peak
     RSS is reported once;
   * bytes on the wire per parameter: the protection's upload (stock: its
     ``.npy`` byte strings; hardened: the packed uint32 vector; ckks: the
     ciphertexts; plain: the FitRes) and every byte each institution sends
     and receives in the round (record contents, no protobuf framing).

   Configurations that do not fit the budget are **extrapolated** from the
   measured ones of the same mode (along parameters: a straight line, fixed
   cost plus cost per parameter, through the two nearest measured sizes;
   along institutions: a power law through the two nearest measured cohort
   sizes; from a single point: proportional), and listed as such with the
   method.

2. **CKKS steps** (``bench_ckks.bench_size``): encryption, aggregation (server,
   10 contributions) and decryption, alone, against the SecAgg+ masking of
   the same size, at 10k, 100k and 1M parameters.

3. **Mask generation** (``bench_hardened_secagg.bench_masks``): Flower's
   ``pseudo_rand_gen`` vs fedfraud's AES-CTR ``mask_stream``, 1M words.

4. **End-to-end rounds** (``bench_secagg_round.fit_seconds``): real Flower
   simulations (SuperLink, SuperNodes, Ray; the demo's model and training) in
   ``unsafe-plain``, ``secagg+`` and ``ckks`` mode, 3 institutions (10 if the
   budget allows): the fit time of every round after the first. Flower's
   stock SecAgg+ is not a product mode, so it is not in this part.

Every figure is the median of the repeats with min-max and the count; every
ratio divides two medians of this same run (extrapolated ratios say so).
The machine is shared and noisy: compare ratios, not absolute times across
runs.

Writes ``<out>/<YYYY-MM-DD>.json`` and ``<out>/<YYYY-MM-DD>.md`` (UTC date;
``--quick`` writes ``<YYYY-MM-DD>-quick.*``). Progress goes to stderr.

Usage::

    .venv/bin/python bench/run_all.py                 # 15-minute budget
    .venv/bin/python bench/run_all.py --quick         # ~3-minute smoke run
    .venv/bin/python bench/run_all.py --budget-minutes 30 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ckks  # noqa: E402
import bench_ckks_round  # noqa: E402
import bench_hardened_secagg as base  # noqa: E402
import bench_secagg_round  # noqa: E402
from _inprocess_grid import InProcessGrid, _stage_hint  # noqa: E402

from fraud.generator_files import ensure_federation_data  # noqa: E402

PLAIN, STOCK, HARDENED, CKKS = "plain", base.STOCK, base.HARDENED, bench_ckks_round.CKKS
MODES = (PLAIN, STOCK, HARDENED, CKKS)
SIZES = (3, 10, 20, 50)
PARAMS = (10_000, 100_000, 1_000_000)
#: Measured first; then the rest as the budget allows.
PRIORITY = (
    (10, 100_000), (3, 100_000), (10, 10_000), (10, 1_000_000), (3, 10_000), (3, 1_000_000),
    (20, 100_000), (20, 10_000), (50, 10_000), (50, 100_000), (20, 1_000_000), (50, 1_000_000),
)
QUICK_GRID = ((10, 100_000), (3, 10_000), (3, 100_000), (10, 10_000))
E2E_MODES = ("unsafe-plain", "secagg+", "ckks")
#: Estimates are rough; a configuration runs only if this multiple of its estimate fits.
SAFETY = 1.4
REPO = Path(__file__).resolve().parent.parent


def progress(text: str) -> None:
    """One progress line on stderr."""
    print(f"[run-all {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- machine ---------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, Python, library versions, git commit, load."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_bytes": ram,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: version(name) for name in ("torch", "flwr", "tenseal", "numpy", "cryptography")},
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_bench": bool(git("status", "--porcelain", "--", "bench")),
        "load_average_start": list(os.getloadavg()),
    }


# -- statistics ------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and count of ``values``."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "repeats": len(values),
        "values": list(values),
    }


# -- resident memory -------------------------------------------------------------------


def _traced() -> tuple[int, int]:
    """(current, peak) traced bytes, or zeros when tracemalloc is off."""
    return tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)


def _reset_traced_peak() -> None:
    if tracemalloc.is_tracing():
        tracemalloc.reset_peak()


# -- the per-stage clock ---------------------------------------------------------------


@dataclass
class StageClock:
    """Hooks on an :class:`InProcessGrid` that time and meter every stage of one round."""

    grid: InProcessGrid | None = None
    t0: float = 0.0
    t_end: float = 0.0
    traced0: int = 0
    server_peak: int = 0
    institution_peak: int = 0
    institution: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    stage_end: dict[str, float] = field(default_factory=dict)
    copy_at_end: dict[str, float] = field(default_factory=dict)
    _open: dict[int, tuple[str, float, float, int]] = field(default_factory=dict)

    def attach(self, grid: InProcessGrid) -> InProcessGrid:
        """Chain the clock's hooks onto the grid's (the byte meter's); start the clock."""
        self.grid = grid
        before_request, before_reply = grid.on_request, grid.on_reply

        def on_request(node_id: int, message: Any) -> None:
            hint = _stage_hint(message)
            self.server_peak = max(self.server_peak, _traced()[1])
            if before_request is not None:
                before_request(node_id, message)
            received = base.payload_bytes(message) if tracemalloc.is_tracing() else 0
            _reset_traced_peak()
            self._open[node_id] = (
                "fit" if hint == "?" else hint, time.perf_counter(), grid.copy_seconds,
                _traced()[0] - received,
            )

        def on_reply(node_id: int, message: Any) -> None:
            now = time.perf_counter()
            peak = _traced()[1]
            stage, start, copied, before = self._open.pop(node_id)
            self.institution[stage][node_id] += (now - start) - (grid.copy_seconds - copied)
            self.institution_peak = max(self.institution_peak, peak - before)
            self.stage_end[stage] = now
            self.copy_at_end[stage] = grid.copy_seconds
            if before_reply is not None:
                before_reply(node_id, message)
            _reset_traced_peak()

        grid.on_request, grid.on_reply = on_request, on_reply
        self.traced0 = _traced()[0]
        _reset_traced_peak()
        self.t0 = time.perf_counter()
        return grid

    def finish(self) -> None:
        """The workflow returned: stop the clock."""
        self.t_end = time.perf_counter()
        self.server_peak = max(self.server_peak, _traced()[1])

    def figures(self, n: int) -> dict[str, Any]:
        """Per-stage wall, institution and server seconds; per-round totals; peaks."""
        assert self.grid is not None
        stages: dict[str, dict[str, float]] = {}
        previous, previous_copy = self.t0, 0.0
        per_node: dict[int, float] = defaultdict(float)
        for stage in sorted(self.stage_end, key=self.stage_end.__getitem__):
            wall = self.stage_end[stage] - previous
            institutions = sum(self.institution[stage].values())
            copies = self.copy_at_end[stage] - previous_copy
            stages[stage] = {
                "wall": wall,
                "institution_mean": institutions / n,
                "server": wall - institutions - copies,
            }
            for node_id, seconds in self.institution[stage].items():
                per_node[node_id] += seconds
            previous, previous_copy = self.stage_end[stage], self.copy_at_end[stage]
        final = self.t_end - previous
        stages["server-final"] = {
            "wall": final,
            "institution_mean": 0.0,
            "server": final - (self.grid.copy_seconds - previous_copy),
        }
        return {
            "stages": stages,
            "institution_round_mean": statistics.mean(per_node.values()) if per_node else 0.0,
            "institution_round_max": max(per_node.values()) if per_node else 0.0,
            "server_round": sum(s["server"] for s in stages.values()),
            "server_peak_bytes": max(0, self.server_peak - self.traced0),
            "institution_peak_bytes": self.institution_peak,
        }


# -- one configuration of the grid -------------------------------------------------------


def one_round(federation: bench_ckks_round.CKKSFederation, mode: str, *, trace: bool = False) -> dict[str, Any]:
    """One timed, checked, metered round of ``mode`` with the stage clock attached.

    With ``trace``, tracemalloc runs during the round (for the memory figures
    only: tracing slows the round, whose times are then not used).
    """
    fed = federation.fed
    clock = StageClock()
    workflow = fed.workflows[mode]

    def timed(grid: Any, context: Any) -> None:
        try:
            workflow(grid, context)
        finally:
            clock.finish()

    fed.workflows[mode] = timed
    if trace:
        tracemalloc.start()
    try:
        result = federation.round(mode, wrap=clock.attach)
    finally:
        fed.workflows[mode] = workflow
        if trace:
            tracemalloc.stop()
    params = fed.plain_mean.size
    return {
        "seconds": result.seconds,
        "copy_seconds": result.copy_seconds,
        "max_error": result.max_error,
        "upload_bytes_per_param": result.masked_bytes_per_param,
        "up_bytes_per_param": result.up_bytes_per_client / params,
        "down_bytes_per_param": result.down_bytes_per_client / params,
        **clock.figures(fed.n),
    }


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure of a mode's rounds as a summary (median, min, max, repeats)."""
    keys = ("seconds", "institution_round_mean", "institution_round_max", "server_round", "copy_seconds")
    out: dict[str, Any] = {key: summary([s[key] for s in samples]) for key in keys}
    for key in ("upload_bytes_per_param", "up_bytes_per_param", "down_bytes_per_param"):
        out[key] = samples[-1][key]  # deterministic for a given size
    out["max_error"] = max(s["max_error"] for s in samples)
    stage_names = list(samples[0]["stages"])
    out["stages"] = {
        stage: {
            part: summary([s["stages"][stage][part] for s in samples if stage in s["stages"]])
            for part in ("wall", "institution_mean", "server")
        }
        for stage in stage_names
    }
    return out


def measure_config(root: Path, n: int, params: int, modes: Sequence[str], repeats: int,
                   rows: int, costs: dict[str, list[tuple[int, int, float]]]) -> dict[str, Any]:
    """Warm-up, then ``repeats`` rounds of each mode, order rotated every repeat."""
    started = time.perf_counter()
    federation = bench_ckks_round.CKKSFederation(root / f"n{n}", n, rows, params)
    setup_seconds = time.perf_counter() - started
    try:
        for mode in modes:
            warm = one_round(federation, mode)
            costs[mode].append((n, params, warm["seconds"]))
            progress(f"n={n} params={params:,} warm-up {mode}: {warm['seconds']:.3f}s")
        samples: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for index in range(repeats):
            order = list(modes[index % len(modes):]) + list(modes[: index % len(modes)])
            for mode in order:
                samples[mode].append(one_round(federation, mode))
            progress(f"n={n} params={params:,} repeat {index + 1}/{repeats}: "
                     + ", ".join(f"{m} {samples[m][-1]['seconds']:.3f}s" for m in modes))
        memory: dict[str, dict[str, int]] = {}
        for mode in modes:
            traced = one_round(federation, mode, trace=True)
            memory[mode] = {k: traced[k] for k in ("server_peak_bytes", "institution_peak_bytes")}
    finally:
        shutil.rmtree(root / f"n{n}" / f"p{params}", ignore_errors=True)
    result: dict[str, Any] = {
        "n": n,
        "params": params,
        "repeats": repeats,
        "num_shares": federation.fed.settings.num_shares,
        "reconstruction_threshold": federation.fed.settings.reconstruction_threshold,
        "error_bound": federation.fed.error_bound,
        "setup_seconds": setup_seconds,
        "modes": {mode: {**summarise(samples[mode]), "memory": memory[mode]} for mode in modes},
    }
    result["ratios"] = ratios({m: result["modes"][m]["seconds"]["median"] for m in modes})
    result["institution_ratios"] = ratios(
        {m: result["modes"][m]["institution_round_mean"]["median"] for m in modes}
    )
    return result


def ratios(medians: dict[str, float]) -> dict[str, float]:
    """Every ratio of interest between the modes present (medians of one run)."""
    pairs = ((STOCK, PLAIN), (HARDENED, PLAIN), (CKKS, PLAIN), (HARDENED, STOCK), (CKKS, STOCK),
             (CKKS, HARDENED))
    return {
        f"{a}/{b}": medians[a] / medians[b]
        for a, b in pairs
        if a in medians and b in medians and medians[b] > 0
    }


# -- budget ------------------------------------------------------------------------------


def estimate_round(costs: dict[str, list[tuple[int, int, float]]], mode: str, n: int, params: int) -> float:
    """A round's seconds in ``mode``, scaled by n x params from the nearest measured round."""
    seen = costs.get(mode) or [c for m in MODES for c in costs.get(m, [])]
    if not seen:
        return 5.0
    n0, p0, t0 = min(seen, key=lambda c: abs(math.log(n / c[0])) + abs(math.log(params / c[1])))
    return max(0.01, t0 * (n * params) / (n0 * p0))


def plan_config(costs: dict[str, list[tuple[int, int, float]]], setup_per_institution: float, n: int,
                params: int, repeats: int, remaining: float) -> tuple[list[str], int, float] | None:
    """The modes and repeats of a configuration that fit ``remaining`` seconds, or None."""
    for modes, count in ((MODES, repeats), (MODES, 3), (MODES[:3], 3)):
        cost = setup_per_institution * n + sum(
            (2.5 + count) * estimate_round(costs, mode, n, params) for mode in modes
        )
        if SAFETY * cost <= remaining:
            return list(modes), count, cost
    return None


# -- extrapolation -----------------------------------------------------------------------


def extrapolate(points: dict[tuple[int, int], float], n: int, params: int,
                min_exponent: float = 0.0) -> tuple[float, str] | None:
    """A value at (n, params) from measured ``points`` of the same mode, and how.

    In order of preference:

    1. *separable*: a measured (n, p0) scaled as a measured cohort n' scales
       from p0 to ``params`` (n' and p0 the nearest that have both);
    2. along parameters at the same n: a straight line (fixed cost plus cost
       per parameter) through the two nearest measured sizes;
    3. along institutions at the same size: a power law through the two
       nearest measured cohorts (exponent clamped to [``min_exponent``, 2]:
       a round's total over all institutions grows at least linearly);
    4. the nearest measured point, proportional to institutions x parameters.
    """
    if not points:
        return None

    def distance(a: tuple[int, int], b: tuple[int, int]) -> float:
        return abs(math.log(a[0] / b[0])) + abs(math.log(a[1] / b[1]))

    # 1. Separable scaling.
    options = [
        (n0, p0)
        for (n0, p0) in points
        if n0 != n and p0 != params and (n, p0) in points and (n0, params) in points
    ]
    if options:
        n1, p0 = min(options, key=lambda k: distance(k, (n, params)))
        factor = points[(n1, params)] / points[(n1, p0)]
        return points[(n, p0)] * factor, (
            f"measured {n} institutions x {p0:,} parameters, times the measured {n1}-institution "
            f"ratio {params:,} / {p0:,} parameters ({factor:.2f}x)"
        )
    # 2. Along parameters.
    same_n = {p0: v for (n0, p0), v in points.items() if n0 == n}
    if len(same_n) >= 2:
        x1, x2 = sorted(sorted(same_n, key=lambda k: abs(math.log(params / k)))[:2])
        slope = max(0.0, (same_n[x2] - same_n[x1]) / (x2 - x1))
        fixed_cost = max(0.0, same_n[x1] - slope * x1)
        return fixed_cost + slope * params, (
            f"straight line in parameters through the measured {n} institutions x {x1:,} and {x2:,} "
            f"parameters (fixed {fixed_cost:.4g} + {slope * 1e6:.4g} per million parameters)"
        )
    # 3. Along institutions.
    same_p = {n0: v for (n0, p0), v in points.items() if p0 == params}
    if len(same_p) >= 2:
        x1, x2 = sorted(sorted(same_p, key=lambda k: abs(math.log(n / k)))[:2])
        v1, v2 = same_p[x1], same_p[x2]
        exponent = math.log(v2 / v1) / math.log(x2 / x1) if v1 > 0 and v2 > 0 else 1.0
        exponent = min(max(exponent, min_exponent), 2.0)
        near = min(same_p, key=lambda k: abs(math.log(n / k)))
        return same_p[near] * (n / near) ** exponent, (
            f"power law in institutions through the measured {x1} and {x2} institutions x {params:,} "
            f"parameters (exponent {exponent:.2f})"
        )
    # 4. Proportional.
    (n0, p0), v0 = min(points.items(), key=lambda kv: distance(kv[0], (n, params)))
    return v0 * (n * params) / (n0 * p0), (
        f"proportional to institutions x parameters from the measured {n0} institutions x {p0:,} parameters"
    )


def grid_table(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Every (n, params, mode) cell: measured medians, or extrapolated values with the method."""
    figures = ("seconds", "institution_round_mean", "server_round")
    points: dict[str, dict[str, dict[tuple[int, int], float]]] = {
        m: {f: {} for f in figures} for m in MODES
    }
    upload: dict[str, dict[tuple[int, int], float]] = {m: {} for m in MODES}
    for config in measured:
        for mode, data in config["modes"].items():
            for f in figures:
                points[mode][f][(config["n"], config["params"])] = data[f]["median"]
            upload[mode][(config["n"], config["params"])] = data["upload_bytes_per_param"]
    cells: list[dict[str, Any]] = []
    for n in SIZES:
        for params in PARAMS:
            row: dict[str, Any] = {"n": n, "params": params, "modes": {}}
            for mode in MODES:
                if (n, params) in points[mode]["seconds"]:
                    row["modes"][mode] = {
                        "measured": True,
                        **{f: points[mode][f][(n, params)] for f in figures},
                        "upload_bytes_per_param": upload[mode][(n, params)],
                    }
                    continue
                cell: dict[str, Any] = {"measured": False}
                for f in figures:
                    guess = extrapolate(points[mode][f], n, params,
                                        0.0 if f == "institution_round_mean" else 1.0)
                    if guess is not None:
                        cell[f], method = guess
                        cell.setdefault("method", method)
                if upload[mode]:
                    # Bytes per parameter barely depend on the size: the nearest measured value.
                    (n0, p0) = min(upload[mode], key=lambda k: abs(math.log(n / k[0])) + abs(math.log(params / k[1])))
                    cell["upload_bytes_per_param"] = upload[mode][(n0, p0)]
                row["modes"][mode] = cell
            medians = {m: c["seconds"] for m, c in row["modes"].items() if "seconds" in c}
            row["ratios"] = ratios(medians)
            row["ratios_measured"] = all(c["measured"] for c in row["modes"].values())
            cells.append(row)
    return {"cells": cells}


# -- end-to-end ----------------------------------------------------------------------------


def end_to_end(workdir: Path, n: int, rounds: int, rows: int, modes: Sequence[str] = E2E_MODES) -> dict[str, Any]:
    """Real Flower simulations of ``n`` institutions in each of ``modes``, same data."""
    names = [f"inst-{i:02d}" for i in range(n)]
    ensure_federation_data(workdir / f"data-{n}", names, rows, 11)
    out: dict[str, Any] = {"n": n, "rounds": rounds, "rows_per_institution": rows, "modes": {}}
    for mode in modes:
        started = time.perf_counter()
        seconds = bench_secagg_round.fit_seconds(workdir, names, mode, rounds)
        out["modes"][mode] = {"fit_seconds": summary(seconds), "run_seconds": time.perf_counter() - started}
        progress(f"end-to-end n={n} {mode}: median fit {statistics.median(seconds):.3f}s "
                 f"({len(seconds)} rounds), run {out['modes'][mode]['run_seconds']:.0f}s")
    medians = {m: v["fit_seconds"]["median"] for m, v in out["modes"].items()}
    out["ratios"] = {
        f"{a}/unsafe-plain": medians[a] / medians["unsafe-plain"] for a in ("secagg+", "ckks") if a in medians
    }
    if "ckks" in medians:
        out["ratios"]["ckks/secagg+"] = medians["ckks"] / medians["secagg+"]
    return out


# -- targets ---------------------------------------------------------------------------------


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figure it is checked on and whether it is met."""
    cells = {(c["n"], c["params"]): c for c in report["grid"]["cells"]}
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, unit: str, source: str, measured: bool,
            params: int = 0) -> None:
        entry = {
            "target": name, "value": value, "limit": limit, "unit": unit, "source": source,
            "measured": measured, "met": value is not None and value <= limit,
        }
        if params and value is not None and value > limit:
            # Bytes per parameter: say how much of the excess is a constant (header, keys).
            entry["excess_bytes"] = round((value - limit) * params)
        out.append(entry)

    c = cells[(10, 100_000)]
    for mode in (HARDENED, STOCK):
        add(f"{mode} / plain, aggregation only, 10 institutions, 100k params",
            c["ratios"].get(f"{mode}/plain"), 2.0, "x", "protocol grid, round medians",
            c["ratios_measured"])
    c1m = cells[(10, 1_000_000)]
    for mode in (HARDENED, CKKS):
        cell = c1m["modes"][mode]
        value = cell.get("institution_round_mean")
        add(f"{mode}: institution compute per round, 1M params (10 institutions)",
            None if value is None else value * 1e3, 50.0, "ms", "protocol grid, sum of stages",
            cell["measured"])
    for mode in (HARDENED, STOCK):
        cell = c["modes"][mode]
        add(f"{mode}: protected upload per parameter (100k params)", cell.get("upload_bytes_per_param"),
            4.0, "B", "masked vector", cell["measured"], 100_000)
        measured = next((m for m in report["grid_measured"] if (m["n"], m["params"]) == (10, 100_000)), None)
        if measured and mode in measured["modes"]:
            add(f"{mode}: everything an institution uploads in the round, per parameter (100k)",
                measured["modes"][mode]["up_bytes_per_param"], 4.0, "B", "all stages' replies", True, 100_000)
    add("ckks / SecAgg+ (hardened), 10 institutions, 100k params", c["ratios"].get("ckks/hardened"), 3.0,
        "x", "protocol grid, round medians", c["ratios_measured"])
    add("ckks / SecAgg+ (stock), 10 institutions, 100k params", c["ratios"].get("ckks/stock"), 3.0,
        "x", "protocol grid, round medians", c["ratios_measured"])
    add("ckks: upload per parameter (100k params)", c["modes"][CKKS].get("upload_bytes_per_param"), 8.0,
        "B", "ciphertexts", c["modes"][CKKS]["measured"], 100_000)
    return out


# -- Markdown ----------------------------------------------------------------------------------


def fmt_s(s: dict[str, Any], scale: float = 1.0, digits: int = 3) -> str:
    """``median [min-max] xN``."""
    return (f"{s['median'] * scale:.{digits}f} [{s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f}]"
            f" x{s['repeats']}")


def fmt_mb(value: float) -> str:
    return f"{value / 2**20:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    m = report["machine"]
    lines = [
        f"# Benchmarks {report['date']}{' (quick)' if report['quick'] else ''}",
        "",
        f"`{report['command']}`: budget {report['budget_minutes']} min, took "
        f"{report['total_seconds'] / 60:.1f} min.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores ({m['cores_usable']} usable, shared with other "
        f"work: load {m['load_average_start'][0]:.1f} at start, {m['load_average_end'][0]:.1f} at end), "
        f"{(m['ram_bytes'] or 0) / 2**30:.1f} GiB RAM; Python {m['python']}, torch {m['versions']['torch']}, "
        f"flwr {m['versions']['flwr']}, tenseal {m['versions']['tenseal']}, numpy {m['versions']['numpy']}; "
        f"commit `{m['git_commit'][:12]}`{' (bench/ modified)' if m['git_dirty_bench'] else ''}. "
        f"Process peak RSS {report['process_peak_rss_bytes'] / 2**20:.0f} MiB.",
        "",
        "Figures: median [min-max] xN repeats. Ratios: medians of the same run. "
        "*Italic* cells are extrapolated (see the end).",
        "",
        "## Targets",
        "",
        "| target | value | limit | met | how |",
        "|---|---:|---:|---|---|",
    ]
    for t in report["targets"]:
        digits = 5 if t["unit"] == "B" else 2
        value = "n/a" if t["value"] is None else f"{t['value']:.{digits}f} {t['unit']}"
        met = "yes" if t["met"] else "**no**"
        if not t["met"] and t.get("excess_bytes") is not None and t["excess_bytes"] <= 64:
            met = f"no by a constant {t['excess_bytes']} bytes (4 B per parameter plus a header)"
        elif t.get("excess_bytes") is not None:
            met += f" ({t['excess_bytes']:,} bytes over at 100k parameters)"
        lines.append(f"| {t['target']} | {value if t['measured'] else '*' + value + '*'} | {t['limit']:g} "
                     f"{t['unit']} | {met} | {t['source']}"
                     f"{'' if t['measured'] else ', extrapolated'} |")
    lines += [
        "",
        "## Protocol compute per round (in-process grid, both sides in one process, seconds)",
        "",
        "| n | params | plain | stock SecAgg+ | fedfraud SecAgg+ | ckks | stock/plain | fedfraud/plain | "
        "fedfraud/stock | ckks/fedfraud | ckks/stock |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured = {(c["n"], c["params"]): c for c in report["grid_measured"]}
    for cell in report["grid"]["cells"]:
        key = (cell["n"], cell["params"])
        row = [str(cell["n"]), f"{cell['params']:,}"]
        for mode in MODES:
            data = cell["modes"][mode]
            if data["measured"]:
                row.append(fmt_s(measured[key]["modes"][mode]["seconds"]))
            elif "seconds" in data:
                row.append(f"*{data['seconds']:.3f}*")
            else:
                row.append("-")
        for pair in ("stock/plain", "hardened/plain", "hardened/stock", "ckks/hardened", "ckks/stock"):
            value = cell["ratios"].get(pair)
            both = all(cell["modes"][p]["measured"] for p in pair.split("/"))
            text = "-" if value is None else f"{value:.2f}x"
            row.append(text if both or value is None else f"*{text}*")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## Per institution and server, per round",
        "",
        "Compute: seconds inside the protocol (institution: mean per institution, summed over the "
        "stages; server: the rest of the round less message copies). Memory (MiB, one traced round "
        "per mode, tracemalloc: Python and numpy, not TenSEAL's native memory): institution: largest "
        "rise while handling one message plus that message; server: peak outside the institutions' "
        "calls above the round's start. Bytes per parameter: protected upload / everything up / "
        "everything down, per institution.",
        "",
        "| n | params | mode | institution compute (ms) | server compute (s) | institution peak MiB | "
        "server peak MiB | B/param upload | up | down |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config in report["grid_measured"]:
        for mode, d in config["modes"].items():
            lines.append(
                f"| {config['n']} | {config['params']:,} | {mode} | {fmt_s(d['institution_round_mean'], 1e3, 1)} | "
                f"{fmt_s(d['server_round'])} | {fmt_mb(d['memory']['institution_peak_bytes'])} | "
                f"{fmt_mb(d['memory']['server_peak_bytes'])} | {d['upload_bytes_per_param']:.2f} | "
                f"{d['up_bytes_per_param']:.2f} | {d['down_bytes_per_param']:.2f} |"
            )
    lines += [
        "",
        "## Per stage (measured configurations; seconds: stage wall / institution mean / server)",
        "",
        "`server-final` is the server's work after the last stage's replies (unmasking and aggregation).",
        "",
        "| n | params | mode | stage | wall | institution (mean) | server |",
        "|---:|---:|---|---|---:|---:|---:|",
    ]
    for config in report["grid_measured"]:
        for mode, d in config["modes"].items():
            for stage, parts in d["stages"].items():
                lines.append(
                    f"| {config['n']} | {config['params']:,} | {mode} | {stage} | {fmt_s(parts['wall'])} | "
                    f"{fmt_s(parts['institution_mean'])} | {fmt_s(parts['server'])} |"
                )
    if report.get("ckks_steps"):
        lines += [
            "",
            "## CKKS steps alone (`bench_ckks.py`, 10 contributions; ms)",
            "",
            "| params | SecAgg+ masking (baseline) | encrypt | aggregate (server) | decrypt | "
            "encrypt/baseline | B/param | repeats |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in report["ckks_steps"]:
            cells_ = [fmt_s(summary(s["seconds"][k]), 1e3, 1) for k in ("baseline", "encrypt", "aggregate", "decrypt")]
            lines.append(f"| {s['params']:,} | " + " | ".join(cells_)
                         + f" | {s['ratio_over_baseline']['encrypt']:.1f}x | {s['wire_bytes_per_param']:.1f} "
                         f"| {s['repeats']} |")
    mg = report.get("mask_generation")
    if mg:
        lines += [
            "",
            f"## Mask generation, {mg['params']:,} words (ms)",
            "",
            "| stock pseudo_rand_gen | fedfraud mask_stream | ratio |",
            "|---:|---:|---:|",
            f"| {fmt_s(summary(mg['stock_seconds']), 1e3, 2)} | {fmt_s(summary(mg['hardened_seconds']), 1e3, 2)} "
            f"| {mg['ratio_hardened_over_stock']:.2f}x |",
        ]
    if report.get("end_to_end"):
        lines += [
            "",
            "## End-to-end rounds (Flower simulation, the demo's model and training; fit seconds of rounds 2..N)",
            "",
            "| n | unsafe-plain | secagg+ | ckks | secagg+/plain | ckks/plain | ckks/secagg+ |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in report["end_to_end"]:
            md = e["modes"]
            r = e["ratios"]
            lines.append(
                f"| {e['n']} | " + " | ".join(fmt_s(md[x]["fit_seconds"]) if x in md else "-" for x in E2E_MODES)
                + " | " + " | ".join(f"{r[k]:.2f}x" if k in r else "-" for k in
                                     ("secagg+/unsafe-plain", "ckks/unsafe-plain", "ckks/secagg+")) + " |"
            )
    lines += ["", "## Measured and extrapolated", ""]
    lines.append("Measured (all four modes unless named): " + ", ".join(
        f"{c['n']}x{c['params']:,}" + ("" if len(c["modes"]) == 4 else f" ({', '.join(c['modes'])})")
        for c in report["grid_measured"]) + ".")
    lines.append("")
    extrapolated = [
        (cell, mode, data) for cell in report["grid"]["cells"] for mode, data in cell["modes"].items()
        if not data["measured"]
    ]
    if extrapolated:
        lines.append("Extrapolated (did not fit the budget; from the medians of the same mode, memory not "
                     "extrapolated; bytes per parameter from the nearest measured size):")
        lines.append("")
        for cell, mode, data in extrapolated:
            lines.append(f"- {cell['n']} institutions x {cell['params']:,} params, {mode}: "
                         f"{data.get('method', 'no measured point of this mode')}")
    for note in report["notes"]:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="run_all.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="wall-clock budget for everything (default 15; 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke configuration: 3 and 10 institutions at 10k/100k parameters, "
                             "3 repeats, end-to-end plain and secagg+ only with 3 institutions and "
                             "4 rounds, ~3 minutes; writes <date>-quick.*")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                        help="folder for <date>.json and <date>.md (default bench/results)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed rounds per mode and configuration (default 5, 3 with --quick; "
                             "lowered to 3 where the budget is tight)")
    parser.add_argument("--rows", type=int, default=300,
                        help="rows of generated data per institution for the grid's sites, default 300")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the Flower simulation rounds")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch folder (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    budget = args.budget_minutes if args.budget_minutes is not None else (3.0 if args.quick else 15.0)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if budget <= 0 or repeats < 1:
        parser.error("--budget-minutes must be > 0 and --repeats >= 1")

    logging.getLogger("flwr").setLevel(logging.WARNING)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    started = time.perf_counter()
    deadline = started + budget * 60 - 15  # room to write the files
    now = dt.datetime.now(dt.timezone.utc)
    stem = now.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench-run-all-")) if owned else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "benchmark": "run_all",
        "version": 1,
        "date": now.strftime("%Y-%m-%d"),
        "started_utc": now.isoformat(timespec="seconds"),
        "quick": args.quick,
        "budget_minutes": budget,
        "command": f".venv/bin/python bench/run_all.py {argv_text}".strip(),
        "machine": machine_info(),
        "grid_measured": [],
        "skipped": [],
        "notes": [
            "Protocol compute: every institution and the server run one after another in one process "
            "(`_inprocess_grid.py`), so a round's time is the sum of all sides' work, without transport, "
            "serialization or Ray; in a federation the institutions work in parallel.",
            "Peak memory: tracemalloc in one untimed round per mode and configuration (Python and numpy "
            "allocations; TenSEAL's native ciphertexts and keys are not traced, so ckks figures are lower "
            "bounds); the server figure includes the institutions' state kept between stages (same process).",
        ],
    }
    e2e_rounds, e2e_rows = (4, 1000) if args.quick else (6, 3000)
    e2e_reserve = 0.0 if args.skip_e2e else (120.0 if args.quick else 240.0)
    try:
        # 1. Mask generation and the CKKS steps alone: cheap, always.
        progress("mask generation, 1M words")
        report["mask_generation"] = base.bench_masks(1_000_000, 5 if args.quick else 11)
        report["ckks_steps"] = []
        for params in (PARAMS[:2] if args.quick else PARAMS):
            progress(f"ckks steps, {params:,} parameters")
            report["ckks_steps"].append(bench_ckks.bench_size(params, 10, repeats))

        # 2. The protocol grid, by priority, within the budget.
        costs: dict[str, list[tuple[int, int, float]]] = {m: [] for m in MODES}
        setup_per_institution = 1.0
        for n, params in (QUICK_GRID if args.quick else PRIORITY):
            remaining = deadline - e2e_reserve - time.perf_counter()
            if report["grid_measured"]:
                plan = plan_config(costs, setup_per_institution, n, params, repeats, remaining)
            else:
                plan = (list(MODES), repeats, 0.0)  # the headline configuration always runs
            if plan is None:
                report["skipped"].append({"n": n, "params": params, "remaining_seconds": remaining})
                progress(f"n={n} params={params:,}: skipped (does not fit the {remaining:.0f}s left)")
                continue
            modes, count, estimate = plan
            progress(f"n={n} params={params:,}: {', '.join(modes)} x{count} (estimate {estimate:.0f}s, "
                     f"{remaining:.0f}s left)")
            config = measure_config(workdir / "grid", n, params, modes, count, args.rows, costs)
            setup_per_institution = max(0.05, config["setup_seconds"] / n)
            report["grid_measured"].append(config)
        report["grid"] = grid_table(report["grid_measured"])

        # 3. End-to-end rounds through Flower: 3 institutions; 10 if there is time.
        report["end_to_end"] = []
        if not args.skip_e2e:
            for n in (3, 10):
                remaining = deadline - time.perf_counter()
                need = 0.0 if n == 3 else SAFETY * sum(
                    m["run_seconds"] for m in report["end_to_end"][0]["modes"].values()
                ) * 2.5
                if n != 3 and (args.quick or need > remaining):
                    report["notes"].append(
                        f"End-to-end with {n} institutions not run ({'--quick' if args.quick else f'needs about {need:.0f}s, {remaining:.0f}s left'})."
                    )
                    continue
                progress(f"end-to-end, {n} institutions, {e2e_rounds} rounds per mode")
                e2e_modes = E2E_MODES[:2] if args.quick else E2E_MODES
                report["end_to_end"].append(end_to_end(workdir / "e2e", n, e2e_rounds, e2e_rows, e2e_modes))
                if args.quick:
                    report["notes"].append("End-to-end ckks not run (--quick).")
    except base.RoundFailed as exc:
        print(f"ROUND FAILED\n{exc}", file=sys.stderr)
        return 1
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    report["targets"] = targets(report)
    report["total_seconds"] = time.perf_counter() - started
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    progress(f"wrote {json_path} and {md_path} in {report['total_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
