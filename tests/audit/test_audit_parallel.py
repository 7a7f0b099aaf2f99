"""Signatures verified by a process pool give exactly the in-process report.

``verify_log`` hands the Ed25519 work of a large log to worker processes
(:mod:`audit.signatures`).  Whatever the log holds, the report (verdict, every
check with its step, name, location and message, evidence, rounds) must be
the one the in-process verification gives.
"""

from __future__ import annotations

import copy
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import audit.signatures as signatures
import audit.verify as verify_module
from audit.record import decode_record, encode_record
from audit.signatures import run_with_signature_pool, verify_ed25519
from audit.verify import PARALLEL_MIN_RECORDS, Verdict, VerificationReport, verify_log

from audit_support import BuiltRun, build_run, resign, seeded_key

# Records per round of build_run with witnesses: opened, 3 receipts, closed,
# checkpoint, 3 witnesses (round 1 has a refusal, round 2 a dropout instead of
# one receipt).  Enough rounds for a log above the pool threshold.
_ROUNDS = PARALLEL_MIN_RECORDS // 9 + 5


@pytest.fixture(scope="module")
def large_run(tmp_path_factory: pytest.TempPathFactory) -> BuiltRun:
    run = build_run(tmp_path_factory.mktemp("large"), rounds=_ROUNDS)
    assert len(run.lines()) > PARALLEL_MIN_RECORDS
    return run


def _report(run: BuiltRun, log: Path, workers: int | None, full: bool = True) -> VerificationReport:
    return verify_log(log, run.trusted, run.server_pub, list(run.inst_logs.values()), full=full, workers=workers)


def _same(a: VerificationReport, b: VerificationReport) -> None:
    """Everything a report says (checks with messages and locations, evidence, rounds) is equal."""
    assert a.to_dict() == b.to_dict()
    assert (a.rounds, a.genesis, a.run_closed) == (b.rounds, b.genesis, b.run_closed)


def _damage_signature(line: bytes) -> bytes:
    """The same record with one base64 character of its own signature changed."""
    data = bytearray(line)
    at = data.rindex(b'"sig":"') + 7  # the last one is the record's own
    data[at] = ord("B" if data[at] != ord("B") else "C")
    return bytes(data)


# ---------------------------------------------------------------------------
# The pool is used, and changes nothing
# ---------------------------------------------------------------------------


def test_a_large_log_uses_the_pool_by_default(large_run: BuiltRun, monkeypatch: pytest.MonkeyPatch) -> None:
    # Arrange: count calls of the pool entry point; pretend two CPUs.
    calls: list[int] = []

    def spy(run: Any, workers: int) -> Any:
        calls.append(workers)
        return run_with_signature_pool(run, workers)

    monkeypatch.setattr(verify_module, "run_with_signature_pool", spy)
    monkeypatch.setattr(verify_module, "available_cpus", lambda: 2)
    # Act
    report = _report(large_run, large_run.log, workers=None)
    # Assert
    assert calls == [2]
    assert report.verdict is Verdict.VALID


