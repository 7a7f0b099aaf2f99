"""The synthetic generator: determinism, rates, typology mixes, atomic files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare

from core.errors import ConfigError
from fraud.features import FEATURE_COLUMNS, ID_COLUMNS, LABEL_COLUMN, RAW_COLUMNS, to_arrays
from fraud.generator import (
    DEFAULT_INSTITUTIONS,
    FRAUD_TYPOLOGIES,
    GENERATOR_VERSION,
    InstitutionProfile,
    default_profiles,
    generate_institution,
)
from fraud.generator_files import MANIFEST_NAME, ensure_federation_data, write_federation_data

REPO = Path(__file__).resolve().parents[2]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_frames() -> None:
    profile = default_profiles(["bank-a"])[0]

    first = generate_institution(profile, 3_000, 5)
    second = generate_institution(profile, 3_000, 5)

    pd.testing.assert_frame_equal(first, second)


def test_different_seed_gives_different_frames() -> None:
    profile = default_profiles(["bank-a"])[0]

    first = generate_institution(profile, 3_000, 5)
    second = generate_institution(profile, 3_000, 6)

    assert not first["amount"].equals(second["amount"])


def test_frame_has_ids_typology_label_and_raw_columns(federation_frames: dict[str, pd.DataFrame]) -> None:
    frame = federation_frames["bank-a"]

    for column in (*ID_COLUMNS, "typology", LABEL_COLUMN, *RAW_COLUMNS):
        assert column in frame.columns
    assert frame["transaction_id"].is_unique
    assert set(frame.loc[frame[LABEL_COLUMN] == 0, "typology"]) == {"none"}
    assert "none" not in set(frame.loc[frame[LABEL_COLUMN] == 1, "typology"])
    assert not set(ID_COLUMNS) & set(FEATURE_COLUMNS)
    assert len(frame) == 20_000


def test_fraud_rate_within_bounds_and_near_profile(federation_frames: dict[str, pd.DataFrame]) -> None:
    for profile in default_profiles(DEFAULT_INSTITUTIONS):
        rate = federation_frames[profile.name][LABEL_COLUMN].mean()

        assert 0.005 <= rate <= 0.03
        assert rate == pytest.approx(profile.fraud_rate, abs=0.002)


def test_typology_mix_matches_profile(federation_frames: dict[str, pd.DataFrame]) -> None:
    for profile in default_profiles(DEFAULT_INSTITUTIONS):
        frauds = federation_frames[profile.name].query("is_fraud == 1")
        observed = np.array([(frauds["typology"] == str(t)).sum() for t in FRAUD_TYPOLOGIES])
        expected = np.array([profile.typology_mix[t] for t in FRAUD_TYPOLOGIES]) * observed.sum()

        result = chisquare(observed, expected)

        assert result.pvalue > 1e-3, (profile.name, observed, expected)


def test_institutions_differ_in_mix_and_dominant_typologies(federation_frames: dict[str, pd.DataFrame]) -> None:
    dominant = {}
    for name, frame in federation_frames.items():
        counts = frame.query("is_fraud == 1")["typology"].value_counts()
        dominant[name] = set(counts.index[:2])

    assert dominant["bank-a"] == {"compromised_terminal", "card_not_present"}
    assert dominant["bank-b"] == {"account_takeover", "high_amount_outlier"}
    assert dominant["insurer-c"] == {"card_not_present", "high_amount_outlier"}
    channels = {n: f["channel"].value_counts(normalize=True)["card_present"] for n, f in federation_frames.items()}
    assert channels["insurer-c"] < channels["bank-b"] < channels["bank-a"]


def test_typologies_have_their_signatures(federation_frames: dict[str, pd.DataFrame]) -> None:
    frame = pd.concat(federation_frames.values(), ignore_index=True)
    by = frame.groupby("typology")
    legit = frame[frame["typology"] == "none"]

    assert (by.get_group("compromised_terminal")["channel"] == "card_present").all()
    assert by.get_group("compromised_terminal")["terminal_fraud_rate_28d"].mean() > 5 * legit[
        "terminal_fraud_rate_28d"
    ].mean()
    assert (by.get_group("card_not_present")["channel"] == "card_not_present").all()
    assert by.get_group("card_not_present")["foreign_country"].mean() > 0.4
    assert by.get_group("account_takeover")["new_device"].mean() > 0.8
    assert by.get_group("account_takeover")["customer_tx_count_1d"].mean() > 2 * legit["customer_tx_count_1d"].mean()
    assert by.get_group("high_amount_outlier")["amount_to_mean_30d"].median() > 5 * legit["amount_to_mean_30d"].median()


def test_features_are_finite_and_order_one(federation_frames: dict[str, pd.DataFrame]) -> None:
    for frame in federation_frames.values():
        X, y = to_arrays(frame)

        assert X.shape == (len(frame), len(FEATURE_COLUMNS))
        assert np.isfinite(X).all()
        assert np.abs(X).max() < 20.0
        assert set(np.unique(y).tolist()) == {0.0, 1.0}


def test_generating_three_by_20k_rows_is_fast() -> None:
    start = time.perf_counter()
    for profile in default_profiles(DEFAULT_INSTITUTIONS):
        generate_institution(profile, 20_000, 1)
    assert time.perf_counter() - start < 5.0


def test_five_institutions_get_distinct_valid_profiles(tmp_path: Path) -> None:
    names = ["bank-a", "bank-b", "insurer-c", "bank-d", "credit-union-e"]

    profiles = default_profiles(names)
    manifest = write_federation_data(tmp_path / "data", names, 1_000, seed=3)

    assert [p.name for p in profiles] == names
    assert default_profiles(names) == profiles
    assert len({tuple(p.typology_mix.values()) for p in profiles}) == 5
    for profile in profiles:
        assert 0.005 <= profile.fraud_rate <= 0.03
    for name in names:
        assert (tmp_path / "data" / name / "train.csv").is_file()
        assert manifest["institutions"][name]["test_rows"] > 0


def test_invalid_profile_and_names_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="typology_mix"):
        InstitutionProfile("bank-x", 0.01, {"card_not_present": 0.5}, {"card_present": 1.0})
    with pytest.raises(ConfigError, match="distinct"):
        default_profiles(["bank-a", "bank-a"])
    with pytest.raises(ConfigError, match="name"):
        default_profiles(["../etc"])


def test_written_files_and_manifest_are_deterministic(tmp_path: Path) -> None:
    first = write_federation_data(tmp_path / "one", DEFAULT_INSTITUTIONS, 2_000, seed=9)
    second = write_federation_data(tmp_path / "two", DEFAULT_INSTITUTIONS, 2_000, seed=9)

    assert first == second
    assert _tree_bytes(tmp_path / "one") == _tree_bytes(tmp_path / "two")
    on_disk = json.loads((tmp_path / "one" / MANIFEST_NAME).read_text())
    assert on_disk["generator_version"] == GENERATOR_VERSION
    assert on_disk["seed"] == 9


def test_manifest_describes_the_split(tmp_path: Path) -> None:
    manifest = write_federation_data(tmp_path / "d", DEFAULT_INSTITUTIONS, 2_000, seed=9, test_fraction=0.3)

    for name in DEFAULT_INSTITUTIONS:
        info = manifest["institutions"][name]
        train = pd.read_csv(tmp_path / "d" / name / "train.csv")
        test = pd.read_csv(tmp_path / "d" / name / "test.csv")
        assert info["train_rows"] == len(train) and info["test_rows"] == len(test)
        assert len(test) / (len(train) + len(test)) == pytest.approx(0.3, abs=0.01)
        # Stratified: both splits carry frauds at about the same rate.
        assert test[LABEL_COLUMN].mean() == pytest.approx(train[LABEL_COLUMN].mean(), abs=0.003)
        assert not set(train["transaction_id"]) & set(test["transaction_id"])
        assert sum(info["test"]["typology_counts"].values()) == len(test)


def test_ensure_reuses_matching_data_and_regenerates_otherwise(tmp_path: Path) -> None:
    out = tmp_path / "data"
    first = ensure_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=1)
    manifest_path = out / MANIFEST_NAME
    stamp = manifest_path.stat().st_mtime_ns

    reused = ensure_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=1)
    assert reused == first
    assert manifest_path.stat().st_mtime_ns == stamp

    other = ensure_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=2)
    assert other["seed"] == 2

    # A tampered file is not reused: the data is regenerated.
    victim = out / "bank-a" / "train.csv"
    victim.write_text(victim.read_text().replace("bank-a-c", "bank-z-c", 1))
    repaired = ensure_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=2)
    assert repaired == other
    assert "bank-z-c" not in victim.read_text()


def test_unwritable_target_raises_config_error_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(ConfigError, match="cannot write"):
        write_federation_data(blocker / "data", DEFAULT_INSTITUTIONS, 1_000, seed=1)

    assert blocker.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_foreign_directory_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    with pytest.raises(ConfigError, match="refusing"):
        write_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=1)

    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_failure_mid_write_keeps_previous_data_and_leaves_no_partial_files(tmp_path: Path) -> None:
    # Arrange: complete data from seed 1, then a regeneration in a process
    # whose file-size limit makes the first large CSV write fail half-way.
    out = tmp_path / "data"
    write_federation_data(out, DEFAULT_INSTITUTIONS, 1_000, seed=1)
    before = _tree_bytes(out)
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        from core.errors import ConfigError
        from fraud.generator_files import write_federation_data
        try:
            write_federation_data(Path({str(out)!r}), ["bank-a", "bank-b", "insurer-c"], 5_000, seed=2)
        except ConfigError as exc:
            print("ConfigError:", exc)
            sys.exit(17)
        sys.exit(0)
        """
    )

    # Act
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False)

    # Assert: a clean error, the old data intact, no staging left behind.
    assert proc.returncode == 17, proc.stderr
    assert "cannot write" in proc.stdout
    assert _tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
