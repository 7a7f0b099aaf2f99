"""Bring your own data, encoding: a loaded frame to model inputs, with the federation's :class:`FeatureSpec`.

The spec holds the federation-wide means and standard deviations of the
transformed numeric columns (:mod:`fraud.byo_stats`) and the feature layout,
which depends on the schema only (:func:`feature_names`). :func:`encode`
turns a frame into ``X``: numeric columns standardized and clipped to
``[-5, 5]`` with a ``__missing`` indicator each, categorical columns one-hot
over the schema's vocabulary plus ``__other__`` and ``__missing__``, and
the calendar features of timestamps; and ``y``, the 0/1 labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.errors import ConfigError, InputError
from fraud.byo_schema import MISSING, OTHER, Derive, Schema
from fraud.byo_stats import NumericStats, transformed_numeric

SPEC_FORMAT = "fedfraud-feature-spec/1"
"""Format marker of a :class:`FeatureSpec`."""

CLIP = 5.0
"""Standardized numeric values are clipped to ``[-CLIP, CLIP]``."""


@dataclass(frozen=True)
class FeatureSpec:
    """The agreed encoding: global means/stds of the numeric columns and the feature layout.

    Build it with :meth:`from_stats` from the federation's summed statistics.
    """

    schema_fingerprint: str
    numeric_mean: tuple[float, ...]
    numeric_std: tuple[float, ...]
    feature_names: tuple[str, ...]
    format: str = SPEC_FORMAT

    @classmethod
    def from_stats(cls, schema: Schema, stats: NumericStats) -> FeatureSpec:
        """Derive the spec from summed statistics (population std; a constant column gets std 1).

        Raises
        ------
        ConfigError
            If the statistics are for other columns.
        InputError
            Naming a numeric column with no value at any institution.
        """
        if stats.columns != tuple(schema.numeric):
            raise ConfigError(f"statistics are for columns {stats.columns}, the schema has {tuple(schema.numeric)}")
        empty = [c for c, n in zip(schema.numeric, stats.count, strict=True) if n <= 0]
        if empty:
            raise InputError(f"numeric columns with no value in any institution's data: {empty}")
        mean = stats.total / stats.count
        var = np.maximum(stats.total_sq / stats.count - mean * mean, 0.0)
        std = np.sqrt(var)
        std = np.where(std > 1e-9, std, 1.0)
        return cls(
            schema.fingerprint(),
            tuple(float(m) for m in mean),
            tuple(float(s) for s in std),
            feature_names(schema),
        )

    @property
    def n_features(self) -> int:
        """Width of ``X``."""
        return len(self.feature_names)


def feature_names(schema: Schema) -> tuple[str, ...]:
    """Return the model-input names, in the column order of ``X`` (depends on the schema only)."""
    names: list[str] = list(schema.numeric)
    names += [f"{c}__missing" for c in schema.numeric]
    for column, vocabulary in schema.categorical.items():
        names += [f"{column}={v}" for v in (*vocabulary, OTHER, MISSING)]
    for spec in schema.timestamps:
        if spec.derive == Derive.CALENDAR:
            names += [f"{spec.column}__{p}" for p in ("dow_sin", "dow_cos", "month_sin", "month_cos", "missing")]
    return tuple(names)


def encode(
    frame: pd.DataFrame, schema: Schema, spec: FeatureSpec
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Turn a loaded (or synthetic) frame into model inputs and labels.

    Parameters
    ----------
    frame
        As returned by :func:`~fraud.byo_read.load_institution_csv` (columns
        :attr:`~fraud.byo_schema.Schema.kept_columns`); not modified.
    schema, spec
        The federation's schema and the spec derived from its summed statistics.

    Returns
    -------
    X : numpy.ndarray
        float32, shape ``[n, spec.n_features]``, C-contiguous, all values in [-5, 5].
    y : numpy.ndarray
        float32 labels in {0, 1}.

    Raises
    ------
    ConfigError
        If ``spec`` was made for another schema.
    InputError
        Naming missing columns, a non-numeric value, or a label not 0/1.
    """
    if spec.format != SPEC_FORMAT or spec.schema_fingerprint != schema.fingerprint():
        raise ConfigError("the feature spec was made for another schema (fingerprints differ)")
    absent = [c for c in schema.kept_columns if c not in frame.columns]
    if absent:
        raise InputError(f"frame is missing columns: {absent}")
    n = len(frame)
    blocks: list[npt.NDArray[np.float64]] = []

    # 1. Numeric: fixed transform, global standardization, clip; missing -> 0 plus indicator.
    t = transformed_numeric(frame, schema)
    missing = np.isnan(t)
    z = (t - np.asarray(spec.numeric_mean)) / np.asarray(spec.numeric_std)
    blocks.append(np.clip(np.where(missing, 0.0, z), -CLIP, CLIP))
    blocks.append(missing.astype(np.float64))

    # 2. Categorical: one-hot over the schema's vocabulary, then __other__ and __missing__.
    for column, vocabulary in schema.categorical.items():
        values = frame[column]
        absent_mask = values.isna().to_numpy()
        text = values.astype(object).where(~values.isna(), None).map(lambda v: None if v is None else str(v))
        codes = np.full(n, len(vocabulary), dtype=np.int64)  # __other__
        for k, value in enumerate(vocabulary):
            codes[(text == value).to_numpy()] = k
        codes[absent_mask] = len(vocabulary) + 1
        one_hot = np.zeros((n, len(vocabulary) + 2), dtype=np.float64)
        one_hot[np.arange(n), codes] = 1.0
        blocks.append(one_hot)

    # 3. Calendar features of timestamps; missing -> zeros plus indicator.
    for ts in schema.timestamps:
        if ts.derive != Derive.CALENDAR:
            continue
        stamps = pd.to_datetime(frame[ts.column], errors="coerce")
        bad = stamps.isna().to_numpy() & frame[ts.column].notna().to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"column {ts.column!r}, data row {row + 1}: {frame[ts.column].iloc[row]!r} is not a date")
        absent_ts = stamps.isna().to_numpy()
        dow = np.nan_to_num(stamps.dt.dayofweek.to_numpy(dtype=np.float64))
        month = np.nan_to_num(stamps.dt.month.to_numpy(dtype=np.float64)) - 1.0
        cal = np.stack(
            [
                np.sin(2 * np.pi * dow / 7),
                np.cos(2 * np.pi * dow / 7),
                np.sin(2 * np.pi * month / 12),
                np.cos(2 * np.pi * month / 12),
            ],
            axis=1,
        )
        cal[absent_ts] = 0.0
        blocks.append(np.concatenate([cal, absent_ts[:, None].astype(np.float64)], axis=1))

    X = np.ascontiguousarray(np.concatenate(blocks, axis=1).astype(np.float32))
    y_raw = pd.to_numeric(frame[schema.label], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all((y_raw == 0.0) | (y_raw == 1.0)):
        raise InputError(f"label column {schema.label!r} must hold 0/1 (load the CSV with load_institution_csv)")
    if X.shape[1] != spec.n_features:
        raise ConfigError(f"encoded {X.shape[1]} features, the spec has {spec.n_features}")
    return X, y_raw.astype(np.float32)
