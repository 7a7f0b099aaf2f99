"""The verdicts of the audit verifier, its checks and its report.

:func:`audit.verify.verify_log` returns a :class:`VerificationReport`: every
:class:`Check` it ran and exactly one :class:`Verdict`, the most severe of
the failed checks' verdicts.  Each verdict has its own exit code (the table
is in :mod:`audit.verify`), declared by the matching error class in
:mod:`audit.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from .errors import (
    AuditVerificationError,
    EquivocationError,
    LogIncompleteError,
    LogTamperedError,
    PolicyViolatedError,
)

__all__ = [
    "VERDICT_ERRORS",
    "Verdict",
    "Check",
    "Checks",
    "RoundSummary",
    "VerificationReport",
]


class Verdict(str, Enum):
    """The one verdict of a verification (exit codes: the table in :mod:`audit.verify`)."""

    VALID = "VALID"
    TAMPERED = "TAMPERED"
    INCOMPLETE = "INCOMPLETE"
    POLICY_VIOLATED = "POLICY_VIOLATED"
    EQUIVOCATION = "EQUIVOCATION"

    @property
    def exit_code(self) -> int:
        """The process exit code of this verdict."""
        return _EXIT[self]

    @property
    def severity(self) -> int:
        """Rank used to pick the verdict when several apply."""
        return _SEVERITY[self]

    @property
    def description(self) -> str:
        """One sentence in plain words."""
        return _DESCRIPTION[self]


_EXIT = {
    Verdict.VALID: 0,
    Verdict.TAMPERED: LogTamperedError.exit_code,
    Verdict.INCOMPLETE: LogIncompleteError.exit_code,
    Verdict.POLICY_VIOLATED: PolicyViolatedError.exit_code,
    Verdict.EQUIVOCATION: EquivocationError.exit_code,
}
_SEVERITY = {
    Verdict.VALID: 0,
    Verdict.INCOMPLETE: 1,
    Verdict.POLICY_VIOLATED: 2,
    Verdict.TAMPERED: 3,
    Verdict.EQUIVOCATION: 4,
}
_DESCRIPTION = {
    Verdict.VALID: "The log is authentic, complete and records no policy violation.",
    Verdict.TAMPERED: "The log was altered: records were modified, removed, added, reordered, forged or cut off.",
    Verdict.INCOMPLETE: "The log verifies so far, but no institution witnessed its end, so truncation cannot be ruled out.",
    Verdict.POLICY_VIOLATED: "The log is authentic but shows the run broke an institution's policy.",
    Verdict.EQUIVOCATION: "The server signed two conflicting versions of the log (evidence attached).",
}
#: The error :func:`audit.verify.verify` raises for each verdict but VALID.
VERDICT_ERRORS: dict[Verdict, type[AuditVerificationError]] = {
    Verdict.TAMPERED: LogTamperedError,
    Verdict.INCOMPLETE: LogIncompleteError,
    Verdict.POLICY_VIOLATED: PolicyViolatedError,
    Verdict.EQUIVOCATION: EquivocationError,
}


@dataclass
class Check:
    """One verification check.

    Attributes
    ----------
    step : str
        The numbered step of the procedure (e.g. ``"3.2"``).
    name : str
        Short name (``signature``, ``chain``, ``receipt`` ...).
    ok : bool
        Whether it passed.
    message : str
        What was checked or what went wrong, in plain words.
    verdict : Verdict
        The verdict a failure of this check implies (VALID for passes).
    source : str
        The file the check is about.
    seq, line, offset : int or None
        The record's sequence number, 1-based line number and byte offset.
    expected, found : str or None
        What the check expected and what it found, when meaningful.
    """

    step: str
    name: str
    ok: bool
    message: str
    verdict: Verdict = Verdict.VALID
    source: str = ""
    seq: int | None = None
    line: int | None = None
    offset: int | None = None
    expected: str | None = None
    found: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data

    def location(self) -> str:
        """Where in the log the check points: ``line L, record S`` (and the byte of a failure)."""
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.seq is not None:
            parts.append(f"record {self.seq}")
        if self.offset is not None and not self.ok:
            parts.append(f"byte {self.offset}")
        return ", ".join(parts)


@dataclass
class RoundSummary:
    """What the log says about one round (for ``show`` and ``report``)."""

    round: int
    cohort: list[str] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    dropouts: list[dict[str, Any]] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)
    model_hash: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    seq_opened: int | None = None
    seq_closed: int | None = None


@dataclass
class VerificationReport:
    """Every check run, the evidence gathered, and the single verdict."""

    log_path: str
    verdict: Verdict
    checks: list[Check]
    record_count: int
    evidence: list[dict[str, Any]] = field(default_factory=list)
    genesis: dict[str, Any] | None = None
    rounds: list[RoundSummary] = field(default_factory=list)
    run_closed: dict[str, Any] | None = None
    witnessed_size: int = 0

    @property
    def failures(self) -> list[Check]:
        """The failed checks, in the order found."""
        return [c for c in self.checks if not c.ok]

    @property
    def first_failure(self) -> Check | None:
        """The first failed check whose verdict is the report's verdict."""
        return next((c for c in self.checks if not c.ok and c.verdict is self.verdict), None)

    @property
    def exit_code(self) -> int:
        """The verdict's exit code."""
        return self.verdict.exit_code

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for ``--json``)."""
        return {
            "log": self.log_path,
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "summary": self.verdict.description,
            "record_count": self.record_count,
            "witnessed_size": self.witnessed_size,
            "checks": [c.to_dict() for c in self.checks],
            "evidence": self.evidence,
        }



class Checks:
    """Collects failures, and one summary pass per step that had none.

    The verification steps report into one collector; a step's summary pass
    (:meth:`passed`) is only recorded if none of its checks failed.
    """

    def __init__(self) -> None:
        self.items: list[Check] = []
        self._failed_steps: set[str] = set()

    def fail(self, step: str, name: str, verdict: Verdict, message: str, **where: Any) -> None:
        """Record a failed check of ``step`` (``where``: the :class:`Check` location fields)."""
        self.items.append(Check(step, name, False, message, verdict, **where))
        self._failed_steps.add(step)

    def passed(self, step: str, name: str, message: str, source: str = "") -> None:
        """Record that ``step`` passed, unless one of its checks failed."""
        if step not in self._failed_steps:
            self.items.append(Check(step, name, True, message, Verdict.VALID, source))

    def extend(self, items: Sequence[Check]) -> None:
        """Take over checks collected elsewhere (e.g. while reading the file)."""
        self.items.extend(items)
        self._failed_steps.update(c.step for c in items if not c.ok)

    def any_failed(self, step: str) -> bool:
        """Whether a check of ``step`` or of one of its sub-steps (``step.n``) failed."""
        return any(s == step or s.startswith(step + ".") for s in self._failed_steps)
