"""Bring your own data: strict CSV loading, shared schema, federated statistics, encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from core.errors import ConfigError, InputError
from fraud.byo_encode import FeatureSpec, encode, feature_names
from fraud.byo_read import load_institution_csv, train_test_split
from fraud.byo_schema import MISSING, OTHER, Schema, builtin_schema, compare_schemas, load_schema
from fraud.byo_split import split_by_column
from fraud.byo_stats import NumericStats, local_numeric_stats
from fraud.model import build_model
from fraud.train import TrainConfig, predict_scores, train_local
from secagg.secure_sum import STATS_SCALE, counts_and_totals, fixed_point_error, split_counts_and_totals
from tests.shared_data import INSURANCE_CSV

VECTORS = Path(__file__).parent / "byo_vectors"


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema(VECTORS / "schema.toml")


def _spec_for(frame: pd.DataFrame, schema: Schema) -> FeatureSpec:
    return FeatureSpec.from_stats(schema, local_numeric_stats(frame, schema))


# ---------------------------------------------------------------------------
# Invalid CSV vectors: each names the file and the column or line at fault.
# ---------------------------------------------------------------------------

INVALID = {
    "empty_file": ["empty file"],
    "header_only": ["no data rows"],
    "missing_label_column": ["label column 'fraud' is missing"],
    "label_not_binary": ["'fraud'", "not binary", "'maybe'"],
    "label_positive_absent": ["'fraud'", "positive value 'yes' never occurs", "'N'"],
    "single_class": ["'fraud'", "single class only"],
    "label_value_missing": ["'fraud'", "line 3", "missing label"],
    "non_numeric_value": ["column 'age'", "line 4", "data row 3", "'forty'"],
    "unknown_column_in_csv": ["unknown columns", "'ssn'"],
    "schema_column_absent_from_csv": ["missing from the file", "'age'"],
    "row_with_extra_field": ["CSV parse error", "line 3", "expected 7 fields", "found 8"],
    "unterminated_quote": ["CSV parse error", "line 2"],
    "date_not_matching_format": ["column 'opened'", "line 3", "'2015-02-17'", "'%m/%d/%Y'"],
}


def test_every_invalid_vector_is_listed() -> None:
    on_disk = {p.stem for p in VECTORS.glob("*.csv")}
    assert on_disk == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_csv_is_refused_naming_file_and_place(schema: Schema, name: str) -> None:
    path = VECTORS / f"{name}.csv"

    with pytest.raises(InputError) as info:
        load_institution_csv(path, schema)

    message = str(info.value)
    assert f"{name}.csv" in message
    for fragment in INVALID[name]:
        assert fragment in message, (fragment, message)


def test_a_bad_file_among_several_is_named(schema: Schema) -> None:
    good = VECTORS / "valid" / "with_missing_values.csv"
    bad = VECTORS / "non_numeric_value.csv"

    with pytest.raises(InputError, match="non_numeric_value.csv: column 'age', line 4"):
        load_institution_csv([good, bad], schema)


def test_missing_file_is_an_input_error(schema: Schema, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere.csv: cannot read"):
        load_institution_csv(tmp_path / "nowhere.csv", schema)


# ---------------------------------------------------------------------------
# Valid data with missing values: handled, not crashed on.
# ---------------------------------------------------------------------------


def test_missing_values_unseen_categories_and_ids_are_handled(schema: Schema) -> None:
    frame = load_institution_csv(VECTORS / "valid" / "with_missing_values.csv", schema)

    assert list(frame.columns) == ["amount", "age", "channel", "opened", "fraud"]
    assert frame["fraud"].tolist() == [0, 1, 0, 0, 1, 0]
    assert frame["amount"].isna().tolist() == [False, True, False, False, False, False]

    spec = _spec_for(frame, schema)
    X, y = encode(frame, schema, spec)
    cols = {name: X[:, i] for i, name in enumerate(spec.feature_names)}

    assert X.dtype == np.float32 and y.dtype == np.float32 and X.shape == (6, spec.n_features)
    assert np.all(np.abs(X) <= 5.0)
    assert cols["amount__missing"].tolist() == [0, 1, 0, 0, 0, 0]
    assert cols["amount"][1] == 0.0
    assert cols["age__missing"].tolist() == [0, 0, 1, 0, 1, 0]
    assert cols[f"channel={OTHER}"].tolist() == [0, 0, 0, 0, 1, 0]  # "kiosk" is not in the vocabulary
    assert cols[f"channel={MISSING}"].tolist() == [0, 0, 0, 1, 0, 0]  # "None" is a missing marker
    assert cols["opened__missing"].tolist() == [0, 0, 1, 0, 0, 0]
    one_hot = np.stack([cols[f"channel={v}"] for v in ("web", "branch", "atm", OTHER, MISSING)], axis=1)
    np.testing.assert_array_equal(one_hot.sum(axis=1), np.ones(6))


def test_feature_layout_depends_on_the_schema_only(schema: Schema) -> None:
    frame = load_institution_csv(VECTORS / "valid" / "with_missing_values.csv", schema)

    # Any subset of rows (even without a single "atm") gives the same columns.
    X_all, _ = encode(frame, schema, _spec_for(frame, schema))
    X_two, _ = encode(frame.iloc[:2], schema, _spec_for(frame, schema))

    assert X_all.shape[1] == X_two.shape[1] == len(feature_names(schema))


def test_encode_refuses_a_spec_made_for_another_schema(schema: Schema) -> None:
    frame = load_institution_csv(VECTORS / "valid" / "with_missing_values.csv", schema)
    other = schema.model_copy(update={"missing_markers": ("", "?")})
    spec = _spec_for(frame, other)

    with pytest.raises(ConfigError, match="another schema"):
        encode(frame, schema, spec)


def test_encode_does_not_mutate_the_frame(schema: Schema) -> None:
    frame = load_institution_csv(VECTORS / "valid" / "with_missing_values.csv", schema)
    before = frame.copy()

    encode(frame, schema, _spec_for(frame, schema))

    pd.testing.assert_frame_equal(frame, before)


# ---------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------


def _schema_dict(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "format": "fedfraud-byo-schema/1",
        "label": "fraud",
        "positive_label": "yes",
        "id_columns": ["customer_id"],
        "numeric": ["amount"],
        "categorical": {"channel": ["web", "atm"]},
    }
    base.update(changes)
    return base


def test_schema_file_with_an_unknown_key_is_refused_naming_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('label_column = "x"\n' + (VECTORS / "schema.toml").read_text())

    with pytest.raises(InputError, match=r"bad.toml: invalid schema: label_column: Extra inputs"):
        load_schema(path)


def test_schema_refuses_an_identifier_used_as_a_feature() -> None:
    with pytest.raises(ValueError, match="'customer_id' has more than one role: id_columns, numeric"):
        Schema.model_validate(_schema_dict(numeric=["amount", "customer_id"]))


def test_schema_refuses_a_vocabulary_value_that_is_a_missing_marker() -> None:
    with pytest.raises(ValueError, match=r"categorical 'channel'.*\['\?'\]"):
        Schema.model_validate(_schema_dict(categorical={"channel": ["web", "?"]}))


def test_schema_table_inside_a_larger_toml(tmp_path: Path) -> None:
    path = tmp_path / "institution.toml"
    body = (VECTORS / "schema.toml").read_text().replace("[categorical]", "[fedfraud.schema.categorical]")
    body = body.replace("[[timestamps]]", "[[fedfraud.schema.timestamps]]")
    head, _, tail = body.partition("[fedfraud.schema.categorical]")
    path.write_text("[fedfraud.schema]\n" + head + "[fedfraud.schema.categorical]" + tail)

    assert load_schema(path, table="fedfraud.schema") == load_schema(VECTORS / "schema.toml")


def test_compare_schemas_names_institution_and_columns() -> None:
    a = Schema.model_validate(_schema_dict())
    b = Schema.model_validate(_schema_dict(categorical={"channel": ["web", "atm", "branch"]}))
    c = Schema.model_validate(_schema_dict(numeric=["amount", "age"]))

    compare_schemas({"bank-a": a, "bank-b": a})
    with pytest.raises(ConfigError) as info:
        compare_schemas({"bank-a": a, "bank-b": b, "insurer-c": c})

    message = str(info.value)
    assert "bank-b: 'channel' is categorical ['web', 'atm', 'branch'] at bank-b" in message
    assert "insurer-c: adds columns ['age']" in message


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = Schema.model_validate(_schema_dict())

    assert a.fingerprint() == Schema.model_validate(_schema_dict()).fingerprint()
    assert a.fingerprint() != Schema.model_validate(_schema_dict(positive_label="Y")).fingerprint()


# ---------------------------------------------------------------------------
# Federated numeric statistics
# ---------------------------------------------------------------------------

_values = st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False))


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(_values, _values), min_size=3, max_size=40), cut=st.integers(1, 2))
def test_summed_site_statistics_equal_the_pooled_statistics(
    rows: list[tuple[float | None, float | None]], cut: int
) -> None:
    schema = Schema.model_validate(_schema_dict(numeric=["amount", "age"]))
    frame = pd.DataFrame(rows, columns=["amount", "age"], dtype=np.float64)
    parts = np.array_split(np.arange(len(frame)), cut + 1)

    summed = local_numeric_stats(frame.iloc[parts[0]], schema)
    for idx in parts[1:]:
        summed = summed + local_numeric_stats(frame.iloc[idx], schema)
    pooled = local_numeric_stats(frame, schema)

    np.testing.assert_allclose(summed.to_vector(), pooled.to_vector(), rtol=1e-12, atol=1e-9)
    back = NumericStats.from_vector(schema.numeric, summed.to_vector())
    np.testing.assert_array_equal(back.to_vector(), summed.to_vector())


def _securely_summed(sites: list[NumericStats]) -> NumericStats:
    """What the statistics round computes: each site's exact-sum vector, added."""
    k = len(sites[0].columns)
    vectors = [counts_and_totals(s.to_vector()[: 1 + k], s.to_vector()[1 + k :], STATS_SCALE, "s") for s in sites]
    counts, totals = split_counts_and_totals(np.sum(vectors, axis=0), 1 + k, STATS_SCALE)
    return NumericStats.from_vector(sites[0].columns, np.concatenate([counts, totals]))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(_values, _values), min_size=2, max_size=30),
    weights_split=st.integers(1, 29),
)
def test_exact_sum_of_statistics_gives_the_global_sums(
    rows: list[tuple[float | None, float | None]], weights_split: int
) -> None:
    schema = Schema.model_validate(_schema_dict(numeric=["amount", "age"]))
    frame = pd.DataFrame(rows, columns=["amount", "age"], dtype=np.float64)
    k = min(weights_split, len(frame) - 1)
    sites = [local_numeric_stats(frame.iloc[:k], schema), local_numeric_stats(frame.iloc[k:], schema)]

    recovered = _securely_summed(sites)

    expected = sites[0] + sites[1]
    assert recovered.n_rows == expected.n_rows
    np.testing.assert_array_equal(recovered.count, expected.count)
    bound = fixed_point_error(2, STATS_SCALE)
    np.testing.assert_allclose(recovered.total, expected.total, atol=bound)
    np.testing.assert_allclose(recovered.total_sq, expected.total_sq, atol=bound)


