"""Model inputs, derived from a transaction frame with fixed transforms.

The CSV files keep the raw, human-readable columns (:data:`RAW_COLUMNS`:
amounts in currency units, hour of day, channel names, counts). The transform
to model inputs happens here, in :func:`to_arrays`, and uses only constants:
no means, variances or vocabularies fitted on data. Every institution
therefore computes identical features without sharing any statistic, and
values stay roughly within [-5, 5] so the model's weights stay small (secure
aggregation quantizes them within a clipping range).

Transforms, per entry of :data:`FEATURE_COLUMNS`:

==============================  ==================================================
``log_amount``                  ``(log1p(amount) - 4) / 2``
``hour_sin``, ``hour_cos``      ``sin`` / ``cos`` of ``2 pi hour / 24``
``is_weekend``                  0/1
``channel_*``                   one-hot of ``channel``
``merchant_risk``               as is, in [0, 1]
``terminal_fraud_rate_28d``     ``sqrt(rate)``, in [0, 1] (stretches small rates)
``customer_tx_count_{w}``       ``log1p(count)``
``customer_mean_amount_{w}``    ``(log1p(mean) - 4) / 2``
``amount_to_mean_30d``          ``log(ratio)`` clipped to [-5, 5]
``seconds_since_last_tx``       ``log1p(seconds) / 10``
``new_device``                  0/1
``foreign_country``             0/1
==============================  ==================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.errors import InputError
from fraud.constants import AS_IS_COLUMNS, FEATURE_COLUMNS

LABEL_COLUMN = "is_fraud"
TYPOLOGY_COLUMN = "typology"
ID_COLUMNS: tuple[str, ...] = ("transaction_id", "customer_id", "terminal_id")
"""Identifiers carried by every row; never model inputs."""

CHANNEL_VALUES: tuple[str, ...] = ("card_present", "card_not_present", "online_banking")

RAW_COLUMNS: tuple[str, ...] = ("amount", "hour", "is_weekend", "channel", *AS_IS_COLUMNS)
"""Columns :func:`to_arrays` reads (besides the label)."""


N_FEATURES = len(FEATURE_COLUMNS)


def _log_amount(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Centred near a typical 55-unit payment; 5000 units maps to about 2.3.
    return (np.log1p(values) - 4.0) / 2.0


def _numeric(df: pd.DataFrame, column: str) -> npt.NDArray[np.float64]:
    try:
        values = pd.to_numeric(df[column], errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise InputError(f"column {column!r} must be numeric") from exc
    if not np.all(np.isfinite(values)):
        raise InputError(f"column {column!r} has missing or non-finite values")
    return values


def _check_range(column: str, values: npt.NDArray[np.float64], low: float, high: float) -> None:
    if values.size and (values.min() < low or values.max() > high):
        raise InputError(
            f"column {column!r} must lie in [{low}, {high}], found [{values.min()}, {values.max()}]"
        )


def _check_binary(column: str, values: npt.NDArray[np.float64]) -> None:
    if not np.all((values == 0.0) | (values == 1.0)):
        raise InputError(f"column {column!r} must be 0 or 1")


def feature_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Return the model inputs as a frame with columns :data:`FEATURE_COLUMNS`.

    Parameters
    ----------
    df
        Transactions with at least :data:`RAW_COLUMNS`; not modified.

    Returns
    -------
    pandas.DataFrame
        float64 features, same index as ``df``.

    Raises
    ------
    InputError
        Naming every missing column, or the first column with invalid values.
    """
    missing = [c for c in RAW_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"transaction frame is missing columns: {', '.join(missing)}")
    raw = {c: _numeric(df, c) for c in RAW_COLUMNS if c != "channel"}
    for column in ("amount", "seconds_since_last_tx", "customer_tx_count_1d", "customer_tx_count_7d",
                   "customer_tx_count_30d", "customer_mean_amount_1d", "customer_mean_amount_7d",
                   "customer_mean_amount_30d"):
        _check_range(column, raw[column], 0.0, np.inf)
    _check_range("amount_to_mean_30d", raw["amount_to_mean_30d"], 0.0, np.inf)
    _check_range("hour", raw["hour"], 0.0, 24.0)
    _check_range("merchant_risk", raw["merchant_risk"], 0.0, 1.0)
    _check_range("terminal_fraud_rate_28d", raw["terminal_fraud_rate_28d"], 0.0, 1.0)
    for column in ("is_weekend", "new_device", "foreign_country"):
        _check_binary(column, raw[column])
    channel = df["channel"].astype(str).to_numpy()
    unknown = sorted(set(channel.tolist()) - set(CHANNEL_VALUES))
    if unknown:
        raise InputError(f"column 'channel' has unknown values {unknown[:5]}; expected {list(CHANNEL_VALUES)}")

    angle = 2.0 * np.pi * raw["hour"] / 24.0
    ratio = np.clip(raw["amount_to_mean_30d"], np.exp(-5.0), np.exp(5.0))
    out = {
        "log_amount": _log_amount(raw["amount"]),
        "hour_sin": np.sin(angle),
        "hour_cos": np.cos(angle),
        "is_weekend": raw["is_weekend"],
        "channel_card_present": (channel == "card_present").astype(np.float64),
        "channel_card_not_present": (channel == "card_not_present").astype(np.float64),
        "channel_online_banking": (channel == "online_banking").astype(np.float64),
        "merchant_risk": raw["merchant_risk"],
        "terminal_fraud_rate_28d": np.sqrt(raw["terminal_fraud_rate_28d"]),
        "customer_tx_count_1d": np.log1p(raw["customer_tx_count_1d"]),
        "customer_tx_count_7d": np.log1p(raw["customer_tx_count_7d"]),
        "customer_tx_count_30d": np.log1p(raw["customer_tx_count_30d"]),
        "customer_mean_amount_1d": _log_amount(raw["customer_mean_amount_1d"]),
        "customer_mean_amount_7d": _log_amount(raw["customer_mean_amount_7d"]),
        "customer_mean_amount_30d": _log_amount(raw["customer_mean_amount_30d"]),
        "amount_to_mean_30d": np.log(ratio),
        "seconds_since_last_tx": np.log1p(raw["seconds_since_last_tx"]) / 10.0,
        "new_device": raw["new_device"],
        "foreign_country": raw["foreign_country"],
    }
    return pd.DataFrame({c: out[c] for c in FEATURE_COLUMNS}, index=df.index)


