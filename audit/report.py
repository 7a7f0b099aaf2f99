"""The compliance report of one run: the facts first, then Markdown or HTML.

:func:`build_compliance_report` gathers what a compliance officer and a
model-risk reviewer need (the verdict, the run's identity, what the
institutions witnessed and what they did not, the GDPR Art. 30 and EU AI Act
Art. 12 entries, every round and every check) into one
:class:`ComplianceReport`.  It holds plain values exactly as the log and the
policies state them; nothing in it is escaped or formatted.
:func:`render_markdown` and :func:`render_html` (in :mod:`audit.report_render`)
lay it out, and only they escape, so every string from a log or a policy
passes through one escaping path whatever the output.

Nothing here verifies anything: the verdict and the checks come from
:func:`audit.verify.verify_log`; the rest is what the (possibly tampered) log
says, which the report states next to the verdict.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .keys import fingerprint
from .record import Record, RecordKind
from .report_render import render_html, render_markdown
from .summary import LogSummary
from .verify import Check, VerificationReport, Verdict

__all__ = [
    "ComplianceReport",
    "Coverage",
    "InstitutionEntry",
    "KindRun",
    "RoundEntry",
    "build_compliance_report",
    "render_html",
    "render_markdown",
]

# The records that carry the witnessing itself: the checkpoint the
# institutions countersign and the witness records holding their
# countersignatures.  Every other kind is an event of the run.
_WITNESSING_KINDS = frozenset({RecordKind.CHECKPOINT.value, RecordKind.WITNESS.value})


@dataclass(frozen=True)
class InstitutionEntry:
    """One institution as the genesis record lists it."""

    id: str
    key_fingerprint: str
    """``ed25519:<sha256 hex>`` of its public key, or ``""`` if the genesis key does not decode."""
    policy_hash: str


@dataclass(frozen=True)
class PolicyEntry:
    """One policy file given to the verifier, as it stands beside the log."""

    id: str
    version: str
    policy_hash: str
    in_genesis: bool
    """Whether the genesis record lists this institution with this very policy hash."""
    required_aggregation: str
    min_cohort_size: str
    max_rounds: str


@dataclass(frozen=True)
class RoundEntry:
    """One round as the log describes it."""

    round: int
    opened_at: str
    closed_at: str
    cohort: tuple[str, ...]
    refusals: tuple[str, ...]
    dropouts: tuple[str, ...]
    survivors: tuple[str, ...]
    receipts: int
    model_hash: str
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class KindRun:
    """``count`` consecutive records of one ``kind``."""

    kind: str
    count: int


@dataclass(frozen=True)
class Coverage:
    """How much of the log the institutions witnessed.

    The institutions' countersignatures cover records ``0 .. witnessed_size - 1``
    (a checkpoint of size ``witnessed_size``); records from ``witnessed_size``
    on are not covered by any countersignature.

    Attributes
    ----------
    record_count : int
        Lines in the log (as the verifier counted them).
    witnessed_size : int
        Size of the latest checkpoint an institution countersigned (0: none).
    witnesses : tuple of str
        Institutions whose countersignature of that checkpoint the log holds.
    witnessed_root : str
        Merkle root of that checkpoint as the log records it (``""`` if absent).
    tail_first, tail_last : int or None
        Sequence numbers of the first and last record not covered (None: no such record).
    tail_kinds : tuple of KindRun
        The kinds of the uncovered records, in log order, consecutive repeats merged.
    tail_events : tuple of str
        The kinds among them that are events of the run (not checkpoint or witness), first occurrence order.
    """

    record_count: int
    witnessed_size: int
    witnesses: tuple[str, ...]
    witnessed_root: str
    tail_first: int | None
    tail_last: int | None
    tail_kinds: tuple[KindRun, ...]
    tail_events: tuple[str, ...]


@dataclass(frozen=True)
class ComplianceReport:
    """Everything the compliance report states, as plain values (see the module docstring)."""

    verdict: Verdict
    federation_id: str
    run_id: str
    log_path: str
    signer_fingerprint: str
    first_ts: str
    last_ts: str
    undecodable_lines: tuple[int, ...]
    institutions: tuple[InstitutionEntry, ...]
    policies: tuple[PolicyEntry, ...]
    """The policy files the verifier was given (empty when none was)."""
    coverage: Coverage
    purposes: tuple[str, ...]
    recipients: tuple[str, ...]
    retention_days: tuple[str, ...]
    aggregation_mode: str
    aggregation_params: Mapping[str, Any]
    code_version: str
    run_config_hash: str
    run_closed: bool
    run_closed_reason: str
    rounds: tuple[RoundEntry, ...]
    metric_names: tuple[str, ...]
    checks: tuple[Check, ...]
    evidence_count: int
    inputs: tuple[tuple[str, str], ...] = ()
    """(what, path) of every file the verification read besides the log: keys, policies, institution logs."""

    @property
    def exit_code(self) -> int:
        """The verdict's exit code."""
        return self.verdict.exit_code

    @property
    def failed_checks(self) -> int:
        """How many checks failed."""
        return sum(1 for c in self.checks if not c.ok)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object, default: str = "") -> str:
    return default if value is None else str(value)


def _key_fingerprint(public_key_b64: object) -> str:
    if not isinstance(public_key_b64, str):
        return ""
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
        return fingerprint(raw) if len(raw) == 32 else ""
    except (binascii.Error, ValueError):
        return ""


