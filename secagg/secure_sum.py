"""Secure summation of count vectors through SecAgg+ (Flower-free arithmetic).

Flower's SecAgg+ computes a *weighted mean* ``sum(r_i x_i) / sum(r_i)`` of
vectors in ``[-c, c]``. To get an exact **sum of counts** out of it:

1. every institution reports the same weight, ``max-weight`` itself, so every
   ``r_i`` is exactly 1 and the mean is a plain mean;
2. it sends its counts divided by a public scale :data:`COUNT_SCALE` (and
   real-valued totals divided by :data:`TOTAL_SCALE`), so they fit in the
   clipping range (an institution whose values do not fit refuses to send
   them, loudly, like any update that would be clipped);
3. the server multiplies the mean by the number of surviving institutions and
   by the scale, and rounds counts to whole numbers. The rounding is exact when
   the error bound of :func:`secagg.params.aggregation_error_bound`, scaled the
   same way, is below one half: :func:`counts_from_sum` checks this and refuses
   otherwise.

No institution's own counts are ever seen by the server: only their sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedfraud.errors import ProtocolError

from .params import SecAggSettings, aggregation_error_bound

#: Public divisor applied to counts before they enter SecAgg+.
COUNT_SCALE = 16384.0
#: Public divisor for real-valued totals (e.g. a summed loss); these come back
#: approximately, within :func:`sum_error_bound` times this scale.
TOTAL_SCALE = 131072.0


def counts_to_vector(counts: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """What an institution sends for its counts (to be checked against the range)."""
    return np.asarray(counts, dtype=np.float64) / COUNT_SCALE


def total_to_vector(total: float) -> npt.NDArray[np.float64]:
    """What an institution sends for a real-valued total."""
    return np.array([total / TOTAL_SCALE], dtype=np.float64)


def sum_error_bound(survivors: int, settings: SecAggSettings) -> float:
    """Largest error of a securely summed entry, before multiplying by its scale."""
    weights = [int(settings.max_weight)] * survivors
    return aggregation_error_bound(weights, settings) * survivors


def unscaled_sum(mean: npt.ArrayLike, survivors: int) -> npt.NDArray[np.float64]:
    """SecAgg+'s mean of everyone's scaled vectors, times the number of contributors."""
    if survivors < 1:
        raise ProtocolError("a secure sum needs at least one contribution")
    return np.asarray(mean, dtype=np.float64) * survivors


def counts_from_sum(
    scaled: npt.ArrayLike, survivors: int, settings: SecAggSettings
) -> npt.NDArray[np.int64]:
    """Exact integer counts from a securely summed, scaled part.

    Raises
    ------
    ProtocolError
        If the quantization error could make the rounding wrong.
    """
    error = sum_error_bound(survivors, settings) * COUNT_SCALE
    if error >= 0.5:
        raise ProtocolError(
            f"secure sum is not exact with these SecAgg+ settings (error bound {error:.3f})"
        )
    return np.rint(np.asarray(scaled, dtype=np.float64) * COUNT_SCALE).astype(np.int64)


def total_from_sum(scaled: float) -> float:
    """A real-valued total from its securely summed, scaled part."""
    return float(scaled) * TOTAL_SCALE


def split(vector: npt.ArrayLike, sizes: Sequence[int]) -> list[npt.NDArray[np.float64]]:
    """Cut a flat summed vector into its named parts."""
    flat = np.asarray(vector, dtype=np.float64).ravel()
    if flat.size != sum(sizes):
        raise ProtocolError(f"secure sum has {flat.size} entries, expected {sum(sizes)}")
    parts, start = [], 0
    for size in sizes:
        parts.append(flat[start : start + size])
        start += size
    return parts
