"""Benchmark: one SecAgg+ aggregation round, Flower's stock protocol vs fedfraud's hardened one.

What is measured
----------------
1. **One full aggregation round** (wall time of the fit workflow call, from
   ``configure_fit`` to ``aggregate_fit``) for ``n`` institutions (default
   3, 10, 50), each contributing a fixed update of 100,000 float32 parameters
   in [-1, 1] with 1,000 examples:

   * *stock*: ``flwr.server.workflow.SecAggPlusWorkflow`` with the client mod
     ``flwr.client.mod.secaggplus_mod`` (4 stages);
   * *hardened*: ``server.secagg_workflow.HardenedSecAggWorkflow`` with the
     client mod ``client.secagg_mod.hardened_secagg_mod`` (5 stages, real
     institution sites: policy, Ed25519 keys, pinned partner keys, round
     ledger written to disk with fsync: put ``--workdir`` on the kind of disk
     the institutions would use; the default is a temporary folder).

   Both use the same ClientApp client (a ``NumPyClient`` returning the fixed
   update, no training), the same FedAvg strategy (all ``n`` sampled,
   ``server-round`` in the FitIns config) and the same SecAgg+ parameters
   (the project's run config: num-shares 3, reconstruction-threshold 2,
   clipping-range 8, quantization-range 2**24, modulus-range 2**32,
   max-weight 100000; checked with ``SecAggSettings.validate_for(n)``).

   Messages go through :class:`_inprocess_grid.InProcessGrid`, a Flower
   ``Grid`` that calls each node's ClientApp directly (one ``Context`` per
   node for the run). It stands in for Flower's transport, so neither gRPC,
   serialization, Ray nor network time is in the numbers: they are the cost
   of the protocols' computation (both sides, run one after another in one
   process) plus a deep copy of every message each way (the copy time is
   reported separately; it is small and similar for both).

   Every round's aggregate is checked against the plain mean of the updates:
   the largest absolute error must be within
   ``secagg.params.aggregation_error_bound`` (else the script fails).
   Reported with it: bytes uploaded per parameter in the masked-vector reply
   (stock: total length of its list of ``.npy`` byte strings; hardened:
   length of its packed uint32 vector; each divided by the parameter count)
   and the approximate payload bytes each institution sends and receives in
   the round (record contents, no protobuf framing).

2. **Mask generation for 1M parameters**: Flower's
   ``secaggplus_utils.pseudo_rand_gen(seed, 2**32, [(1_000_000,)])`` (numpy
   Mersenne Twister seeded with 32 bits) vs ``secagg.masks.mask_stream(key,
   1_000_000, 2**32)`` (AES-256-CTR keystream), a fresh 32-byte seed/key per
   call (generated outside the timed region).

How
---
Each (size, protocol) gets one untimed warm-up round, then the two protocols
alternate (stock first on even repeats, hardened first on odd ones) so that
slow drift of a shared machine hits both alike; every round is a new run
(fresh run id and contexts, as the hardened ledger accepts each run/round
once; a new global model per round). Mask generation alternates the same
way. The table reports **medians** over the repeats and the **ratio
hardened / stock of the medians, measured in the same run** of this script.
The machine is shared and noisy: compare ratios from one run, not absolute
times across runs.

Usage::

    .venv/bin/python bench/bench_hardened_secagg.py --sizes 3,10,50 --repeats 5 \\
        [--repeats-for 50:3] [--json bench-hardened.json]

Progress goes to stderr; the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.common.secure_aggregation.secaggplus_constants import Key as StockKey
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _inprocess_grid import Delivery, InProcessGrid  # noqa: E402

from client.secagg_mod import hardened_secagg_mod  # noqa: E402
from fedfraud.simulation import default_run_config, project_dir  # noqa: E402
from fedfraud.sites import prepare_demo_sites  # noqa: E402
from fraud.generator_files import ensure_federation_data  # noqa: E402
from federation.settings import secagg_settings
from secagg.masks import mask_stream  # noqa: E402
from secagg.params import SecAggSettings, aggregation_error_bound  # noqa: E402
from secagg.protocol import RECORD as HARDENED_RECORD  # noqa: E402
from secagg.protocol import Field  # noqa: E402
from server.secagg_workflow import HardenedSecAggWorkflow  # noqa: E402

STOCK, HARDENED = "stock", "hardened"
MODES = (STOCK, HARDENED)
NUM_EXAMPLES = 1000
NODE_BASE = 7001
DATA_SEED = 3
MODULUS = 2**32


def progress(text: str) -> None:
    """One progress line on stderr."""
    print(f"[bench-hardened-secagg {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- the institutions' ClientApps ------------------------------------------------------


class FixedUpdateClient(NumPyClient):
    """Returns the same update every time (no training: the protocols are timed)."""

    def __init__(self, update: npt.NDArray[np.float32]) -> None:
        self.update = update

    def get_parameters(self, config: dict[str, Any]) -> list[npt.NDArray[np.float32]]:
        return [self.update]

    def fit(
        self, parameters: list[npt.NDArray[Any]], config: dict[str, Any]
    ) -> tuple[list[npt.NDArray[np.float32]], int, dict[str, Any]]:
        return [self.update], NUM_EXAMPLES, {}


def make_updates(n: int, size: int) -> list[npt.NDArray[np.float32]]:
    """Institution ``i``'s fixed update: ``size`` float32 values in [-1, 1], seeded by ``i``."""
    return [
        np.random.default_rng(10_000 + i).uniform(-1.0, 1.0, size).astype(np.float32)
        for i in range(n)
    ]


