"""``fedfraud schema draft``: a commented schema drafted from a real CSV file loads and fits the file."""

from __future__ import annotations

import csv
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from fedfraud.cli import app
from core.errors import InputError
from fedfraud.schema_draft import MAX_VOCABULARY, draft_schema
from fraud.byo_read import check_institution_data
from fraud.byo_schema import load_schema, schema_from_toml
from tests.shared_data import INSURANCE_CSV



def _fedfraud(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfraud", *args], capture_output=True, text=True, cwd=cwd,
        timeout=300, check=False,
    )


def _write_csv(path: Path, header: list[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def transactions(tmp_path: Path) -> Path:
    """400 card transactions: identifiers, numbers with markers, text, a date and a 0/1 label."""
    channels = ["web", "pos", "atm", "phone"]
    rows = [
        [
            f"T{i:06d}",  # txn_id: unique text, named like an identifier
            4_000_000_000 + i * 7919,  # account_number: unique integers
            f"C{i % 37}",  # customer_id: repeated, but named like an identifier
            f"user{i}@example.org",  # email: a personal detail
            "?" if i % 50 == 0 else ("unknown" if i % 61 == 0 else round(10 + (i * 37 % 1000) / 7, 2)),
            channels[i % 4] if i % 9 else channels[0],  # channel: text with a few values
            f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",  # booked: ISO dates
            "EUR",  # currency: one value
            "",  # notes: always empty
            1 if i % 20 == 0 else 0,  # is_fraud
        ]
        for i in range(400)
    ]
    header = ["txn_id", "account_number", "customer_id", "email", "amount", "channel", "booked", "currency",
              "notes", "is_fraud"]
    return _write_csv(tmp_path / "transactions.csv", header, rows)


def test_insurance_claims_draft_loads_and_the_file_passes_data_check(tmp_path: Path) -> None:
    out = tmp_path / "schema.toml"

    drafted = _fedfraud("schema", "draft", str(INSURANCE_CSV), "--label", "fraud_reported", "--out", str(out),
                        cwd=tmp_path)
    checked = _fedfraud("data", "check", "--schema", str(out), f"claims={INSURANCE_CSV}", cwd=tmp_path)

    assert drafted.returncode == 0, drafted.stdout + drafted.stderr
    assert "first 1000 rows" in drafted.stdout and "1000 rows pass" in drafted.stdout
    schema = load_schema(out)
    assert (schema.label, schema.positive_label) == ("fraud_reported", "Y")
    assert {"policy_number", "incident_location", "insured_zip"} <= set(schema.id_columns)
    assert schema.id_columns[0] == "policy_number"  # the unique one names rows when scoring
    assert "_c39" in schema.drop_columns
    assert {"age", "total_claim_amount", "auto_year"} <= set(schema.numeric)
    assert set(schema.categorical["incident_severity"]) == {
        "Major Damage", "Minor Damage", "Total Loss", "Trivial Damage"}
    assert {t.column: t.format for t in schema.timestamps} == {
        "policy_bind_date": "%m/%d/%Y", "incident_date": "%m/%d/%Y"}
    assert "?" in schema.missing_markers
    assert "# REVIEW:" in out.read_text(encoding="utf-8")
    assert checked.returncode == 0, checked.stderr
    assert "1000 rows" in checked.stdout


def test_the_label_is_guessed_from_its_name_and_values() -> None:
    draft = draft_schema(INSURANCE_CSV)

    assert (draft.schema.label, draft.schema.positive_label) == ("fraud_reported", "Y")
    assert not draft.more_rows and draft.rows_read == 1000


def test_an_integer_label_gives_an_integer_positive_label(transactions: Path) -> None:
    draft = draft_schema(transactions)

    assert draft.schema.label == "is_fraud"
    assert "\npositive_label = 1\n" in draft.text
    assert tomllib.loads(draft.text)["positive_label"] == 1
    assert check_institution_data(draft.schema, {"bank": [transactions]}) == {f"bank: {transactions}": 400}


def test_a_true_false_label_gives_a_boolean_positive_label(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "b.csv", ["amount", "kind", "flagged"],
                      [[i, "ab"[i % 2], "True" if i % 5 == 0 else "False"] for i in range(50)])

    draft = draft_schema(path, label="flagged")

    assert tomllib.loads(draft.text)["positive_label"] is True
    check_institution_data(draft.schema, {"bank": [path]})


def test_identifiers_are_never_features(transactions: Path) -> None:
    draft = draft_schema(transactions)
    schema = draft.schema

    assert set(schema.id_columns) == {"txn_id", "account_number", "customer_id", "email"}
    assert schema.id_columns[0] in {"txn_id", "account_number"}  # a unique one first
    assert set(schema.drop_columns) == {"currency", "notes"}  # constant, empty
    assert schema.numeric == ("amount",)
    assert list(schema.categorical) == ["channel"]
    assert [(t.column, t.format) for t in schema.timestamps] == [("booked", "%Y-%m-%d")]


def test_missing_markers_are_found_and_words_among_numbers_become_markers(transactions: Path) -> None:
    schema = draft_schema(transactions).schema

    assert {"?", "unknown", ""} <= set(schema.missing_markers)
    assert "amount" in schema.numeric


def test_vocabularies_are_sorted_by_frequency_capped_and_marked_for_review(tmp_path: Path) -> None:
    # merchant m0 is the most frequent, then m1, ...; 80 merchants, more than the cap.
    rows = [[i, f"m{k}", i % 2] for i in range(2000) for k in [i % 80 if i % 3 else 0]]
    path = _write_csv(tmp_path / "m.csv", ["amount", "merchant", "fraud"], rows)

    draft = draft_schema(path)

    vocabulary = draft.schema.categorical["merchant"]
    assert len(vocabulary) == MAX_VOCABULARY and vocabulary[0] == "m0"
    assert "# REVIEW: 80 values in the sample, the 50 most frequent listed" in draft.text


def test_a_label_with_three_values_is_refused(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "three.csv", ["amount", "is_fraud"], [[i, i % 3] for i in range(30)])

    with pytest.raises(InputError, match=r"label column 'is_fraud'.*3 distinct value.*exactly two"):
        draft_schema(path)
    result = _fedfraud("schema", "draft", str(path), "--label", "is_fraud", "--out", str(tmp_path / "s.toml"),
                       cwd=tmp_path)
    assert result.returncode == 3
    assert "three.csv" in result.stderr and "exactly two" in result.stderr
    assert not (tmp_path / "s.toml").exists()


def test_unknown_label_and_unreadable_files_are_named(tmp_path: Path, transactions: Path) -> None:
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    (tmp_path / "header.csv").write_text("a,b\n", encoding="utf-8")
    (tmp_path / "latin.csv").write_bytes("a,is_fraud\ncaf\u00e9,1\nx,0\n".encode("latin-1"))

    with pytest.raises(InputError, match=r"transactions\.csv: no column 'fraud_flag' \(--label\)"):
        draft_schema(transactions, label="fraud_flag")
    with pytest.raises(InputError, match=r"empty\.csv: empty file"):
        draft_schema(tmp_path / "empty.csv")
    with pytest.raises(InputError, match=r"header\.csv: no data rows"):
        draft_schema(tmp_path / "header.csv")
    with pytest.raises(InputError, match=r"latin\.csv: not UTF-8 text \(line 2\)"):
        draft_schema(tmp_path / "latin.csv")
    with pytest.raises(InputError, match=r"absent\.csv: cannot read"):
        draft_schema(tmp_path / "absent.csv")


def test_an_existing_out_file_is_refused_without_force(tmp_path: Path, transactions: Path) -> None:
    out = tmp_path / "schema.toml"
    out.write_text("# the federation's agreed schema\n", encoding="utf-8")

    refused = _fedfraud("schema", "draft", str(transactions), "--out", str(out), cwd=tmp_path)
    unchanged = out.read_text(encoding="utf-8")
    forced = _fedfraud("schema", "draft", str(transactions), "--out", str(out), "--force", cwd=tmp_path)

    assert refused.returncode == 2
    assert "exists" in refused.stderr and "--force" in refused.stderr
    assert unchanged == "# the federation's agreed schema\n"
    assert forced.returncode == 0, forced.stderr
    assert load_schema(out).label == "is_fraud"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".schema.toml")] == []  # no temp left


