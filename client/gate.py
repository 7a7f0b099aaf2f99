"""The institution's gate: every decision to take part in a round is made here.

The gate runs at the institution before any training and before anything
derived from its data leaves the site. It looks only at what the institution
can observe itself (its own settings and its own SecAgg+ protocol state), never
at the server's description of the rules. Later rules (the institution's
policy file, CKKS keys) are added here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedfraud.errors import PolicyViolation
from fedfraud.settings import RunSettings

from .secagg_adapter import ObservedSecAgg


@dataclass(frozen=True)
class RoundView:
    """What the institution knows about the round it is asked to train in."""

    institution_id: str
    server_round: int
    secagg: ObservedSecAgg


def check_round(view: RoundView, settings: RunSettings) -> None:
    """Refuse the round, naming every broken rule, or return quietly.

    Raises
    ------
    PolicyViolation
        With one entry per broken rule.
    """
    broken: list[str] = []
    observed = view.secagg
    expected = settings.secagg
    if not 1 <= view.server_round <= settings.num_rounds:
        broken.append(
            f"rounds: round {view.server_round} is outside the run's "
            f"{settings.num_rounds} rounds"
        )
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
    if broken:
        raise PolicyViolation(
            f"{view.institution_id} refuses round {view.server_round}: " + "; ".join(broken),
            tuple(broken),
        )