def make_apps(updates: Sequence[npt.NDArray[np.float32]]) -> dict[str, ClientApp]:
    """The same client behind each protocol's mod."""

    def client_fn(context: Context) -> Any:
        partition = int(context.node_config["partition-id"])
        return FixedUpdateClient(updates[partition]).to_client()

    return {
        STOCK: ClientApp(client_fn=client_fn, mods=[secaggplus_mod]),
        HARDENED: ClientApp(client_fn=client_fn, mods=[hardened_secagg_mod]),
    }


# -- the server side -------------------------------------------------------------------


class RoundFedAvg(FedAvg):
    """FedAvg that puts the round into the FitIns config (the hardened mod checks it)."""

    aggregated = False
    #: More FitIns config for every institution (e.g. ckks mode's model id).
    extra_config: dict[str, Any] = {}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        pairs = super().configure_fit(server_round, parameters, client_manager)
        return [
            (
                proxy,
                FitIns(
                    fitins.parameters,
                    {**fitins.config, "server-round": server_round, **self.extra_config},
                ),
            )
            for proxy, fitins in pairs
        ]

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        out = super().aggregate_fit(server_round, results, failures)
        self.aggregated = out[0] is not None
        return out


def stock_workflow(settings: SecAggSettings) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ workflow with the run's parameters."""
    return SecAggPlusWorkflow(
        num_shares=settings.num_shares,
        reconstruction_threshold=settings.reconstruction_threshold,
        max_weight=settings.max_weight,
        clipping_range=settings.clipping_range,
        quantization_range=settings.quantization_range,
        modulus_range=settings.modulus_range,
        timeout=settings.timeout,
    )


# -- one federation of n institutions --------------------------------------------------


@dataclass
class Federation:
    """Sites, run config, clients and workflows for one cohort size."""

    n: int
    names: list[str]
    run_config: dict[str, Any]
    settings: SecAggSettings
    updates: list[npt.NDArray[np.float32]]
    apps: dict[str, ClientApp]
    workflows: dict[str, Callable[..., None]]
    plain_mean: npt.NDArray[np.float64]
    error_bound: float


def institution_names(n: int) -> list[str]:
    """``bank-01`` .. ``bank-NN`` (policies are rendered from the bank-a template)."""
    width = max(2, len(str(n)))
    return [f"bank-{i:0{width}d}" for i in range(1, n + 1)]


