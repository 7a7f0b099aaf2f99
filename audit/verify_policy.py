"""Verification step 6 of :func:`audit.verify.verify_log`: the institutions' policies were kept.

Step 3 notes the policy-relevant facts of the log as :data:`PolicyEvent`
items, in log order; step 6 checks them.  An institution's policy hash never
changes mid-run and, with policies given, the aggregation mode, cohort sizes,
round counts, released metrics and tree node sizes stay within every
affected institution's limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .record_views import JSONValue
from .verdict import Checks, Verdict

__all__ = [
    "At",
    "GenesisEvent",
    "PolicyHashEvent",
    "TreeEvent",
    "RoundEvent",
    "PolicyEvent",
    "PolicyLimits",
    "policy_limits",
    "check_policies",
]


@dataclass(frozen=True, slots=True)
class At:
    """The server-log record a policy event comes from."""

    seq: int
    line: int
    offset: int


@dataclass(frozen=True, slots=True)
class GenesisEvent:
    """The run's aggregation mode, as the genesis names it (lower case)."""

    at: At
    mode: str


@dataclass(frozen=True, slots=True)
class PolicyHashEvent:
    """An institution stated its policy hash (in a refusal or a receipt)."""

    at: At
    institution: str
    hash: JSONValue


@dataclass(frozen=True, slots=True)
class TreeEvent:
    """A gbdt round grew a tree whose smallest node holds ``smallest`` rows."""

    at: At
    round: int
    smallest: int


@dataclass(frozen=True, slots=True)
class RoundEvent:
    """A round closed: the institutions aggregated and the metrics released."""

    at: At
    round: int
    survivors: list[Any]
    metrics: list[str]


#: One policy-relevant fact of the log, noted by step 3.
PolicyEvent = Union[GenesisEvent, PolicyHashEvent, TreeEvent, RoundEvent]


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """The few limits of one institution's policy that the verifier enforces.

    ``None`` (or a value of another type) is "no limit".
    """

    min_cohort_size: object
    max_rounds: object
    aggregation_modes: list[str] | None
    allowed_metrics: list[str] | None
    policy_hash: Any
    min_child_rows: object


def policy_limits(policy: Mapping[str, Any]) -> PolicyLimits:
    """Read the few limits the verifier enforces, tolerating naming variants and extras."""
    protection = policy.get("protection") or {}
    outputs = policy.get("outputs") or {}

    def pick(table: Mapping[str, Any], *names: str) -> Any:
        for name in names:
            if name in table:
                return table[name]
            if name.replace("_", "-") in table:
                return table[name.replace("_", "-")]
        return None

    modes = pick(protection, "required_aggregation", "allowed_aggregation", "aggregation_modes",
                 "allowed_aggregation_modes")
    if isinstance(modes, str):
        # ``required_aggregation = "any"`` (the policy package's spelling) allows every mode.
        modes = None if modes.lower() == "any" else [modes]
    metrics = pick(outputs, "allowed_metrics", "metrics", "released_metrics")
    return PolicyLimits(
        min_cohort_size=pick(protection, "min_cohort_size", "min_cohort"),
        max_rounds=pick(protection, "max_rounds"),
        aggregation_modes=[str(m).lower() for m in modes] if isinstance(modes, list) else None,
        allowed_metrics=[str(m) for m in metrics] if isinstance(metrics, list) else None,
        policy_hash=policy.get("policy_hash"),
        min_child_rows=pick(policy.get("histograms") or {}, "min_child_rows"),
    )


def check_policies(
    events: Sequence[PolicyEvent],
    policies: Mapping[str, Mapping[str, Any]] | None,
    genesis_keys: Mapping[str, Ed25519PublicKey],
    policy_hashes: Mapping[str, str],
    checks: Checks,
    src: str,
) -> None:
    """Step 6: every policy event against the policy hashes of the genesis and the given policies.

    6.1 A refusal or receipt states the policy hash the genesis lists for
        its institution (a changed policy mid-run is POLICY_VIOLATED).
    6.2 The genesis lists each given policy's own hash, and the run's
        aggregation mode is one every policy allows.
    6.3 Every tree's smallest node holds at least each policy's
        ``histograms.min_child_rows``.
    6.4 Every round aggregated at least each survivor's minimum cohort, no
        survivor took part in more rounds than its maximum, and the round
        released only metrics its policy allows.
    """
    limits = {inst: policy_limits(p) for inst, p in (policies or {}).items()}
    participation: dict[str, int] = {}
    for event in events:
        where = {"source": src, "seq": event.at.seq, "line": event.at.line, "offset": event.at.offset}
        if isinstance(event, PolicyHashEvent):
            _check_policy_hash(event, policy_hashes, checks, where)
        elif isinstance(event, GenesisEvent):
            _check_genesis(event, limits, genesis_keys, policy_hashes, checks, where)
        elif isinstance(event, TreeEvent):
            _check_tree(event, limits, checks, where)
        else:
            _check_round(event, limits, participation, checks, where)
    checks.passed("6", "policy", "policy hashes stayed fixed" + (" and every policy limit was kept" if limits else ""), src)


