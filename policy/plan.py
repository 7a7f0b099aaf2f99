"""The combined run plan: the strictest terms every institution agrees to.

:func:`combine` folds the federation's policies into one :class:`RunPlan`:
intersections of what is allowed, the largest of every minimum and the
smallest of every maximum. The server then asks the plan to check a concrete
:class:`RunRequest` (:meth:`RunPlan.check_run`) and, after each round, the
cohort that survived (:meth:`RunPlan.check_cohort`).

A plan that no run could satisfy (no common purpose, an institution that does
not accept a partner, ...) is still returned, with its :attr:`RunPlan.conflicts`
filled in, so that every reason can be shown at once; ``check_run`` refuses it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from core.errors import ConfigError
from policy._checks import field_type_problems
from policy.decide import MetricsRelease, RoundInstructions, release_under
from policy.errors import PlanConflict
from policy.model import (
    AVAILABLE_AGGREGATION_MODES,
    FEDERATION,
    AggregationMode,
    Metric,
    Policy,
    Purpose,
)

__all__ = ["PLAN_HASH_DOMAIN_TAG", "PolicyRef", "RunPlan", "RunRequest", "combine"]

#: Domain-separation prefix of :attr:`RunPlan.plan_hash`.
PLAN_HASH_DOMAIN_TAG: Final = b"fedfraud/plan/v1\x00"


@dataclass(frozen=True, slots=True)
class RunRequest:
    """The concrete run the server proposes.

    Values are kept as strings where a policy may refuse them by name
    (purpose, aggregation), so an unknown value becomes a conflict, not a crash.

    Parameters
    ----------
    purpose : str
        The DPV purpose the run declares.
    institutions : tuple of str
        Ids of every institution in the federation.
    num_rounds : int
        Rounds in the run.
    aggregation : str
        ``secagg+`` or ``ckks``.
    secagg_threshold : int
        SecAgg+ reconstruction threshold.
    cohort_size : int
        Institutions selected (and summed) per round.
    local_epochs : int
        Local epochs per round.
    features : tuple of str
        Column names the model is trained on.

    Raises
    ------
    core.errors.ConfigError
        If a field has the wrong type.
    """

    purpose: str
    institutions: tuple[str, ...]
    num_rounds: int
    aggregation: str
    secagg_threshold: int
    cohort_size: int
    local_epochs: int
    features: tuple[str, ...]
    #: ``mlp`` or ``gbdt`` (boosted trees: summed histograms leave, see
    #: :meth:`RunPlan.histogram_conflicts`).
    model: str = "mlp"

    def __post_init__(self) -> None:
        problems = field_type_problems(
            self,
            strings=("purpose", "aggregation", "model"),
            integers=("num_rounds", "secagg_threshold", "cohort_size", "local_epochs"),
            string_tuples=("institutions", "features"),
        )
        if problems:
            raise ConfigError("invalid run request: " + "; ".join(problems))

    def instructions_for(
        self, institution: str, cohort: Sequence[str], server_round: int
    ) -> RoundInstructions:
        """Return the round instructions this run implies for one institution.

        Parameters
        ----------
        institution : str
            The institution receiving the instructions.
        cohort : Sequence of str
            Every institution selected for the round (``institution`` included).
        server_round : int
            The round number.

        Returns
        -------
        RoundInstructions
            With ``partners`` = the cohort minus ``institution`` and
            ``cohort_size`` = the size of the cohort.
        """
        members = tuple(dict.fromkeys(cohort))
        return RoundInstructions(
            purpose=self.purpose,
            partners=tuple(member for member in members if member != institution),
            server_round=server_round,
            num_rounds=self.num_rounds,
            aggregation=self.aggregation,
            secagg_threshold=self.secagg_threshold,
            cohort_size=len(members),
            local_epochs=self.local_epochs,
            features=self.features,
        )


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """Which policy of which institution contributed to a plan."""

    institution: str
    version: int
    policy_hash: str


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The strictest terms all contributing policies agree to.

    Build with :func:`combine`. Every number is the strictest over the
    policies; every set is an intersection (forbidden features: a union).

    Attributes
    ----------
    policies : tuple of Policy
        The contributing policies, sorted by institution id.
    contributing : tuple of PolicyRef
        Institution, version and hash of each policy (for the audit log).
    purposes : tuple of Purpose
        Purposes every institution allows.
    aggregation_modes : tuple of AggregationMode
        Modes every institution accepts.
    min_cohort_size, min_secagg_threshold, min_partners : int
        The largest of each minimum.
    max_rounds, max_local_epochs : int
        The smallest of each maximum.
    allowed_features : tuple of str
        Features every institution allows and none forbids.
    forbidden_features : tuple of str
        Features any institution forbids.
    model_recipients : tuple of str
        Institutions every policy lets receive the final model.
    allowed_metrics : tuple of Metric
        Metrics every institution allows.
    min_cell_count, retention_days : int
        The largest of each.
    synthetic_release_allowed : bool
        True only if every policy allows it.
    require_countersigned_receipts : bool
        True if any policy requires it.
    valid_from, valid_until : datetime
        The window in which every policy is in force.
    conflicts : tuple of str
        Reasons no run could satisfy every policy (empty if some run could).
    """

    policies: tuple[Policy, ...]
    contributing: tuple[PolicyRef, ...]
    purposes: tuple[Purpose, ...]
    aggregation_modes: tuple[AggregationMode, ...]
    min_cohort_size: int
    min_secagg_threshold: int
    min_partners: int
    max_rounds: int
    max_local_epochs: int
    allowed_features: tuple[str, ...]
    forbidden_features: tuple[str, ...]
    model_recipients: tuple[str, ...]
    allowed_metrics: tuple[Metric, ...]
    min_cell_count: int
    retention_days: int
    synthetic_release_allowed: bool
    require_countersigned_receipts: bool
    valid_from: datetime
    valid_until: datetime
    conflicts: tuple[str, ...]

    @property
    def institutions(self) -> tuple[str, ...]:
        """Ids of the institutions in the plan, sorted."""
        return tuple(ref.institution for ref in self.contributing)

    @property
    def policy_hashes(self) -> tuple[tuple[str, str], ...]:
        """``(institution id, policy hash)`` pairs, sorted by institution."""
        return tuple((ref.institution, ref.policy_hash) for ref in self.contributing)

    @property
    def plan_hash(self) -> str:
        """Hex SHA-256 identifying this exact set of policies.

        Computed over :data:`PLAN_HASH_DOMAIN_TAG` and the sorted
        ``institution:hash`` lines, so it does not depend on input order.
        """
        lines = "".join(f"{ref.institution}:{ref.policy_hash}\n" for ref in self.contributing)
        return hashlib.sha256(PLAN_HASH_DOMAIN_TAG + lines.encode("utf-8")).hexdigest()

    def ensure_satisfiable(self) -> None:
        """Raise if no run could satisfy every policy.

        Raises
        ------
        PlanConflict
            Listing every entry of :attr:`conflicts`.
        """
        if self.conflicts:
            raise self._refusal("the policies cannot all be satisfied", list(self.conflicts))

    def check_run(self, request: RunRequest, now: datetime | None = None) -> None:
        """Refuse a run that any institution's policy forbids.

        Parameters
        ----------
        request : RunRequest
            The run the server proposes.
        now : datetime, optional
            Timezone-aware time at which the run starts; defaults to the
            current time. Every policy must be in force then.

        Raises
        ------
        PlanConflict
            Listing every conflict at once, each naming the institution(s) and
            the rule, including the plan's own :attr:`conflicts`.
        TypeError
            If ``now`` is naive.
        """
        moment = datetime.now(UTC) if now is None else now
        found: list[str] = list(self.conflicts)
        found.extend(self._federation_conflicts(request))
        found.extend(self._request_conflicts(request))
        # Policies in force: each institution's window, reported under its name.
        for policy in self.policies:
            found.extend(f"{policy.institution_id}: {v}" for v in policy.validity_violations(moment))
        if found:
            raise self._refusal("the run conflicts with the federation's policies", found)

    @property
    def histogram_min_child_rows(self) -> int:
        """The strictest small-cell rule of the histogram releases (1 if none)."""
        return max(
            (p.histograms.min_child_rows for p in self.policies if p.histograms is not None),
            default=1,
        )

    def histogram_conflicts(self, cohort_size: int) -> list[str]:
        """Why summed gradient histograms may not leave (empty if every policy allows it)."""
        found: list[str] = []
        for policy in self.policies:
            terms = policy.histograms
            if terms is None or not terms.allowed:
                found.append(
                    f"{policy.institution_id}: histograms.allowed is not true (its policy "
                    "allows no summed gradient histograms, so model 'gbdt' is refused)"
                )
            elif cohort_size < terms.min_cohort_size:
                found.append(
                    f"{policy.institution_id}: histograms.min_cohort_size is "
                    f"{terms.min_cohort_size} but the run sums only {cohort_size} institutions"
                )
        return found

    def release_metrics(self, metrics: Mapping[str, float | int]) -> MetricsRelease:
        """The pooled metrics every policy allows, under the strictest small-cell rule.

        The same rule as an institution's own release
        (:func:`policy.decide.release_under`), with the plan's allowlist
        (the intersection) and its largest ``min_cell_count``.
        """
        return release_under(
            {m.value for m in self.allowed_metrics}, self.min_cell_count, metrics, self.plan_hash
        )

    def check_cohort(self, surviving: int) -> None:
        """Refuse to release a round's sum if too few institutions survived.

        Parameters
        ----------
        surviving : int
            How many institutions' updates are in the round's sum.

        Raises
        ------
        PlanConflict
            If ``surviving`` is below the plan's minimum cohort (or leaves an
            institution with fewer partners than it requires).
        TypeError
            If ``surviving`` is not an integer.
        """
        if isinstance(surviving, bool) or not isinstance(surviving, int):
            raise TypeError("surviving must be an integer")
        found: list[str] = []
        for policy in self.policies:
            minimum = policy.protection.min_cohort_size
            if surviving < minimum:
                found.append(
                    f"{policy.institution_id}: protection.min_cohort_size is {minimum} but "
                    f"only {surviving} institution(s) survived the round"
                )
            if surviving - 1 < policy.data_use.min_partners:
                found.append(
                    f"{policy.institution_id}: data_use.min_partners is "
                    f"{policy.data_use.min_partners} but a cohort of {surviving} leaves "
                    f"{max(surviving - 1, 0)} partner(s)"
                )
        if found:
            raise self._refusal(f"the surviving cohort of {surviving} is too small", found)

    # -- internals ------------------------------------------------------------

    def _refusal(self, summary: str, found: list[str]) -> PlanConflict:
        count = len(found)
        return PlanConflict(
            f"{summary}: {count} conflict{'s' if count != 1 else ''}",
            tuple(found),
            policy_hashes=self.policy_hashes,
        )

    def _federation_conflicts(self, request: RunRequest) -> list[str]:
        found: list[str] = []
        listed = request.institutions
        duplicates = sorted({name for name in listed if listed.count(name) > 1})
        if duplicates:
            found.append(f"run: institutions lists {', '.join(duplicates)} more than once")
        missing = sorted(set(self.institutions) - set(listed))
        extra = sorted(set(listed) - set(self.institutions))
        if extra:
            found.append(
                f"run: {', '.join(extra)} take(s) part but no policy for them is in the plan"
            )
        if missing:
            found.append(
                f"run: the plan was built with the policies of {', '.join(missing)}, who are "
                "not in the run; combine only the policies of the run's institutions"
            )
        return found

    def _request_conflicts(self, request: RunRequest) -> list[str]:
        found: list[str] = []
        federation = len(set(request.institutions))

        # 1. Purpose: every institution must allow it.
        if request.purpose not in {p.value for p in self.purposes}:
            found.extend(
                f"{p.institution_id}: data_use.purposes does not include {request.purpose!r}"
                for p in self.policies
                if request.purpose not in {x.value for x in p.data_use.purposes}
            )

        # 2. Rounds.
        if request.num_rounds < 1:
            found.append(f"run: num_rounds must be at least 1, found {request.num_rounds}")
        if request.num_rounds > self.max_rounds:
            found.extend(
                f"{p.institution_id}: protection.max_rounds is {p.protection.max_rounds} but "
                f"the run asks for {request.num_rounds} rounds"
                for p in self.policies
                if request.num_rounds > p.protection.max_rounds
            )

        # 2a. The model kind, and with boosted trees the histogram release.
        if request.model not in ("mlp", "gbdt"):
            found.append(f"run: model {request.model!r} is not one of mlp, gbdt")
        elif request.model == "gbdt":
            found.extend(self.histogram_conflicts(request.cohort_size))

        # 3. Aggregation mode: one every policy accepts, and one this version performs.
        available = {m.value for m in AVAILABLE_AGGREGATION_MODES}
        if request.aggregation not in available:
            found.append(
                f"run: aggregation {request.aggregation!r} is not available in this version of "
                f"fedfraud (available: {', '.join(sorted(available))})"
            )
        if request.aggregation not in {m.value for m in self.aggregation_modes}:
            found.extend(
                f"{p.institution_id}: protection.required_aggregation is "
                f"{p.protection.required_aggregation.value!r} but the run uses "
                f"{request.aggregation!r}"
                for p in self.policies
                if request.aggregation not in {m.value for m in p.allowed_aggregation_modes}
            )

        # 4. Reconstruction threshold.
        if request.secagg_threshold < self.min_secagg_threshold:
            found.extend(
                f"{p.institution_id}: protection.min_secagg_threshold is "
                f"{p.protection.min_secagg_threshold} but the run uses threshold "
                f"{request.secagg_threshold}"
                for p in self.policies
                if request.secagg_threshold < p.protection.min_secagg_threshold
            )
        if request.secagg_threshold > request.cohort_size:
            found.append(
                f"run: secagg_threshold {request.secagg_threshold} exceeds cohort_size "
                f"{request.cohort_size}, so no sum could ever be unmasked"
            )

        # 5. Cohort size, and the partners each institution then has per round.
        if request.cohort_size < self.min_cohort_size:
            found.extend(
                f"{p.institution_id}: protection.min_cohort_size is "
                f"{p.protection.min_cohort_size} but the run sums only {request.cohort_size} "
                "institutions per round"
                for p in self.policies
                if request.cohort_size < p.protection.min_cohort_size
            )
        if request.cohort_size > federation:
            found.append(
                f"run: cohort_size {request.cohort_size} exceeds the {federation} "
                "institutions in the run"
            )
        if request.cohort_size - 1 < self.min_partners:
            found.extend(
                f"{p.institution_id}: data_use.min_partners is {p.data_use.min_partners} but "
                f"a round of {request.cohort_size} gives it {max(request.cohort_size - 1, 0)} "
                "partner(s)"
                for p in self.policies
                if request.cohort_size - 1 < p.data_use.min_partners
            )

        # 6. Local epochs.
        if request.local_epochs < 1:
            found.append(f"run: local_epochs must be at least 1, found {request.local_epochs}")
        if request.local_epochs > self.max_local_epochs:
            found.extend(
                f"{p.institution_id}: protection.max_local_epochs is "
                f"{p.protection.max_local_epochs} but the run asks for {request.local_epochs}"
                for p in self.policies
                if request.local_epochs > p.protection.max_local_epochs
            )

        # 7. Features: each must be allowed by all and forbidden by none.
        if not request.features:
            found.append("run: the run names no features")
        duplicates = sorted({f for f in request.features if request.features.count(f) > 1})
        if duplicates:
            found.append(f"run: features lists {', '.join(duplicates)} more than once")
        allowed = set(self.allowed_features)
        for feature in dict.fromkeys(request.features):
            if feature in allowed and feature.lower() not in self._forbidden_lower():
                continue
            for p in self.policies:
                if feature.lower() in {f.lower() for f in p.data_use.forbidden_features}:
                    found.append(
                        f"{p.institution_id}: data_use.forbidden_features lists {feature!r}"
                    )
                elif feature not in p.data_use.allowed_features:
                    found.append(
                        f"{p.institution_id}: data_use.allowed_features does not include "
                        f"{feature!r}"
                    )
        return found

    def _forbidden_lower(self) -> frozenset[str]:
        return frozenset(name.lower() for name in self.forbidden_features)


