"""The round loop: FedAvg under Flower's SecAgg+ workflow, with policy and audit.

Kept apart from :mod:`server.app` so the entry point stays a few lines. The
steps, in order:

1. check the run config against the combined plan of every policy the server
   knows (refuse to start, listing every conflict);
2. open the signed audit log (genesis) and the run directory;
3. run the rounds (each audited and witnessed by the institutions);
4. save the final model, close the log, have the close witnessed, write the
   scoring file and the model card (:mod:`server.artifacts`), and the
   summary (last: its presence means the run finished).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid
from flwr.supercore import log
import numpy as np

from audit.keys import load_private_key, public_key_from_b64
from core import __version__
from core.errors import ConfigError
from fraud.datasets import DataFormat, server_schema
from core.layout import AUDIT_FILE, CONFIG_FILE, SUMMARY_FILE, ServerLayout
from federation.settings import Aggregation, ModelKind, RunSettings
from core.wire import update_digest
from fraud.features import FEATURE_COLUMNS
from fraud.byo_encode import feature_names
from fraud.model import build_model, get_weights, initial_model_seed, max_abs_weight

from .artifacts import scoring_file, write_run_artifacts
from .auditing import ServerAudit
from .evaluation import SecureEvaluation
from .grid_tap import RefusalTap
from .preprocess import PreprocessThenFit
from .validation import load_validation
from .secagg_workflow import secagg_workflow
from .planning import checked_plan, load_server_policies, plan_record, run_features
from .rundir import RunDirectory, finite, read_model
from .strategy import FraudFedAvg, RoundLog

# The initial model must sit well inside the clipping range: weights grow
# during training, and an update outside the range is refused (not clipped).
CLIPPING_HEADROOM = 4.0
INFO, WARNING = 20, 30


def run_federation(grid: Grid, context: Context) -> dict[str, Any]:
    """Run every round of a federation and write the run directory."""
    settings = RunSettings.from_run_config(context.run_config)

    # 1. Policies first: nothing is written for a run that may not happen.
    plan = checked_plan(settings)
    policies = load_server_policies(settings)
    run_dir = RunDirectory(settings.run_dir)
    run_dir.write_json(
        CONFIG_FILE,
        {
            "fedfraud_version": __version__,
            "run_name": settings.run_name,
            "run_config": dict(context.run_config),
            "secagg": settings.secagg.as_record(),
            "features": list(run_features(settings)),
            "plan": plan_record(plan),
        },
    )

    # 2. The initial global model, deterministic for the run's seed.
    schema = None
    if settings.data_format is DataFormat.BYO:
        schema = server_schema(ServerLayout(settings.server_dir).schemas(settings.institutions))
        n_features = len(feature_names(schema))  # type: ignore[arg-type]
    else:
        n_features = len(FEATURE_COLUMNS)
    gbdt = settings.model is ModelKind.GBDT
    model = build_model(n_features, seed=initial_model_seed(settings.seed, settings.institutions))
    layer_names = list(model.state_dict().keys())
    # Boosted trees start from no tree at all (the bins come from the first round).
    initial = [np.zeros(0, dtype=np.uint8)] if gbdt else get_weights(model)
    if settings.initial_model is not None:
        # A new run from an earlier run's last accepted model (checked against this model's layout).
        initial = read_model(settings.initial_model, layer_names, [a.shape for a in initial])
        log(INFO, "starting from %s (model hash %s)", settings.initial_model, update_digest(initial))  # type: ignore[arg-type]
    initial_hash = "" if gbdt else update_digest(initial)  # type: ignore[arg-type]  # float arrays unless gbdt
    peak = 0.0 if gbdt else max_abs_weight(initial)
    if peak * CLIPPING_HEADROOM > settings.secagg.clipping_range:
        raise ConfigError(
            f"clipping-range {settings.secagg.clipping_range:g} leaves less than "
            f"{CLIPPING_HEADROOM:g}x headroom over the initial model's largest weight "
            f"({peak:.3f}); raise clipping-range"
        )

    # 3. The audit log's genesis.
    server_key = load_private_key(ServerLayout(settings.server_dir).audit_key)
    audit = ServerAudit.start(
        settings, settings.run_dir, server_key, dict(context.run_config), policies, plan_record(plan)
    )

    def on_round_end(round_log: RoundLog) -> None:
        record = _round_record(round_log)
        if round_log.accepted and not gbdt and settings.aggregation is not Aggregation.CKKS:
            run_dir.write_checkpoint(strategy.latest, layer_names)  # what a new run can start from
        run_dir.append_round(record)
        log(INFO, "fedfraud round %s: %s", round_log.server_round, json.dumps(record))

    # Every node of every secure round must prove a place on this roster
    # (the institutions' signing keys, as in the genesis); each round's nodes
    # are recorded in the audit log with their signed key advertisements.
    roster = {p.institution_id: public_key_from_b64(p.identity.public_key) for p in policies}
    tapped = RefusalTap(grid, roster, audit.participants)
    tapped.model_recipients = frozenset(plan.model_recipients)
    strategy = FraudFedAvg(
        settings,
        plan,
        audit,
        ndarrays_to_parameters(initial),
        on_round_end,
        tapped.take,
        # In ckks mode the server cannot score a model it never holds: the
        # threshold comes from the summed training counts instead.
        load_validation(settings.server_dir, schema)
        if settings.aggregation is not Aggregation.CKKS
        else None,
    )
    strategy.grid = tapped
    features = list(feature_names(schema)) if schema is not None else list(FEATURE_COLUMNS)  # type: ignore[arg-type]
    workflow = _workflow(settings, strategy, schema, plan, features)
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=settings.num_rounds, round_timeout=settings.secagg.timeout),
        strategy=strategy,
    )

    # 4. The rounds.
    started = time.monotonic()
    workflow(tapped, legacy)

    # 5. Final model, closing record, final witnessing, summary (last).
    if settings.aggregation is Aggregation.CKKS:
        # The model exists only at the institutions (the server run directory
        # holds none); the log names it by the hash they reported.
        final_hash = strategy.model_hash()
    elif gbdt:
        final_hash = strategy.model_hash()
        if strategy.latest[0].size:
            run_dir.write_gbdt(np.asarray(strategy.latest[0], dtype=np.uint8))
    else:
        run_dir.write_model(strategy.latest, layer_names)
        final_hash = update_digest(strategy.latest)
    audit.close(final_hash)
    final_witnesses = strategy.witness(settings.num_rounds)
    audit.close_file()
    rounds = [_round_record(strategy.rounds[r]) for r in sorted(strategy.rounds)]
    seconds = time.monotonic() - started

    # 6. What an institution needs to use the model (scaling, threshold,
    # layout) and the model card, before the summary that marks the end.
    write_run_artifacts(
        run_dir,
        settings,
        scoring_file(
            settings, model, final_hash, strategy.feature_spec, rounds, context.run_id,
            gbdt_trees=_trees(strategy.latest) if gbdt else 0,
        ),
        rounds,
        policies,
        plan.plan_hash,
        audit.facts(final_witnesses),
        seconds,
    )
    summary = {
        "run_name": settings.run_name,
        "rounds_completed": sum(1 for r in rounds if r["accepted"]),
        "rounds_requested": settings.num_rounds,
        "seconds": round(seconds, 3),
        "final_metrics": rounds[-1]["metrics"] if rounds else {},
        "final_model_hash": final_hash,
        "institutions": list(settings.institutions),
        "audit_log": str(settings.run_dir / AUDIT_FILE),
        "final_checkpoint_witnessed_by": final_witnesses,
        # Where the run started: the seeded model, or an earlier run's (initial-model).
        "initial_model": (
            {"file": str(settings.initial_model), "model_hash": initial_hash}
            if settings.initial_model is not None else None
        ),
    }
    run_dir.write_json(SUMMARY_FILE, summary)
    return summary


def _workflow(
    settings: RunSettings, strategy: FraudFedAvg, schema: Any, plan: Any, features: list[str]
) -> DefaultWorkflow:
    evaluation = SecureEvaluation(
        settings, strategy.close_round, strategy.task_config, strategy.nothing_to_evaluate
    )
    if settings.model is ModelKind.GBDT:
        from .gbdt import GbdtFit

        gbdt = GbdtFit(settings, plan, strategy, features)
        if schema is None:
            return DefaultWorkflow(fit_workflow=gbdt, evaluate_workflow=evaluation)

        def on_gbdt_spec(text: str) -> None:
            strategy.feature_spec = text

        return DefaultWorkflow(
            fit_workflow=PreprocessThenFit(settings, schema, gbdt, on_gbdt_spec),
            evaluate_workflow=evaluation,
        )
    fit = _fit_workflow(settings)

    def on_spec(text: str) -> None:
        strategy.feature_spec = text

    # The statistics round: the shared scaling of bring-your-own data, and
    # the row total that an auto max-weight (the default) derives from.
    secure = settings.aggregation is not Aggregation.UNSAFE_PLAIN
    if schema is not None or (secure and settings.secagg.auto_weight):
        fit = PreprocessThenFit(settings, schema, fit, on_spec)
    return DefaultWorkflow(fit_workflow=fit, evaluate_workflow=evaluation)


def _fit_workflow(settings: RunSettings) -> Any:
    if settings.aggregation is Aggregation.UNSAFE_PLAIN:
        log(WARNING, "UNSAFE: aggregation 'unsafe-plain' shows every update to the server")
        from flwr.server.workflow.default_workflows import default_fit_workflow

        return default_fit_workflow
    return secagg_workflow(
        settings.secagg, settings.federation_id, ckks_mode=settings.aggregation is Aggregation.CKKS
    )


def _trees(latest: list[Any]) -> int:
    from fraud.gbdt import Ensemble

    return len(Ensemble.from_array(latest[0]).trees) if latest[0].size else 0


def _round_record(round_log: RoundLog) -> dict[str, Any]:
    record = asdict(round_log)
    record["seconds"] = round(time.monotonic() - round_log.started, 3)
    for key in ("started", "fit_started", "fit_done"):
        record.pop(key)
    return finite(record)
