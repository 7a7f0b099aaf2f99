"""Verification steps 4 (one history) and 5 (completeness) of :func:`audit.verify.verify_log`.

Step 4: every signed checkpoint, in the server log or held by an
institution, must describe a prefix of one history that the log reproduces.
Step 5: the run was closed and an institution witnessed a checkpoint covering
every substantive record, so the log cannot have been cut unnoticed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .checkpoint import SignedCheckpoint
from .errors import AuditError
from .lines import Line
from .record import LogId, Record, RecordKind
from .record_views import WitnessBody, countersigned_size
from .verdict import Checks, Verdict

__all__ = ["SeenCheckpoint", "check_one_history", "check_completeness"]


@dataclass
class SeenCheckpoint:
    """A server-signed checkpoint found in the server log or in an institution's log.

    Attributes
    ----------
    cp : SignedCheckpoint
        The checkpoint.
    source : str
        The file it was found in.
    where : str
        Where, in words (``"bank-a's log, record 4 (line 5)"``).
    witnessed : bool
        Countersigned by an institution (counts for completeness).
    in_log : bool
        Found in the server log itself.
    seq, line : int or None
        The record that holds it.
    institution : str
        The institution whose log holds it (``""`` for the server log).
    """

    cp: SignedCheckpoint
    source: str
    where: str
    witnessed: bool
    in_log: bool
    seq: int | None = None
    line: int | None = None
    institution: str = ""


def check_one_history(
    signed_cps: Sequence[SeenCheckpoint],
    log_id: LogId | None,
    server_key: Ed25519PublicKey,
    roots: dict[int, bytes],
    n_records: int,
    checks: Checks,
    evidence: list[dict[str, Any]],
    src: str,
) -> tuple[dict[int, list[SeenCheckpoint]], int]:
    """Step 4: all signed checkpoints describe one history that the log reproduces.

    4.1 A countersigned checkpoint of another log is TAMPERED; the others
        are grouped by tree size.
    4.2 Two server-signed checkpoints of one size with different roots are
        EQUIVOCATION (the pair is kept as evidence).
    4.3 A witnessed checkpoint larger than the log means it was cut; one the
        log's records do not reproduce means it was rewritten (or, if a later
        signed checkpoint the log does reproduce conflicts with it,
        EQUIVOCATION).

    Returns
    -------
    (by_size, witnessed_size)
        The checkpoints of this log by tree size, and the largest witnessed
        size the log reproduces (0: none).
    """
    # 4.1 Checkpoints of this log, by tree size.
    by_size: dict[int, list[SeenCheckpoint]] = {}
    for item in signed_cps:
        if log_id is not None and item.cp.log_id != log_id:
            if item.witnessed:
                checks.fail("4", "checkpoint", Verdict.TAMPERED,
                            f"{item.where}: countersigned checkpoint is for run {item.cp.log_id.run_id!r}, "
                            "not this log", source=item.source, seq=item.seq, line=item.line)
            continue
        by_size.setdefault(item.cp.tree_size, []).append(item)
    # 4.2 One root per size.
    equivocated = _check_one_root_per_size(by_size, server_key, checks, evidence)
    # 4.3 Every witnessed checkpoint is a prefix of the log.
    witnessed_size = _check_witnessed_prefixes(by_size, server_key, roots, n_records, equivocated, checks,
                                               evidence, src)
    checks.passed("4", "checkpoints", "all signed checkpoints describe one history that the log reproduces", src)
    return by_size, witnessed_size


def _check_one_root_per_size(
    by_size: dict[int, list[SeenCheckpoint]],
    server_key: Ed25519PublicKey,
    checks: Checks,
    evidence: list[dict[str, Any]],
) -> bool:
    """Step 4.2; returns whether the server equivocated (``by_size`` keeps only evidence that verifies)."""
    equivocated = False
    for size in sorted(by_size):
        group = by_size[size]
        if len({c.cp.root for c in group}) > 1:
            # Evidence must stand on its own: keep only checkpoints whose own
            # server signature verifies (institution copies were checked in step 2).
            kept = []
            for c in group:
                try:
                    c.cp.verify(server_key)
                    kept.append(c)
                except AuditError:
                    checks.fail("4", "checkpoint", Verdict.TAMPERED,
                                f"{c.where}: checkpoint signature does not verify", source=c.source,
                                seq=c.seq, line=c.line)
            group = by_size[size] = kept
        distinct = {c.cp.root for c in group}
        if len(distinct) > 1:
            a = group[0]
            b = next(c for c in group if c.cp.root != a.cp.root)
            equivocated = True
            evidence.append({"kind": "equivocation", "tree_size": size,
                             "first": {"where": a.where, "checkpoint": a.cp.to_dict()},
                             "second": {"where": b.where, "checkpoint": b.cp.to_dict()}})
            checks.fail("4", "equivocation", Verdict.EQUIVOCATION,
                        f"two server-signed checkpoints of size {size} have different roots: "
                        f"{a.where} and {b.where}", source=b.source, seq=b.seq, line=b.line,
                        expected=a.cp.root, found=b.cp.root)
    return equivocated


def _check_witnessed_prefixes(
    by_size: dict[int, list[SeenCheckpoint]],
    server_key: Ed25519PublicKey,
    roots: dict[int, bytes],
    n_records: int,
    equivocated: bool,
    checks: Checks,
    evidence: list[dict[str, Any]],
    src: str,
) -> int:
    """Step 4.3; returns the largest witnessed size that the log reproduces (0: none)."""
    matching_sizes = [s for s, g in by_size.items() if s in roots and any(roots[s].hex() == c.cp.root for c in g)]
    witnessed_size = 0
    for size in sorted(by_size):
        for item in by_size[size]:
            if not item.witnessed:
                continue
            if size > n_records:
                checks.fail("4", "truncation", Verdict.TAMPERED,
                            f"the log was cut off: {item.where} countersigned a checkpoint of {size} records, "
                            f"but the log holds only {n_records}; records {n_records}..{size - 1} are missing",
                            source=src, seq=n_records, line=n_records + 1,
                            expected=f"at least {size} records", found=f"{n_records} records")
                continue
            if size in roots and roots[size].hex() != item.cp.root:
                later = [s for s in matching_sizes if s > size]
                other = next((c for s in later for c in by_size[s] if roots[s].hex() == c.cp.root), None)
                if other is not None:
                    try:
                        other.cp.verify(server_key)
                    except AuditError:
                        other = None
                if other is not None and not equivocated:
                    equivocated = True
                    evidence.append({"kind": "equivocation", "tree_size": size,
                                     "first": {"where": item.where, "checkpoint": item.cp.to_dict()},
                                     "second": {"where": other.where, "checkpoint": other.cp.to_dict()}})
                    checks.fail("4", "equivocation", Verdict.EQUIVOCATION,
                                f"{item.where} holds a signed checkpoint of size {size} that is not a prefix of "
                                f"the signed checkpoint of size {other.cp.tree_size} in {other.where}",
                                source=item.source, seq=item.seq, line=item.line,
                                expected=roots[size].hex(), found=item.cp.root)
                elif other is None:
                    checks.fail("4", "history", Verdict.TAMPERED,
                                f"the first {size} records do not match the checkpoint {item.where} countersigned: "
                                "the log was rewritten after it was witnessed", source=src,
                                expected=item.cp.root, found=roots[size].hex())
                continue
            witnessed_size = max(witnessed_size, size)
    return witnessed_size


def check_completeness(
    good: Sequence[tuple[Line, Record]],
    n_records: int,
    has_genesis: bool,
    run_closed: dict[str, Any] | None,
    witnessed_size: int,
    last_substantive: int,
    by_size: dict[int, list[SeenCheckpoint]],
    inst_cps: Sequence[SeenCheckpoint],
    server_witnessed: dict[str, int],
    log_id: LogId | None,
    checks: Checks,
    src: str,
) -> None:
    """Step 5: the run was closed and witnessed to its end (else INCOMPLETE).

    Only for a log with authentic records and a genesis.

    5.1 The log holds ``run_closed``.
    5.2 An institution countersigned a checkpoint covering every substantive
        record, and nothing but that checkpoint and its witnesses follows it
        (:func:`_check_tail`).
    5.3 No institution's own log ends before a countersignature of it that
        the server log holds (its log was cut or is an older copy).
    """
    if good and has_genesis:
        # 5.1 The run was closed.
        if run_closed is None:
            checks.fail("5", "completeness", Verdict.INCOMPLETE,
                        f"the log ends at record {n_records - 1} without run_closed: the run is unfinished or the log was cut off",
                        source=src, seq=n_records - 1 if n_records else None,
                        expected="a run_closed record", found="none")
        # 5.2 Witnessed to its end.
        if witnessed_size < last_substantive:
            checks.fail("5", "completeness", Verdict.INCOMPLETE,
                        f"no institution log shows a countersigned checkpoint covering the whole log "
                        f"(latest witnessed size {witnessed_size}, log needs {last_substantive}); truncation cannot be ruled out",
                        source=src, seq=witnessed_size, expected=f">= {last_substantive}", found=str(witnessed_size))
        if witnessed_size:
            _check_tail(good, witnessed_size, by_size.get(witnessed_size, []), n_records, checks, src)
        # 5.3 No institution log is cut short of what the server log shows.
        own_max: dict[str, int] = {}
        for item in inst_cps:
            if item.witnessed and (log_id is None or item.cp.log_id == log_id):
                own_max[item.institution] = max(own_max.get(item.institution, 0), item.cp.tree_size)
        for inst in sorted({c.institution for c in inst_cps}):
            held, logged = own_max.get(inst, 0), server_witnessed.get(inst, 0)
            if logged > held:
                checks.fail("5", "institution log cut", Verdict.INCOMPLETE,
                            f"{inst}'s own log ends before its countersignature of the checkpoint of "
                            f"size {logged}, which the server log holds (its latest there: size {held}): "
                            f"{inst}'s log is cut or from an older copy", source=src,
                            expected=f"a countersignature of size {logged}", found=f"size {held}")
    checks.passed("5", "completeness", f"institutions witnessed the log up to record {witnessed_size}", src)


def _check_tail(
    good: Sequence[tuple[Line, Record]],
    witnessed_size: int,
    witnesses: Sequence[SeenCheckpoint],
    n_records: int,
    checks: Checks,
    src: str,
) -> None:
    """Step 5.2: nothing after the last witnessed checkpoint but that checkpoint and its witnesses.

    The institutions' countersignatures cover the first ``witnessed_size``
    records. What follows can only be the checkpoint record they countersigned
    and the witness records that hold their countersignatures. Any other record
    there is unwitnessed (INCOMPLETE), and a countersignature an institution
    holds whose checkpoint or witness record is missing from the server log
    means the log was cut after it was witnessed.
    """
    holders = sorted({c.institution for c in witnesses if c.witnessed and c.institution})
    tail = [(ln, r) for ln, r in good if r.seq >= witnessed_size]
    if not tail or tail[0][1].kind is not RecordKind.CHECKPOINT or tail[0][1].seq != witnessed_size:
        checks.fail("5", "cut tail", Verdict.INCOMPLETE,
                    f"the server log ends at record {n_records - 1}, but {', '.join(holders) or 'an institution'} "
                    f"countersigned its checkpoint of size {witnessed_size}: that checkpoint record is missing "
                    "(the log was cut after it was witnessed)",
                    source=src, seq=witnessed_size, expected=f"a checkpoint record at {witnessed_size}",
                    found="nothing" if not tail else tail[0][1].kind.value)
        return
    logged: set[str] = set()
    for ln, record in tail[1:]:
        view = WitnessBody.of(record.body) if record.kind is RecordKind.WITNESS else None
        size = countersigned_size(view.countersignature) if view is not None else None
        if view is None or size != witnessed_size:
            checks.fail("5", "unwitnessed record", Verdict.INCOMPLETE,
                        f"record {record.seq} ({record.kind.value}) comes after the last checkpoint any "
                        f"institution countersigned (size {witnessed_size}): nothing vouches for it",
                        source=src, seq=record.seq, line=ln.number, offset=ln.offset)
            continue
        logged.add(str(view.institution))
    missing = [inst for inst in holders if inst not in logged]
    if missing:
        checks.fail("5", "cut tail", Verdict.INCOMPLETE,
                    f"{', '.join(missing)} countersigned the final checkpoint (size {witnessed_size}) in "
                    f"their own logs, but the server log, which ends at record {n_records - 1}, has no "
                    "witness record for it: the log was cut after it was witnessed",
                    source=src, seq=n_records, expected=f"witness records of {', '.join(missing)}",
                    found="none")
