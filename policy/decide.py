"""Institution-side decisions: the one place where an institution says no.

Everything an institution decides about a round, on the strength of its own
policy, lives in this module:

* :func:`check_round` refuses a round whose instructions break the policy;
* :func:`release_metrics` drops metrics the policy does not allow and
  suppresses small count cells before anything leaves the site.

Each round rule is a small function registered in :data:`ROUND_RULES`, which
:func:`check_round` runs in order, collecting every violation before raising
once. A new rule (for example CKKS key checks) is one more function here and
one more entry in that tuple; nothing else has to change.

Every violation starts with the dotted path of the policy field it enforces
(``protection.min_cohort_size: ...``), or ``instructions.<field>`` when the
instructions contradict themselves, and every refusal carries the policy hash.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Final

from core.errors import ProtocolError
from policy._checks import field_type_problems
from policy.errors import PolicyRefusal
from policy.model import COUNT_METRICS, Metric, Policy

__all__ = [
    "CONFUSION_CELLS",
    "ROUND_RULES",
    "MetricsRelease",
    "RoundInstructions",
    "RoundRule",
    "check_round",
    "release_metrics",
    "release_under",
]


@dataclass(frozen=True, slots=True)
class RoundInstructions:
    """What the server asks one institution to do in one round.

    Values are kept as the server sent them (strings, not enums), so that an
    unknown purpose or aggregation mode becomes a named refusal rather than a
    crash. Types are checked on construction.

    Parameters
    ----------
    purpose : str
        The DPV purpose the run declares, e.g. ``FraudPreventionAndDetection``.
    partners : tuple of str
        Ids of the *other* institutions in this round's cohort.
    server_round : int
        The round number, starting at 1.
    num_rounds : int
        The total number of rounds of the run.
    aggregation : str
        ``secagg+`` or ``ckks``.
    secagg_threshold : int
        The SecAgg+ reconstruction threshold the server set.
    cohort_size : int
        How many institutions' updates are summed this round (this one included).
    local_epochs : int
        Local epochs per round.
    features : tuple of str
        Column names the model is trained on.

    Raises
    ------
    core.errors.ProtocolError
        If a field has the wrong type (the instructions are malformed).
    """

    purpose: str
    partners: tuple[str, ...]
    server_round: int
    num_rounds: int
    aggregation: str
    secagg_threshold: int
    cohort_size: int
    local_epochs: int
    features: tuple[str, ...]
    #: Whether the round releases summed gradient histograms (``model =
    #: "gbdt"``: the bin agreement or one level of a tree).
    releases_histograms: bool = False

    def __post_init__(self) -> None:
        problems = field_type_problems(
            self,
            strings=("purpose", "aggregation"),
            integers=("server_round", "num_rounds", "secagg_threshold", "cohort_size", "local_epochs"),
            string_tuples=("partners", "features"),
        )
        if problems:
            raise ProtocolError("malformed round instructions: " + "; ".join(problems))


#: A round rule: given the policy, the instructions and the current time, yield
#: one message per violation, each starting with the dotted field path it enforces.
RoundRule = Callable[[Policy, RoundInstructions, datetime], Iterator[str]]


def _rule_in_force(policy: Policy, _: RoundInstructions, now: datetime) -> Iterator[str]:
    """The policy must be in force now (``identity.valid_from``/``valid_until``)."""
    yield from policy.validity_violations(now)


def _rule_purpose(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """The declared purpose must be one the institution allows."""
    allowed = {purpose.value for purpose in policy.data_use.purposes}
    if ins.purpose not in allowed:
        yield (
            f"data_use.purposes: the run declares purpose {ins.purpose!r}, which this "
            f"policy does not allow (allowed: {', '.join(sorted(allowed))})"
        )


def _rule_partners(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """Every partner must be accepted, listed once, and not this institution itself."""
    accepted = set(policy.data_use.accepted_partners)
    seen: set[str] = set()
    for partner in ins.partners:
        if partner in seen:
            yield f"instructions.partners: {partner!r} is listed more than once"
            continue
        seen.add(partner)
        if partner == policy.institution_id:
            yield "instructions.partners: lists this institution itself as its own partner"
        elif partner not in accepted:
            yield (
                f"data_use.accepted_partners: {partner!r} is in the cohort but is not an "
                "accepted partner"
            )


def _rule_min_partners(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """At least ``data_use.min_partners`` other institutions must take part."""
    others = set(ins.partners) - {policy.institution_id}
    if len(others) < policy.data_use.min_partners:
        yield (
            f"data_use.min_partners: the round has {len(others)} other institution(s), "
            f"fewer than the {policy.data_use.min_partners} required"
        )


def _rule_rounds(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """Neither the run nor the round number may exceed ``protection.max_rounds``."""
    limit = policy.protection.max_rounds
    if ins.num_rounds > limit:
        yield (
            f"protection.max_rounds: the run asks for {ins.num_rounds} rounds but this "
            f"policy allows at most {limit}"
        )
    if ins.server_round > limit:
        yield (
            f"protection.max_rounds: this is round {ins.server_round} but this policy "
            f"allows at most {limit}"
        )
    if ins.num_rounds < 1 or not 1 <= ins.server_round <= ins.num_rounds:
        yield (
            f"instructions.server_round: round {ins.server_round} is outside the run's "
            f"{ins.num_rounds} rounds"
        )


def _rule_aggregation(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """The aggregation mode must be one the policy accepts."""
    allowed = {mode.value for mode in policy.allowed_aggregation_modes}
    if ins.aggregation not in allowed:
        yield (
            f"protection.required_aggregation: the round uses {ins.aggregation!r} but this "
            f"policy requires {policy.protection.required_aggregation.value!r}"
        )


def _rule_threshold(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """The reconstruction threshold must meet the minimum and fit the cohort."""
    minimum = policy.protection.min_secagg_threshold
    if ins.secagg_threshold < minimum:
        yield (
            f"protection.min_secagg_threshold: the server set threshold "
            f"{ins.secagg_threshold}, below the minimum of {minimum}"
        )
    if ins.secagg_threshold > ins.cohort_size:
        yield (
            f"instructions.secagg_threshold: threshold {ins.secagg_threshold} exceeds the "
            f"cohort of {ins.cohort_size}, so the sum could never be unmasked"
        )


def _rule_cohort(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """Enough institutions must be summed, and the cohort must match the partners."""
    minimum = policy.protection.min_cohort_size
    if ins.cohort_size < minimum:
        yield (
            f"protection.min_cohort_size: the round sums {ins.cohort_size} institution(s), "
            f"fewer than the minimum of {minimum}"
        )
    if ins.cohort_size != len(set(ins.partners)) + 1:
        yield (
            f"instructions.cohort_size: says {ins.cohort_size} but the instructions name "
            f"{len(set(ins.partners))} partner(s) plus this institution"
        )


def _rule_epochs(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """Local training may not exceed ``protection.max_local_epochs``."""
    limit = policy.protection.max_local_epochs
    if ins.local_epochs > limit:
        yield (
            f"protection.max_local_epochs: the round asks for {ins.local_epochs} local "
            f"epochs but this policy allows at most {limit}"
        )
    if ins.local_epochs < 1:
        yield f"instructions.local_epochs: must be at least 1, found {ins.local_epochs}"


def _rule_features(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """Every feature must be allowlisted and none may be forbidden.

    Forbidden names are compared case-insensitively, so renaming ``iban`` to
    ``IBAN`` does not slip a forbidden column past the check.
    """
    if not ins.features:
        yield "instructions.features: the round names no features"
    allowed = set(policy.data_use.allowed_features)
    forbidden = {name.lower() for name in policy.data_use.forbidden_features}
    seen: set[str] = set()
    for feature in ins.features:
        if feature in seen:
            yield f"instructions.features: {feature!r} is listed more than once"
            continue
        seen.add(feature)
        if feature.lower() in forbidden:
            yield f"data_use.forbidden_features: the round uses forbidden feature {feature!r}"
        elif feature not in allowed:
            yield (
                f"data_use.allowed_features: the round uses {feature!r}, which is not on "
                "the allowlist"
            )


def _rule_histograms(policy: Policy, ins: RoundInstructions, _: datetime) -> Iterator[str]:
    """Summed gradient histograms leave only if the policy's ``[histograms]`` allows it."""
    if not ins.releases_histograms:
        return
    terms = policy.histograms
    if terms is None or not terms.allowed:
        yield (
            "histograms.allowed: the round sums gradient histograms (model 'gbdt'), which "
            "this policy does not allow"
        )
    elif ins.cohort_size < terms.min_cohort_size:
        yield (
            f"histograms.min_cohort_size: the round sums histograms of {ins.cohort_size} "
            f"institutions, fewer than {terms.min_cohort_size}"
        )