def make_federation(root: Path, n: int, rows: int, params: int) -> Federation:
    """Real data and institution sites for ``n`` banks; validated SecAgg+ settings."""
    names = institution_names(n)
    base = root / f"n{n}"
    ensure_federation_data(base / "data", names, rows, DATA_SEED)
    sites = prepare_demo_sites(base / "demo", names, project_dir() / "policies")
    config = default_run_config()
    config.update(
        {
            "institutions": ",".join(names),
            "data-dir": str(base / "data"),
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(base / "run"),
            "run-name": f"bench-hardened-{n}",
            # A fixed bound: the bench has no statistics round to make it auto.
            "max-weight": 100000.0,
        }
    )
    settings = secagg_settings(config, n)
    settings.validate_for(n)  # raises ConfigError naming the problem
    updates = make_updates(n, params)
    workflows: dict[str, Callable[..., None]] = {
        STOCK: stock_workflow(settings),
        HARDENED: HardenedSecAggWorkflow(settings, str(config["federation-id"])),
    }
    return Federation(
        n=n,
        names=names,
        run_config=config,
        settings=settings,
        updates=updates,
        apps=make_apps(updates),
        workflows=workflows,
        plain_mean=np.mean(np.stack(updates).astype(np.float64), axis=0),
        error_bound=aggregation_error_bound([NUM_EXAMPLES] * n, settings),
    )


# -- byte counting ---------------------------------------------------------------------


def _value_bytes(value: Any) -> int:
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return 8  # int, float, bool


def payload_bytes(message: Message) -> int:
    """Approximate payload of a message: record contents, no protobuf framing."""
    if not message.has_content():
        return 0
    content = message.content
    total = 0
    for records in (content.config_records, content.metric_records):
        for record in records.values():
            total += sum(len(k) + _value_bytes(v) for k, v in record.items())
    for array_record in content.array_records.values():
        total += sum(len(k) + len(array.data) for k, array in array_record.items())
    return total


@dataclass
class Meter:
    """Counts what one round's institutions receive and send."""

    mode: str
    down: int = 0
    up: int = 0
    masked: list[int] = field(default_factory=list)

    def request(self, _: int, message: Message) -> None:
        self.down += payload_bytes(message)

    def reply(self, _: int, message: Message) -> None:
        self.up += payload_bytes(message)
        if not message.has_content():
            return
        if self.mode == STOCK:
            record = message.content.config_records.get(RECORD_KEY_CONFIGS)
            if record is not None and StockKey.MASKED_PARAMETERS in record:
                vectors: list[bytes] = record[StockKey.MASKED_PARAMETERS]  # type: ignore[assignment]
                self.masked.append(sum(len(b) for b in vectors))
        else:
            record = message.content.config_records.get(HARDENED_RECORD)
            if record is not None and Field.MASKED in record:
                self.masked.append(_value_bytes(record[Field.MASKED]))
            elif record is not None and Field.CKKS_BLOBS in record:
                self.masked.append(_value_bytes(record[Field.CKKS_BLOBS]))
            elif record is None and message.content.array_records:
                # A plain (unprotected) FitRes: the update itself.
                self.masked.append(payload_bytes(message))


# -- one round -------------------------------------------------------------------------


class RoundFailed(RuntimeError):
    """A round produced no aggregate; the message carries the clients' tracebacks."""


@dataclass
class RoundResult:
    seconds: float
    copy_seconds: float
    max_error: float
    masked_bytes_per_param: float
    up_bytes_per_client: float
    down_bytes_per_client: float


_run_ids = itertools.count(secrets.randbits(40) + 1)


