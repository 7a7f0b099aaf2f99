"""Byte flips in every field of a record, and a property test over random mutations."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.verify import Verdict, verify_log

from audit_support import BuiltRun

# (marker, check expected to fail first); the flip hits the first byte after the marker.
FIELDS = {
    "hash": (b'{"hash":"', "hash"),
    "record.alg": (b'"alg":"', "version"),
    "record.v": (b'"v":"fedfraud-audit/', "version"),
    "record.kind": (b'"kind":"', "format"),
    "record.seq": (b'"seq":', "hash"),
    "record.ts": (b'"ts":"', "hash"),
    "record.prev": (b'"prev":"', "hash"),
    "record.log_id.run_id": (b'"run_id":"', "hash"),
    "record.log_id.federation_id": (b'"federation_id":"', "hash"),
    "record.log_id.key_fingerprint": (b'"key_fingerprint":"ed25519:', "hash"),
    "body.round": (b'"round":', "hash"),
    "body.model_hash": (b'"model_hash":"', "hash"),
    "body.metrics": (b'"loss":0.', "hash"),
    "body.receipts_root": (b'"receipts_root":"', "hash"),
    "body.cohort": (b'"cohort":["', "hash"),
    "sig": (b'"sig":"', "signature"),
}


def _flip(byte: int) -> int:
    char = chr(byte)
    if char.isdigit():
        return ord("7" if char != "7" else "3")
    if char in "abcdef":
        return ord("e" if char != "e" else "a")
    if char.isalpha():
        return ord(char.swapcase())
    return ord("x")


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_byte_flip_in_field_is_tampered_at_that_record(field: str, pristine_run: BuiltRun, tmp_path: Path) -> None:
    # Arrange: flip one byte inside the field of round 2's round_closed (seq 14, line 15).
    marker, check = FIELDS[field]
    lines = pristine_run.lines()
    line = bytearray(lines[14])
    at = line.index(marker) + len(marker)
    line[at] = _flip(line[at])
    lines[14] = bytes(line)
    log = pristine_run.write_lines(lines, tmp_path / "server.jsonl")
    # Act (the default verification checks every record's own signature).
    report = verify_log(log, pristine_run.trusted, pristine_run.server_pub, list(pristine_run.inst_logs.values()))
    # Assert
    assert report.verdict is Verdict.TAMPERED
    first = report.first_failure
    assert (first.name, first.seq, first.line) == (check, 14, 15), first.message


def test_byte_flip_in_institution_log_is_tampered(pristine_run: BuiltRun, tmp_path: Path) -> None:
    data = bytearray(pristine_run.inst_logs["bank-a"].read_bytes())
    at = data.index(b'"root":"') + 8
    data[at] = _flip(data[at])
    bad = tmp_path / "bank-a.jsonl"
    bad.write_bytes(bytes(data))
    others = [pristine_run.inst_logs[i] for i in ("bank-b", "insurer-c")]
    report = verify_log(pristine_run.log, pristine_run.trusted, pristine_run.server_pub, [bad, *others])
    assert report.verdict is Verdict.TAMPERED
    assert report.first_failure.source == str(bad) and report.first_failure.line == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mutations_are_never_valid(data: st.DataObject, pristine_run: BuiltRun, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Property: any change of one or more bytes of a valid log is never VALID.
    original = pristine_run.log.read_bytes()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        index = data.draw(st.integers(0, len(mutated) - 1), label="index")
        mutated[index] = data.draw(st.integers(0, 255).filter(lambda b, old=mutated[index]: b != old), label="byte")
    if data.draw(st.booleans(), label="truncate"):
        mutated = mutated[: data.draw(st.integers(0, len(mutated) - 1), label="cut")]
    if bytes(mutated) == original:
        return
    log = tmp_path_factory.mktemp("mut") / "server.jsonl"
    log.write_bytes(bytes(mutated))
    report = verify_log(log, pristine_run.trusted, pristine_run.server_pub, list(pristine_run.inst_logs.values()))
    assert report.verdict is not Verdict.VALID


def test_valid_log_verifies_and_stays_valid_when_appended(tmp_path: Path) -> None:
    from audit_support import build_run, witness_all

    run = build_run(tmp_path, close=False)
    report = verify_log(run.log, run.trusted, run.server_pub, list(run.inst_logs.values()))
    assert report.verdict is Verdict.INCOMPLETE  # not closed yet: never a pass
    run.auditor.close("completed")
    witness_all(run, run.witnesses)
    report = verify_log(run.log, run.trusted, run.server_pub, list(run.inst_logs.values()))
    assert report.verdict is Verdict.VALID, [c.message for c in report.failures]
