"""Benchmark: a bank-scale bring-your-own-data federation, run the way a user runs it.

What is measured
----------------
1. **Data.** A synthetic card-transaction file of ``--rows`` rows (default
   1.7 million) for three issuers (``Issuer North``, ``Issuer South``,
   ``Issuer West``, in column ``issuer``, so the demo's split-value to
   institution-id mapping is exercised), with a binary ``is_fraud`` label
   (0/1) whose rate differs by issuer (0.7 %, 4 %, 8 %), nine numeric
   engineered features (amount, hour, distance, account age, velocity counts,
   ...; several with missing values), two categorical columns (one with
   values outside the schema's vocabulary and missing values) and a
   ``transaction_id`` to drop. Fraud follows four typologies (card testing,
   account takeover, skimming, and fraud that looks ordinary) whose mix
   differs by issuer, so the signal is learnable and partly issuer-specific.
   The file and its schema (same format as
   ``fraud/schemas/insurance_claims.toml``; it is loaded with
   :func:`fraud.byo_schema.load_schema` before use) are generated with vectorised
   numpy in chunks (little memory) and cached under ``--work``; a cached file
   is reused while rows, seed and generator version match.
2. **Federation.** ``fedfraud demo --byo-csv CSV --split-by issuer --schema
   SCHEMA --rounds N`` as a subprocess, its output streamed to the console,
   with every folder it writes (split data, party sites, run directory) under
   ``--work``. Measured: wall time of the whole command (splitting the file,
   checking every institution's data, starting Flower and Ray, all rounds),
   its exit code, and memory, sampled every 0.5 s with psutil over the
   launcher and all its descendants (SuperLink, ``flwr run``, the simulation
   process, Ray's daemons and the Ray workers that play the institutions):

   * peak **tree RSS**: the largest sum of the resident set sizes of all
     processes at one sample. Pages shared between processes (shared
     libraries, Ray's object store) are counted once per process, so this is
     an upper bound on the machine memory the run needs;
   * peak **single-process RSS**: the largest RSS of any one descendant
     (the launcher's own peak is reported apart: it splits and checks the
     whole file), and the largest of the Ray workers (``ray::...``), which
     run the institutions' ClientApps in simulation. Ray runs one worker
     per CPU it is given (2), so a worker may serve more than one
     institution in turn: per institution, this is an upper bound.

   Also recorded: the time until the demo names its run directory (splitting
   and checking the file, before Flower starts), the CPU seconds of the
   whole tree and the machine's load average before and after, since wall
   time on a shared 2-core machine depends on what else runs there.

3. **Result.** The last round's line of the demo's output (cohort, loss,
   AUC-PR, recall, FN) and, when the run directory has it, the last round's
   full metrics from ``rounds.jsonl``; the distinct errors the institutions'
   ClientApps raised (from ``flower.log``: the demo's own message gives only
   the server's view); any descendant still running 10 s after the demo
   exited (named, then killed). A short report is printed and written as
   JSON (``--json``) next to the targets: wall time < 600 s and < 4 GiB per
   institution (checked against the peak single-process RSS).

Exit code: 0 if the run finished and met both targets, 2 if it finished but
missed a target, 1 if it failed (its output's last lines are in the JSON).

Usage::

    .venv/bin/python bench/bench_bank_scale.py                      # 1.7M rows, 5 rounds
    .venv/bin/python bench/bench_bank_scale.py --generate-only      # data and schema only
    .venv/bin/python bench/bench_bank_scale.py --rows 60000 --rounds 2   # smoke run
    .venv/bin/python bench/bench_bank_scale.py --set max-weight=1000000

The data is test and benchmark data: it comes from a seeded
``numpy.random.default_rng`` (not a security path).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraud.byo_schema import load_schema

REPORT_FORMAT = "fedfraud-bench-bank-scale/1"
"""Format marker of the JSON report."""

GENERATOR_VERSION = "bank-scale-synth/1"
"""Bumped whenever the same rows and seed would give a different file."""

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_WORK = Path("/tmp/fedfraud-bank-scale")
DEFAULT_JSON = PROJECT_DIR / "bench" / "results" / "bank_scale.json"
SCHEMA_NAME = "bank_transactions.toml"

TARGET_WALL_SECONDS = 600.0
TARGET_INSTITUTION_GIB = 4.0
SAMPLE_SECONDS = 0.5
GIB = 1024.0**3
CHUNK_ROWS = 250_000

# The file's columns and their roles: one place, from which both the CSV and
# the schema TOML are written.
ID_COLUMN = "transaction_id"
SPLIT_COLUMN = "issuer"
LABEL = "is_fraud"
NUMERIC = (
    "amount",
    "hour",
    "distance_km",
    "account_age_days",
    "tx_count_1h",
    "tx_count_24h",
    "amount_vs_avg_30d",
    "failed_auth_24h",
    "merchant_risk_score",
)
CHANNELS = ("atm", "contactless", "ecommerce", "pos")
MERCHANTS = (
    "cash",
    "digital_goods",
    "electronics",
    "fuel",
    "gambling",
    "grocery",
    "other_retail",
    "restaurants",
    "travel",
)
UNMAPPED_MERCHANT = "unmapped_mcc"
"""A merchant category the schema's vocabulary lacks (goes to ``merchant_category=__other__``)."""

