"""Verification steps 1.1-1.5 (server log) and 2.k.1-2.k.5 (institution log k): authentic records.

Every log the verifier reads is first taken apart into lines and each record
authenticated: strict decoding, signature under the trusted key, one log id,
an unbroken hash chain, time order.  :func:`authenticate` runs the fast path
(one signature anchors the chain) or the full path (every signature), as the
module docstring of :mod:`audit.verify` explains.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import AuditError
from .lines import Line, read_regular_file, split_lines
from .record import GENESIS_PREV, LogId, Record, decode_record, verify_record_signature
from .verdict import Checks, Verdict

__all__ = ["read_log_lines", "log_lines", "authenticate"]


def read_log_lines(path: Path, checks: Checks, step: str) -> list[Line]:
    """Read a log file and split it into lines (see :func:`log_lines`).

    Raises
    ------
    AuditInputError
        If the file cannot be read.
    """
    return log_lines(path, read_regular_file(path, "log"), checks, step)


def log_lines(path: Path, data: bytes, checks: Checks, step: str) -> list[Line]:
    """Split a log into its lines; a torn last line is a failed check of ``step`` (TAMPERED)."""
    lines, torn = split_lines(data)
    if torn is not None:
        # A crash mid-write leaves exactly this: report it precisely.
        checks.fail(
            step, "torn line", Verdict.TAMPERED,
            f"line {torn.number} at byte offset {torn.offset} is torn: {len(torn.data)} bytes without "
            "a terminating newline (a write was interrupted or the file was cut)",
            source=str(path), line=torn.number, offset=torn.offset,
            expected="a newline-terminated record", found=f"{len(torn.data)} bytes",
        )
    return lines


def authenticate(
    path: Path,
    lines: list[Line],
    public_key: Ed25519PublicKey | None,
    checks: Checks,
    step: str,
    expected_fingerprint: str | None,
    full: bool,
) -> list[tuple[Line, Record]]:
    """Steps x.1-x.5 for one log: the fast path, or every signature (see :mod:`audit.verify`).

    The fast path runs into a scratch list of checks.  If it finds nothing
    wrong (and the file has no torn line), its result stands; otherwise it is
    discarded and the full path runs, so every report of a problem comes from
    the full path and pinpoints exactly what it always has.
    """
    if not full and not checks.any_failed(step):
        trial = Checks()
        good = _decode_and_chain(path, lines, public_key, trial, step, expected_fingerprint, every_signature=False)
        if not trial.any_failed(step):
            checks.items.extend(trial.items)
            return good
    return _decode_and_chain(path, lines, public_key, checks, step, expected_fingerprint, every_signature=True)


def _decode_and_chain(
    path: Path,
    lines: list[Line],
    public_key: Ed25519PublicKey | None,
    checks: Checks,
    step: str,
    expected_fingerprint: str | None,
    *,
    every_signature: bool,
) -> list[tuple[Line, Record]]:
    """Steps x.1-x.5, common to every log: decode, signature, log id, chain, time order.

    With ``every_signature`` each record's signature is verified; without it
    only the last line's (the anchor of the hash chain, see
    :mod:`audit.verify`).  Returns the records whose decoding *and* (checked) signature
    verified (others are reported and skipped; the chain check resynchronises
    after them).
    """
    src = str(path)
    anchor = lines[-1] if lines else None
    good: list[tuple[Line, Record]] = []
    expected_seq, expected_prev = 0, GENESIS_PREV
    chain_known = True
    log_id: LogId | None = None
    last_ts = ""
    for ln in lines:
        where = {"source": src, "line": ln.number, "offset": ln.offset}
        # x.1 Strict parse, canonical form, shape, version, record hash.
        if not ln.data:
            checks.fail(f"{step}.1", "format", Verdict.TAMPERED,
                        f"line {ln.number} is empty (a record was blanked out)", seq=expected_seq, **where)
            expected_seq += 1
            chain_known = False
            continue
        try:
            record = decode_record(ln.data, log_id)
        except AuditError as exc:
            check = getattr(exc, "check", "format")
            checks.fail(f"{step}.1", check, Verdict.TAMPERED,
                        f"line {ln.number}: record is not intact ({check}): {exc}", seq=expected_seq, **where)
            expected_seq += 1
            chain_known = False
            continue
        where["seq"] = record.seq
        # x.2 Signature under the trusted key (every one, or the anchor's).
        if public_key is None:
            checks.fail(f"{step}.2", "signature", Verdict.TAMPERED,
                        f"line {ln.number}: no trusted key for this log's signer", **where)
            continue
        try:
            if every_signature or ln is anchor:
                verify_record_signature(public_key, record)
        except AuditError:
            checks.fail(f"{step}.2", "signature", Verdict.TAMPERED,
                        f"record {record.seq} (line {ln.number}): signature does not verify under the "
                        "trusted key: forged, or modified after signing", **where)
            expected_seq, expected_prev, chain_known = record.seq + 1, record.hash, True
            continue
        # x.3 The record names this log (no splicing between logs/runs/keys).
        if log_id is None:
            log_id = record.log_id
            if expected_fingerprint is not None and log_id.key_fingerprint != expected_fingerprint:
                checks.fail(f"{step}.3", "log id", Verdict.TAMPERED,
                            f"record {record.seq}: log names signer {log_id.key_fingerprint}, not the trusted key",
                            expected=expected_fingerprint, found=log_id.key_fingerprint, **where)
        elif record.log_id != log_id:
            checks.fail(f"{step}.3", "log id", Verdict.TAMPERED,
                        f"record {record.seq} (line {ln.number}) belongs to another log "
                        f"(run {record.log_id.run_id!r}): spliced or replayed",
                        expected=f"{log_id.federation_id}/{log_id.run_id}",
                        found=f"{record.log_id.federation_id}/{record.log_id.run_id}", **where)
            continue
        # x.4 Sequence number and hash chain.
        if record.seq != expected_seq or (chain_known and not hmac.compare_digest(record.prev, expected_prev)):
            if record.seq > expected_seq:
                why = f"records {expected_seq}..{record.seq - 1} are missing (deleted) before it"
            elif record.seq < expected_seq:
                why = "its sequence number was already used (inserted, replayed or reordered)"
            else:
                why = "its 'prev' does not match the previous record's hash (inserted or reordered)"
            checks.fail(f"{step}.4", "chain", Verdict.TAMPERED,
                        f"record {record.seq} at line {ln.number} breaks the chain: {why}",
                        expected=f"seq {expected_seq}, prev {expected_prev[:16]}…",
                        found=f"seq {record.seq}, prev {record.prev[:16]}…", **where)
        expected_seq, expected_prev, chain_known = record.seq + 1, record.hash, True
        # x.5 Time never goes backwards.
        if record.ts < last_ts:
            checks.fail(f"{step}.5", "timestamp", Verdict.TAMPERED,
                        f"record {record.seq}: timestamp {record.ts} is earlier than the previous {last_ts}",
                        expected=f">= {last_ts}", found=record.ts, **where)
        last_ts = max(last_ts, record.ts)
        good.append((ln, record))
    checks.passed(f"{step}.1", "format", f"{len(lines)} lines decode strictly, are canonical and match their hashes", src)
    if every_signature:
        checks.passed(f"{step}.2", "signature", f"{len(good)} record signatures verify under the trusted key", src)
    else:
        checks.passed(f"{step}.2", "signature",
                      f"the last record's signature verifies under the trusted key and, through the hash chain, "
                      f"authenticates all {len(good)} records (each record's own signature is checked with --full)", src)
    checks.passed(f"{step}.3", "log id", "every record names the same log (federation, run, signer)", src)
    checks.passed(f"{step}.4", "chain", "sequence numbers run from 0 without gaps and every record links to its predecessor", src)
    checks.passed(f"{step}.5", "timestamp", "timestamps never go backwards", src)
    return good


