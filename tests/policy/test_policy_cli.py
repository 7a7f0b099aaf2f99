"""The ``fedfraud policy`` sub-app, driven through typer's CliRunner on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from policy import load_policy
from policy.cli import app

INVALID = Path(__file__).resolve().parent / "vectors" / "invalid"
VALID = Path(__file__).resolve().parent / "vectors" / "valid"
IN_FORCE = "2026-06-01T00:00:00+00:00"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A policy with four independent problems."""
    text = (VALID / "minimal_bank.toml").read_text(encoding="utf-8")
    text = text.replace("max_rounds = 20", 'max_rounds = "20"')
    text = text.replace("retention_days = 365", "retention_days = 90")
    text = text.replace("valid_from = 2026-01-01T00:00:00Z", "valid_from = 2026-01-01T00:00:00")
    text = text.replace("min_cell_count = 5", "min_cell_count = 5\nmin_cells = 5")
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_valid_files_exits_zero(runner: CliRunner, examples: dict[str, Path]) -> None:
    files = [str(path) for path in examples.values()]

    result = runner.invoke(app, ["check", *files])

    assert result.exit_code == 0, result.output
    for path in files:
        assert f"ok: {path}: " in result.output
        assert load_policy(path).policy_hash in result.output


def test_check_prints_every_error_and_exits_9(runner: CliRunner, broken: Path) -> None:
    result = runner.invoke(app, ["check", str(broken)])

    assert result.exit_code == 9
    lines = result.output.splitlines()
    for field in (
        "protection.max_rounds",
        "audit.retention_days",
        "identity.valid_from",
        "outputs.min_cells",
    ):
        assert any(line.startswith(f"error: {broken}: {field}: ") for line in lines), field
    assert "Traceback" not in result.output
    assert "pydantic" not in result.output.lower()


def test_check_unreadable_file_exits_3(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(tmp_path / "absent.toml")])

    assert result.exit_code == 3
    assert "cannot read policy file" in result.output


def test_check_reports_all_files_and_exits_with_the_first_failure(
    runner: CliRunner, broken: Path, examples: dict[str, Path]
) -> None:
    duplicate = INVALID / "duplicate_key.toml"

    result = runner.invoke(app, ["check", str(duplicate), str(examples["bank-a"]), str(broken)])

    assert result.exit_code == 3  # duplicate_key.toml is not valid TOML.
    assert f"error: {duplicate}: not valid TOML" in result.output
    assert f"ok: {examples['bank-a']}" in result.output
    assert f"error: {broken}: audit.retention_days" in result.output


@pytest.mark.parametrize("path", sorted(INVALID.glob("*.toml")), ids=lambda p: p.stem)
def test_check_names_the_expected_field_of_every_invalid_vector(
    runner: CliRunner, path: Path
) -> None:
    field = path.read_text(encoding="utf-8").splitlines()[1].removeprefix("# expect-field: ")

    result = runner.invoke(app, ["check", str(path)])

    assert result.exit_code in (9, 3)
    assert field in result.output


def test_check_json(runner: CliRunner, broken: Path, examples: dict[str, Path]) -> None:
    result = runner.invoke(app, ["check", "--json", str(examples["bank-b"]), str(broken)])

    assert result.exit_code == 9
    report = json.loads(result.stdout)
    assert report[0]["valid"] is True
    assert report[0]["policy_hash"] == load_policy(examples["bank-b"]).policy_hash
    assert report[1]["valid"] is False
    assert report[1]["exit_code"] == 9
    assert {p["field"] for p in report[1]["problems"]} >= {"audit.retention_days"}


def test_show_prints_the_normalised_policy_and_hash(
    runner: CliRunner, examples: dict[str, Path]
) -> None:
    policy = load_policy(examples["insurer-c"])

    result = runner.invoke(app, ["show", str(examples["insurer-c"])])

    assert result.exit_code == 0, result.output
    assert f"policy hash: {policy.policy_hash}" in result.output
    assert "protection.min_cohort_size" in result.output
    assert "insurer-c" in result.output


def test_show_json_round_trips_to_the_hash(runner: CliRunner, examples: dict[str, Path]) -> None:
    policy = load_policy(examples["bank-a"])

    result = runner.invoke(app, ["show", "--json", str(examples["bank-a"])])

    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["policy_hash"] == policy.policy_hash
    assert document["policy"] == policy.canonical_document()


def test_show_invalid_file_exits_9(runner: CliRunner, broken: Path) -> None:
    result = runner.invoke(app, ["show", str(broken)])

    assert result.exit_code == 9
    assert f"error: {broken}: audit.retention_days" in result.output


def test_plan_of_the_demo_policies_is_accepted(
    runner: CliRunner, examples: dict[str, Path]
) -> None:
    files = [str(examples[n]) for n in ("bank-a", "bank-b", "insurer-c")]

    result = runner.invoke(app, ["plan", *files, "--rounds", "10", "--cohort", "2", "--at", IN_FORCE])

    assert result.exit_code == 0, result.output
    assert "run accepted by every policy" in result.output
    assert "protection.min_cohort_size" in result.output
    assert "plan hash: " in result.output