def to_arrays(df: pd.DataFrame) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Turn a labelled transaction frame into model inputs and labels.

    Parameters
    ----------
    df
        Transactions with :data:`RAW_COLUMNS` and :data:`LABEL_COLUMN`;
        not modified. Id and typology columns are ignored.

    Returns
    -------
    X : numpy.ndarray
        float32, shape ``[n, len(FEATURE_COLUMNS)]``, C-contiguous.
    y : numpy.ndarray
        float32 labels in {0, 1}, shape ``[n]``.

    Raises
    ------
    InputError
        Naming missing columns (all of them) or a column with invalid values.
    """
    missing = [c for c in (*RAW_COLUMNS, LABEL_COLUMN) if c not in df.columns]
    if missing:
        raise InputError(f"transaction frame is missing columns: {', '.join(missing)}")
    y = _numeric(df, LABEL_COLUMN)
    _check_binary(LABEL_COLUMN, y)
    X = feature_frame(df).to_numpy(dtype=np.float32)
    return np.ascontiguousarray(X), y.astype(np.float32)


def read_transactions(path: Path, what: str = "transactions") -> pd.DataFrame:
    """Read a transactions CSV (the generator's format), naming the file in any error.

    Raises
    ------
    InputError
        If the file is missing, not CSV, or has no rows.
    """
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{what} {path} cannot be read as CSV: {exc}") from exc
    if frame.empty:
        raise InputError(f"{what} {path} has no rows")
    return frame


def load_arrays(path: Path, what: str = "transactions") -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """:func:`read_transactions` then :func:`to_arrays`."""
    return to_arrays(read_transactions(path, what))
