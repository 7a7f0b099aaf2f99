"""Read a log for display (``show``/``report``), without verifying it.

Nothing here establishes authenticity; use :mod:`audit.verify` for that.
Lines that do not decode are counted and skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AuditError, AuditInputError
from .lines import split_lines
from .record import Record, RecordKind, decode_record

__all__ = ["LogSummary", "RoundView", "summarize_log", "summarize_log_data"]


@dataclass
class RoundView:
    """One round as the log describes it."""

    round: int
    opened_at: str = ""
    closed_at: str = ""
    cohort: list[str] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    dropouts: list[str] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)
    model_hash: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    secagg: dict[str, Any] = field(default_factory=dict)


@dataclass
class LogSummary:
    """What an (unverified) log says."""

    path: str
    records: list[Record]
    undecodable_lines: list[int]
    genesis: dict[str, Any] | None
    rounds: list[RoundView]
    run_closed: dict[str, Any] | None
    checkpoints: int
    witnesses: int
    first_ts: str
    last_ts: str


def summarize_log(path: str | os.PathLike[str]) -> LogSummary:
    """Decode every line of a log and group its events by round.

    Raises
    ------
    AuditInputError
        If the file cannot be read.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise AuditInputError(f"{p}: cannot read log ({exc.strerror})") from exc
    return summarize_log_data(p, data)


def summarize_log_data(path: str | os.PathLike[str], data: bytes) -> LogSummary:
    """Like :func:`summarize_log`, from the bytes ``data`` already read from ``path``."""
    p = Path(path)
    records: list[Record] = []
    bad: list[int] = []
    lines, torn = split_lines(data)
    # A torn last line is shown like any other line that does not decode
    # (or, if it happens to hold a whole record, as that record).
    for number, _, line in lines + ([torn] if torn is not None else []):
        if not line:
            continue
        try:
            records.append(decode_record(line))
        except AuditError:
            bad.append(number)
    genesis = None
    run_closed = None
    rounds: dict[int, RoundView] = {}
    checkpoints = witnesses = 0
    for r in records:
        body = r.body
        rnd = body.get("round") if isinstance(body.get("round"), int) else None
        view = rounds.setdefault(rnd, RoundView(rnd)) if rnd else None
        if r.kind is RecordKind.GENESIS:
            genesis = body
        elif r.kind is RecordKind.ROUND_OPENED and view:
            view.opened_at, view.cohort, view.secagg = r.ts, list(body.get("cohort", [])), dict(body.get("secagg", {}))
        elif r.kind is RecordKind.POLICY_REFUSAL and view:
            view.refusals.append(f"{body.get('institution')} ({', '.join(map(str, body.get('rules', [])))})")
        elif r.kind is RecordKind.DROPOUT and view:
            view.dropouts.append(f"{', '.join(map(str, body.get('institutions', [])))} at {body.get('stage')}")
        elif r.kind is RecordKind.RECEIPT and view:
            view.receipts.append(str(body.get("institution")))
        elif r.kind is RecordKind.ROUND_CLOSED and view:
            view.closed_at, view.survivors = r.ts, list(body.get("cohort", []))
            view.model_hash, view.metrics = str(body.get("model_hash", "")), dict(body.get("metrics", {}))
        elif r.kind is RecordKind.CHECKPOINT:
            checkpoints += 1
        elif r.kind is RecordKind.WITNESS:
            witnesses += 1
        elif r.kind is RecordKind.RUN_CLOSED:
            run_closed = body
    return LogSummary(
        str(p), records, bad, genesis, [rounds[k] for k in sorted(rounds)], run_closed,
        checkpoints, witnesses, records[0].ts if records else "", records[-1].ts if records else "",
    )
