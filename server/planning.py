"""The server's view of the institutions' policies: the combined run plan.

The server is handed copies of the institutions' policies (``<server-dir>/
policies/*.toml``). Before the first round it combines them into the
strictest plan and refuses to start, listing every conflict at once, if the
run config breaks it. The institutions enforce their *own* copies regardless.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from fraud.datasets import DataFormat, model_columns, server_schema
from core.errors import ConfigError
from core.layout import ServerLayout
from federation.settings import Aggregation, RunSettings, check_unsafe_opt_in
from fraud.features import FEATURE_COLUMNS
from policy import COUNT_METRICS as POLICY_COUNT_METRICS
from policy import Policy, RunPlan, RunRequest, combine, load_policy

#: The metrics that are record counts (small-cell suppression applies), as policies define them.
COUNT_METRICS = frozenset(metric.value for metric in POLICY_COUNT_METRICS)


def load_server_policies(settings: RunSettings) -> list[Policy]:
    """Load the policy copies the server was given, one per institution of the run."""
    folder = ServerLayout(settings.server_dir).policies_dir
    if not folder.is_dir():
        raise ConfigError(f"the server has no policies folder: {folder}")
    policies = {}
    for path in sorted(folder.glob("*.toml")):
        policy = load_policy(path)
        policies[policy.institution_id] = policy
    missing = [i for i in settings.institutions if i not in policies]
    if missing:
        raise ConfigError(
            f"the server has no policy for {', '.join(missing)} in {folder}; "
            "it refuses to run without every institution's policy"
        )
    return [policies[i] for i in settings.institutions]


def run_request(settings: RunSettings) -> RunRequest:
    """The run the server proposes, in the terms policies speak.

    An ``unsafe-plain`` baseline (benchmarks only) needs the server's own
    opt-in file ``<server-dir>/UNSAFE-ALLOW-PLAIN``; every other rule of every
    policy still applies, judged as for a SecAgg+ run.
    """
    aggregation = settings.aggregation.value
    if settings.aggregation is Aggregation.UNSAFE_PLAIN:
        problems = check_unsafe_opt_in(
            ServerLayout(settings.server_dir).unsafe_opt_in, settings, dt.datetime.now(dt.timezone.utc)
        )
        if problems:
            raise ConfigError("; ".join(problems) + " (benchmarks only)")
        aggregation = Aggregation.SECAGG_PLUS.value
    return RunRequest(
        purpose=settings.purpose,
        institutions=settings.institutions,
        num_rounds=settings.num_rounds,
        aggregation=aggregation,
        secagg_threshold=settings.secagg.reconstruction_threshold,
        cohort_size=len(settings.institutions),
        local_epochs=settings.local_epochs,
        features=run_features(settings),
        model=settings.model.value,
    )


def run_features(settings: RunSettings) -> tuple[str, ...]:
    """The columns the run's model is trained on, as policies name them."""
    if settings.data_format is DataFormat.BYO:
        return model_columns(server_schema(ServerLayout(settings.server_dir).schemas(settings.institutions)))
    return tuple(FEATURE_COLUMNS)


def checked_plan(settings: RunSettings, now: dt.datetime | None = None) -> RunPlan:
    """Combine the policies and check the run against the plan (raises on conflicts)."""
    plan = combine(load_server_policies(settings))
    plan.check_run(run_request(settings), now or dt.datetime.now(dt.timezone.utc))
    return plan


def plan_record(plan: RunPlan) -> dict[str, Any]:
    """The plan as plain JSON-ready values (for the audit genesis and run files)."""
    return {
        "plan_hash": plan.plan_hash,
        "policies": {inst: digest for inst, digest in plan.policy_hashes},
        "purposes": [str(p.value) for p in plan.purposes],
        "aggregation_modes": [str(m.value) for m in plan.aggregation_modes],
        "min_cohort_size": plan.min_cohort_size,
        "min_secagg_threshold": plan.min_secagg_threshold,
        "min_partners": plan.min_partners,
        "max_rounds": plan.max_rounds,
        "max_local_epochs": plan.max_local_epochs,
        "allowed_metrics": [str(m.value) for m in plan.allowed_metrics],
        "min_cell_count": plan.min_cell_count,
        "retention_days": plan.retention_days,
        "model_recipients": list(plan.model_recipients),
        "synthetic_release_allowed": plan.synthetic_release_allowed,
        "require_countersigned_receipts": plan.require_countersigned_receipts,
    }


def release(plan: RunPlan, metrics: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The pooled metrics every policy allows, by the policies' own release rule.

    :meth:`policy.plan.RunPlan.release_metrics` decides (allowlist, small
    cells, complementary suppression); non-finite values (an AUC without
    positives) are withheld too. Returns the released metrics and the names
    withheld.
    """
    finite = {
        name: value
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
    decision = plan.release_metrics(finite)
    withheld = set(metrics) - set(decision.released)
    return dict(decision.released), sorted(withheld)


def withhold_counts_of_another_cohort(
    metrics: dict[str, Any], withheld: list[str], cohort: tuple[str, ...], released_for: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """Release count metrics for one evaluated cohort per run only (edits in place).

    Test sizes and fraud counts do not change with the model: released for
    {A, B, C} in one round and for {A, B} in another, their difference is C's
    own. Counts are released only for the cohort that first had them
    released (``released_for``); a round evaluated by another cohort withholds
    them. Returns the cohort counts are now released for.
    """
    if not COUNT_METRICS & metrics.keys():
        return released_for
    if released_for is None or cohort == released_for:
        return cohort
    for name in sorted(COUNT_METRICS & metrics.keys()):
        del metrics[name]
        withheld.append(name)
    withheld.sort()
    return released_for