# Per issuer: share of the rows, fraud rate, channel mix (CHANNELS order) and
# the mix of fraud typologies (card testing, account takeover, skimming,
# ordinary-looking fraud).
ISSUERS = ("Issuer North", "Issuer South", "Issuer West")
ISSUER_SHARE = np.array([0.36, 0.33, 0.31])
FRAUD_RATE = np.array([0.007, 0.04, 0.08])
CHANNEL_MIX = np.array(
    [
        [0.08, 0.30, 0.22, 0.40],
        [0.07, 0.25, 0.38, 0.30],
        [0.15, 0.20, 0.20, 0.45],
    ]
)
TYPOLOGIES = ("card_testing", "account_takeover", "skimming", "ordinary")
TYPOLOGY_MIX = np.array(
    [
        [0.15, 0.55, 0.10, 0.20],
        [0.50, 0.15, 0.15, 0.20],
        [0.15, 0.10, 0.55, 0.20],
    ]
)
# Legitimate card-present and online merchant mix (MERCHANTS order, "cash" only at ATMs).
MERCHANT_MIX = np.array([0.0, 0.10, 0.07, 0.12, 0.04, 0.25, 0.20, 0.15, 0.07])
MERCHANT_AMOUNT_FACTOR = np.array([3.0, 0.5, 4.0, 1.5, 1.5, 1.0, 1.2, 0.9, 6.0])
DIURNAL = np.array(
    [1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 3.5, 4.0, 4.5, 5.0]
    + [5.5, 5.0, 4.5, 4.5, 5.0, 5.5, 6.0, 5.5, 4.5, 3.5, 2.5, 1.6]
)
NIGHT = np.array([5, 5, 5, 4, 3, 2] + [0.3] * 12 + [1, 1.5, 2, 3, 4, 5], dtype=np.float64)


# ---------------------------------------------------------------------------
# 1. Data
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """The generated CSV, its schema and how it was made."""

    csv: Path
    schema: Path
    rows: int
    bytes: int
    seconds: float
    cached: bool


