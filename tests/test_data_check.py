"""Data problems are found before any round: ``fedfraud data check`` and the demo's preflight."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.shared_data import INSURANCE_CSV

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "fraud" / "schemas" / "insurance_claims.toml"


def _fedfraud(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfraud", *args], capture_output=True, text=True, cwd=cwd,
        timeout=300, check=False,
    )


def _claims_with_a_bad_value(path: Path, state: str, column: str, value: str) -> int:
    """The insurance claims, one row of ``state`` given a bad ``column`` value; its line."""
    with INSURANCE_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    j, s = header.index(column), header.index("policy_state")
    line = next(i for i, row in enumerate(rows[1:], start=2) if row[s] == state)
    rows[line - 1][j] = value
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return line


def test_demo_with_a_bad_value_at_one_institution_stops_before_any_round(tmp_path: Path) -> None:
    # Before: the federation started, that institution was silently dropped
    # ("dropped: in") and the run exited 0.
    bad = tmp_path / "claims.csv"
    _claims_with_a_bad_value(bad, "IN", "policy_annual_premium", "abc")

    result = _fedfraud(
        "demo", "--byo-csv", str(bad), "--split-by", "policy_state", "--schema", str(SCHEMA),
        "--rounds", "1", "--runs-dir", str(tmp_path / "runs"), "--parties-dir", str(tmp_path / "parties"),
        "--data-dir", str(tmp_path / "data" / "demo"), cwd=tmp_path,
    )

    assert result.returncode == 3, result.stdout + result.stderr
    assert "found before any round" in result.stderr
    assert "in: " in result.stderr and "policy_annual_premium" in result.stderr and "'abc'" in result.stderr
    assert not list((tmp_path / "runs").glob("*/flower.log"))


def test_data_check_lists_every_institutions_problem(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_bytes(INSURANCE_CSV.read_bytes())
    line = _claims_with_a_bad_value(bad, "OH", "fraud_reported", "maybe")

    ok = _fedfraud("data", "check", "--schema", str(SCHEMA), f"a={good}", cwd=tmp_path)
    refused = _fedfraud("data", "check", "--schema", str(SCHEMA), f"a={good}", f"b={bad}", cwd=tmp_path)

    assert ok.returncode == 0, ok.stderr
    assert "1000 rows" in ok.stdout
    assert refused.returncode == 3
    assert f"b: {bad}" in refused.stderr and "fraud_reported" in refused.stderr
    assert "not binary" in refused.stderr or f"line {line}" in refused.stderr