def run_round(
    fed: Federation,
    mode: str,
    *,
    run_config: dict[str, Any] | None = None,
    wrap: Callable[[InProcessGrid], Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    model_of: Callable[[int], list[npt.NDArray[Any]]] | None = None,
) -> RoundResult:
    """One fresh run with one secure fit round; timed, checked, metered.

    ``run_config`` replaces the institutions' run config, ``wrap`` the Grid
    the workflow sees, ``extra_config`` adds FitIns config, and ``model_of``
    (given the run id) reads the aggregate where the server has none (ckks).
    """
    run_id = next(_run_ids)
    node_ids = [NODE_BASE + i for i in range(fed.n)]
    contexts = {
        node_id: Context(
            run_id=run_id,
            node_id=node_id,
            node_config={"partition-id": index},
            state=RecordDict(),
            run_config=dict(run_config or fed.run_config),
        )
        for index, node_id in enumerate(node_ids)
    }
    meter = Meter(mode)
    grid = InProcessGrid(
        apps={node_id: fed.apps[mode] for node_id in node_ids},
        contexts=contexts,
        run_id=run_id,
        on_request=meter.request,
        on_reply=meter.reply,
    )
    grid.activate()
    manager = SimpleClientManager()
    for node_id in node_ids:
        manager.register(GridClientProxy(node_id, grid, run_id))
    strategy = RoundFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=fed.n,
        min_evaluate_clients=fed.n,
        min_available_clients=fed.n,
        fit_metrics_aggregation_fn=lambda _: {},  # the fixed client reports no metrics
    )
    strategy.extra_config = dict(extra_config or {})
    server_context = Context(
        run_id=run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
        run_config=dict(fed.run_config),
    )
    legacy = LegacyContext(
        server_context, config=ServerConfig(num_rounds=1), strategy=strategy, client_manager=manager
    )
    # What Flower's DefaultWorkflow sets up before a fit round: the global
    # model and the round (a new model every round, as in training).
    model = np.random.default_rng(run_id % 2**32).uniform(-1, 1, fed.updates[0].size).astype(np.float32)
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([model]), keep_input=True
    )
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
        {WorkflowKey.CURRENT_ROUND: 1, WorkflowKey.START_TIME: time.time()}
    )
    workflow = fed.workflows[mode]
    start = time.perf_counter()
    workflow(wrap(grid) if wrap is not None else grid, legacy)
    seconds = time.perf_counter() - start
    if not strategy.aggregated:
        raise RoundFailed(_failure_report(mode, fed.n, grid.failures))
    if model_of is not None:
        aggregate = model_of(run_id)
    else:
        aggregate = parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        )
    flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in aggregate])
    if flat.shape != fed.plain_mean.shape:
        raise AssertionError(f"{mode} n={fed.n}: aggregate has {flat.size} values, expected {fed.plain_mean.size}")
    max_error = float(np.max(np.abs(flat - fed.plain_mean)))
    if not max_error <= fed.error_bound:
        raise AssertionError(
            f"{mode} n={fed.n}: aggregate differs from the plain mean by {max_error:.3g}, "
            f"above the quantization bound {fed.error_bound:.3g}"
        )
    if len(meter.masked) != fed.n:
        raise AssertionError(f"{mode} n={fed.n}: {len(meter.masked)} masked vectors seen, expected {fed.n}")
    return RoundResult(
        seconds=seconds,
        copy_seconds=grid.copy_seconds,
        max_error=max_error,
        masked_bytes_per_param=statistics.mean(meter.masked) / fed.plain_mean.size,
        up_bytes_per_client=meter.up / fed.n,
        down_bytes_per_client=meter.down / fed.n,
    )


def _failure_report(mode: str, n: int, failures: Sequence[Delivery]) -> str:
    if not failures:
        return f"{mode} n={n}: the round halted without a client exception (see the log above)"
    lines = [f"{mode} n={n}: the round halted; {len(failures)} ClientApp failure(s). First:"]
    first = failures[0]
    lines.append(f"node {first.node_id}, stage {first.stage_hint}: {first.reason}")
    lines.append(first.traceback)
    others = sorted({(f.stage_hint, f.reason[:200]) for f in failures[1:]})
    for stage, reason in others[:10]:
        lines.append(f"also at stage {stage}: {reason}")
    return "\n".join(lines)


