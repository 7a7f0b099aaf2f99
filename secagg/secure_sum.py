"""Exact secure sums of counts and totals (Flower-free arithmetic).

Every secure round that is not training (the statistics round, each
evaluation) sums whole numbers: the hardened SecAgg+ adds them as
:func:`secagg.masks.encode_integers` limbs, with no weight, no clipping and no
quantization, so the server gets the **exact** sum over the survivors and
nothing else. That holds for any row count an institution may have: counts up
to ``2**47`` (a sum over institutions too) fit.

Real-valued totals (a summed loss, sums of transformed column values) travel
as fixed-point integers: ``rint(x * scale)``. Each institution's rounding
moves its total by at most ``0.5 / scale``, so a sum of ``n`` of them is
within ``n / (2 scale)`` of the true sum (:func:`fixed_point_error`); the
scales below keep every total an institution with up to 2**27 rows can send
inside the integer range, which :func:`to_fixed_point` checks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from core.errors import ProtocolError

from .masks import INTEGER_LIMIT

#: Fixed-point scale of a summed loss (a per-row loss is below 128).
LOSS_SCALE = 2.0**12
#: Fixed-point scale of summed transformed column values and their squares.
STATS_SCALE = 2.0**8


class SumOutOfRange(ProtocolError):
    """A count or total is too large to be summed exactly."""


def to_counts(counts: npt.ArrayLike, what: str) -> npt.NDArray[np.int64]:
    """Whole, non-negative counts as the exact sum takes them.

    Raises
    ------
    SumOutOfRange
        If a count is negative, not whole, or too large (``what`` names it).
    """
    values = np.asarray(counts, dtype=np.float64).ravel()
    if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values != np.rint(values)):
        raise SumOutOfRange(f"{what}: counts must be whole numbers >= 0")
    if values.size and float(values.max()) >= INTEGER_LIMIT:
        raise SumOutOfRange(f"{what}: a count reaches 2**47 and cannot be summed exactly")
    return values.astype(np.int64)


def to_fixed_point(totals: npt.ArrayLike, scale: float, what: str) -> npt.NDArray[np.int64]:
    """Real totals as fixed-point integers ``rint(x * scale)``.

    Raises
    ------
    SumOutOfRange
        If a total is not finite or too large for the exact sum.
    """
    values = np.asarray(totals, dtype=np.float64).ravel() * scale
    if not np.all(np.isfinite(values)):
        raise SumOutOfRange(f"{what}: totals must be finite")
    # Each institution may use a sixteenth of the range, so sums of up to 16
    # institutions' largest totals still fit.
    if values.size and float(np.max(np.abs(values))) >= INTEGER_LIMIT / 16:
        raise SumOutOfRange(f"{what}: a total is too large to be summed exactly")
    return np.rint(values).astype(np.int64)


def from_fixed_point(summed: npt.ArrayLike, scale: float) -> npt.NDArray[np.float64]:
    """Real totals from a sum of fixed-point integers."""
    return np.asarray(summed, dtype=np.float64) / scale


def fixed_point_error(contributors: int, scale: float) -> float:
    """Largest distance between a summed fixed-point total and the true sum."""
    return contributors * 0.5 / scale


def split(vector: npt.ArrayLike, sizes: Sequence[int]) -> list[npt.NDArray[np.int64]]:
    """Cut a flat summed integer vector into its named parts."""
    flat = np.asarray(vector).ravel()
    if flat.size != sum(sizes):
        raise ProtocolError(f"secure sum has {flat.size} entries, expected {sum(sizes)}")
    if flat.dtype.kind not in "iu":
        raise ProtocolError("an exact secure sum must hold whole numbers")
    parts, start = [], 0
    for size in sizes:
        parts.append(flat[start : start + size].astype(np.int64))
        start += size
    return parts


def counts_and_totals(
    counts: npt.ArrayLike, totals: npt.ArrayLike, scale: float, what: str
) -> npt.NDArray[np.int64]:
    """One exact-sum vector: whole counts first, then fixed-point totals."""
    return np.concatenate([to_counts(counts, what), to_fixed_point(totals, scale, what)])


def split_counts_and_totals(
    summed: npt.ArrayLike, n_counts: int, scale: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Inverse of :func:`counts_and_totals`, applied to a secure sum."""
    flat = np.asarray(summed).ravel()
    counts, totals = split(flat, (n_counts, flat.size - n_counts))
    return counts, from_fixed_point(totals, scale)
