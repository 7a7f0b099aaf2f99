"""The round loop: FedAvg under Flower's SecAgg+ workflow, with run files.

Kept apart from :mod:`server.app` so the entry point stays a few lines.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from typing import Any

from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from flwr.supercore import log

from fedfraud import __version__
from fedfraud.errors import ConfigError
from fedfraud.settings import Aggregation, RunSettings
from fraud.features import FEATURE_COLUMNS
from fraud.model import build_model, get_weights, max_abs_weight

from .rundir import SUMMARY_FILE, RunDirectory
from .strategy import FraudFedAvg, RoundLog

# The initial model must sit well inside the clipping range: weights grow
# during training, and an update outside the range is refused (not clipped).
CLIPPING_HEADROOM = 4.0


def run_federation(grid: Grid, context: Context) -> dict[str, Any]:
    """Run every round of a federation and write the run directory."""
    settings = RunSettings.from_run_config(context.run_config)
    run_dir = RunDirectory(settings.run_dir)
    run_dir.write_json(
        "config.json",
        {
            "fedfraud_version": __version__,
            "run_name": settings.run_name,
            "run_config": dict(context.run_config),
            "secagg": settings.secagg.as_record(),
            "features": list(FEATURE_COLUMNS),
        },
    )

    # 1. The initial global model, deterministic for the run's seed.
    model = build_model(len(FEATURE_COLUMNS), seed=settings.seed)
    layer_names = list(model.state_dict().keys())
    initial = get_weights(model)
    peak = max_abs_weight(initial)
    if peak * CLIPPING_HEADROOM > settings.secagg.clipping_range:
        raise ConfigError(
            f"clipping-range {settings.secagg.clipping_range:g} leaves less than "
            f"{CLIPPING_HEADROOM:g}x headroom over the initial model's largest weight "
            f"({peak:.3f}); raise clipping-range"
        )

    def on_round_end(round_log: RoundLog) -> None:
        record = asdict(round_log)
        record["seconds"] = round(time.monotonic() - round_log.started, 3)
        record.pop("started")
        record.pop("fit_started")
        run_dir.append_round(_finite(record))
        log(20, "fedfraud round %s: %s", round_log.server_round, json.dumps(_finite(record)))

    strategy = FraudFedAvg(settings, ndarrays_to_parameters(initial), on_round_end)
    secagg = settings.secagg
    if settings.aggregation is Aggregation.UNSAFE_PLAIN:
        log(30, "UNSAFE: aggregation 'unsafe-plain' shows every update to the server")
        workflow = DefaultWorkflow()
    else:
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(
                num_shares=secagg.num_shares,
                reconstruction_threshold=secagg.reconstruction_threshold,
                max_weight=secagg.max_weight,
                clipping_range=secagg.clipping_range,
                quantization_range=secagg.quantization_range,
                modulus_range=secagg.modulus_range,
                timeout=secagg.timeout,
            )
        )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=settings.num_rounds, round_timeout=secagg.timeout),
        strategy=strategy,
    )

    # 2. The rounds.
    started = time.monotonic()
    workflow(grid, legacy)

    # 3. The final model and the summary (written last: it marks completion).
    run_dir.write_model(strategy.latest, layer_names)
    rounds = [asdict(strategy.rounds[r]) for r in sorted(strategy.rounds)]
    for entry in rounds:
        entry.pop("started")
        entry.pop("fit_started")
    summary = {
        "run_name": settings.run_name,
        "rounds_completed": sum(1 for r in rounds if r["accepted"]),
        "rounds_requested": settings.num_rounds,
        "seconds": round(time.monotonic() - started, 3),
        "final_metrics": _finite(rounds[-1]["metrics"]) if rounds else {},
        "institutions": list(settings.institutions),
    }
    run_dir.write_json(SUMMARY_FILE, summary)
    return summary


def _finite(value: Any) -> Any:
    """Replace NaN/inf (e.g. AUC with no positives) by None for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