#: Every round rule, in the order their violations are reported.
ROUND_RULES: Final[tuple[RoundRule, ...]] = (
    _rule_in_force,
    _rule_purpose,
    _rule_partners,
    _rule_min_partners,
    _rule_rounds,
    _rule_aggregation,
    _rule_threshold,
    _rule_cohort,
    _rule_epochs,
    _rule_features,
    _rule_histograms,
)


def check_round(policy: Policy, instructions: RoundInstructions, now: datetime) -> None:
    """Refuse a round that breaks the institution's own policy.

    Parameters
    ----------
    policy : Policy
        This institution's validated policy.
    instructions : RoundInstructions
        What the server asks for this round.
    now : datetime
        The current, timezone-aware time (the policy must be in force).

    Raises
    ------
    PolicyRefusal
        Listing every broken rule, with the policy hash and institution id.
    TypeError
        If ``now`` is naive.
    """
    violations: list[str] = []
    for rule in ROUND_RULES:
        violations.extend(rule(policy, instructions, now))
    if violations:
        count = len(violations)
        raise PolicyRefusal(
            f"{policy.institution_id} refuses round {instructions.server_round}: "
            f"{count} rule{'s' if count != 1 else ''} broken",
            tuple(violations),
            policy_hash=policy.policy_hash,
            institution=policy.institution_id,
        )