# -- mask generation -------------------------------------------------------------------


def bench_masks(size: int, repeats: int) -> dict[str, Any]:
    """Median seconds of one mask of ``size`` words: stock PRG vs AES-CTR stream."""

    def stock() -> float:
        seed = os.urandom(32)
        start = time.perf_counter()
        pseudo_rand_gen(seed, MODULUS, [(size,)])
        return time.perf_counter() - start

    def ours() -> float:
        key = os.urandom(32)
        start = time.perf_counter()
        mask_stream(key, size, MODULUS)
        return time.perf_counter() - start

    stock(), ours()  # warm-up
    times: dict[str, list[float]] = {STOCK: [], HARDENED: []}
    for index in range(repeats):
        order = ((STOCK, stock), (HARDENED, ours))
        for name, fn in order if index % 2 == 0 else order[::-1]:
            times[name].append(fn())
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "params": size,
        "repeats": repeats,
        "stock_function": "flwr.common.secure_aggregation.secaggplus_utils.pseudo_rand_gen",
        "hardened_function": "secagg.masks.mask_stream",
        "stock_seconds": times[STOCK],
        "hardened_seconds": times[HARDENED],
        "stock_median": medians[STOCK],
        "hardened_median": medians[HARDENED],
        "ratio_hardened_over_stock": medians[HARDENED] / medians[STOCK],
    }


# -- the run ---------------------------------------------------------------------------


def bench_size(fed: Federation, repeats: int) -> dict[str, Any]:
    """Warm-up, then ``repeats`` interleaved rounds of each protocol."""
    for mode in MODES:
        warm = run_round(fed, mode)
        progress(f"n={fed.n} warm-up {mode}: {warm.seconds:.3f}s")
    results: dict[str, list[RoundResult]] = {STOCK: [], HARDENED: []}
    for index in range(repeats):
        order = MODES if index % 2 == 0 else MODES[::-1]
        for mode in order:
            results[mode].append(run_round(fed, mode))
        progress(
            f"n={fed.n} repeat {index + 1}/{repeats}: "
            + ", ".join(f"{m} {results[m][-1].seconds:.3f}s" for m in MODES)
        )
    entry: dict[str, Any] = {"n": fed.n, "repeats": repeats, "error_bound": fed.error_bound}
    for mode in MODES:
        rs = results[mode]
        entry[mode] = {
            "seconds": [r.seconds for r in rs],
            "median_seconds": statistics.median(r.seconds for r in rs),
            "median_copy_seconds": statistics.median(r.copy_seconds for r in rs),
            "max_error": max(r.max_error for r in rs),
            "masked_bytes_per_param": rs[-1].masked_bytes_per_param,
            "up_bytes_per_client": rs[-1].up_bytes_per_client,
            "down_bytes_per_client": rs[-1].down_bytes_per_client,
        }
    entry["ratio_hardened_over_stock"] = (
        entry[HARDENED]["median_seconds"] / entry[STOCK]["median_seconds"]
    )
    return entry