def _pick(
    rng: np.random.Generator, probs: npt.NDArray[np.float64], group: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Draw one category per row from the probability row ``probs[group[i]]`` (vectorised)."""
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)[group]
    u = rng.random(len(group))[:, None]
    picked: npt.NDArray[np.int64] = np.minimum((u > cumulative).sum(axis=1), probs.shape[1] - 1).astype(np.int64)
    return picked


def _hours(rng: np.random.Generator, weights: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.int64]:
    return rng.choice(24, size=n, p=weights / weights.sum()).astype(np.int64)


def _chunk(rng: np.random.Generator, first_id: int, n: int) -> pd.DataFrame:
    """Generate ``n`` transactions: legitimate traffic first, then each fraud typology overwritten."""
    issuer = _pick(rng, ISSUER_SHARE[None, :], np.zeros(n, dtype=np.int64))
    fraud = rng.random(n) < FRAUD_RATE[issuer]
    typology = np.where(fraud, _pick(rng, TYPOLOGY_MIX, issuer), -1)

    # Legitimate traffic, with the confounders real traffic has: night owls,
    # travel far from home, occasional big purchases, a mistyped PIN.
    channel = _pick(rng, CHANNEL_MIX, issuer)
    merchant = _pick(rng, MERCHANT_MIX[None, :], np.zeros(n, dtype=np.int64))
    merchant[channel == CHANNELS.index("atm")] = MERCHANTS.index("cash")
    amount = rng.lognormal(np.log(30.0), 0.9, n) * MERCHANT_AMOUNT_FACTOR[merchant]
    hour = _hours(rng, DIURNAL, n)
    account_age = np.minimum(rng.exponential(1500.0, n), 20_000.0) + 1.0
    distance = rng.lognormal(np.log(8.0), 1.0, n) * np.where(rng.random(n) < 0.03, 60.0, 1.0)
    count_1h = rng.poisson(0.4, n)
    count_24h = count_1h + rng.poisson(2.5, n)
    ratio = rng.lognormal(0.0, 0.6, n) * np.where(rng.random(n) < 0.01, 6.0, 1.0)
    failed_auth = rng.poisson(0.05, n)
    risky_merchant = np.isin(merchant, [MERCHANTS.index("gambling"), MERCHANTS.index("digital_goods")])
    risk = rng.beta(2.0, 8.0, n) + 0.15 * risky_merchant

    # Card testing: many small online attempts at risky merchants, failed authorisations.
    m = typology == 0
    k = int(m.sum())
    channel[m] = CHANNELS.index("ecommerce")
    merchant[m] = rng.choice(
        [MERCHANTS.index("digital_goods"), MERCHANTS.index("other_retail"), MERCHANTS.index("gambling")],
        size=k,
        p=[0.6, 0.2, 0.2],
    )
    amount[m] = rng.lognormal(np.log(4.0), 0.6, k)
    count_1h[m] = 2 + rng.poisson(5.0, k)
    count_24h[m] = count_1h[m] + rng.poisson(10.0, k)
    ratio[m] = rng.lognormal(-1.5, 0.5, k)
    failed_auth[m] = rng.poisson(1.5, k)
    risk[m] = rng.beta(5.0, 4.0, k)

    # Account takeover: large online spends at night, far above the customer's mean.
    m = typology == 1
    k = int(m.sum())
    channel[m] = np.where(rng.random(k) < 0.8, CHANNELS.index("ecommerce"), CHANNELS.index("contactless"))
    merchant[m] = rng.choice(
        [MERCHANTS.index("electronics"), MERCHANTS.index("travel"), MERCHANTS.index("gambling")],
        size=k,
        p=[0.5, 0.3, 0.2],
    )
    ratio[m] = rng.lognormal(np.log(8.0), 0.7, k)
    amount[m] = rng.lognormal(np.log(30.0), 0.6, k) * ratio[m]
    hour[m] = _hours(rng, NIGHT, k)
    distance[m] = rng.lognormal(np.log(300.0), 1.0, k)
    failed_auth[m] = rng.poisson(0.8, k)

    # Skimming: cloned cards cashed out far from home, at ATMs and terminals, in the evening.
    m = typology == 2
    k = int(m.sum())
    atm = rng.random(k) < 0.5
    channel[m] = np.where(atm, CHANNELS.index("atm"), CHANNELS.index("pos"))
    merchant[m] = np.where(atm, MERCHANTS.index("cash"), MERCHANTS.index("electronics"))
    amount[m] = np.where(atm, 20.0 * rng.integers(10, 50, k), rng.lognormal(np.log(250.0), 0.7, k))
    distance[m] = rng.lognormal(np.log(600.0), 0.8, k)
    hour[m] = _hours(rng, np.roll(NIGHT, -3), k)
    count_24h[m] = count_1h[m] + rng.poisson(6.0, k)
    account_age[m] = np.minimum(rng.exponential(3000.0, k), 20_000.0) + 1.0

    # Ordinary-looking fraud: barely shifted from legitimate traffic.
    m = typology == 3
    amount[m] *= 1.5
    risk[m] += 0.1

    # Missing values, as a feature store leaves them: no distance for most
    # online transactions, no 30-day average for accounts younger than 30
    # days, occasional gaps elsewhere.
    online = channel == CHANNELS.index("ecommerce")
    distance[(online & (rng.random(n) < 0.7)) | (rng.random(n) < 0.03)] = np.nan
    account_age[rng.random(n) < 0.015] = np.nan
    ratio[~(account_age >= 30)] = np.nan
    risk[rng.random(n) < 0.02] = np.nan
    merchant_codes = merchant.copy()
    merchant_codes[rng.random(n) < 0.004] = -1  # missing
    merchant_codes[rng.random(n) < 0.003] = len(MERCHANTS)  # outside the schema's vocabulary

    return pd.DataFrame(
        {
            ID_COLUMN: np.arange(first_id, first_id + n, dtype=np.int64),
            SPLIT_COLUMN: pd.Categorical.from_codes(issuer, categories=list(ISSUERS)),
            "amount": np.round(amount, 2),
            "hour": hour,
            "distance_km": np.round(distance, 1),
            "account_age_days": pd.array(np.floor(account_age), dtype="Int64"),
            "tx_count_1h": count_1h,
            "tx_count_24h": count_24h,
            "amount_vs_avg_30d": np.round(ratio, 3),
            "failed_auth_24h": failed_auth,
            "merchant_risk_score": np.round(np.minimum(risk, 1.0), 3),
            "channel": pd.Categorical.from_codes(channel, categories=list(CHANNELS)),
            "merchant_category": pd.Categorical.from_codes(
                merchant_codes, categories=[*MERCHANTS, UNMAPPED_MERCHANT]
            ),
            LABEL: fraud.astype(np.int8),
        }
    )


def schema_toml() -> str:
    """The schema of the generated file, in the format of ``fraud/schemas/insurance_claims.toml``."""

    def array(values: Sequence[str]) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    return (
        "# Schema of the synthetic bank-scale card-transaction file written by\n"
        "# bench/bench_bank_scale.py, split into issuers by the issuer column.\n"
        'format = "fedfraud-byo-schema/1"\n'
        f'label = "{LABEL}"\n'
        "positive_label = 1\n\n"
        f'id_columns = ["{ID_COLUMN}"]\n\n'
        "# The column the benchmark splits institutions on (constant within one).\n"
        f'drop_columns = ["{SPLIT_COLUMN}"]\n\n'
        f"numeric = {array(NUMERIC)}\n\n"
        "# Vocabularies are agreed here, never computed from data; the file also holds\n"
        f"# {UNMAPPED_MERCHANT!r}, which is not listed (it goes to merchant_category=__other__).\n"
        "[categorical]\n"
        f"channel = {array(CHANNELS)}\n"
        f"merchant_category = {array(MERCHANTS)}\n"
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def ensure_dataset(work: Path, rows: int, seed: int) -> Dataset:
    """Generate the CSV (one per row count) and its schema under ``work`` unless a matching copy is there.

    The CSV is written in chunks of ``CHUNK_ROWS`` rows to a temporary name
    and renamed when complete; the manifest, written last, records rows, seed
    and generator version, and the file size it expects.
    """
    work.mkdir(parents=True, exist_ok=True)
    # One file per size, so a smoke run does not evict the full-size file.
    csv_path, schema_path = work / f"bank_transactions_{rows}.csv", work / SCHEMA_NAME
    manifest_path = csv_path.with_suffix(".manifest.json")
    schema_text = schema_toml()
    wanted: dict[str, object] = {"generator": GENERATOR_VERSION, "rows": rows, "seed": seed, "schema": schema_text}
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if (
            {key: manifest.get(key) for key in wanted} == wanted
            and csv_path.stat().st_size == manifest["bytes"]
            and schema_path.read_text(encoding="utf-8") == schema_text
        ):
            return Dataset(csv_path, schema_path, rows, manifest["bytes"], manifest["seconds"], cached=True)
    except (OSError, ValueError, KeyError):
        pass  # absent or stale: generate

    manifest_path.unlink(missing_ok=True)
    start = time.perf_counter()
    _write_atomic(schema_path, schema_text)
    schema = load_schema(schema_path)  # fail here, not inside the demo, if the schema is wrong
    rng = np.random.default_rng(seed)
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        for first in range(0, rows, CHUNK_ROWS):
            frame = _chunk(rng, 1_000_000_000 + first, min(CHUNK_ROWS, rows - first))
            if first == 0 and set(frame.columns) != set(schema.columns):
                raise RuntimeError(f"generated columns {sorted(frame.columns)} differ from the schema's")
            frame.to_csv(handle, index=False, header=first == 0, lineterminator="\n")
    os.replace(tmp, csv_path)
    seconds = time.perf_counter() - start
    size = csv_path.stat().st_size
    _write_atomic(manifest_path, json.dumps({**wanted, "bytes": size, "seconds": seconds}, indent=1) + "\n")
    return Dataset(csv_path, schema_path, rows, size, seconds, cached=False)


# ---------------------------------------------------------------------------
# 2. Federation, with the process tree's memory sampled
# ---------------------------------------------------------------------------


def _psutil() -> ModuleType:
    """Import psutil; fall back to the copy Ray vendors (the project pins Ray, not psutil)."""
    try:
        import psutil
    except ImportError:
        spec = importlib.util.find_spec("ray")
        locations = list(spec.submodule_search_locations or []) if spec else []
        vendored = [Path(p) / "thirdparty_files" for p in locations]
        vendored = [folder for folder in vendored if (folder / "psutil").is_dir()]
        if not vendored:
            raise SystemExit("bench_bank_scale: psutil is needed (pip install psutil)") from None
        sys.path.append(str(vendored[0]))  # last, so nothing else of Ray's copies shadows an installed package
        import psutil
    module: ModuleType = psutil
    return module


def _label(cmdline: Sequence[str]) -> str:
    """A short name for a process: its program (script) and arguments, without interpreter and folders."""
    # setproctitle (Ray) pads the title with spaces.
    args = [arg.strip() for arg in cmdline if arg.strip()]
    if args and Path(args[0]).name.startswith("python"):
        args = args[1:]
        while args and args[0].startswith("-") and len(args) > 1:
            args = args[1:]  # interpreter options such as -u
    if not args:
        return ""
    return " ".join([Path(args[0]).name, *args[1:]])[:100]


def _is_ray_worker(label: str) -> bool:
    return label.startswith(("ray::", "default_worker.py"))


@dataclass
class MemoryPeaks:
    """Peaks seen by :class:`TreeSampler` (bytes)."""

    tree_rss: int = 0
    launcher_rss: int = 0
    samples: int = 0
    processes: dict[int, tuple[str, int]] = field(default_factory=dict)
    """Per descendant pid: a short command line and its peak RSS."""
    cpu: dict[int, float] = field(default_factory=dict)
    """Per process (launcher included): user + system CPU seconds, as last seen."""

    @property
    def cpu_seconds(self) -> float:
        """CPU time of the tree (a process's last 0.5 s before it ended may be missed).

        Unlike wall time, it hardly depends on what else the machine runs.
        """
        return sum(self.cpu.values())

    def top(self, count: int = 12) -> list[dict[str, Any]]:
        """The descendants with the largest peak RSS."""
        ranked = sorted(self.processes.items(), key=lambda item: item[1][1], reverse=True)[:count]
        return [{"pid": pid, "command": name, "peak_rss_gib": rss / GIB} for pid, (name, rss) in ranked]

    @property
    def single_rss(self) -> int:
        """Largest peak RSS of one descendant of the launcher."""
        return max((rss for _, rss in self.processes.values()), default=0)

    @property
    def ray_worker_rss(self) -> int:
        """Largest peak RSS of one Ray worker (``ray::...``: the institutions' ClientApps in simulation)."""
        return max((rss for name, rss in self.processes.values() if _is_ray_worker(name)), default=0)


class TreeSampler(threading.Thread):
    """Sample the RSS of a process and all its descendants every ``SAMPLE_SECONDS``."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.psutil = _psutil()
        self.root = self.psutil.Process(pid)
        self.peaks = MemoryPeaks()
        self.known: dict[int, Any] = {}
        self.stop = threading.Event()

    def descendants(self) -> list[Any]:
        """The launcher's living descendants (cached Process objects, so pid reuse is detected)."""
        try:
            children = self.root.children(recursive=True)
        except self.psutil.Error:
            return []
        alive = []
        for child in children:
            alive.append(self.known.setdefault(child.pid, child))
        return alive

    def sample(self) -> None:
        """Take one sample and update the peaks."""
        total = 0
        for index, process in enumerate([self.root, *self.descendants()]):
            try:
                rss = int(process.memory_info().rss)
                times = process.cpu_times()
            except self.psutil.Error:
                continue  # ended between listing and reading
            total += rss
            self.peaks.cpu[process.pid] = float(times.user + times.system)
            if index == 0:
                self.peaks.launcher_rss = max(self.peaks.launcher_rss, rss)
                continue
            name, peak = self.peaks.processes.get(process.pid, ("?", 0))
            try:
                # Read every time: a Ray worker renames itself (ray::...) once it runs an actor.
                name = _label(process.cmdline()) or process.name()
            except self.psutil.Error:
                pass
            self.peaks.processes[process.pid] = (name, max(peak, rss))
        self.peaks.tree_rss = max(self.peaks.tree_rss, total)
        self.peaks.samples += 1

    def run(self) -> None:
        """Sample until :attr:`stop` is set."""
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(SAMPLE_SECONDS)

    def leftovers(self, grace: float) -> list[str]:
        """Wait up to ``grace`` seconds for every descendant ever seen to end; SIGKILL and name the rest.

        Only processes this benchmark started are touched: the launcher's
        descendants, remembered even after the launcher is gone and they were
        re-parented (psutil refuses a pid that was reused since).
        """
        self.descendants()
        living = [p for p in self.known.values() if p.is_running()]
        _, alive = self.psutil.wait_procs(living, timeout=grace)
        names: list[str] = []
        for process in alive:
            names.append(self.peaks.processes.get(process.pid, ("?", 0))[0])
            try:
                process.kill()
            except self.psutil.Error:
                pass
        return names


ROUND_LINE = re.compile(
    r"^round\s+(?P<round>\d+)/(?P<total>\d+)\s+cohort (?P<cohort>\d+)\s+loss (?P<loss>\S+)\s+"
    r"AUC-PR (?P<auc_pr>\S+)\s+recall (?P<recall>\S+)\s+FN (?P<false_negatives>\S+)\s+\((?P<seconds>[\d.]+)s\)"
)
RUN_DIR_LINE = re.compile(r"^run directory: (?P<path>\S.*)$")


def _number(text: str) -> int | float | None:
    try:
        return int(text) if text.isdigit() else float(text)
    except ValueError:
        return None  # "n/a"


def parse_round_line(line: str) -> dict[str, Any] | None:
    """Parse a round line of the demo's output (``None`` if ``line`` is not one)."""
    match = ROUND_LINE.match(line.strip())
    if not match:
        return None
    parsed: dict[str, Any] = {"line": line.strip()}
    parsed.update({key: _number(value) for key, value in match.groupdict().items()})
    return parsed


@dataclass
class RunResult:
    """What one ``fedfraud demo`` run gave."""

    command: list[str]
    exit_code: int
    wall_seconds: float
    timed_out: bool
    peaks: MemoryPeaks
    last_round: dict[str, Any] | None
    run_dir: Path | None
    tail: list[str]
    preflight_seconds: float | None
    """Until the demo named its run directory: splitting and checking the file, preparing the sites."""
    load_before: float
    load_after: float
    """The machine's 1-minute load average before and after (wall time depends on it; CPU time less)."""
    leftovers: list[str]
    """Descendants still running 10 s after the demo exited (then killed)."""


def fedfraud_executable() -> str:
    """The ``fedfraud`` entry point next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "fedfraud"
    found = str(beside) if beside.exists() else shutil.which("fedfraud")
    if not found:
        raise SystemExit("bench_bank_scale: no fedfraud executable next to the interpreter or on PATH")
    return found


def run_demo(data: Dataset, work: Path, rounds: int, overrides: Sequence[str], timeout: float) -> RunResult:
    """Run the demo on ``data`` as a subprocess, streaming its output and sampling its memory."""
    command = [
        fedfraud_executable(),
        "demo",
        "--byo-csv",
        str(data.csv),
        "--split-by",
        SPLIT_COLUMN,
        "--schema",
        str(data.schema),
        "--rounds",
        str(rounds),
        # The demo puts bring-your-own splits in <data-dir>/../byo-<csv stem>.
        "--data-dir",
        str(work / "data" / "demo"),
        "--runs-dir",
        str(work / "runs"),
        "--parties-dir",
        str(work / "parties"),
        # The federation is measured here; the reference models (local-only,
        # pooled, GBT on 1.2M rows) are another workload.
        "--no-compare",
        *(item for pair in overrides for item in ("--set", pair)),
    ]
    print("$ " + " ".join(command), flush=True)
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        command,
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    sampler = TreeSampler(process.pid)
    sampler.start()
    timed_out = threading.Event()

    def stop_launcher() -> None:
        # SIGINT lets the demo's finally blocks stop the SuperLink; SIGKILL if it does not end.
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

    def on_timeout() -> None:
        timed_out.set()
        stop_launcher()

    timer = threading.Timer(timeout, on_timeout)
    timer.start()
    last_round: dict[str, Any] | None = None
    run_dir: Path | None = None
    preflight: float | None = None
    tail: list[str] = []
    if process.stdout is None:
        raise RuntimeError("no pipe to the demo's output")
    try:
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            print(line, flush=True)
            tail = [*tail[-39:], line]
            last_round = parse_round_line(line) or last_round
            if found := RUN_DIR_LINE.match(line.strip()):
                run_dir = Path(found["path"].strip())
                preflight = time.perf_counter() - start
        exit_code = process.wait()
    finally:
        wall = time.perf_counter() - start
        timer.cancel()
        stop_launcher()  # only if this benchmark was interrupted
        sampler.stop.set()
        sampler.join()
        # Nothing of the run should outlive it: a stray Ray process would hold
        # memory and CPU into the next run. Name what is left, then end it.
        leftovers = sampler.leftovers(grace=10.0)
    return RunResult(
        command,
        exit_code,
        wall,
        timed_out.is_set(),
        sampler.peaks,
        last_round,
        run_dir,
        tail,
        preflight,
        load_before,
        os.getloadavg()[0],
        leftovers,
    )


CLIENT_ERROR = re.compile(r"Exception ClientAppException occurred\. Message: (?P<message>.+)$")


def client_errors(run_dir: Path | None, limit: int = 10) -> list[str]:
    """The distinct errors the institutions' ClientApps raised, from the run's ``flower.log``.

    The demo's own error names the server's view ("the secure statistics
    round failed"); the institution's reason is only in Flower's log.
    """
    if run_dir is None:
        return []
    try:
        text = (run_dir / "flower.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        match = CLIENT_ERROR.search(line)
        if match and match["message"].strip() not in found:
            found.append(match["message"].strip())
    return found[:limit]


def last_round_record(run_dir: Path | None) -> dict[str, Any] | None:
    """The last line of ``rounds.jsonl`` in the run directory, if there is one."""
    if run_dir is None:
        return None
    try:
        lines = [line for line in (run_dir / "rounds.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------
# 3. Report
# ---------------------------------------------------------------------------


def build_report(data: Dataset, rounds: int, overrides: Sequence[str], run: RunResult | None) -> dict[str, Any]:
    """The JSON report (``run`` is ``None`` for ``--generate-only``)."""
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "rows": data.rows,
        "rounds": rounds,
        "data": {
            "csv": str(data.csv),
            "schema": str(data.schema),
            "bytes": data.bytes,
            "generation_seconds": round(data.seconds, 2),
            "cached": data.cached,
            "generator": GENERATOR_VERSION,
        },
        "overrides": list(overrides),
        "targets": {"wall_seconds_below": TARGET_WALL_SECONDS, "institution_rss_gib_below": TARGET_INSTITUTION_GIB},
    }
    if run is None:
        return report
    record = last_round_record(run.run_dir)
    completed = run.exit_code == 0 and not run.timed_out
    report.update(
        {
            "command": run.command,
            "exit_code": run.exit_code,
            "timed_out": run.timed_out,
            "wall_seconds": round(run.wall_seconds, 1),
            "preflight_seconds": None if run.preflight_seconds is None else round(run.preflight_seconds, 1),
            "cpu_seconds": round(run.peaks.cpu_seconds, 1),
            "load_average_1min": {"start": round(run.load_before, 2), "end": round(run.load_after, 2)},
            "peak_tree_rss_gib": round(run.peaks.tree_rss / GIB, 3),
            "peak_single_process_rss_gib": round(run.peaks.single_rss / GIB, 3),
            "peak_ray_worker_rss_gib": round(run.peaks.ray_worker_rss / GIB, 3),
            "peak_launcher_rss_gib": round(run.peaks.launcher_rss / GIB, 3),
            "rss_samples": run.peaks.samples,
            "ray_workers": sum(_is_ray_worker(name) for name, _ in run.peaks.processes.values()),
            "top_processes": [
                {**row, "peak_rss_gib": round(row["peak_rss_gib"], 3)} for row in run.peaks.top()
            ],
            "leftover_processes": run.leftovers,
            "run_dir": str(run.run_dir) if run.run_dir else None,
            "last_round": run.last_round,
            "last_round_metrics": record.get("metrics") if record else None,
            "client_errors": client_errors(run.run_dir),
            "met": {
                "wall_seconds": completed and run.wall_seconds < TARGET_WALL_SECONDS,
                "institution_rss": completed and run.peaks.single_rss / GIB < TARGET_INSTITUTION_GIB,
            },
            "output_tail": [] if completed else run.tail,
        }
    )
    return report


def print_report(report: dict[str, Any]) -> None:
    """Print the short human-readable summary of ``report``."""
    data = report["data"]
    print("\n== bank-scale bring-your-own benchmark ==")
    print(
        f"data      {report['rows']:,} rows, {data['bytes'] / 2**20:.1f} MiB, "
        + ("cached" if data["cached"] else f"generated in {data['generation_seconds']:.1f} s")
        + f"  ({data['csv']})"
    )
    if "exit_code" not in report:
        return

    finished = report["exit_code"] == 0 and not report["timed_out"]

    def verdict(ok: bool) -> str:
        return ("met" if ok else "MISSED") if finished else "n/a, the run failed"

    print(f"run       exit code {report['exit_code']}" + ("  (timed out)" if report["timed_out"] else ""))
    preflight = report["preflight_seconds"]
    print(
        f"wall      {report['wall_seconds']:.1f} s for {report['rounds']} rounds"
        f"  (target < {TARGET_WALL_SECONDS:.0f} s: {verdict(report['met']['wall_seconds'])})"
        + ("" if preflight is None else f"; {preflight:.1f} s of it before Flower started (split, checks, sites)")
    )
    load = report["load_average_1min"]
    print(
        f"cpu       {report['cpu_seconds']:.1f} s over all processes; machine load average"
        f" {load['start']:.1f} before, {load['end']:.1f} after ({os.cpu_count()} CPUs)"
    )
    print(f"tree RSS  peak {report['peak_tree_rss_gib']:.2f} GiB (sum over launcher and descendants)")
    print(
        f"process   peak {report['peak_single_process_rss_gib']:.2f} GiB in one descendant"
        f"  (target < {TARGET_INSTITUTION_GIB:.0f} GiB per institution: {verdict(report['met']['institution_rss'])});"
        f" launcher {report['peak_launcher_rss_gib']:.2f} GiB, largest Ray worker"
        f" {report['peak_ray_worker_rss_gib']:.2f} GiB"
    )
    for row in report["top_processes"][:4]:
        print(f"          {row['peak_rss_gib']:6.2f} GiB  pid {row['pid']}  {row['command'][:70]}")
    if report["leftover_processes"]:
        print(f"leftover  {len(report['leftover_processes'])} process(es) still running after the demo exited (killed)")
    last = report["last_round"]
    print("last      " + (last["line"] if last else "(no round line in the output)"))
    for message in report["client_errors"][:3]:
        print(f"client    {message[:150]}")
    metrics = report["last_round_metrics"]
    if metrics:
        shown = {k: metrics[k] for k in ("auc_pr", "auc_roc", "precision", "recall", "f1") if k in metrics}
        print("metrics   " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items() if isinstance(v, int | float)))


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the data, run the federation, report."""
    parser = argparse.ArgumentParser(
        description="Bank-scale bring-your-own-data benchmark: generate a card-transaction CSV for "
        "three issuers and run `fedfraud demo --byo-csv ... --split-by issuer` on it, "
        "measuring wall time and the process tree's peak memory.",
        epilog="Exit code: 0 finished and met both targets (< 600 s, < 4 GiB per institution), "
        "2 finished but missed a target, 1 the run failed.",
    )
    parser.add_argument("--rows", type=int, default=1_700_000, help="transactions in the file (default: 1,700,000)")
    parser.add_argument("--rounds", type=int, default=5, help="federated rounds (default: 5)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the data generator (default: 7)")
    parser.add_argument(
        "--work", type=Path, default=DEFAULT_WORK, help=f"cache and run folder (default: {DEFAULT_WORK})"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help="where to write the JSON report (default: bench/results/bank_scale.json)",
    )
    parser.add_argument("--generate-only", action="store_true", help="write the CSV and schema, then stop")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run-config override handed to `fedfraud demo --set` (repeatable)",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="stop the run after this many seconds (default: 3600)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.rounds < 1 or args.timeout <= 0:
        parser.error("--rows must be >= 1000, --rounds >= 1 and --timeout > 0")

    work = args.work.resolve()
    print(f"data: {args.rows:,} rows under {work} ...", flush=True)
    data = ensure_dataset(work, args.rows, args.seed)
    run = None if args.generate_only else run_demo(data, work, args.rounds, args.overrides, args.timeout)
    report = build_report(data, args.rounds, args.overrides, run)
    print_report(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"report    {args.json}")
    if run is None:
        return 0
    if run.exit_code != 0 or run.timed_out:
        return 1
    return 0 if all(report["met"].values()) else 2


if __name__ == "__main__":
    sys.exit(main())
