"""SecAgg+ settings: typed, validated once, with the quantization error bound.

SecAgg+ (Bell et al., "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020; fedfraud's hardened form in
:mod:`secagg.hardened`) sums *quantized* client vectors modulo
``modulus_range``. Three things can go wrong quietly there, and this
module turns each into a loud error or a documented bound:

1. **Clipping.** Flower's stock SecAgg+ clips each (weighted) parameter to
   ``[-clipping_range, clipping_range]`` before quantizing, without telling
   anyone. fedfraud's quantizer refuses instead, and
   :func:`check_update_in_range` names the layer first, so no institution's
   contribution is silently distorted.
2. **Overflow.** The sum of ``n`` quantized vectors must stay below
   ``modulus_range``; :meth:`SecAggSettings.validate_for` checks
   ``n * quantization_range < modulus_range`` before a run starts.
3. **Precision.** :func:`aggregation_error_bound` derives the largest possible
   difference between the SecAgg+ aggregate and plain FedAvg of the same
   updates, which tests assert against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.errors import ConfigError, ProtocolError

from .masks import LIMB_BITS


#: ``max-weight`` value meaning "the federation's securely summed row total".
AUTO_WEIGHT = 0.0
#: Largest weight bound a server may announce in auto mode (2**40 rows).
MAX_AUTO_WEIGHT = float(2**40)


class UpdateOutOfRange(ProtocolError):
    """A model update has a parameter outside the SecAgg+ clipping range."""


@dataclass(frozen=True)
class SecAggSettings:
    """The SecAgg+ parameters of a run (run-config keys in brackets).

    Parameters
    ----------
    num_shares : int
        Shares each institution's secrets are split into [``num-shares``].
    reconstruction_threshold : int
        Shares needed to rebuild a secret [``reconstruction-threshold``]; also the
        fewest surviving neighbours a round needs.
    clipping_range : float
        Every model parameter must lie in ``[-c, c]`` [``clipping-range``].
    quantization_range : int
        Integer levels a parameter is mapped to [``quantization-range``].
    modulus_range : int
        Modulus of the masked sum, a power of two <= 2**32 [``modulus-range``].
    max_weight : float
        Largest per-institution example count; weights are ``n_i / max_weight``
        [``max-weight``]. ``0`` (the default) means *auto*: the federation's
        total of training rows, summed exactly and securely before the first
        training round (:data:`AUTO_WEIGHT`), so no institution is too large
        and the weights sum to 1, the best precision the quantization allows.
    timeout : float
        Seconds the server waits for each protocol stage [``timeout``]. Flower's
        default waits forever, which a dropped institution would turn into a hang.
    """

    num_shares: int
    reconstruction_threshold: int
    clipping_range: float
    quantization_range: int
    modulus_range: int
    max_weight: float
    timeout: float

    @property
    def auto_weight(self) -> bool:
        """Whether ``max-weight`` is derived from the federation's row total."""
        return self.max_weight == AUTO_WEIGHT

    @classmethod
    def resolve(
        cls,
        *,
        num_shares: int,
        reconstruction_threshold: int,
        clipping_range: float,
        quantization_range: int,
        modulus_range: int,
        max_weight: float,
        timeout: float,
        cohort_size: int | None = None,
    ) -> SecAggSettings:
        """Build checked settings, deriving the shares the run left to *auto*.

        ``num_shares`` and ``reconstruction_threshold`` of 0 mean *auto*: the
        values :func:`auto_shares` derives from ``cohort_size`` (the number of
        institutions of the run), so any federation size runs with the defaults.
        Reading them from Flower's run config is :mod:`federation.settings`'s job.
        """
        if AUTO in (num_shares, reconstruction_threshold):
            if cohort_size is None:
                raise ConfigError("num-shares or reconstruction-threshold is auto (0) but the cohort is unknown")
            auto_k, _ = auto_shares(cohort_size)
            if num_shares == AUTO:
                num_shares = auto_k
            if reconstruction_threshold == AUTO:
                reconstruction_threshold = minimum_threshold(min(cohort_size, num_shares // 2 * 2 + 1))
        settings = cls(
            num_shares=num_shares,
            reconstruction_threshold=reconstruction_threshold,
            clipping_range=clipping_range,
            quantization_range=quantization_range,
            modulus_range=modulus_range,
            max_weight=max_weight,
            timeout=timeout,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Check the settings on their own; raise ConfigError listing all problems."""
        problems: list[str] = []
        if self.num_shares < 3:
            problems.append(f"num-shares must be at least 3, found {self.num_shares}")
        if not 2 <= self.reconstruction_threshold <= max(self.num_shares, 3):
            problems.append(
                "reconstruction-threshold must be at least 2 and at most num-shares, "
                f"found {self.reconstruction_threshold} with num-shares {self.num_shares}"
            )
        if not self.clipping_range > 0:
            problems.append(f"clipping-range must be > 0, found {self.clipping_range}")
        if self.quantization_range < 2**10:
            problems.append(
                f"quantization-range must be at least 1024, found {self.quantization_range}"
            )
        if self.modulus_range > 2**32 or self.modulus_range & (self.modulus_range - 1):
            problems.append(
                f"modulus-range must be a power of two <= 2**32, found {self.modulus_range}"
            )
        if self.modulus_range <= self.quantization_range:
            problems.append("modulus-range must be larger than quantization-range")
        if not (self.max_weight >= 1 or self.max_weight == AUTO_WEIGHT):
            problems.append(f"max-weight must be 0 (auto) or >= 1, found {self.max_weight}")
        if not self.timeout > 0:
            problems.append(
                f"timeout must be > 0 seconds (Flower waits forever otherwise), "
                f"found {self.timeout}"
            )
        if problems:
            raise ConfigError("invalid SecAgg+ settings: " + "; ".join(problems))

    def validate_for(self, cohort_size: int, dropouts_tolerated: bool = True) -> None:
        """Check the settings against the number of institutions in a round.

        Raises
        ------
        ConfigError
            If the masked sum could overflow, the shares exceed the cohort, or
            the threshold leaves no room for a single dropout. A run whose
            cohort floor is every institution (``dropouts_tolerated`` false:
            one dropout ends the round anyway) may set the threshold to the
            whole cohort, as a policy that tolerates no dropout demands.
        """
        problems: list[str] = []
        # Each institution contributes values in [0, quantization_range]; the
        # sum of n of them must not wrap around the modulus.
        if cohort_size * self.quantization_range >= self.modulus_range:
            problems.append(
                f"{cohort_size} institutions x quantization-range "
                f"{self.quantization_range} would overflow modulus-range {self.modulus_range}"
            )
        # Exact sums (counts) add 16-bit limbs: n of them must not wrap either.
        if cohort_size * (2**LIMB_BITS - 1) >= self.modulus_range:
            problems.append(
                f"{cohort_size} institutions x {LIMB_BITS}-bit limbs of exact sums "
                f"would overflow modulus-range {self.modulus_range}"
            )
        if self.num_shares > cohort_size:
            problems.append(
                f"num-shares {self.num_shares} exceeds the {cohort_size} institutions"
            )
        neighbourhood = min(cohort_size, self.num_shares // 2 * 2 + 1)
        if self.reconstruction_threshold > neighbourhood:
            problems.append(
                f"reconstruction-threshold {self.reconstruction_threshold} exceeds the "
                f"neighbourhood of {neighbourhood} institutions that hold the shares"
            )
        elif dropouts_tolerated and self.reconstruction_threshold == neighbourhood:
            problems.append(
                f"reconstruction-threshold {self.reconstruction_threshold} leaves no "
                f"room for one dropped institution out of {neighbourhood} (it may equal "
                f"that only with min-cohort {cohort_size}, which tolerates no dropout)"
            )
        if self.reconstruction_threshold < minimum_threshold(neighbourhood):
            problems.append(
                f"reconstruction-threshold {self.reconstruction_threshold} is below the bound "
                f"{minimum_threshold(neighbourhood)} that a neighbourhood of {neighbourhood} "
                "needs against a malicious server (t > n/2, Bonawitz et al. 2017)"
            )
        if problems:
            raise ConfigError("SecAgg+ settings do not fit the cohort: " + "; ".join(problems))

    def as_record(self) -> dict[str, float | int]:
        """The settings as a flat, JSON-ready dict (for run files and the audit log)."""
        return {
            "num_shares": self.num_shares,
            "reconstruction_threshold": self.reconstruction_threshold,
            "clipping_range": self.clipping_range,
            "quantization_range": self.quantization_range,
            "modulus_range": self.modulus_range,
            "max_weight": self.max_weight,
            "timeout": self.timeout,
        }


def check_update_in_range(
    weights: Sequence[npt.NDArray[np.floating]],
    clipping_range: float,
    names: Sequence[str] | None = None,
) -> None:
    """Refuse an update that SecAgg+ quantization would clip.

    Flower multiplies each parameter by ``n_i / max_weight`` (at most 1) and then
    clips to ``[-c, c]``, so an update whose parameters all lie in ``[-c, c]``
    is never clipped. The error names the layer only: the values themselves
    are statistics of a private update and stay out of messages and logs.

    Raises
    ------
    UpdateOutOfRange
        If any parameter is outside the range or is not finite.
    """
    for index, array in enumerate(weights):
        label = names[index] if names is not None else f"#{index}"
        if not np.all(np.isfinite(array)):
            raise UpdateOutOfRange(f"layer {label}: update has non-finite values")
        if array.size and float(np.max(np.abs(array))) > clipping_range:
            raise UpdateOutOfRange(
                f"layer {label}: update leaves the SecAgg+ clipping range "
                f"[-{clipping_range}, {clipping_range}]; refusing to send it clipped "
                "(raise clipping-range in the run config)"
            )


def check_weight(num_examples: int, max_weight: float) -> None:
    """Refuse an example count above ``max_weight`` (Flower would overflow)."""
    if num_examples < 1 or num_examples > max_weight:
        raise UpdateOutOfRange(
            f"{num_examples} training examples is outside [1, max-weight={max_weight:g}]"
        )


def aggregation_error_bound(
    num_examples: Sequence[int], settings: SecAggSettings
) -> float:
    """Largest difference, per parameter, between SecAgg+ and plain FedAvg.

    Derivation (:func:`secagg.masks.encode_contribution`, as in Flower's
    SecAgg+): institution ``i`` with weight ``w_i = n_i / W`` sends the exact
    integer ``r_i Q`` and ``R((r_i x_i + c) Q / 2c)`` where
    ``r_i = round(w_i Q) / Q`` and ``R`` is rounding (error < 1).
    The server's result is ``sum(r_i x_i) / sum(r_i) + (2c/Q) sum(e_i) / sum(r_i)``,
    so (a) rounding adds at most ``2 n c / (Q sum r_i)``, and (b) using ``r_i``
    instead of ``w_i`` moves a weighted mean of values in ``[-c, c]`` by at most
    ``2 c sum|r_i - w_i| / sum r_i <= n c / (Q sum r_i)``. Together:
    ``3 n c / (Q sum r_i)``. With an auto ``max-weight`` (``W = sum n_i``),
    ``sum r_i`` is about 1 and the bound is about ``3 n c / Q``.
    """
    n = len(num_examples)
    q = settings.quantization_range
    # Auto max-weight: the bound is the contributors' own row total.
    bound = float(sum(num_examples)) if settings.auto_weight else settings.max_weight
    if bound <= 0:
        raise ConfigError("error bound needs at least one institution with examples")
    ratios = [round(count / bound * q) / q for count in num_examples]
    total = sum(ratios)
    if n == 0 or total <= 0:
        raise ConfigError("error bound needs at least one institution with examples")
    return 3.0 * n * settings.clipping_range / (q * total)


#: Colluding institutions the default threshold bound assumes (besides an
#: actively malicious server). Raise it only with a threshold that meets
#: :func:`minimum_threshold` for the larger number.
ASSUMED_COLLUDERS = 0


#: ``num-shares`` / ``reconstruction-threshold`` value meaning "derive it from the cohort".
AUTO = 0


def auto_shares(cohort_size: int) -> tuple[int, int]:
    """(num-shares, reconstruction-threshold) for a federation of ``cohort_size``.

    SecAgg+ needs a neighbourhood of O(log n) institutions, not all of them
    (Bell et al. 2020): here ``2 ceil(log2 n) + 1``, odd, at most the cohort
    (3 of 3, 9 of 10, 11 of 20, 13 of 50, 15 of 100), with the smallest
    threshold the bound against a malicious server allows (a strict majority:
    2 of 3, 5 of 9, 7 of 13), so every neighbourhood tolerates dropouts.
    """
    if cohort_size < 3:
        return 3, 2
    k = 2 * math.ceil(math.log2(cohort_size)) + 1
    largest_odd = cohort_size if cohort_size % 2 else cohort_size - 1
    k = max(3, min(k, largest_odd))
    return k, minimum_threshold(k)


def minimum_threshold(neighbourhood: int, colluders: int = ASSUMED_COLLUDERS) -> int:
    """The smallest safe reconstruction threshold for a neighbourhood.

    Bonawitz et al. (CCS 2017, section 6.4 and Theorem A.2) show the protocol
    secure against an active server colluding with ``n_C`` clients when
    ``t > (n + n_C) / 2``: a server that shows two groups of honest clients
    two different survivor sets then needs ``t - n_C`` honest signatures in
    each, which two disjoint honest groups cannot both give. And, as in any
    t-of-n sharing, fewer than ``t`` colluders rebuild nothing: ``t > n_C``.
    """
    return max((neighbourhood + colluders) // 2 + 1, colluders + 1, 2)


def check_threshold(threshold: int, neighbourhood: int, colluders: int = ASSUMED_COLLUDERS) -> None:
    """Refuse a threshold the security bound does not allow, or one no cohort can reach.

    Raises
    ------
    ProtocolError
        Naming the bound and the values found.
    """
    low = minimum_threshold(neighbourhood, colluders)
    if threshold < low:
        raise ProtocolError(
            f"secagg.threshold: {threshold} is below the bound t > (n + n_C)/2 = "
            f"{(neighbourhood + colluders) / 2:g} for a neighbourhood of {neighbourhood} "
            f"with {colluders} colluding institutions (Bonawitz et al. 2017)"
        )
    if threshold > neighbourhood:
        raise ProtocolError(
            f"secagg.threshold: {threshold} exceeds the neighbourhood of {neighbourhood}"
        )
