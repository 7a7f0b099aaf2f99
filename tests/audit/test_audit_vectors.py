"""Every attack vector in ``vectors/`` gives its own verdict and points at its record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.errors import (
    AuditVerificationError,
    EquivocationError,
    LogIncompleteError,
    LogTamperedError,
    PolicyViolatedError,
)
from audit.verify import Verdict, verify, verify_log

from audit_vectors import ATTACKS, VECTORS, generate

KEYS = json.loads((VECTORS / "trusted_keys.json").read_text())
SERVER = (VECTORS / "server_key.b64").read_text().strip()
ERRORS = {
    "TAMPERED": LogTamperedError,
    "INCOMPLETE": LogIncompleteError,
    "POLICY_VIOLATED": PolicyViolatedError,
    "EQUIVOCATION": EquivocationError,
}


def _inputs(name: str) -> tuple[Path, list[Path], dict | None, dict]:
    folder = VECTORS / name
    policies = json.loads((folder / "policies.json").read_text()) if (folder / "policies.json").exists() else None
    return folder / "server.jsonl", sorted(folder.glob("witness-*.jsonl")), policies, json.loads((folder / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_vector_verdict_and_location(name: str) -> None:
    # Arrange
    log, witnesses, policies, expected = _inputs(name)
    # Act
    report = verify_log(log, KEYS, SERVER, witnesses, policies)
    # Assert
    assert report.verdict is Verdict(expected["verdict"])
    if expected["verdict"] == "VALID":
        assert report.failures == []
        return
    first = report.first_failure
    assert first is not None and first.name == expected["check"], [c.message for c in report.failures]
    if expected["seq"] is not None:
        assert first.seq == expected["seq"]
    if expected["line"] is not None:
        assert first.line == expected["line"]
    if "offset" in expected:
        assert first.offset == expected["offset"]
    assert first.message


@pytest.mark.parametrize("name", sorted(n for n in ATTACKS if n != "valid_run"))
def test_verify_raises_the_verdicts_error(name: str) -> None:
    log, witnesses, policies, expected = _inputs(name)
    with pytest.raises(AuditVerificationError) as info:
        verify(log, KEYS, SERVER, witnesses, policies)
    assert type(info.value) is ERRORS[expected["verdict"]]
    assert info.value.report.verdict.value == expected["verdict"]
    assert info.value.exit_code == info.value.report.verdict.exit_code


def test_valid_vector_passes_verify() -> None:
    log, witnesses, policies, _ = _inputs("valid_run")
    report = verify(log, KEYS, SERVER, witnesses, policies)
    assert report.verdict is Verdict.VALID and report.exit_code == 0


def test_vectors_are_reproducible(tmp_path: Path) -> None:
    # The generator is deterministic: regenerating gives byte-identical files.
    generate(tmp_path / "v")
    stored = {p.relative_to(VECTORS): p.read_bytes() for p in VECTORS.rglob("*") if p.is_file()}
    fresh = {p.relative_to(tmp_path / "v"): p.read_bytes() for p in (tmp_path / "v").rglob("*") if p.is_file()}
    assert stored == fresh


def test_equivocation_evidence_holds_both_checkpoints() -> None:
    log, witnesses, policies, _ = _inputs("fork")
    report = verify_log(log, KEYS, SERVER, witnesses, policies)
    assert report.evidence
    item = report.evidence[0]
    first, second = item["first"]["checkpoint"], item["second"]["checkpoint"]
    assert first["tree_size"] == second["tree_size"] == item["tree_size"]
    assert first["root"] != second["root"]


def test_without_institution_logs_a_valid_log_is_only_incomplete() -> None:
    log, _, _, _ = _inputs("valid_run")
    report = verify_log(log, KEYS, SERVER, [])
    assert report.verdict is Verdict.INCOMPLETE


def test_wrong_server_key_is_tampered() -> None:
    from audit.keys import public_key_b64
    from audit_support import seeded_key

    log, witnesses, _, _ = _inputs("valid_run")
    report = verify_log(log, KEYS, public_key_b64(seeded_key("someone-else")), witnesses)
    assert report.verdict is Verdict.TAMPERED
    assert report.first_failure.seq == 0