def combine(policies: Iterable[Policy]) -> RunPlan:
    """Combine the federation's policies into the strictest plan.

    Parameters
    ----------
    policies : Iterable of Policy
        One validated policy per institution of the federation.

    Returns
    -------
    RunPlan
        The strictest plan, with :attr:`RunPlan.conflicts` listing every reason
        no run could satisfy all policies.

    Raises
    ------
    core.errors.ConfigError
        If no policy is given, or two policies belong to the same institution
        (which one would apply is ambiguous).
    """
    members = sorted(policies, key=lambda p: p.institution_id)
    if not members:
        raise ConfigError("cannot combine an empty set of policies")
    ids = [p.institution_id for p in members]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ConfigError(f"more than one policy for institution(s): {', '.join(repeated)}")
    federation = set(ids)

    purposes = set.intersection(*(set(p.data_use.purposes) for p in members))
    modes = set.intersection(*(set(p.allowed_aggregation_modes) for p in members))
    forbidden = set().union(*(p.data_use.forbidden_features for p in members))
    forbidden_lower = {f.lower() for f in forbidden}
    features = {
        f
        for f in set.intersection(*(set(p.data_use.allowed_features) for p in members))
        if f.lower() not in forbidden_lower
    }
    metrics = set.intersection(*(set(p.outputs.allowed_metrics) for p in members))
    recipients = {
        candidate
        for candidate in federation
        if all(
            FEDERATION in p.outputs.model_recipients or candidate in p.outputs.model_recipients
            for p in members
        )
    }
    valid_from = max(p.identity.valid_from for p in members)
    valid_until = min(p.identity.valid_until for p in members)

    conflicts: list[str] = []
    # 1. A common purpose.
    if not purposes:
        listing = "; ".join(
            f"{p.institution_id}: {', '.join(x.value for x in p.data_use.purposes)}"
            for p in members
        )
        conflicts.append(f"data_use.purposes: no purpose is allowed by every institution ({listing})")
    # 2. Mutual acceptance: everyone accepts everyone else.
    for p in members:
        for other in ids:
            if other != p.institution_id and other not in p.data_use.accepted_partners:
                conflicts.append(
                    f"{p.institution_id}: data_use.accepted_partners does not include {other}"
                )
    # 3. Enough institutions for each partner and cohort minimum.
    for p in members:
        if len(federation) - 1 < p.data_use.min_partners:
            conflicts.append(
                f"{p.institution_id}: data_use.min_partners is {p.data_use.min_partners} but "
                f"the federation has only {len(federation) - 1} other institution(s)"
            )
        if len(federation) < p.protection.min_cohort_size:
            conflicts.append(
                f"{p.institution_id}: protection.min_cohort_size is "
                f"{p.protection.min_cohort_size} but the federation has only "
                f"{len(federation)} institution(s)"
            )
    # 4. A common aggregation mode.
    if not modes:
        listing = "; ".join(
            f"{p.institution_id}: {p.protection.required_aggregation.value}" for p in members
        )
        conflicts.append(
            "protection.required_aggregation: no aggregation mode is accepted by every "
            f"institution ({listing})"
        )
    # 5. At least one usable feature.
    if not features:
        conflicts.append(
            "data_use.allowed_features: no feature is allowed by every institution and "
            "forbidden by none"
        )
    # 6. Someone may receive the result.
    if not recipients:
        conflicts.append(
            "outputs.model_recipients: no institution may receive the final model under "
            "every policy"
        )
    # 7. A moment at which every policy is in force.
    if valid_from >= valid_until:
        conflicts.append(
            "identity.valid_until: the policies are never all in force at the same time "
            f"(latest start {valid_from.isoformat()}, earliest end {valid_until.isoformat()})"
        )

    return RunPlan(
        policies=tuple(members),
        contributing=tuple(
            PolicyRef(p.institution_id, p.identity.version, p.policy_hash) for p in members
        ),
        purposes=tuple(sorted(purposes, key=str)),
        aggregation_modes=tuple(sorted(modes, key=str)),
        min_cohort_size=max(p.protection.min_cohort_size for p in members),
        min_secagg_threshold=max(p.protection.min_secagg_threshold for p in members),
        min_partners=max(p.data_use.min_partners for p in members),
        max_rounds=min(p.protection.max_rounds for p in members),
        max_local_epochs=min(p.protection.max_local_epochs for p in members),
        allowed_features=tuple(sorted(features)),
        forbidden_features=tuple(sorted(forbidden)),
        model_recipients=tuple(sorted(recipients)),
        allowed_metrics=tuple(sorted(metrics, key=str)),
        min_cell_count=max(p.outputs.min_cell_count for p in members),
        retention_days=max(p.audit.retention_days for p in members),
        synthetic_release_allowed=all(p.outputs.synthetic_release_allowed for p in members),
        require_countersigned_receipts=any(
            p.audit.require_countersigned_receipts for p in members
        ),
        valid_from=valid_from,
        valid_until=valid_until,
        conflicts=tuple(conflicts),
    )
