"""The writer: durable appends, reopening, torn lines, clock clamping; the RunAuditor's order checks."""

from __future__ import annotations

import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from audit.errors import AuditError, AuditInputError, AuditSequenceError, ReceiptError, RecordFormatError, TornLogError
from audit.keys import fingerprint
from audit.log import AuditLogWriter
from audit.receipt import make_receipt, verify_receipt
from audit.record import LogId, RecordKind, decode_record, verify_record_signature
from audit.verify import Verdict, verify_log

from audit_support import INSTITUTIONS, StepClock, build_run, h, seeded_key


def _writer(tmp_path: Path, clock=None) -> AuditLogWriter:
    key = seeded_key("server")
    return AuditLogWriter.create(tmp_path / "log.jsonl", key, LogId("fed", "run", fingerprint(key)), clock=clock or StepClock())


def test_append_writes_one_signed_canonical_line(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    record = writer.append(RecordKind.GENESIS, {"hello": "world", "n": 1.5})
    data = writer.path.read_bytes()
    assert data == record.line + b"\n"
    assert stat.S_IMODE(writer.path.stat().st_mode) == 0o600
    decoded = decode_record(record.line)
    verify_record_signature(seeded_key("server").public_key(), decoded)
    assert decoded.seq == 0 and decoded.body == {"hello": "world", "n": 1.5}
    assert b'"v":"fedfraud-audit/1"' in record.line and b'"alg":"ed25519+sha256"' in record.line


def test_create_refuses_existing_file(tmp_path: Path) -> None:
    _writer(tmp_path).append(RecordKind.GENESIS, {})
    with pytest.raises(AuditInputError):
        _writer(tmp_path)


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    first = writer.append(RecordKind.GENESIS, {})
    writer.close()
    again = AuditLogWriter.open_existing(writer.path, seeded_key("server"), clock=StepClock(datetime(2027, 1, 1, tzinfo=timezone.utc)))
    second = again.append(RecordKind.RUN_CLOSED, {})
    assert second.seq == 1 and second.prev == first.hash
    assert [r.seq for r in again.records] == [0, 1]


def test_reopen_refuses_torn_last_line_and_leaves_it(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.append(RecordKind.GENESIS, {})
    writer.append(RecordKind.RUN_CLOSED, {})
    writer.close()
    data = writer.path.read_bytes()
    first_len = data.index(b"\n") + 1
    torn = data[: first_len + 40]  # a crash in the middle of the second write
    writer.path.write_bytes(torn)
    with pytest.raises(TornLogError) as info:
        AuditLogWriter.open_existing(writer.path, seeded_key("server"))
    assert (info.value.line, info.value.offset) == (2, first_len)
    assert writer.path.read_bytes() == torn  # never repaired


def test_reopen_refuses_a_log_of_another_key(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    writer.append(RecordKind.GENESIS, {})
    writer.close()
    with pytest.raises(AuditError):
        AuditLogWriter.open_existing(writer.path, seeded_key("intruder"))


def test_clock_going_backwards_is_clamped(tmp_path: Path) -> None:
    times = iter([datetime(2026, 1, 2, tzinfo=timezone.utc), datetime(2026, 1, 1, tzinfo=timezone.utc)])
    writer = _writer(tmp_path, clock=lambda: next(times))
    a = writer.append(RecordKind.GENESIS, {})
    b = writer.append(RecordKind.RUN_CLOSED, {})
    assert a.ts == b.ts == "2026-01-02T00:00:00.000000Z"


def test_unencodable_body_is_refused_before_writing(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    with pytest.raises(AuditError):
        writer.append(RecordKind.GENESIS, {"x": float("nan")})
    assert writer.path.read_bytes() == b""


def test_auditor_enforces_event_order(tmp_path: Path) -> None:
    run = build_run(tmp_path, rounds=1, close=False)
    auditor = run.auditor
    with pytest.raises(AuditSequenceError):
        auditor.round_opened(3, h("c"), list(INSTITUTIONS), {})  # skips round 2
    with pytest.raises(AuditSequenceError):
        auditor.round_closed(1, [], h("m"), {})  # already closed
    with pytest.raises(AuditSequenceError):
        auditor.start(code_version="x", run_config={}, institutions=[], run_plan={}, aggregation_mode="secagg+", aggregation_params={})
    auditor.round_opened(2, h("c"), ["bank-a", "bank-b"], {})
    with pytest.raises(AuditSequenceError):
        auditor.checkpoint()  # only between rounds
    with pytest.raises(AuditError, match="without a receipt"):
        auditor.round_closed(2, ["bank-a"], h("m"), {})


def test_auditor_rejects_bad_receipts(tmp_path: Path) -> None:
    run = build_run(tmp_path, rounds=1, close=False)
    auditor = run.auditor
    auditor.round_opened(2, h("c"), ["bank-a", "bank-b"], {})
    key = run.inst_keys["bank-a"]
    with pytest.raises(ReceiptError, match="round 1, expected round 2"):
        auditor.receipt(make_receipt(key, "bank-a", auditor.log_id, 1, h("u"), h("policy:bank-a")))
    with pytest.raises(ReceiptError, match="signature"):
        auditor.receipt(make_receipt(seeded_key("x"), "bank-a", auditor.log_id, 2, h("u"), h("policy:bank-a")))
    with pytest.raises(ReceiptError, match="cohort"):
        auditor.receipt(make_receipt(run.inst_keys["insurer-c"], "insurer-c", auditor.log_id, 2, h("u"), h("p")))
    good = make_receipt(key, "bank-a", auditor.log_id, 2, h("u"), h("policy:bank-a"))
    auditor.receipt(good)
    with pytest.raises(ReceiptError, match="second receipt"):
        auditor.receipt(good)
    verify_receipt(good, key.public_key(), log_id=auditor.log_id, server_round=2, institution_id="bank-a")


def test_verifier_reports_torn_line_precisely(tmp_path: Path) -> None:
    run = build_run(tmp_path)
    data = run.log.read_bytes()
    cut = data.rindex(b"\n", 0, len(data) - 1) + 1  # start of the last line
    run.log.write_bytes(data[: cut + 10])
    report = verify_log(run.log, run.trusted, run.server_pub, list(run.inst_logs.values()))
    assert report.verdict is Verdict.TAMPERED
    first = report.first_failure
    assert (first.name, first.line, first.offset) == ("torn line", data.count(b"\n"), cut)
    assert "torn" in first.message and str(cut) in first.message


def test_genesis_holds_run_facts_and_no_secrets(tmp_path: Path) -> None:
    run = build_run(tmp_path, rounds=1)
    genesis = decode_record(run.lines()[0].rstrip(b"\n"))
    assert genesis.kind is RecordKind.GENESIS
    body = genesis.body
    assert {"run_id", "code_version", "run_config", "run_config_hash", "institutions", "run_plan", "aggregation"} <= set(body)
    assert [i["id"] for i in body["institutions"]] == list(INSTITUTIONS)
    assert b"PRIVATE" not in run.log.read_bytes()
    with pytest.raises(RecordFormatError):
        LogId("", "run", fingerprint(seeded_key("x")))