def test_fixed_point_statistics_still_give_the_global_standardization() -> None:
    # Totals travel as rint(x * 2**6); the spec derived from them differs from
    # the exact one by far less than matters for standardized inputs.
    schema = Schema.model_validate(_schema_dict(numeric=["amount", "age"]))
    rng = np.random.default_rng(3)
    sites = [
        pd.DataFrame({"amount": rng.lognormal(4 + i, 1.5, 500 + 100 * i), "age": rng.normal(40, 10, 500 + 100 * i)})
        for i in range(3)
    ]
    stats = [local_numeric_stats(f, schema) for f in sites]

    summed = FeatureSpec.from_stats(schema, _securely_summed(stats))
    exact = FeatureSpec.from_stats(schema, stats[0] + stats[1] + stats[2])

    np.testing.assert_allclose(summed.numeric_mean, exact.numeric_mean, rtol=1e-4)
    np.testing.assert_allclose(summed.numeric_std, exact.numeric_std, rtol=1e-3)


def test_statistics_of_different_columns_do_not_add() -> None:
    a = NumericStats(("amount",), 1.0, np.ones(1), np.ones(1), np.ones(1))
    b = NumericStats(("age",), 1.0, np.ones(1), np.ones(1), np.ones(1))

    with pytest.raises(ConfigError, match="different columns"):
        a + b


