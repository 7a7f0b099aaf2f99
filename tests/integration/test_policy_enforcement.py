"""Institutions enforce their *own* policies inside a real simulated federation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.rundir import read_rounds

from .federation import make_data, run_federation, verify_with_cli


def require_ckks(policy: dict[str, Any]) -> None:
    policy["protection"]["required_aggregation"] = "ckks"


def require_cohort_of_three(policy: dict[str, Any]) -> None:
    policy["protection"]["min_cohort_size"] = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"), rows=3000)


def test_institution_refuses_every_round_and_the_others_carry_on(
    tmp_path: Path, data: Path
) -> None:
    # insurer-c's compliance office now requires CKKS; the server still holds
    # the old copy of its policy, so only insurer-c's own gate can stop it.
    run_dir, _ = run_federation(tmp_path, data, rounds=2, site_edits={"insurer-c": require_ckks})

    rounds = read_rounds(run_dir)
    assert len(rounds) == 2
    for record in rounds:
        assert record["accepted"] is True
        assert record["cohort"] == ["bank-a", "bank-b"]
        (refusal,) = record["refusals"]
        assert refusal["institution"] == "insurer-c"
        assert any(rule.startswith("protection.required_aggregation") for rule in refusal["rules"])
        assert "insurer-c" not in record["evaluated_by"]
    audit_lines = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    refusals = [line for line in audit_lines if line["record"]["kind"] == "policy_refusal"]
    assert len(refusals) == 2
    assert all(r["record"]["body"]["institution"] == "insurer-c" for r in refusals)
    # The log is authentic, and it shows what happened: insurer-c refused
    # under a policy other than the one the run was registered with. Its
    # compliance officer is told so, whichever copy of the policy is used.
    for server_copies in (True, False):
        verdict = verify_with_cli(run_dir, tmp_path / "parties", server_copies=server_copies)
        assert verdict.returncode == 12, verdict.stdout + verdict.stderr
        assert "POLICY_VIOLATED" in verdict.stdout
        assert "insurer-c's policy hash" in verdict.stdout
        assert "TAMPERED" not in verdict.stdout


def test_others_stop_when_the_remaining_cohort_breaks_their_policy(
    tmp_path: Path, data: Path
) -> None:
    # insurer-c refuses (CKKS only) and bank-b's own policy needs three
    # institutions in every sum: with insurer-c gone, bank-b must refuse too,
    # and no round may be aggregated.
    run_dir, _ = run_federation(
        tmp_path,
        data,
        rounds=1,
        site_edits={"insurer-c": require_ckks, "bank-b": require_cohort_of_three},
    )

    (record,) = read_rounds(run_dir)
    assert record["accepted"] is False
    assert record["refusal"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 0