def markdown(report: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lines = [
        f"One aggregation round, {report['params']:,} float32 parameters per institution "
        f"(in-process grid, medians; ratio = hardened / stock in the same run)",
        "",
        "| n | repeats | stock median (s) | hardened median (s) | ratio | "
        "masked upload B/param stock | hardened | max err stock | max err hardened | bound |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in report["rounds"]:
        s, h = e[STOCK], e[HARDENED]
        lines.append(
            f"| {e['n']} | {e['repeats']} | {s['median_seconds']:.3f} | {h['median_seconds']:.3f} | "
            f"{e['ratio_hardened_over_stock']:.2f}x | {s['masked_bytes_per_param']:.3f} | "
            f"{h['masked_bytes_per_param']:.3f} | {s['max_error']:.2e} | {h['max_error']:.2e} | "
            f"{e['error_bound']:.2e} |"
        )
    lines += [
        "",
        "Per institution per round (approximate payload, all stages; median in-process copy time per round)",
        "",
        "| n | up KB stock | up KB hardened | down KB stock | down KB hardened | copy s stock | copy s hardened |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in report["rounds"]:
        s, h = e[STOCK], e[HARDENED]
        lines.append(
            f"| {e['n']} | {s['up_bytes_per_client'] / 1e3:.1f} | {h['up_bytes_per_client'] / 1e3:.1f} | "
            f"{s['down_bytes_per_client'] / 1e3:.1f} | {h['down_bytes_per_client'] / 1e3:.1f} | "
            f"{s['median_copy_seconds']:.3f} | {h['median_copy_seconds']:.3f} |"
        )
    m = report.get("mask_generation")
    if m:
        lines += [
            "",
            f"Mask generation, {m['params']:,} words mod 2**32 ({m['repeats']} repeats, medians)",
            "",
            "| stock pseudo_rand_gen (ms) | hardened mask_stream (ms) | ratio hardened / stock |",
            "|---:|---:|---:|",
            f"| {m['stock_median'] * 1e3:.2f} | {m['hardened_median'] * 1e3:.2f} | "
            f"{m['ratio_hardened_over_stock']:.2f}x |",
        ]
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(n < 3 for n in sizes):
        raise argparse.ArgumentTypeError("sizes must be integers >= 3, e.g. 3,10,50")
    return sizes


def parse_repeats_for(text: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in text.split(","):
        if part.strip():
            size, _, count = part.partition(":")
            out[int(size)] = int(count)
            if out[int(size)] < 1:
                raise argparse.ArgumentTypeError("repeats must be >= 1")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_hardened_secagg.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("3,10,50"),
                        help="comma list of cohort sizes (institutions per round), default 3,10,50")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds per protocol and size (after one warm-up each), default 5")
    parser.add_argument("--repeats-for", type=parse_repeats_for, default={},
                        help="per-size override, e.g. 50:3 (fewer repeats where rounds are slow)")
    parser.add_argument("--params", type=int, default=100_000,
                        help="float32 parameters in each institution's update, default 100000")
    parser.add_argument("--rows", type=int, default=300,
                        help="rows of generated data per institution (sites need it), default 300")
    parser.add_argument("--mask-params", type=int, default=1_000_000,
                        help="words per mask in the mask-generation benchmark, default 1000000")
    parser.add_argument("--mask-repeats", type=int, default=21,
                        help="repeats of the mask-generation benchmark, default 21")
    parser.add_argument("--skip-masks", action="store_true", help="skip the mask-generation benchmark")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where sites, data and ledgers go (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--verbose", action="store_true", help="keep Flower's INFO log")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.params < 1 or args.mask_repeats < 1:
        parser.error("--repeats, --params and --mask-repeats must be >= 1")

    if not args.verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    owned = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench-hardened-")) if owned else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "bench_hardened_secagg",
        "params": args.params,
        "num_examples": NUM_EXAMPLES,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
        "workdir": str(workdir),
        "rounds": [],
    }
    started = time.perf_counter()
    try:
        for n in args.sizes:
            progress(f"n={n}: preparing {n} institution sites and data in {workdir}")
            fed = make_federation(workdir, n, args.rows, args.params)
            report["settings"] = fed.settings.as_record()
            report["rounds"].append(bench_size(fed, args.repeats_for.get(n, args.repeats)))
        if not args.skip_masks:
            progress(f"mask generation: {args.mask_params:,} words x {args.mask_repeats} repeats")
            report["mask_generation"] = bench_masks(args.mask_params, args.mask_repeats)
    except RoundFailed as exc:
        print(f"ROUND FAILED\n{exc}", file=sys.stderr)
        return 1
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    report["total_seconds"] = time.perf_counter() - started
    report["machine"]["load_average_end"] = list(os.getloadavg())
    print(markdown(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
        progress(f"wrote {args.json}")
    progress(f"done in {report['total_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
