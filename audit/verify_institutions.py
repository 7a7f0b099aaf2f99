"""Verification step 2 of :func:`audit.verify.verify_log`: the institutions' own witness logs.

Each institution keeps a log of the checkpoints it countersigned (or
refused), signed with its own key.  Step 2.k authenticates institution log k
(2.k.1-2.k.5, as step 1 does for the server log) and 2.k.6 collects the
server-signed checkpoints in it, for steps 4 and 5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .checkpoint import SignedCheckpoint, verify_countersignature
from .errors import AuditError, AuditUsageError
from .keys import fingerprint
from .lines import Line
from .record import Record, RecordKind, decode_record
from .record_views import WitnessBody, WitnessRefusedBody, member
from .verdict import Checks, Verdict
from .verify_chain import authenticate, read_log_lines
from .verify_history import SeenCheckpoint

__all__ = ["check_institution_logs"]


def check_institution_logs(
    paths: Sequence[Path],
    trusted: Mapping[str, Ed25519PublicKey],
    server_key: Ed25519PublicKey,
    checks: Checks,
    full: bool,
    run: tuple[str, str] | None,
) -> list[SeenCheckpoint]:
    """Step 2: verify each institution's own log and collect the checkpoints in it.

    ``run`` is the (federation, run) the server log names; an institution log
    of another run is a usage error (:class:`AuditUsageError`), not tampering.

    Raises
    ------
    AuditUsageError
        If an institution log is of another run than the server log.
    AuditInputError
        If an institution log cannot be read.
    """
    by_fp = {fingerprint(key): inst for inst, key in trusted.items()}
    server_fp = fingerprint(server_key)
    found: list[SeenCheckpoint] = []
    for index, path in enumerate(paths, start=1):
        step = f"2.{index}"
        src = str(path)
        lines = _read_institution_log(path, checks, step)
        if lines is None:
            continue
        inst = _signer(lines, by_fp, checks, step, src, run)
        if inst is None:
            continue
        # 2.k.1-2.k.5 Its records are authentic under the institution's trusted key.
        records = authenticate(path, lines, trusted[inst], checks, step, fingerprint(trusted[inst]), full)
        # 2.k.6 Its witness records hold checkpoints the trusted server key signed.
        for ln, record in records:
            item = _seen_checkpoint(ln, record, inst, trusted[inst], server_key, server_fp, checks, step, src)
            if item is not None:
                found.append(item)
        checks.passed(f"{step}.6", "institution log",
                      f"{inst}'s log: {sum(1 for c in found if c.source == src and c.witnessed)} countersigned checkpoints verify", src)
    return found


def _read_institution_log(path: Path, checks: Checks, step: str) -> list[Line] | None:
    """An institution log's lines, or None (reported) if it is missing or empty."""
    src = str(path)
    # A missing or empty institution log is reported, not a crash: the
    # verdict says what cannot be checked (an institution that left
    # before its first witnessing has no log at all).
    if not path.exists() and not path.is_symlink():
        checks.fail(step, "institution log", Verdict.INCOMPLETE,
                    f"{src}: institution log not found; that institution's witnessing cannot be "
                    "checked (leave it out if it never witnessed a checkpoint)", source=src)
        return None
    lines = read_log_lines(path, checks, step)
    if not lines:
        checks.fail(step, "institution log", Verdict.INCOMPLETE,
                    f"{src}: institution log is empty; it names no institution, so nothing it "
                    "witnessed can be checked", source=src)
        return None
    return lines


def _signer(
    lines: Sequence[Line], by_fp: Mapping[str, str], checks: Checks, step: str, src: str,
    run: tuple[str, str] | None,
) -> str | None:
    """The trusted institution that signed the log, or None (reported as TAMPERED).

    The signer is identified by the fingerprint in the first record, and
    must be a *trusted* institution key; the record signatures then prove it.

    Raises
    ------
    AuditUsageError
        If the log is of another run than the server log.
    """
    inst: str | None = None
    try:
        first = decode_record(lines[0].data)
        inst = by_fp.get(first.log_id.key_fingerprint)
    except AuditError:
        first = None
    if first is not None and run is not None and (
        first.log_id.federation_id, first.log_id.run_id
    ) != run:
        raise AuditUsageError(
            f"{src}: institution log of run {first.log_id.run_id!r} "
            f"(federation {first.log_id.federation_id!r}), but the server log is of run "
            f"{run[1]!r} (federation {run[0]!r}); give the institution logs of this run"
        )
    if inst is None:
        checks.fail(step, "institution log", Verdict.TAMPERED,
                    f"{src}: not signed by any trusted institution key", source=src, line=1, offset=0)
    return inst


def _seen_checkpoint(
    ln: Line,
    record: Record,
    inst: str,
    inst_key: Ed25519PublicKey,
    server_key: Ed25519PublicKey,
    server_fp: str,
    checks: Checks,
    step: str,
    src: str,
) -> SeenCheckpoint | None:
    """Step 2.k.6 for one record: the server-signed checkpoint it holds, or None.

    A ``witness`` record must hold this institution's valid countersignature
    of a checkpoint the trusted server key signed (else TAMPERED); a
    ``witness_refused`` record's checkpoint counts as evidence only if it is
    well formed and server-signed.
    """
    where = {"source": src, "seq": record.seq, "line": ln.number, "offset": ln.offset}
    if record.kind not in (RecordKind.WITNESS, RecordKind.WITNESS_REFUSED):
        checks.fail(f"{step}.6", "record kind", Verdict.TAMPERED,
                    f"{inst}'s log holds a {record.kind.value!r} record", **where)
        return None
    view = (WitnessBody if record.kind is RecordKind.WITNESS else WitnessRefusedBody).of(record.body)
    if view.institution != inst:
        checks.fail(f"{step}.6", "institution", Verdict.TAMPERED,
                    f"record names institution {view.institution!r}, log is {inst!r}'s", **where)
        return None
    witnessed = isinstance(view, WitnessBody)
    try:
        if isinstance(view, WitnessBody):
            cs = view.countersignature
            if not isinstance(cs, dict) or member(cs, "institution") != inst:
                raise AuditError("countersignature names another institution")
            cp = verify_countersignature(cs, inst_key)
        else:
            cp = SignedCheckpoint.from_dict(view.checkpoint)
    except AuditError as exc:
        if witnessed:
            checks.fail(f"{step}.6", "countersignature", Verdict.TAMPERED,
                        f"{inst}'s countersignature in record {record.seq} does not verify: {exc}", **where)
        return None  # a refused, malformed checkpoint is no evidence of anything
    # Only checkpoints the trusted server key really signed count.
    if cp.log_id.key_fingerprint != server_fp:
        if witnessed:
            checks.fail(f"{step}.6", "checkpoint", Verdict.TAMPERED,
                        f"{inst} countersigned a checkpoint of another server key", **where)
        return None
    try:
        cp.verify(server_key)
    except AuditError:
        if witnessed:
            checks.fail(f"{step}.6", "checkpoint", Verdict.TAMPERED,
                        f"{inst} countersigned a checkpoint whose server signature does not verify", **where)
        return None
    return SeenCheckpoint(cp, src, f"{inst}'s log, record {record.seq} (line {ln.number})",
                          witnessed, False, record.seq, ln.number, inst)