def test_a_small_log_or_one_cpu_stays_in_process(large_run: BuiltRun, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(verify_module, "run_with_signature_pool", lambda run, workers: calls.append(workers))
    monkeypatch.setattr(verify_module, "available_cpus", lambda: 1)
    assert _report(large_run, large_run.log, workers=None).verdict is Verdict.VALID
    monkeypatch.setattr(verify_module, "available_cpus", lambda: 2)
    small = large_run.write_lines(large_run.lines()[:PARALLEL_MIN_RECORDS - 1], tmp_path / "small.jsonl")
    assert _report(large_run, small, workers=None).verdict is not Verdict.VALID  # cut, but verified
    assert calls == []


def test_the_pool_really_verifies(large_run: BuiltRun) -> None:
    # A fresh single-threaded interpreter (a test worker runs other threads,
    # where the pool rightly falls back in-process): count the batches
    # handed to worker processes while the large log is verified.
    import json
    import subprocess
    import sys

    script = f"""
import json, sys
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, {str(Path(__file__).parent)!r})
from audit.verify import verify_log
from audit_support import seeded_key
from audit.keys import public_key_bytes
batches = []
submit = ProcessPoolExecutor.submit
def counting(self, fn, batch):
    batches.append(len(batch))
    return submit(self, fn, batch)
ProcessPoolExecutor.submit = counting
trusted = {{i: public_key_bytes(seeded_key(i)) for i in {sorted(large_run.inst_keys)!r}}}
report = verify_log({str(large_run.log)!r}, trusted, public_key_bytes(seeded_key("server")),
                    {[str(p) for p in large_run.inst_logs.values()]!r}, workers=2)
print(json.dumps({{"verdict": report.verdict.value, "signatures": sum(batches)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          check=False, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Every record signature and every receipt and countersignature went to the pool.
    assert result["verdict"] == "VALID"
    assert result["signatures"] >= len(large_run.lines()) + 2 * _ROUNDS


@pytest.mark.parametrize("full", [True, False], ids=["full", "fast"])
def test_pool_and_in_process_agree_on_a_valid_log(large_run: BuiltRun, full: bool) -> None:
    pooled = _report(large_run, large_run.log, workers=2, full=full)
    alone = _report(large_run, large_run.log, workers=0, full=full)
    assert pooled.verdict is Verdict.VALID
    _same(pooled, alone)



def test_a_damaged_signature_late_in_a_large_log_is_reported_at_its_line(large_run: BuiltRun, tmp_path: Path) -> None:
    # Arrange: record content intact (the chain still authenticates it), only
    # the signature bytes of a record in the second half are damaged.
    lines = large_run.lines()
    index = len(lines) * 3 // 4
    lines[index] = _damage_signature(lines[index])
    log = large_run.write_lines(lines, tmp_path / "server.jsonl")
    # Act
    pooled = _report(large_run, log, workers=2)
    alone = _report(large_run, log, workers=0)
    # Assert: reported at its own line and record, exactly as in-process.
    assert pooled.verdict is Verdict.TAMPERED
    first = pooled.first_failure
    assert (first.step, first.name, first.seq, first.line) == ("1.2", "signature", index, index + 1)
    assert [c.line for c in pooled.failures if c.name == "signature"] == [index + 1]
    _same(pooled, alone)


def _forged_receipt(run: BuiltRun, lines: list[bytes]) -> list[bytes]:
    """A dishonest server logs a receipt with a broken institution signature and re-signs the log."""
    target = run.seq_of("receipt", 500)

    def edit(seq: int, ts: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if seq == target:
            body = copy.deepcopy(body)
            body["receipt"]["sig"] = _damage_signature(b'"sig":"' + body["receipt"]["sig"].encode()).decode()[7:]
        return ts, body

    return resign(lines, run.server_key, edit)


def _forged_record(run: BuiltRun, lines: list[bytes]) -> list[bytes]:
    """Record near the end re-written and signed by another key."""
    index = len(lines) - 40
    record = decode_record(lines[index].rstrip(b"\n"))
    forged = encode_record(seeded_key("forger"), record.log_id, record.seq, record.ts, record.kind, record.prev,
                           {**record.body, "round": 10**6})
    return [*lines[:index], forged.line + b"\n", *lines[index + 1:]]


def _many_damaged(run: BuiltRun, lines: list[bytes]) -> list[bytes]:
    """Every 7th record's signature damaged (many failures in every worker batch)."""
    return [_damage_signature(line) if i % 7 == 3 else line for i, line in enumerate(lines)]


def _deleted_and_torn(run: BuiltRun, lines: list[bytes]) -> list[bytes]:
    """A record deleted in the middle and the last line cut short."""
    out = [*lines[:1200], *lines[1201:]]
    out[-1] = out[-1][:50]
    return out


def _other_server_key(run: BuiltRun, lines: list[bytes]) -> list[bytes]:
    """The whole log re-signed by a key the verifier does not trust."""
    return resign(lines, Ed25519PrivateKey.from_private_bytes(b"\x07" * 32), lambda seq, ts, body: (ts, body))


@pytest.mark.parametrize("tamper", [_forged_receipt, _forged_record, _many_damaged, _deleted_and_torn,
                                    _other_server_key])
def test_pool_and_in_process_agree_on_tampered_logs(large_run: BuiltRun, tmp_path: Path, tamper: Any) -> None:
    log = large_run.write_lines(tamper(large_run, large_run.lines()), tmp_path / "server.jsonl")
    for full in (True, False):
        pooled = _report(large_run, log, workers=2, full=full)
        alone = _report(large_run, log, workers=0, full=full)
        assert pooled.verdict is not Verdict.VALID or not full  # --fast may not see damaged signature bytes
        _same(pooled, alone)


def test_a_damaged_countersignature_in_an_institution_log(large_run: BuiltRun, tmp_path: Path) -> None:
    # Arrange: bank-a's log holds a countersignature it did not make (re-signed by bank-a's record key,
    # so only the countersignature's own signature is wrong).
    key = large_run.inst_keys["bank-a"]
    target = 30

    def edit(seq: int, ts: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if seq == target:
            body = copy.deepcopy(body)
            cs = body["countersignature"]
            cs["sig"] = _damage_signature(b'"sig":"' + cs["sig"].encode()).decode()[7:]
        return ts, body

    inst_log = tmp_path / "bank-a.witness.jsonl"
    inst_log.write_bytes(b"".join(resign(large_run.inst_logs["bank-a"].read_bytes().splitlines(keepends=True),
                                         key, edit)))
    logs = [inst_log, large_run.inst_logs["bank-b"], large_run.inst_logs["insurer-c"]]
    # Act
    pooled = verify_log(large_run.log, large_run.trusted, large_run.server_pub, logs, workers=2)
    alone = verify_log(large_run.log, large_run.trusted, large_run.server_pub, logs, workers=0)
    # Assert
    assert pooled.verdict is Verdict.TAMPERED
    assert any(c.name == "countersignature" and c.seq == target for c in pooled.failures)
    _same(pooled, alone)


# ---------------------------------------------------------------------------
# run_with_signature_pool itself
# ---------------------------------------------------------------------------


def _signed(count: int, bad: set[int]) -> tuple[Any, list[tuple[bytes, bytes]]]:
    key = seeded_key("pool-test")
    items = []
    for i in range(count):
        message = f"message {i}".encode()
        signature = key.sign(message)
        items.append((message + b"!" if i in bad else message, signature))
    return key.public_key(), items


def test_pool_answers_are_those_of_in_process_verification() -> None:
    # Arrange: a "verification" that records which signatures fail.
    public, items = _signed(1300, bad={5, 777, 1299})

    def run() -> list[int]:
        failed = []
        for index, (message, signature) in enumerate(items):
            try:
                verify_ed25519(public, signature, message)
            except InvalidSignature:
                failed.append(index)
        return failed

    # Act / Assert: in-process, pooled with failures, pooled without any.
    assert run() == [5, 777, 1299]
    assert run_with_signature_pool(run, 2) == [5, 777, 1299]
    items[5] = items[6]
    items[777] = items[778]
    items[1299] = items[1298]
    assert run_with_signature_pool(run, 2) == []


def test_an_error_in_the_run_is_raised_as_in_process() -> None:
    public, items = _signed(3, bad=set())

    def run() -> None:
        for message, signature in items:
            verify_ed25519(public, signature, message)
        raise LookupError("from the run")

    with pytest.raises(LookupError, match="from the run"):
        run_with_signature_pool(run, 2)
