"""The institution's gate: every decision to take part in a round is made here.

The gate runs at the institution before any training and before anything
derived from its data leaves the site. It decides from what the institution
can observe itself: its **own** policy file, the run's own settings, and the
SecAgg+ parameters its own protocol state recorded. It never takes the server's
description of the rules. New rules go here (or into :mod:`policy.decide`,
which this module calls), in one place.

A refusal raises :class:`RoundRefused`, whose text carries a
:class:`core.wire.Refusal` token so the server can log it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.keys import load_private_key, load_public_key
from core.errors import PolicyViolation
from federation.settings import Aggregation, RunSettings, check_unsafe_opt_in
from core.wire import Refusal
from secagg.params import MAX_AUTO_WEIGHT
from policy import Policy, PolicyRefusal, RoundInstructions, load_policy
from policy.model import AggregationRequirement
from policy import check_round as policy_check_round

from .node import InstitutionNode, require_file
from .secagg_adapter import ObservedSecAgg


class RoundRefused(PolicyViolation):
    """This institution refuses a round; the message carries a refusal token."""

    def __init__(self, refusal: Refusal) -> None:
        rules = "; ".join(refusal.rules)
        super().__init__(
            f"{refusal.institution} refuses round {refusal.server_round}: {rules} "
            f"[{refusal.token()}]",
            refusal.rules,
        )
        self.refusal = refusal


@dataclass(frozen=True)
class Institution:
    """What an institution brings to every decision: its files, loaded and checked."""

    node: InstitutionNode
    policy: Policy
    signing_key: Ed25519PrivateKey
    server_key: Ed25519PublicKey
    #: The columns this institution's data feeds the model (policy names).
    features: tuple[str, ...]


def load_institution(
    node: InstitutionNode, settings: RunSettings, now: dt.datetime | None = None
) -> Institution:
    """Load the institution's own policy and keys; refuse to start if invalid or expired.

    The files are read at every call but parsed only when their bytes differ
    from the last parse in this process (SHA-256 of each), so the SecAgg+ mod
    and the client share one parse, and an edited or replaced policy takes
    effect at the next message. Whether the policy is in force is checked at
    every call.
    """
    from .data import LocalData

    digests = tuple(_digest(p) for p in (node.policy_path, node.signing_key_path, node.server_key_path))
    policy, key, server_key = _load_files(node, digests)
    policy.ensure_current(now or dt.datetime.now(dt.timezone.utc))
    features = LocalData(node, settings).policy_features()
    return Institution(
        node=node, policy=policy, signing_key=key, server_key=server_key, features=features
    )


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # the load below names the missing file


@lru_cache(maxsize=16)
def _load_files(
    node: InstitutionNode, digests: tuple[str | None, ...]
) -> tuple[Policy, Ed25519PrivateKey, Ed25519PublicKey]:
    # ``digests`` is only the cache key: files whose bytes changed are parsed again.
    del digests
    policy = load_policy(require_file(node.policy_path, "institution policy"))
    if policy.institution_id != node.institution_id:
        raise PolicyViolation(
            f"{node.policy_path}: policy is for {policy.institution_id!r}, "
            f"but this node is {node.institution_id!r}"
        )
    key = load_private_key(require_file(node.signing_key_path, "institution signing key"))
    server_key = load_public_key(require_file(node.server_key_path, "trusted server audit key"))
    return policy, key, server_key


@dataclass(frozen=True)
class RoundView:
    """What the institution knows about the round it is asked to take part in.

    ``secagg`` is the SecAgg+ state the institution observed itself, or
    ``None`` when the run is configured without protection (or for evaluation).
    ``cohort`` names the institutions whose contributions the round combines
    (this one included), as the institution counted them itself: from the
    key advertisements it verified against its pinned keys, or, before it has
    seen them (the setup stage), the whole federation of the run config;
    as the institution can count them.
    """

    institution_id: str
    server_round: int
    secagg: ObservedSecAgg | None
    cohort: tuple[str, ...]
    training: bool = True
    #: The round sums gradient histograms (``model = "gbdt"``).
    histograms: bool = False


def check_round(
    view: RoundView,
    settings: RunSettings,
    institution: Institution | None = None,
    now: dt.datetime | None = None,
) -> ObservedSecAgg:
    """Refuse the round, naming every broken rule, or return what was checked.

    Returns
    -------
    ObservedSecAgg
        The SecAgg+ parameters the update will be protected with (for an
        ``unsafe-plain`` run or an evaluation: the run's own settings).

    Raises
    ------
    RoundRefused
        With one entry per broken rule (the run's own rules and, if given,
        every rule of the institution's policy).
    """
    moment = now or dt.datetime.now(dt.timezone.utc)
    broken: list[str] = []
    expected = settings.secagg
    if not 1 <= view.server_round <= settings.num_rounds:
        broken.append(
            f"run.num-server-rounds: round {view.server_round} is outside the run's "
            f"{settings.num_rounds} rounds"
        )
    observed = view.secagg
    if observed is None:
        if view.training and settings.aggregation is not Aggregation.UNSAFE_PLAIN:
            broken.append("run.aggregation: training requested without SecAgg+")
        elif view.training:
            warnings.warn(
                f"{view.institution_id}: UNSAFE run, the update is sent unprotected",
                stacklevel=2,
            )
        observed = ObservedSecAgg(
            stage_before="none",
            sample_num=len(view.cohort),
            num_shares=0,
            reconstruction_threshold=expected.reconstruction_threshold,
            clipping_range=expected.clipping_range,
            quantization_range=expected.quantization_range,
            modulus_range=expected.modulus_range,
            max_weight=expected.max_weight,
        )
    else:
        _check_secagg(observed, len(set(view.cohort)), settings, broken, view.training)
    policy_hash = ""
    aggregation = settings.aggregation.value
    if settings.aggregation is Aggregation.UNSAFE_PLAIN and institution is not None:
        # A benchmark baseline: only with this institution's own opt-in, which
        # names this federation (or run) and has not expired, and only under
        # a policy that does not insist on a protection mode. Every other rule
        # of its policy still applies.
        broken.extend(
            check_unsafe_opt_in(
                institution.node.site.unsafe_opt_in, settings, moment
            )
        )
        required = institution.policy.protection.required_aggregation
        if required is not AggregationRequirement.ANY:
            broken.append(
                f"protection.required_aggregation: the round is 'unsafe-plain' (no protection) "
                f"but this policy requires {required.value!r}; an opt-in does not override it"
            )
        aggregation = Aggregation.SECAGG_PLUS.value
    if institution is not None:
        policy_hash = institution.policy.policy_hash
        # The one policy path: the cohort is the one this institution counted
        # itself, and every rule (partners, cohort size, threshold, rounds,
        # features...) is decided by policy.decide.check_round.
        partners = tuple(sorted(set(view.cohort) - {view.institution_id}))
        instructions = RoundInstructions(
            purpose=settings.purpose,
            partners=partners,
            server_round=view.server_round,
            num_rounds=settings.num_rounds,
            aggregation=aggregation,
            secagg_threshold=observed.reconstruction_threshold,
            cohort_size=len(partners) + 1,
            local_epochs=settings.local_epochs,
            features=institution.features,
            releases_histograms=view.histograms,
        )
        try:
            policy_check_round(institution.policy, instructions, moment)
        except PolicyRefusal as refusal:
            broken.extend(refusal.violations)
    if broken:
        raise RoundRefused(
            Refusal(
                institution=view.institution_id,
                server_round=view.server_round,
                rules=tuple(broken),
                policy_hash=policy_hash,
            )
        )
    return observed


def _check_secagg(
    observed: ObservedSecAgg,
    cohort_size: int,
    settings: RunSettings,
    broken: list[str],
    training: bool = True,
) -> None:
    # Every SecAgg+ parameter is the run's agreed value: the server may not
    # pick a lower threshold, fewer shares, or a range that clips or overflows.
    expected = settings.secagg
    if cohort_size < settings.min_cohort:
        broken.append(
            f"run.min-cohort: the round sums {cohort_size} institutions, "
            f"fewer than {settings.min_cohort}"
        )
    agreed = (
        ("threshold", observed.reconstruction_threshold, expected.reconstruction_threshold),
        ("num-shares", observed.num_shares, expected.num_shares),
        ("clipping-range", observed.clipping_range, expected.clipping_range),
        ("quantization-range", observed.quantization_range, expected.quantization_range),
        ("modulus-range", observed.modulus_range, expected.modulus_range),
    )
    for key, found, wanted in agreed:
        if found != wanted:
            broken.append(f"run.{key}: the server set {found!r}, the run agreed {wanted!r}")
    if not expected.auto_weight:
        if observed.max_weight != expected.max_weight:
            broken.append(
                f"run.max-weight: the server set {observed.max_weight!r}, "
                f"the run agreed {expected.max_weight!r}"
            )
    elif training and not 1 <= observed.max_weight <= MAX_AUTO_WEIGHT:
        # Auto: the federation's row total, which the server learned from an
        # exact secure sum. It is signed into every key advertisement, so all
        # institutions of a round must have been told the same bound; the
        # institution's own count must fit it (checked before sending).
        broken.append(
            f"run.max-weight: the server set {observed.max_weight!r}, outside the "
            f"auto range [1, {MAX_AUTO_WEIGHT:g}]"
        )
