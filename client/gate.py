"""The institution's gate: every decision to take part in a round is made here.

The gate runs at the institution before any training and before anything
derived from its data leaves the site. It looks only at what the institution
can observe itself (its own settings and its own SecAgg+ protocol state), never
at the server's description of the rules. Later rules (the institution's
policy file, CKKS keys) are added here, in one place.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from fedfraud.errors import PolicyViolation
from fedfraud.settings import Aggregation, RunSettings

from .secagg_adapter import ObservedSecAgg


@dataclass(frozen=True)
class RoundView:
    """What the institution knows about the round it is asked to train in.

    ``secagg`` is the SecAgg+ state the institution observed itself, or
    ``None`` when the run is configured without protection.
    """

    institution_id: str
    server_round: int
    secagg: ObservedSecAgg | None


def check_round(view: RoundView, settings: RunSettings) -> ObservedSecAgg:
    """Refuse the round, naming every broken rule, or return what was checked.

    Returns
    -------
    ObservedSecAgg
        The SecAgg+ parameters the update will be protected with (for an
        ``unsafe-plain`` run: the run's own settings, used for range checks).

    Raises
    ------
    PolicyViolation
        With one entry per broken rule.
    """
    broken: list[str] = []
    expected = settings.secagg
    if not 1 <= view.server_round <= settings.num_rounds:
        broken.append(
            f"rounds: round {view.server_round} is outside the run's "
            f"{settings.num_rounds} rounds"
        )
    observed = view.secagg
    if observed is None:
        if settings.aggregation is not Aggregation.UNSAFE_PLAIN:
            broken.append("aggregation: training requested without SecAgg+")
        else:
            warnings.warn(
                f"{view.institution_id}: UNSAFE run, the update is sent unprotected",
                stacklevel=2,
            )
        observed = ObservedSecAgg(
            stage_before="none",
            sample_num=len(settings.institutions),
            share_num=0,
            threshold=0,
            clipping_range=expected.clipping_range,
            quantization_range=expected.quantization_range,
            modulus_range=expected.modulus_range,
            max_weight=expected.max_weight,
        )
    else:
        _check_secagg(observed, settings, broken)
    if broken:
        raise PolicyViolation(
            f"{view.institution_id} refuses round {view.server_round}: " + "; ".join(broken),
            tuple(broken),
        )
    return observed


def _check_secagg(observed: ObservedSecAgg, settings: RunSettings, broken: list[str]) -> None:
    expected = settings.secagg
    if observed.sample_num < settings.min_cohort:
        broken.append(
            f"min-cohort: the round sums {observed.sample_num} institutions, "
            f"fewer than {settings.min_cohort}"
        )
    if observed.threshold < expected.reconstruction_threshold:
        broken.append(
            f"reconstruction-threshold: the server set {observed.threshold}, "
            f"below {expected.reconstruction_threshold}"
        )
    if observed.clipping_range != expected.clipping_range:
        broken.append(
            f"clipping-range: the server set {observed.clipping_range:g}, "
            f"the run agreed {expected.clipping_range:g}"
        )
    if (observed.quantization_range, observed.modulus_range) != (
        expected.quantization_range,
        expected.modulus_range,
    ):
        broken.append("quantization-range/modulus-range differ from the agreed run config")
    if observed.max_weight != expected.max_weight:
        broken.append("max-weight differs from the agreed run config")
