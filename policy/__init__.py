"""Institution policies: schema, loading, the combined run plan and decisions.

Each institution states, in one TOML file, what its data may be used for, how
updates must be protected, what may leave the federation and what the audit
trail must keep. This package validates those files strictly
(:func:`load_policy`), combines a federation's policies into the strictest
plan (:func:`combine`, :class:`RunPlan`), and makes every institution-side
decision (:func:`check_round`, :func:`release_metrics`).

It imports only the standard library, pydantic and :mod:`core.errors`
(the CLI in :mod:`policy.cli` also uses typer and rich); it never imports the
server or the client.
"""

from policy.decide import (
    ROUND_RULES,
    MetricsRelease,
    RoundInstructions,
    check_round,
    release_metrics,
)
from policy.errors import FieldProblem, PlanConflict, PolicyFileError, PolicyRefusal
from policy.load import MAX_NESTING_DEPTH, MAX_POLICY_BYTES, load_policy, parse_policy
from policy.model import (
    COUNT_METRICS,
    FEDERATION,
    HASH_DOMAIN_TAG,
    SCHEMA_VERSION,
    AggregationMode,
    AggregationRequirement,
    Metric,
    Policy,
    Purpose,
)
from policy.plan import PolicyRef, RunPlan, RunRequest, combine

__all__ = [
    "COUNT_METRICS",
    "FEDERATION",
    "HASH_DOMAIN_TAG",
    "MAX_NESTING_DEPTH",
    "MAX_POLICY_BYTES",
    "ROUND_RULES",
    "SCHEMA_VERSION",
    "AggregationMode",
    "AggregationRequirement",
    "FieldProblem",
    "Metric",
    "MetricsRelease",
    "PlanConflict",
    "Policy",
    "PolicyFileError",
    "PolicyRef",
    "PolicyRefusal",
    "Purpose",
    "RoundInstructions",
    "RunPlan",
    "RunRequest",
    "check_round",
    "combine",
    "load_policy",
    "parse_policy",
    "release_metrics",
]