def test_plan_with_the_strict_insurer_lists_every_conflict(
    runner: CliRunner, examples: dict[str, Path]
) -> None:
    files = [str(examples[n]) for n in ("bank-a", "bank-b", "insurer-c-strict")]

    result = runner.invoke(
        app,
        [
            "plan", *files,
            "--aggregation", "secagg+", "--cohort", "2", "--threshold", "2",
            "--rounds", "30", "--epochs", "9", "--at", IN_FORCE,
        ],
    )

    assert result.exit_code == 4
    for conflict in (
        "insurer-c: protection.required_aggregation is 'ckks' but the run uses 'secagg+'",
        "insurer-c: protection.min_secagg_threshold is 3 but the run uses threshold 2",
        "insurer-c: protection.min_cohort_size is 3 but the run sums only 2 institutions per round",
        "bank-a: protection.max_rounds is 20 but the run asks for 30 rounds",
        "bank-b: protection.max_local_epochs is 5 but the run asks for 9",
    ):
        assert f"conflict: {conflict}" in result.output


def test_plan_json(runner: CliRunner, examples: dict[str, Path]) -> None:
    files = [str(examples[n]) for n in ("bank-a", "bank-b", "insurer-c-strict")]

    result = runner.invoke(app, ["plan", "--json", *files, "--purpose", "Marketing", "--at", IN_FORCE])

    assert result.exit_code == 4
    document = json.loads(result.stdout)
    assert document["accepted"] is False
    assert document["plan"]["aggregation_modes"] == ["ckks"]
    assert document["run"]["aggregation"] == "ckks"
    assert len(document["conflicts"]) == 3
    assert sum("data_use.purposes does not include 'Marketing'" in c for c in document["conflicts"]) == 3


def test_plan_of_the_strict_insurer_picks_ckks_and_is_accepted(
    runner: CliRunner, examples: dict[str, Path]
) -> None:
    # The ckks-only insurer, with the banks: the plan picks the one mode all
    # accept, which this version performs (secagg.ckks).
    files = [str(examples[n]) for n in ("bank-a", "bank-b", "insurer-c-strict")]

    result = runner.invoke(app, ["plan", *files, "--at", IN_FORCE, "--aggregation", "ckks", "--cohort", "3"])

    assert result.exit_code == 0, result.output
    assert "run accepted by every policy" in result.output


def test_plan_of_boosted_trees_needs_every_policys_histogram_consent(
    runner: CliRunner, examples: dict[str, Path]
) -> None:
    demo = [str(examples[n]) for n in ("bank-a", "bank-b", "insurer-c")]
    accepted = runner.invoke(app, ["plan", *demo, "--model", "gbdt", "--cohort", "2", "--at", IN_FORCE])
    assert accepted.exit_code == 0, accepted.output
    # The strict insurer has no [histograms] section; with a cohort of 1 the
    # banks' own histogram cohort floor (2) is broken too.
    files = [str(examples[n]) for n in ("bank-a", "bank-b", "insurer-c-strict")]
    result = runner.invoke(app, ["plan", "--json", *files, "--model", "gbdt", "--cohort", "1", "--at", IN_FORCE])
    assert result.exit_code == 4
    document = json.loads(result.stdout)
    assert document["run"]["model"] == "gbdt"
    assert any(c.startswith("insurer-c: histograms.allowed is not true") for c in document["conflicts"])
    assert any(c.startswith("bank-a: histograms.min_cohort_size is 2") for c in document["conflicts"])


def test_plan_features_option(runner: CliRunner, examples: dict[str, Path]) -> None:
    files = [str(examples[n]) for n in ("bank-a", "bank-b")]

    result = runner.invoke(
        app, ["plan", *files, "--features", "amount, iban", "--cohort", "2", "--at", IN_FORCE]
    )

    assert result.exit_code == 4
    assert "conflict: bank-a: data_use.forbidden_features lists 'iban'" in result.output


def test_plan_outside_the_validity_window_exits_4(
    runner: CliRunner, examples: dict[str, Path]
) -> None:
    files = [str(examples[n]) for n in ("bank-a", "bank-b", "insurer-c")]

    result = runner.invoke(app, ["plan", *files, "--at", "2028-01-01T00:00:00Z"])

    assert result.exit_code == 4
    assert "bank-a: identity.valid_until: the policy expired" in result.output


def test_plan_with_two_policies_for_one_institution_exits_9(
    runner: CliRunner, examples: dict[str, Path]
) -> None:
    result = runner.invoke(
        app, ["plan", str(examples["insurer-c"]), str(examples["insurer-c-strict"])]
    )

    assert result.exit_code == 9
    assert "more than one policy for institution(s): insurer-c" in result.output


def test_plan_with_an_invalid_file_exits_with_its_code(
    runner: CliRunner, broken: Path, examples: dict[str, Path]
) -> None:
    result = runner.invoke(app, ["plan", str(examples["bank-a"]), str(broken)])

    assert result.exit_code == 9
    assert f"error: {broken}: protection.max_rounds" in result.output


def test_plan_rejects_a_naive_start_time(runner: CliRunner, examples: dict[str, Path]) -> None:
    result = runner.invoke(app, ["plan", str(examples["bank-a"]), "--at", "2026-06-01T00:00:00"])

    assert result.exit_code == 2
    assert "timezone offset" in result.output


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ([], "Exit codes"),
        (["check"], "FIELD"),
        (["show"], "hash"),
        (["plan"], "--aggregation"),
    ],
)
def test_help(runner: CliRunner, command: list[str], expected: str) -> None:
    result = runner.invoke(app, [*command, "--help"])

    assert result.exit_code == 0
    assert expected in result.output