def _coverage(records: list[Record], record_count: int, witnessed_size: int) -> Coverage:
    witnesses: list[str] = []
    root = ""
    for r in records:
        if r.kind is RecordKind.CHECKPOINT and r.seq == witnessed_size:
            root = _text(_dict(r.body.get("checkpoint")).get("root"))
        elif r.kind is RecordKind.WITNESS:
            cp = _dict(_dict(r.body.get("countersignature")).get("checkpoint"))
            inst = _text(r.body.get("institution"))
            if witnessed_size and cp.get("tree_size") == witnessed_size and inst not in witnesses:
                witnesses.append(inst)
    tail = [r for r in records if r.seq >= witnessed_size]
    runs: list[KindRun] = []
    events: list[str] = []
    for r in tail:
        kind = r.kind.value
        if runs and runs[-1].kind == kind:
            runs[-1] = KindRun(kind, runs[-1].count + 1)
        else:
            runs.append(KindRun(kind, 1))
        if kind not in _WITNESSING_KINDS and kind not in events:
            events.append(kind)
    return Coverage(
        record_count=record_count,
        witnessed_size=witnessed_size,
        witnesses=tuple(sorted(witnesses)),
        witnessed_root=root,
        tail_first=tail[0].seq if tail else None,
        tail_last=tail[-1].seq if tail else None,
        tail_kinds=tuple(runs),
        tail_events=tuple(events),
    )


def build_compliance_report(
    summary: LogSummary,
    report: VerificationReport,
    policies: Mapping[str, Mapping[str, Any]] | None,
    inputs: Sequence[tuple[str, str]] = (),
) -> ComplianceReport:
    """Gather the facts of the compliance report from a log summary, its verification and the policies.

    Parameters
    ----------
    summary : LogSummary
        What the log says (:func:`audit.summary.summarize_log`).
    report : VerificationReport
        The verification of the same log (:func:`audit.verify.verify_log`).
    policies : mapping or None
        ``{institution_id: tables}`` as :func:`audit.cli.load_policy_file` returns them.
    inputs : sequence of (what, path)
        The other files the verification read (keys, policy files, institution logs), for
        the report's "where the evidence lives".

    Returns
    -------
    ComplianceReport
        Plain, unescaped values; render with :func:`render_markdown` or :func:`render_html`.
    """
    g = summary.genesis or {}
    plan = _dict(g.get("run_plan"))
    agg = _dict(g.get("aggregation"))
    log_id = summary.records[0].log_id if summary.records else None
    raw_purposes = plan.get("purposes") or plan.get("purpose") or _dict(g.get("run_config")).get("purpose")
    if isinstance(raw_purposes, (list, tuple)):
        purposes = tuple(str(p) for p in raw_purposes)
    else:
        purposes = (str(raw_purposes),) if raw_purposes else ()
    tables = list((policies or {}).values())
    retention = sorted({str(_dict(p.get("audit")).get("retention_days")) for p in tables
                        if _dict(p.get("audit")).get("retention_days")})
    recipients = sorted({str(r) for p in tables for r in _dict(p.get("outputs")).get("model_recipients", [])})
    institutions = tuple(
        InstitutionEntry(_text(i.get("id")), _key_fingerprint(i.get("public_key")), _text(i.get("policy_hash")))
        for i in g.get("institutions", []) if isinstance(i, dict)
    )
    genesis_hashes = {(i.id, i.policy_hash) for i in institutions}
    in_force = tuple(
        PolicyEntry(
            id=str(inst),
            version=_text(p.get("version"), "?"),
            policy_hash=_text(p.get("policy_hash")),
            in_genesis=(str(inst), _text(p.get("policy_hash"))) in genesis_hashes,
            required_aggregation=_text(_dict(p.get("protection")).get("required_aggregation"), "?"),
            min_cohort_size=_text(_dict(p.get("protection")).get("min_cohort_size"), "?"),
            max_rounds=_text(_dict(p.get("protection")).get("max_rounds"), "?"),
        )
        for inst, p in sorted((policies or {}).items())
    )
    rounds = tuple(
        RoundEntry(
            round=r.round, opened_at=r.opened_at, closed_at=r.closed_at, cohort=tuple(map(str, r.cohort)),
            refusals=tuple(r.refusals), dropouts=tuple(r.dropouts), survivors=tuple(map(str, r.survivors)),
            receipts=len(r.receipts), model_hash=r.model_hash, metrics=dict(r.metrics),
        )
        for r in summary.rounds
    )
    metric_names = tuple(sorted({str(k) for r in rounds for k in r.metrics}))
    closed = summary.run_closed
    return ComplianceReport(
        verdict=report.verdict,
        federation_id=_text(g.get("federation_id"), log_id.federation_id if log_id else "?"),
        run_id=_text(g.get("run_id"), log_id.run_id if log_id else "?"),
        log_path=summary.path,
        signer_fingerprint=log_id.key_fingerprint if log_id else "",
        first_ts=summary.first_ts,
        last_ts=summary.last_ts,
        undecodable_lines=tuple(summary.undecodable_lines),
        institutions=institutions,
        policies=in_force,
        coverage=_coverage(summary.records, report.record_count, report.witnessed_size),
        purposes=purposes,
        recipients=tuple(recipients),
        retention_days=tuple(retention),
        aggregation_mode=_text(agg.get("mode"), "?"),
        aggregation_params=_dict(agg.get("params")),
        code_version=_text(g.get("code_version"), "?"),
        run_config_hash=_text(g.get("run_config_hash")),
        run_closed=closed is not None,
        run_closed_reason=_text((closed or {}).get("reason")),
        rounds=rounds,
        metric_names=metric_names,
        checks=tuple(report.checks),
        evidence_count=len(report.evidence),
        inputs=tuple((str(what), str(path)) for what, path in inputs),
    )