# ---------------------------------------------------------------------------
# Splits and the insurance claims file, end to end
# ---------------------------------------------------------------------------


def test_train_test_split_is_stratified_and_deterministic(schema: Schema) -> None:
    frame = pd.DataFrame({"fraud": [1] * 20 + [0] * 80, "amount": np.arange(100.0)})

    train, test = train_test_split(frame, schema, 0.25, seed=5)
    again, _ = train_test_split(frame, schema, 0.25, seed=5)

    assert (len(train), len(test)) == (75, 25)
    assert int(test["fraud"].sum()) == 5
    pd.testing.assert_frame_equal(train, again)
    assert train["amount"].is_monotonic_increasing


def test_insurance_claims_split_by_policy_state(tmp_path: Path) -> None:
    paths = split_by_column(INSURANCE_CSV, "policy_state", tmp_path)

    assert sorted(paths) == ["il", "in", "oh"]
    counts = {name: len(pd.read_csv(p)) for name, p in paths.items()}
    assert counts == {"il": 338, "in": 310, "oh": 352}
    assert not list(tmp_path.glob(".*.tmp"))


def test_insurance_claims_federated_preprocessing_trains_end_to_end(tmp_path: Path) -> None:
    # Arrange: three institutions from policy_state, each with its own split.
    schema = builtin_schema("insurance_claims")
    paths = split_by_column(INSURANCE_CSV, "policy_state", tmp_path)
    compare_schemas({name: schema for name in paths})
    splits = {name: train_test_split(load_institution_csv(p, schema), schema, 0.3, seed=1) for name, p in paths.items()}

    # Act: statistics go through the (simulated) exact secure sum.
    spec = FeatureSpec.from_stats(
        schema, _securely_summed([local_numeric_stats(train, schema) for train, _ in splits.values()])
    )
    X, y = encode(pd.concat([tr for tr, _ in splits.values()], ignore_index=True), schema, spec)
    X_test, y_test = encode(pd.concat([te for _, te in splits.values()], ignore_index=True), schema, spec)
    model = build_model(spec.n_features, seed=0)
    train_local(model, X, y, TrainConfig(local_epochs=10, batch_size=64, lr=1e-3, seed=0))
    auc_pr = average_precision_score(y_test, predict_scores(model, X_test))

    # Assert: ids gone, values bounded, and the model learned something.
    assert not {"policy_number", "insured_zip", "incident_location"} & set(spec.feature_names)
    assert X.shape == (701, spec.n_features) and np.all(np.abs(X) <= 5.0)
    base_rate = float(y_test.mean())
    assert auc_pr > 1.5 * base_rate, (auc_pr, base_rate)


