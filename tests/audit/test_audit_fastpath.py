"""The fast verification path (last signature anchors the hash chain) against the full one.

Every problem the fast path sees makes the verifier fall back to the full
path, so verdicts and the records pointed at must be identical; the fast
codecs in ``audit.canonical`` and the timestamp check must accept and produce
exactly what the reference code does.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from audit.canonical import (
    _canonical_dumps_reference,
    _loads_canonical_reference,
    canonical_dumps,
    loads_canonical,
)
from audit.cli import app
from audit.errors import AuditError, CanonicalEncodingError
from audit.record import decode_record, encode_record, parse_timestamp
from audit.verify import Verdict, VerificationReport, verify_log

from audit_vectors import ATTACKS, VECTORS
from audit_support import BuiltRun, seeded_key

KEYS = json.loads((VECTORS / "trusted_keys.json").read_text())
SERVER = (VECTORS / "server_key.b64").read_text().strip()
FORGER = seeded_key("forger")


def _outcome(report: VerificationReport) -> tuple[str, list[tuple[str, str, int | None, int | None, str | None]]]:
    """Verdict and every failed check (step, name, seq, line, source)."""
    return report.verdict.value, [(c.step, c.name, c.seq, c.line, c.source) for c in report.failures]


def _verify_both(run: BuiltRun, log: Path) -> tuple[VerificationReport, VerificationReport]:
    witnesses = list(run.inst_logs.values())
    fast = verify_log(log, run.trusted, run.server_pub, witnesses, full=False)
    full = verify_log(log, run.trusted, run.server_pub, witnesses, full=True)
    return fast, full


def _forge(line: bytes, prev: str | None = None, mutate: bool = True) -> bytes:
    """Re-encode a record under the forger's key (optionally with new content / prev)."""
    record = decode_record(line.rstrip(b"\n"))
    body = dict(record.body)
    if mutate:
        body["model_hash"] = "f" * 64
    forged = encode_record(FORGER, record.log_id, record.seq, record.ts, record.kind, prev or record.prev, body)
    return forged.line + b"\n"


# ---------------------------------------------------------------------------
# Verdicts and locations: fast == full
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_full_and_default_agree_on_every_vector(name: str) -> None:
    # Arrange
    folder = VECTORS / name
    witnesses = sorted(folder.glob("witness-*.jsonl"))
    policies = json.loads((folder / "policies.json").read_text()) if (folder / "policies.json").exists() else None
    # Act
    fast = verify_log(folder / "server.jsonl", KEYS, SERVER, witnesses, policies)
    full = verify_log(folder / "server.jsonl", KEYS, SERVER, witnesses, policies, full=True)
    # Assert: same verdict, same failures in the same order, same first failure.
    assert _outcome(fast) == _outcome(full)
    assert fast.verdict.value == json.loads((folder / "expected.json").read_text())["verdict"]
    assert fast.witnessed_size == full.witnessed_size and fast.evidence == full.evidence


def test_fast_path_pinpoints_a_forged_middle_record(pristine_run: BuiltRun, tmp_path: Path) -> None:
    # Arrange: record 14 (round 2's round_closed) re-written and signed by a
    # forger; its hash is consistent, so only its signature gives it away
    # (record 15's prev then no longer links).
    lines = pristine_run.lines()
    lines[14] = _forge(lines[14])
    log = pristine_run.write_lines(lines, tmp_path / "server.jsonl")
    # Act
    fast, full = _verify_both(pristine_run, log)
    # Assert
    assert fast.verdict is Verdict.TAMPERED
    first = fast.first_failure
    assert (first.name, first.seq, first.line) == ("signature", 14, 15), first.message
    assert _outcome(fast) == _outcome(full)


