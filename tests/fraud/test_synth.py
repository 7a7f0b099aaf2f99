"""Synthetic validation releases: real SDV, quality reported, copies refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError, InputError, PolicyViolation
from fraud.byo_read import load_institution_csv, train_test_split
from fraud.byo_schema import builtin_schema
from fraud.features import LABEL_COLUMN
from fraud.generator import default_profiles, generate_institution, institution_seed, split_train_test
from fraud.synth import (
    MAX_SHARE_CLOSER,
    SyntheticRelease,
    SyntheticReleaseRefused,
    check_privacy,
    generator_release_frame,
    release_synthetic,
    union_releases,
)
from tests.shared_data import INSURANCE_CSV


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    # bank-b: the highest fraud rate of the defaults; 1,800 rows keep SDV fast.
    profile = default_profiles()[1]
    frame = generate_institution(profile, 1_800, institution_seed(5, profile.name))
    train, holdout = split_train_test(frame, 0.3, 5)
    return generator_release_frame(train), generator_release_frame(holdout)


@pytest.fixture(scope="module")
def release(split: tuple[pd.DataFrame, pd.DataFrame]) -> SyntheticRelease:
    train, holdout = split
    return release_synthetic(train, holdout, n_rows=400, seed=3)


def test_release_of_generator_data_passes_with_a_quality_score(
    split: tuple[pd.DataFrame, pd.DataFrame], release: SyntheticRelease
) -> None:
    train, _ = split
    report = release.report

    assert list(release.data.columns) == list(train.columns)
    assert len(release.data) == 400
    assert 0.5 < report.quality_score <= 1.0
    assert 0.0 < report.column_shapes <= 1.0 and 0.0 < report.column_pair_trends <= 1.0
    assert report.privacy.exact_copies == 0
    assert report.privacy.share_closer <= MAX_SHARE_CLOSER
    assert set(release.data[LABEL_COLUMN].unique()) <= {0, 1}
    assert report.to_dict()["format"] == "fedfraud-synthetic-release/1"


def test_release_is_deterministic_for_a_seed(
    split: tuple[pd.DataFrame, pd.DataFrame], release: SyntheticRelease
) -> None:
    train, holdout = split
    before = train.copy()

    again = release_synthetic(train, holdout, n_rows=400, seed=3)

    pd.testing.assert_frame_equal(release.data, again.data)
    pd.testing.assert_frame_equal(train, before)  # the caller's frame is untouched


def test_conditional_sampling_raises_the_fraud_share(
    split: tuple[pd.DataFrame, pd.DataFrame], release: SyntheticRelease
) -> None:
    train, holdout = split

    boosted = release_synthetic(train, holdout, n_rows=400, seed=3, fraud_share=0.2)

    assert boosted.report.fraud_share == pytest.approx(0.2, abs=1e-9)
    assert release.report.fraud_share < 0.1
    assert boosted.report.fraud_share_requested == 0.2


def test_a_synthesizer_that_copies_training_rows_is_refused(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, holdout = split
    copied = train.sample(300, random_state=0).reset_index(drop=True)

    with pytest.raises(SyntheticReleaseRefused) as info:
        check_privacy(copied, train, holdout)

    assert isinstance(info.value, PolicyViolation)
    assert "exact copies: 300 of 300" in str(info.value)
    assert any(v.startswith("near copies") for v in info.value.violations)


def test_near_copies_are_refused_by_the_holdout_baseline(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, holdout = split
    nudged = train.sample(300, random_state=1).reset_index(drop=True)
    nudged["amount"] = nudged["amount"] * 1.001

    with pytest.raises(SyntheticReleaseRefused, match=r"near copies: 1\.000 .*5th-percentile DCR.*limit is 0\.100"):
        check_privacy(nudged, train, holdout)


def test_holdout_rows_pass_the_check(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # Fresh real rows are the baseline itself: about 5 % are "close", under the limit.
    train, holdout = split

    result = check_privacy(holdout, train, holdout.sample(frac=1.0, random_state=2).reset_index(drop=True))

    assert result.share_closer <= MAX_SHARE_CLOSER


def test_union_of_releases_checks_columns(release: SyntheticRelease) -> None:
    union = union_releases({"bank-a": release, "bank-b": release})
    assert len(union) == 2 * len(release.data)

    narrower = SyntheticRelease(release.data.drop(columns=["amount"]), release.report, release.label_column)
    with pytest.raises(InputError, match="release 'bank-b' has other columns than release 'bank-a'.*lacks \\['amount'\\]"):
        union_releases({"bank-a": release, "bank-b": narrower})


def test_bad_settings_are_refused(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, holdout = split

    with pytest.raises(ConfigError, match="method must be one of"):
        release_synthetic(train, holdout, n_rows=10, seed=0, method="smote")
    with pytest.raises(ConfigError, match="fraud_share"):
        release_synthetic(train, holdout, n_rows=10, seed=0, fraud_share=1.5)


def test_release_of_bring_your_own_insurance_data() -> None:
    # Missing values, text categories and dates go through SDV and the check.
    schema = builtin_schema("insurance_claims")
    frame = load_institution_csv(INSURANCE_CSV, schema)
    # A few columns of each kind keep SDV's pairwise quality report fast.
    columns = ["total_claim_amount", "umbrella_limit", "collision_type", "authorities_contacted",
               "incident_severity", "incident_date", schema.label]
    train, holdout = train_test_split(frame[columns], schema, 0.3, seed=0)

    result = release_synthetic(train, holdout, n_rows=200, seed=1, label_column=schema.label, fraud_share=0.3)

    assert result.report.fraud_share == pytest.approx(0.3)
    assert result.data["incident_date"].dtype.kind == "M"
    assert np.isfinite(result.report.quality_score)