def test_without_out_the_draft_goes_to_stdout_and_notes_to_stderr(transactions: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "draft", str(transactions), "--sample-rows", "100"])

    assert result.exit_code == 0, result.output
    schema = schema_from_toml(result.stdout, "stdout")
    assert schema.label == "is_fraud"
    assert "first 100 rows" in result.stdout  # the draft's own header says what it rests on
    assert "the file has more" in result.stderr
    assert "400 rows pass" in result.stderr


def test_a_file_that_breaks_the_draft_after_the_sample_is_reported(tmp_path: Path, transactions: Path) -> None:
    lines = transactions.read_text(encoding="utf-8").splitlines()
    lines[300] = lines[300].replace(lines[300].split(",")[4], "n/a-yet", 1)  # amount, beyond a 100-row sample
    bad = tmp_path / "late.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "late.toml"

    result = _fedfraud("schema", "draft", str(bad), "--sample-rows", "100", "--out", str(out), cwd=tmp_path)

    assert result.returncode == 3
    assert out.exists()  # the draft is written; the file does not pass it as drafted
    assert "does not pass it" in result.stderr and "'amount'" in result.stderr and "line 301" in result.stderr


@given(st.text())
def test_written_strings_read_back_as_written(text: str) -> None:
    # The draft is hand-formatted TOML (tomli-w writes no comments): every
    # string it quotes must read back unchanged with Python's own TOML reader,
    # as a value, as a key and inside a comment line.
    import tomllib

    from fedfraud.schema_draft import _toml_key, _toml_str

    assert tomllib.loads(f"v = {_toml_str(text)}")["v"] == text
    assert tomllib.loads(f"{_toml_key(text or 'x')} = 1") == {text or "x": 1}
    assert tomllib.loads(f"# {_toml_str(text)}\nv = 1") == {"v": 1}