def test_fast_path_pinpoints_a_forged_middle_record_with_rechained_tail(pristine_run: BuiltRun, tmp_path: Path) -> None:
    # Arrange: the forger also re-chains and re-signs every later record, so
    # the chain is whole and only the last record's signature fails the fast path.
    lines = pristine_run.lines()
    lines[14] = _forge(lines[14])
    for i in range(15, len(lines)):
        prev = decode_record(lines[i - 1].rstrip(b"\n")).hash
        lines[i] = _forge(lines[i], prev=prev, mutate=False)
    log = pristine_run.write_lines(lines, tmp_path / "server.jsonl")
    # Act
    fast, full = _verify_both(pristine_run, log)
    # Assert: the report points at record 14, not at the end of the log.
    assert fast.verdict is Verdict.TAMPERED
    first = fast.first_failure
    assert (first.name, first.seq, first.line) == ("signature", 14, 15), first.message
    assert _outcome(fast) == _outcome(full)


def test_forged_last_record_is_tampered_on_both_paths(pristine_run: BuiltRun, tmp_path: Path) -> None:
    lines = pristine_run.lines()
    last = len(lines) - 1
    lines[last] = _forge(lines[last], mutate=False)
    log = pristine_run.write_lines(lines, tmp_path / "server.jsonl")
    fast, full = _verify_both(pristine_run, log)
    assert fast.verdict is Verdict.TAMPERED
    assert (fast.first_failure.name, fast.first_failure.seq) == ("signature", last)
    assert _outcome(fast) == _outcome(full)


def test_damaged_signature_bytes_of_an_intact_record_need_full(pristine_run: BuiltRun, tmp_path: Path) -> None:
    # Arrange: record 14's content is untouched (the chain authenticates it);
    # only its own signature bytes are damaged.
    lines = pristine_run.lines()
    line = bytearray(lines[14])
    at = line.index(b'"sig":"') + 7
    line[at] = ord("B" if line[at] != ord("B") else "C")
    lines[14] = bytes(line)
    log = pristine_run.write_lines(lines, tmp_path / "server.jsonl")
    # Act
    fast, full = _verify_both(pristine_run, log)
    # Assert: documented difference (audit.verify docstring): the default path
    # says which signature it checked; the full path finds the damaged one.
    assert fast.verdict is Verdict.VALID
    sig_check = next(c for c in fast.checks if c.step == "1.2")
    assert "last record's signature" in sig_check.message
    assert full.verdict is Verdict.TAMPERED
    assert (full.first_failure.name, full.first_failure.seq, full.first_failure.line) == ("signature", 14, 15)


def test_pristine_run_is_valid_on_both_paths(pristine_run: BuiltRun) -> None:
    fast, full = _verify_both(pristine_run, pristine_run.log)
    assert fast.verdict is full.verdict is Verdict.VALID
    assert fast.failures == full.failures == []
    assert [(c.step, c.name) for c in fast.checks] == [(c.step, c.name) for c in full.checks]


def test_cli_full_flag_gives_the_same_exit_code_and_is_documented() -> None:
    runner = CliRunner()
    for name in ("valid_run", "record_deleted", "wrong_signer", "fork"):
        folder = VECTORS / name
        args = ["verify", str(folder / "server.jsonl"), "--server-key", str(VECTORS / "server_key.b64"),
                "--keys", str(VECTORS / "trusted_keys.json")]
        for w in sorted(folder.glob("witness-*.jsonl")):
            args += ["--institution-log", str(w)]
        fast, full = runner.invoke(app, [*args, "--fast"]), runner.invoke(app, args)
        assert fast.exit_code == full.exit_code, (name, fast.output, full.output)
    helptext = runner.invoke(app, ["verify", "--help"]).output
    assert "--fast" in helptext and "--full" in helptext


# ---------------------------------------------------------------------------
# The fast codecs equal the reference ones
# ---------------------------------------------------------------------------

