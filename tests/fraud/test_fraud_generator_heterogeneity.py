"""The generator's heterogeneity setting (issue 13): rates, typologies and features differ; the default does not change."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from fraud.features import LABEL_COLUMN, TYPOLOGY_COLUMN, to_arrays
from fraud.generator import (
    DEFAULT_INSTITUTIONS,
    FRAUD_TYPOLOGIES,
    Heterogeneity,
    default_profiles,
    generate_institution,
    institution_seed,
)
from fraud.generator_files import MANIFEST_NAME, ensure_federation_data, write_federation_data

# sha256 of generate_institution(profile, 1000, 5) as CSV, for the default
# profiles, computed with the generator as released before the heterogeneity
# setting existed. The default output must never change (tests and cached demo
# data depend on it).
DEFAULT_FRAME_SHA256 = {
    "bank-a": "1875a58f170a30b1a7da8190f96f6efb495ebeb8ffac671ac64fd23d51d409c7",
    "bank-b": "5747f4fbfcc3c7e6b85d135cd309c89461baacbd6ff340e813b827e0db59fade",
    "insurer-c": "2976868c80fe14e5ec7a48975afcb4c698d212dfff786658e8da5c262ed4cd89",
    "bank-d": "72bb5af6f7da5f627eeba16d91bca0e24a896d821ec9307b1d77a480458b3091",
}


@pytest.fixture(scope="module")
def high_frames() -> dict[str, pd.DataFrame]:
    """The three ``high`` archetypes, 20,000 rows each (bank-a's 0.5 % gives 100 frauds)."""
    return {
        p.name: generate_institution(p, 20_000, institution_seed(3, p.name))
        for p in default_profiles(DEFAULT_INSTITUTIONS, Heterogeneity.HIGH)
    }


def _frame_sha256(frame: pd.DataFrame) -> str:
    return hashlib.sha256(frame.to_csv(index=False, lineterminator="\n").encode()).hexdigest()


def test_default_output_is_byte_for_byte_unchanged() -> None:
    names = [*DEFAULT_INSTITUTIONS, "bank-d"]

    default = default_profiles(names)

    assert default == default_profiles(names, Heterogeneity.STANDARD) == default_profiles(names, "standard")
    for profile in default:
        assert _frame_sha256(generate_institution(profile, 1_000, 5)) == DEFAULT_FRAME_SHA256[profile.name]


def test_default_manifest_has_no_heterogeneity_key(tmp_path: Path) -> None:
    manifest = write_federation_data(tmp_path / "d", DEFAULT_INSTITUTIONS, 500, seed=1)

    assert "heterogeneity" not in manifest
    assert "heterogeneity" not in json.loads((tmp_path / "d" / MANIFEST_NAME).read_text())


def test_high_fraud_rates_span_half_a_percent_to_ten_percent(high_frames: dict[str, pd.DataFrame]) -> None:
    profiles = default_profiles(DEFAULT_INSTITUTIONS, Heterogeneity.HIGH)

    assert [p.fraud_rate for p in profiles] == [0.005, 0.05, 0.10]
    observed = {name: float(frame[LABEL_COLUMN].mean()) for name, frame in high_frames.items()}
    for profile in profiles:
        assert observed[profile.name] == pytest.approx(profile.fraud_rate, rel=0.05)
    assert max(observed.values()) / min(observed.values()) >= 15


def test_high_typologies_are_disjoint(high_frames: dict[str, pd.DataFrame]) -> None:
    seen = {
        name: set(frame.loc[frame[LABEL_COLUMN] == 1, TYPOLOGY_COLUMN]) for name, frame in high_frames.items()
    }

    assert all(seen.values())
    for a, b in itertools.combinations(seen, 2):
        assert not seen[a] & seen[b], f"{a} and {b} share typologies {seen[a] & seen[b]}"
    assert set().union(*seen.values()) == {str(t) for t in FRAUD_TYPOLOGIES}


def test_high_feature_distributions_are_shifted(high_frames: dict[str, pd.DataFrame]) -> None:
    legit = {name: frame[frame[LABEL_COLUMN] == 0] for name, frame in high_frames.items()}
    medians = sorted(float(f["amount"].median()) for f in legit.values())
    channels = {name: f["channel"].value_counts(normalize=True) for name, f in legit.items()}

    # Ticket sizes: a factor of at least 5 between the smallest and the largest.
    assert medians[-1] / medians[0] > 5
    # A different dominant channel at each institution.
    assert len({c.idxmax() for c in channels.values()}) == 3
    # The model inputs move too, not only the raw columns.
    means = np.array([to_arrays(f)[0].mean(axis=0) for f in legit.values()])
    assert float(np.max(np.ptp(means, axis=0))) > 1.0


def test_high_profiles_beyond_three_have_one_dominant_typology() -> None:
    names = [*DEFAULT_INSTITUTIONS, "bank-d", "bank-e", "bank-f"]

    profiles = default_profiles(names, Heterogeneity.HIGH)

    assert profiles[:3] == default_profiles(DEFAULT_INSTITUTIONS, Heterogeneity.HIGH)
    for profile in profiles[3:]:
        assert 0.005 <= profile.fraud_rate <= 0.10
        assert max(profile.typology_mix.values()) == pytest.approx(0.85)
    # Derived from the name alone, wherever it stands after the three archetypes.
    assert default_profiles(["x1", "x2", "x3", "bank-d"], "high")[3] == profiles[3]


def test_unknown_heterogeneity_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="heterogeneity must be one of standard, high"):
        default_profiles(DEFAULT_INSTITUTIONS, "extreme")
    with pytest.raises(ConfigError, match="heterogeneity"):
        write_federation_data(tmp_path / "d", DEFAULT_INSTITUTIONS, 500, seed=1, heterogeneity="extreme")


def test_ensure_records_and_matches_heterogeneity(tmp_path: Path) -> None:
    out = tmp_path / "data"
    standard = ensure_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=1)

    high = ensure_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=1, heterogeneity="high")
    stamp = (out / MANIFEST_NAME).stat().st_mtime_ns
    again = ensure_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=1, heterogeneity=Heterogeneity.HIGH)

    assert high["heterogeneity"] == "high"
    assert high["institutions"]["insurer-c"]["profile"]["fraud_rate"] == 0.10
    assert standard["institutions"]["insurer-c"]["profile"]["fraud_rate"] == 0.025
    assert again == high and (out / MANIFEST_NAME).stat().st_mtime_ns == stamp
    assert ensure_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=1) == standard