def test_split_values_become_valid_institution_ids_and_the_mapping_is_given(tmp_path: Path) -> None:
    # Before: "Single Vehicle Collision" became "single_vehicle_collision",
    # which the policy's id rule refuses, so the demo could not go on.
    from fraud.byo_split import institution_id
    from policy.model import _SLUG

    mapping: dict[str, str] = {}
    paths = split_by_column(INSURANCE_CSV, "incident_type", tmp_path, mapping)

    assert set(paths) == set(mapping.values())
    assert mapping["Single Vehicle Collision"] == "single-vehicle-collision"
    assert all(_SLUG.fullmatch(name) and 2 <= len(name) <= 48 for name in paths)
    assert institution_id("All Perils") == "all-perils"
    assert institution_id("  OH ") == "oh"
    assert institution_id("A") == "inst-a"
    assert institution_id("é") == "inst"


@pytest.mark.parametrize(
    ("label", "in_file", "positives"),
    [(1, ["0", "1", "1"], [0, 1, 1]), (True, ["False", "True", "False"], [0, 1, 0]), (True, ["0", "1", "1"], [0, 1, 1])],
)
def test_schema_accepts_an_integer_or_boolean_positive_label(
    tmp_path: Path, label: object, in_file: list[str], positives: list[int]
) -> None:
    # Before: `positive_label = 1` was refused ("Input should be a valid string").
    schema = Schema.model_validate(_schema_dict(positive_label=label))
    csv_path = tmp_path / "train.csv"
    rows = [f"c{i},{10 + i},web,{value}" for i, value in enumerate(in_file)]
    csv_path.write_text("customer_id,amount,channel,fraud\n" + "\n".join(rows) + "\n")

    frame = load_institution_csv(csv_path, schema)

    assert frame["fraud"].tolist() == positives


def test_a_bad_row_late_in_the_file_leaves_no_split_file_behind(tmp_path: Path) -> None:
    # The split is streamed (a bank-sized export is never held in memory), so
    # it meets a bad row only after writing earlier rows: none may remain.
    lines = INSURANCE_CSV.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "claims.csv"
    bad.write_text("\n".join([*lines[:900], "1,2,3", *lines[900:]]) + "\n", encoding="utf-8")
    out = tmp_path / "out"

    with pytest.raises(InputError, match=r"claims.csv: CSV parse error at line 901: expected \d+ fields"):
        split_by_column(bad, "policy_state", out)

    assert list(out.iterdir()) == []


def test_streamed_train_test_split_is_stratified_and_reproducible(tmp_path: Path) -> None:
    from fedfraud.sites import split_train_test

    paths = split_by_column(INSURANCE_CSV, "policy_state", tmp_path / "raw")
    for run in ("a", "b"):
        split_train_test(paths["oh"], "fraud_reported", tmp_path / run, np.random.default_rng(7))
    train = pd.read_csv(tmp_path / "a" / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(tmp_path / "a" / "test.csv", dtype=str, keep_default_na=False)
    whole = pd.read_csv(paths["oh"], dtype=str, keep_default_na=False)
    assert len(train) + len(test) == len(whole) == 352
    for value, count in whole["fraud_reported"].value_counts().items():
        assert (test["fraud_reported"] == value).sum() == round(0.3 * count)
    assert (tmp_path / "a" / "test.csv").read_bytes() == (tmp_path / "b" / "test.csv").read_bytes()
    assert not list((tmp_path / "a").glob(".*.tmp"))