_names = st.one_of(st.sampled_from(["a", "b", "seq", "\u00e9", "\ufb33", "\U0001f600", "A"]), st.text(max_size=4))
_scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([2**53 - 1, -(2**53 - 1), 2**53, 10**15, 10**16 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_names, inner, max_size=4)), max_leaves=12)


def _reference_or_error(function, value):  # type: ignore[no-untyped-def]
    try:
        return function(value)
    except (CanonicalEncodingError, RecursionError) as exc:
        return (type(exc), str(exc))


@settings(max_examples=400, deadline=None)
@given(value=_json)
def test_canonical_dumps_equals_reference(value: object) -> None:
    assert _reference_or_error(canonical_dumps, value) == _reference_or_error(_canonical_dumps_reference, value)


@settings(max_examples=400, deadline=None)
@given(value=st.dictionaries(_names, _json, max_size=5), variant=st.integers(min_value=0, max_value=5))
def test_loads_canonical_accepts_exactly_what_the_reference_accepts(value: dict, variant: int) -> None:
    # Arrange: the canonical bytes, and near-miss spellings of them.
    try:
        canonical = _canonical_dumps_reference(value)
    except CanonicalEncodingError:
        canonical = json.dumps(value).encode()
    candidates = [
        canonical,
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),  # ASCII escapes, repr floats
        json.dumps(value, separators=(",", ":")).encode(),  # member order
        json.dumps(value, sort_keys=True).encode(),  # whitespace
        canonical.replace(b"}", b',"a":1}', 1),  # maybe a duplicate member
        canonical.replace(b":1", b":1.0", 1),
    ]
    line = candidates[variant]
    # Act / Assert: the same value, or the same error message.
    assert _reference_or_error(loads_canonical, line) == _reference_or_error(_loads_canonical_reference, line)


@pytest.mark.parametrize("line", [
    b'{"a":1e-7}', b'{"a":1e-07}', b'{"a":0.25}', b'{"a":1.0}', b'{"a":-0}', b'{"a":-0.0}',
    b'{"a":9007199254740991}', b'{"a":9007199254740992}', b'{"a":123456789012345}', b'{"a":1e400}',
    b'{"a":NaN}', b'{"a":1,"a":1}', b'{"a":"\\u0041"}', b' {"a":1}', b'{"a":1} ', b'[1]', b'{"b":1,"a":2}',
    b'{"a":1e+21}', b'{"a":100000000000000000000}', b'{"\\u00e9":1}', '{"\u00e9":1}'.encode(),
])
def test_loads_canonical_edge_cases_equal_reference(line: bytes) -> None:
    assert _reference_or_error(loads_canonical, line) == _reference_or_error(_loads_canonical_reference, line)


def _strptime_or_error(text: str) -> object:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return "invalid"


def _parse_or_error(text: str) -> object:
    try:
        return parse_timestamp(text)
    except AuditError:
        return "invalid"


@settings(max_examples=500, deadline=None)
@given(y=st.integers(0, 9999), mo=st.integers(0, 13), d=st.integers(0, 32), hh=st.integers(0, 25),
       mi=st.integers(0, 61), ss=st.integers(0, 62), us=st.integers(0, 999999))
def test_timestamp_check_accepts_exactly_what_strptime_accepts(y: int, mo: int, d: int, hh: int, mi: int,
                                                               ss: int, us: int) -> None:
    text = f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mi:02d}:{ss:02d}.{us:06d}Z"
    assert _parse_or_error(text) == _strptime_or_error(text)


def test_timestamp_check_known_answers() -> None:
    assert parse_timestamp("2024-02-29T23:59:59.999999Z") == datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc)
    for bad in ("2026-02-29T00:00:00.000000Z", "2026-01-01T00:00:60.000000Z", "0000-01-01T00:00:00.000000Z",
                "2026-01-01T24:00:00.000000Z", "2026-1-01T00:00:00.000000Z", "2026-01-01T00:00:00Z"):
        with pytest.raises(AuditError):
            parse_timestamp(bad)