#: The four cells of a confusion matrix. If one is suppressed, all are:
#: otherwise ``num_examples`` minus the other three would reveal it.
CONFUSION_CELLS: Final = frozenset(
    {
        Metric.TRUE_POSITIVES.value,
        Metric.FALSE_POSITIVES.value,
        Metric.TRUE_NEGATIVES.value,
        Metric.FALSE_NEGATIVES.value,
    }
)


_COUNT_FIELDS: Final = frozenset(metric.value for metric in COUNT_METRICS)


@dataclass(frozen=True, slots=True)
class MetricsRelease:
    """The outcome of :func:`release_metrics`.

    Attributes
    ----------
    released : Mapping[str, float | int]
        The metrics that may leave the site (read-only).
    suppressed : tuple of str
        Allowed count metrics withheld by small-cell suppression.
    not_allowed : tuple of str
        Metrics dropped because the policy does not allow them.
    policy_hash : str
        The hash of the policy that made the decision, for the audit log.
    """

    released: Mapping[str, float | int]
    suppressed: tuple[str, ...]
    not_allowed: tuple[str, ...]
    policy_hash: str


def release_metrics(
    policy: Policy,
    metrics: Mapping[str, float | int],
    count_fields: Collection[str] = _COUNT_FIELDS,
) -> MetricsRelease:
    """Decide which of an institution's metrics may leave its site (see :func:`release_under`).

    Raises
    ------
    TypeError
        If a value is not a real number, or a count is not a whole number.
    """
    return release_under(
        {metric.value for metric in policy.outputs.allowed_metrics},
        policy.outputs.min_cell_count,
        metrics,
        policy.policy_hash,
        count_fields,
    )


def release_under(
    allowed: Collection[str],
    min_cell_count: int,
    metrics: Mapping[str, float | int],
    decided_by: str,
    count_fields: Collection[str] = _COUNT_FIELDS,
) -> MetricsRelease:
    """Decide which metrics may be released under an allowlist and a small-cell rule.

    The one release rule, used for an institution's own metrics
    (:func:`release_metrics`) and for the federation's pooled metrics
    (:meth:`policy.plan.RunPlan.release_metrics`). The steps, in order:

    1. drop every metric not in ``allowed``;
    2. suppress every count metric below ``min_cell_count``;
    3. if any confusion-matrix cell was suppressed, suppress the other cells
       too (complementary suppression: otherwise ``num_examples - tp - fp - tn``
       would give a withheld ``fn``).

    Parameters
    ----------
    allowed : Collection of str
        Metric names that may be released.
    min_cell_count : int
        Smallest count that may be released.
    metrics : Mapping[str, float | int]
        Metric name to value. Numpy scalars are accepted.
    decided_by : str
        The hash of the policy (or plan) that made the decision, for the audit log.
    count_fields : Collection of str
        Names of the metrics that are record counts.

    Returns
    -------
    MetricsRelease
        The released metrics and the names dropped or suppressed.

    Raises
    ------
    TypeError
        If a value is not a real number, or a count is not a whole number.
    """
    threshold = min_cell_count
    kept: dict[str, float | int] = {}
    not_allowed: list[str] = []
    suppressed: list[str] = []
    for name in sorted(metrics):
        value = metrics[name]
        # Booleans are integers to Python but are never metrics.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"metric {name!r} must be a real number, found {type(value).__name__}")
        # 1. Not on the list: dropped.
        if name not in allowed:
            not_allowed.append(name)
            continue
        if name in count_fields:
            if not isinstance(value, numbers.Integral) and not float(value).is_integer():
                raise TypeError(f"count metric {name!r} must be a whole number, found {value!r}")
            count = int(value)
            # 2. A small cell could single out a few customers: suppressed.
            if count < threshold:
                suppressed.append(name)
                continue
            kept[name] = count
        else:
            kept[name] = int(value) if isinstance(value, numbers.Integral) else float(value)
    # 3. Complementary suppression of the confusion matrix.
    if CONFUSION_CELLS & set(suppressed):
        for cell in sorted(CONFUSION_CELLS & kept.keys()):
            del kept[cell]
            suppressed.append(cell)
    return MetricsRelease(
        released=MappingProxyType(kept),
        suppressed=tuple(sorted(suppressed)),
        not_allowed=tuple(not_allowed),
        policy_hash=decided_by,
    )
