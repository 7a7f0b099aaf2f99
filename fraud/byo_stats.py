"""Bring your own data, statistics: the federation-wide scaling of the numeric columns.

Numeric features (federated, not per-client guesswork)
-----------------------------------------------------
1. Fixed transform, identical everywhere: ``t = sign(x) * log1p(|x|)``
   (:func:`signed_log1p`: tames money amounts spanning decades, keeps the
   sign of e.g. capital losses, and maps 0 to 0).
2. Global standardization: ``z = (t - mean) / std`` where ``mean`` and
   ``std`` are the **federation-wide** statistics of ``t`` over all
   institutions' training rows (population std; a constant column gets
   std 1). They come from per-institution sufficient statistics
   (:func:`local_numeric_stats`: rows, and per column the count of
   non-missing values, their sum and sum of squares) summed across
   institutions, then :meth:`fraud.byo_encode.FeatureSpec.from_stats`.
3. ``z`` is clipped to ``[-5, 5]``; a missing value becomes 0 (the global
   mean) and sets the ``<col>__missing`` indicator. Every numeric column has
   that indicator, whether or not it has missing values, so the feature
   layout depends on the schema only (:mod:`fraud.byo_encode`).

What leaves each site
---------------------
Only the :class:`NumericStats` vector (row count; per numeric column: count
of non-missing values, sum and sum of squares of the transformed values),
and only as an input to a **secure sum**: the hardened SecAgg+ sums the counts
exactly and the two totals in fixed point (:mod:`secagg.secure_sum`), so the
server learns the federation's sums and nothing per institution.
No row, no category
and no per-institution statistic leaves a site: vocabularies come from the
schema, and the schema itself is agreed beforehand (compare its
:meth:`~fraud.byo_schema.Schema.fingerprint`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.errors import ConfigError, InputError
from fraud.byo_schema import Schema

MAX_TRANSFORMED = 64.0
"""Largest ``|sign(x) log1p(|x|)|`` accepted (``|x|`` up to about 6e27)."""


def signed_log1p(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return ``sign(x) * log1p(|x|)`` (NaN stays NaN); the fixed numeric transform."""
    x = np.asarray(values, dtype=np.float64)
    out: npt.NDArray[np.float64] = np.sign(x) * np.log1p(np.abs(x))
    return out


@dataclass(frozen=True)
class NumericStats:
    """Summable sufficient statistics of the transformed numeric columns.

    Parameters
    ----------
    columns
        The schema's numeric columns, in schema order.
    n_rows
        Number of rows.
    count, total, total_sq
        Per column: non-missing values, their sum and their sum of squares
        (of ``signed_log1p`` values), float64 arrays of ``len(columns)``.
    """

    columns: tuple[str, ...]
    n_rows: float
    count: npt.NDArray[np.float64]
    total: npt.NDArray[np.float64]
    total_sq: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        """Check shapes and values once; store read-only copies."""
        k = len(self.columns)
        for name in ("count", "total", "total_sq"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            if arr.shape != (k,) or not np.all(np.isfinite(arr)):
                raise InputError(f"NumericStats.{name} must be {k} finite numbers, got shape {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if not math.isfinite(self.n_rows) or self.n_rows < 0:
            raise InputError(f"NumericStats.n_rows must be >= 0, got {self.n_rows!r}")
        if np.any(self.count < 0) or np.any(self.count > self.n_rows + 1e-6) or np.any(self.total_sq < 0):
            raise InputError("NumericStats: counts must lie in [0, n_rows] and sums of squares be >= 0")

    def __add__(self, other: NumericStats) -> NumericStats:
        """Sum two institutions' statistics (same columns required)."""
        if not isinstance(other, NumericStats):
            return NotImplemented
        if other.columns != self.columns:
            raise ConfigError(f"cannot add statistics of different columns: {self.columns} vs {other.columns}")
        return NumericStats(
            self.columns,
            self.n_rows + other.n_rows,
            self.count + other.count,
            self.total + other.total,
            self.total_sq + other.total_sq,
        )

    def to_vector(self) -> npt.NDArray[np.float64]:
        """Return ``[n_rows, count..., total..., total_sq...]`` (length ``1 + 3k``), for a secure sum."""
        return np.concatenate([[self.n_rows], self.count, self.total, self.total_sq]).astype(np.float64)

    @classmethod
    def from_vector(cls, columns: Sequence[str], vector: npt.ArrayLike) -> NumericStats:
        """Inverse of :meth:`to_vector` (e.g. applied to a secure sum of vectors)."""
        v = np.asarray(vector, dtype=np.float64)
        k = len(columns)
        if v.shape != (1 + 3 * k,):
            raise InputError(f"statistics vector must have length {1 + 3 * k}, got shape {v.shape}")
        return cls(tuple(columns), float(v[0]), v[1 : 1 + k], v[1 + k : 1 + 2 * k], v[1 + 2 * k :])


def local_numeric_stats(frame: pd.DataFrame, schema: Schema) -> NumericStats:
    """Compute this institution's :class:`NumericStats` (the only thing its numeric columns contribute).

    Raises
    ------
    InputError
        If a numeric column is missing, non-numeric or out of range.
    """
    t = transformed_numeric(frame, schema)
    present = ~np.isnan(t)
    filled = np.where(present, t, 0.0)
    return NumericStats(
        tuple(schema.numeric),
        float(len(frame)),
        present.sum(axis=0).astype(np.float64),
        filled.sum(axis=0),
        (filled * filled).sum(axis=0),
    )


def transformed_numeric(frame: pd.DataFrame, schema: Schema) -> npt.NDArray[np.float64]:
    """Return ``signed_log1p`` of the numeric columns, shape ``[n, k]``, NaN where missing."""
    missing = [c for c in schema.numeric if c not in frame.columns]
    if missing:
        raise InputError(f"frame is missing numeric columns: {missing}")
    out = np.empty((len(frame), len(schema.numeric)), dtype=np.float64)
    for j, column in enumerate(schema.numeric):
        series = frame[column]
        coerced = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isnan(coerced) & series.notna().to_numpy() | np.isinf(coerced))
        if bad.size:
            raise InputError(
                f"column {column!r}, data row {int(bad[0]) + 1}: {series.iloc[bad[0]]!r} is not a finite number"
            )
        t = signed_log1p(coerced)
        if np.any(np.abs(t[~np.isnan(t)]) > MAX_TRANSFORMED):
            raise InputError(f"column {column!r} has values too large (|x| > 6e27)")
        out[:, j] = t
    return out