def _check_policy_hash(
    event: PolicyHashEvent, policy_hashes: Mapping[str, str], checks: Checks, where: dict[str, Any]
) -> None:
    """Step 6.1."""
    inst = event.institution
    if inst in policy_hashes and event.hash != policy_hashes[inst]:
        checks.fail("6", "policy hash", Verdict.POLICY_VIOLATED,
                    f"{inst}'s policy hash changed mid-run", expected=policy_hashes[inst],
                    found=str(event.hash), **where)


def _check_genesis(
    event: GenesisEvent,
    limits: Mapping[str, PolicyLimits],
    genesis_keys: Mapping[str, Ed25519PublicKey],
    policy_hashes: Mapping[str, str],
    checks: Checks,
    where: dict[str, Any],
) -> None:
    """Step 6.2."""
    for inst_id, lim in limits.items():
        if inst_id not in genesis_keys:
            continue
        if lim.policy_hash and lim.policy_hash != policy_hashes.get(inst_id):
            checks.fail("6", "policy hash", Verdict.POLICY_VIOLATED,
                        f"the genesis lists a policy hash for {inst_id} that is not its policy's",
                        expected=lim.policy_hash, found=policy_hashes.get(inst_id), **where)
        modes = lim.aggregation_modes
        if modes is not None and event.mode not in modes:
            checks.fail("6", "aggregation mode", Verdict.POLICY_VIOLATED,
                        f"aggregation mode {event.mode!r} is not allowed by {inst_id}'s policy",
                        expected=", ".join(modes), found=event.mode, **where)


def _check_tree(event: TreeEvent, limits: Mapping[str, PolicyLimits], checks: Checks, where: dict[str, Any]) -> None:
    """Step 6.3."""
    for inst_id, lim in limits.items():
        floor = lim.min_child_rows
        if isinstance(floor, int) and event.smallest < floor:
            checks.fail("6", "small cells", Verdict.POLICY_VIOLATED,
                        f"round {event.round} grew a tree with a node of {event.smallest} rows, "
                        f"below {inst_id}'s histograms.min_child_rows of {floor}",
                        expected=f">= {floor}", found=str(event.smallest), **where)


def _check_round(
    event: RoundEvent,
    limits: Mapping[str, PolicyLimits],
    participation: dict[str, int],
    checks: Checks,
    where: dict[str, Any],
) -> None:
    """Step 6.4 (``participation`` counts each institution's rounds so far)."""
    survivors = event.survivors
    for inst_id in survivors:
        participation[inst_id] = participation.get(inst_id, 0) + 1
        lim = limits.get(inst_id)
        if lim is None:
            continue
        min_cohort = lim.min_cohort_size
        if isinstance(min_cohort, int) and len(survivors) < min_cohort:
            checks.fail("6", "min cohort", Verdict.POLICY_VIOLATED,
                        f"round {event.round} aggregated {len(survivors)} institutions, below "
                        f"{inst_id}'s minimum cohort of {min_cohort}",
                        expected=f">= {min_cohort}", found=str(len(survivors)), **where)
        max_rounds = lim.max_rounds
        if isinstance(max_rounds, int) and participation[inst_id] > max_rounds:
            checks.fail("6", "max rounds", Verdict.POLICY_VIOLATED,
                        f"{inst_id} took part in round {event.round}, beyond its maximum of {max_rounds} rounds",
                        expected=f"<= {max_rounds}", found=str(participation[inst_id]), **where)
        allowed = lim.allowed_metrics
        if allowed is not None:
            extra = [m for m in event.metrics if m not in allowed]
            if extra:
                checks.fail("6", "metrics", Verdict.POLICY_VIOLATED,
                            f"round {event.round} released metrics {extra} that {inst_id}'s policy does not allow",
                            expected=", ".join(allowed), found=", ".join(extra), **where)
