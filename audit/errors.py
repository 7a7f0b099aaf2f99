"""Exceptions raised by the audit package.

Every class derives from the product hierarchy in :mod:`core.errors`, so
the command line maps each one to a documented exit code.  The verifier's
verdict-specific errors carry their own exit codes (see :class:`audit.verdict.Verdict`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from core.errors import AuditError, InputError, UsageError

if TYPE_CHECKING:  # pragma: no cover - import only for type checkers
    from .verdict import VerificationReport

__all__ = [
    "AuditInputError",
    "CanonicalEncodingError",
    "KeyFileError",
    "MerkleProofError",
    "AuditSignatureError",
    "RecordFormatError",
    "TornLogError",
    "AuditSequenceError",
    "ReceiptError",
    "WitnessRefusal",
    "AuditVerificationError",
    "LogTamperedError",
    "LogIncompleteError",
    "PolicyViolatedError",
    "EquivocationError",
]


class AuditInputError(InputError):
    """An audit input (log, key file, policy file) cannot be read or parsed."""


class KeyFileError(AuditInputError):
    """A key file is missing, malformed, unsafe (permissions) or would be overwritten."""


class CanonicalEncodingError(AuditError):
    """A value cannot be encoded canonically, or bytes are not canonical JSON.

    Raised for NaN/Infinity, integers beyond the interoperable range, lone
    surrogates, non-string keys, duplicate keys and invalid UTF-8.
    """


class MerkleProofError(AuditError):
    """A Merkle inclusion or consistency proof does not verify."""


class AuditSignatureError(AuditError):
    """A signature in the audit trail does not verify under the trusted key."""


class RecordFormatError(AuditError):
    """A log record is malformed, not canonical, or breaks the chain."""


class TornLogError(AuditError):
    """A log ends in a partially written line; the writer refuses to repair it."""

    def __init__(self, message: str, line: int, offset: int) -> None:
        super().__init__(message)
        self.line = line
        self.offset = offset


class AuditSequenceError(AuditError):
    """An audit event arrived out of order (e.g. a round closed that never opened)."""


class ReceiptError(AuditError):
    """An institution receipt is malformed or does not verify."""


class WitnessRefusal(AuditError):
    """An institution refused to countersign a checkpoint (rollback, fork, bad proof)."""


class AuditUsageError(AuditError, UsageError):
    """The verifier was given inputs that do not belong together (e.g. another run's log)."""

    exit_code = UsageError.exit_code


class AuditVerificationError(AuditError):
    """Verification of an audit log ended in a verdict other than VALID.

    Attributes
    ----------
    report : VerificationReport
        Every check that was run, with the failures and the verdict.
    """

    exit_code: ClassVar[int] = 7

    def __init__(self, message: str, report: "VerificationReport") -> None:
        super().__init__(message)
        self.report = report


class LogTamperedError(AuditVerificationError):
    """The log was modified, truncated, reordered, forged, spliced or torn."""

    exit_code = 10


class LogIncompleteError(AuditVerificationError):
    """Truncation of the log cannot be ruled out (no late enough witness)."""

    exit_code = 11


class PolicyViolatedError(AuditVerificationError):
    """The log is authentic but records a breach of an institution's policy."""

    exit_code = 12


class EquivocationError(AuditVerificationError):
    """The server signed two conflicting checkpoints of the same log."""

    exit_code = 13
