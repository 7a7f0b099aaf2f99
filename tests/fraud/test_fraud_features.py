"""Feature extraction: fixed columns, validation, no mutation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from fraud.features import FEATURE_COLUMNS, LABEL_COLUMN, feature_frame, to_arrays


@pytest.fixture
def small_frame(federation_frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return federation_frames["bank-b"].head(500).copy()


def test_feature_names_follow_the_contract() -> None:
    assert FEATURE_COLUMNS[:3] == ("log_amount", "hour_sin", "hour_cos")
    assert len(FEATURE_COLUMNS) == len(set(FEATURE_COLUMNS)) == 19
    assert LABEL_COLUMN == "is_fraud"


def test_to_arrays_types_and_shapes(small_frame: pd.DataFrame) -> None:
    X, y = to_arrays(small_frame)

    assert X.dtype == np.float32 and y.dtype == np.float32
    assert X.shape == (500, len(FEATURE_COLUMNS)) and y.shape == (500,)
    assert X.flags.c_contiguous
    np.testing.assert_array_equal(feature_frame(small_frame).to_numpy(np.float32), X)


def test_channel_one_hot_sums_to_one(small_frame: pd.DataFrame) -> None:
    feats = feature_frame(small_frame)

    one_hot = feats[["channel_card_present", "channel_card_not_present", "channel_online_banking"]]
    np.testing.assert_array_equal(one_hot.sum(axis=1).to_numpy(), np.ones(len(feats)))


def test_transforms_are_fixed_not_fitted(small_frame: pd.DataFrame) -> None:
    # The same row gives the same features whatever else is in the frame.
    whole = feature_frame(small_frame)
    alone = feature_frame(small_frame.iloc[[7]])

    pd.testing.assert_frame_equal(whole.iloc[[7]], alone)


def test_to_arrays_does_not_mutate_the_frame(small_frame: pd.DataFrame) -> None:
    before = small_frame.copy()

    to_arrays(small_frame)

    pd.testing.assert_frame_equal(small_frame, before)


def test_missing_columns_are_all_named(small_frame: pd.DataFrame) -> None:
    broken = small_frame.drop(columns=["amount", "new_device", LABEL_COLUMN])

    with pytest.raises(InputError, match="amount, new_device, is_fraud"):
        to_arrays(broken)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("channel", "carrier_pigeon", "channel"),
        ("amount", float("nan"), "amount"),
        ("merchant_risk", 3.0, "merchant_risk"),
        (LABEL_COLUMN, 2, LABEL_COLUMN),
        ("new_device", 0.5, "new_device"),
    ],
)
def test_invalid_values_are_rejected(small_frame: pd.DataFrame, column: str, value: object, message: str) -> None:
    broken = small_frame.copy()
    broken[column] = broken[column].astype(object)
    broken.loc[broken.index[3], column] = value

    with pytest.raises(InputError, match=message):
        to_arrays(broken)
