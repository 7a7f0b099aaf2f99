"""Verification of a server audit log against trusted keys and institutions' logs.

The verifier trusts only what the caller gives it: the server's public key,
each institution's public key (from its policy file or a key file) and the
institutions' own witness logs.  Keys listed *inside* the log are compared
with the trusted ones, never used in their place.

The result is a :class:`VerificationReport` with every check and exactly one
:class:`Verdict`; :func:`verify` raises for any verdict but VALID.

Verdicts and exit codes (also used by ``fedfraud audit verify``):

==================  ====  ==========================================================
verdict             exit  meaning
==================  ====  ==========================================================
VALID                0    authentic, complete (witnessed to its end), policies kept
TAMPERED            10    modified, deleted, inserted, reordered, forged, spliced,
                          replayed, non-canonical, torn line, or truncated below a
                          witnessed checkpoint
INCOMPLETE          11    authentic so far, but truncation cannot be ruled out: no
                          institution countersigned a checkpoint covering its end
POLICY_VIOLATED     12    authentic, but records a breach of an institution's policy
EQUIVOCATION        13    the server signed two checkpoints that cannot both be
                          prefixes of one history (the pair is printed as evidence)
(unreadable input)   3    a log, key or policy file cannot be read (InputError)
==================  ====  ==========================================================

When several verdicts apply, the most severe wins:
EQUIVOCATION > TAMPERED > POLICY_VIOLATED > INCOMPLETE > VALID.

Canonicalisation decision: a record line that is not byte-identical to the
canonical encoding of what it parses to (whitespace, member order, escapes
such as ``\\u0041`` for ``A``, ``1.0`` for ``1``) is TAMPERED, as are
duplicate member names.  Trailing ``checkpoint``/``witness`` records after the
last witnessed checkpoint are bookkeeping and are not required to be witnessed.

Authenticating the records (steps 1.1-1.5 and 2.k.1-2.k.5), fast and full
--------------------------------------------------------------------------
A record's hash is ``SHA-256(domain || canonical content)`` and the content
holds ``prev``, the previous record's hash, so the records form a hash chain.
The default ("fast") path relies on that:

1. Every line is decoded strictly: it is canonical JSON, has the record
   layout, and its stored hash is the hash of its content bytes.
2. Sequence numbers run from 0 without gaps, the first ``prev`` is the
   genesis value and every other ``prev`` is the previous record's hash;
   every record names the same log id; timestamps never go backwards.
3. Only the **last** record's signature is verified under the trusted key.
   By 1 and 2, that signature covers the hash of the last record, which
   covers its ``prev``, and so on down to record 0: changing, inserting,
   deleting or reordering any earlier record would require a SHA-256
   collision or a new signature on the last record (RFC 8032 unforgeability).
   Every record is thereby authenticated with one Ed25519 verification
   instead of one per record.
4. If steps 1-3 find *anything* wrong (or the file ends in a torn line), the
   fast result is discarded and the full path runs: every record's signature
   is verified, so the report pinpoints exactly the records it always did
   (e.g. a forged middle record is reported at its own position, not at the
   place where the chain first breaks).  ``full=True`` (the default; ``--fast``
   in the CLI turns it off) runs the full path always.
5. Everything from step 3 on is the same on both paths.  In particular every
   receipt (3.4) and every institution countersignature (2.k.6, 3.7) is
   verified individually under the institution's trusted key: those are
   institutions' own statements and no server signature can vouch for them.
   In-log checkpoint signatures are not needed for authenticity (the chain
   covers the checkpoint records); they are verified when a checkpoint is
   used as evidence (step 4), as before.

The one thing only the full path notices: a record whose *content* is intact
(so the chain authenticates it) but whose own ``sig`` bytes were damaged.  The
signature is not part of the hashed content, so no cheaper check can see it.
Because a verifier must not call a file with altered bytes "valid", the full
path is the **default**; the fast path (``full=False``, ``--fast``) is an
explicit choice for very large logs, and says in its report which signature
it checked.

Signatures across cores: for a log of at least ``PARALLEL_MIN_RECORDS``
lines on a machine with more than one CPU (on Linux, from a single-threaded
process, where workers can be forked), the Ed25519 verifications (record
signatures, receipts, countersignatures) run in one worker process per CPU
while this process does everything else; if any of them fails, the
verification is repeated in this process with the workers' answers, so the
report is always exactly the in-process one (:mod:`audit.signatures`).

Per-record work is kept small: the canonical check uses the C JSON codec
when it provably gives the RFC 8785 bytes (:mod:`audit.canonical`), the log
id object is reused while records repeat it, and timestamps are validated
from their fixed-position fields (ordering is a plain string comparison,
which the fixed width makes equal to time order).
"""

from __future__ import annotations

import gc
import hmac
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import CanonicalEncodingError, canonical_dumps, sha256_hex
from .checkpoint import SignedCheckpoint, verify_countersignature
from .errors import (
    AuditError,
    AuditInputError,
    AuditUsageError,
    AuditVerificationError,
    EquivocationError,
    KeyFileError,
    LogIncompleteError,
    LogTamperedError,
    PolicyViolatedError,
)
from .keys import fingerprint, public_key_b64, public_key_from_b64, public_key_from_bytes
from .merkle import MerkleFrontier, leaf_hash, root
from .receipt import receipt_leaf, verify_receipt
from .signatures import available_cpus, run_with_signature_pool
from .record import (
    GENESIS_PREV,
    LogId,
    Record,
    RecordKind,
    decode_record,
    verify_record_signature,
)

__all__ = [
    "Verdict",
    "EXIT_UNREADABLE_INPUT",
    "Check",
    "VerificationReport",
    "RoundSummary",
    "verify_log",
    "verify",
]

#: Exit code for a log, key or policy file that cannot be read (``InputError``).
EXIT_UNREADABLE_INPUT = 3


def _check_participants(
    body: dict[str, Any],
    genesis_keys: dict[str, Ed25519PublicKey],
    fail: Callable[[str, Verdict, str], None],
) -> None:
    """Check a participants record: each node's advertisement, and that none is unknown.

    1. The binding names a round and task.
    2. A node the server marks verified must carry an advertisement that
       verifies under its institution's genesis key (else the server lied:
       TAMPERED).
    3. A node that is not verified took part without proving a roster
       identity, and two nodes proving the same institution is one identity
       used twice: either breaks the federation's roster (POLICY_VIOLATED).
    """
    from fedfraud.errors import CryptoError
    from secagg.hardened import Advertisement, Binding, verify_advertisement

    try:
        raw = body["binding"]
        binding = Binding(
            str(raw["federation"]), int(raw["run"]), int(raw["round"]), str(raw["task"]),
            float(int(raw.get("weight_bound", 0))),
        )
        nodes = [
            (int(n["node"]), str(n["institution"]), n["verified"] is True,
             bytes.fromhex(n["seal_key"]), bytes.fromhex(n["mask_key"]), bytes.fromhex(n["signature"]))
            for n in body["nodes"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditError(f"participants record is malformed ({exc!r})") from exc
    where = f"round {binding.server_round} ({binding.task})"
    seen: dict[str, int] = {}
    for node_id, inst, verified, seal_key, mask_key, signature in nodes:
        if not verified:
            fail("roster", Verdict.POLICY_VIOLATED,
                 f"{where}: node {node_id} took part without proving an identity on the roster "
                 f"(claimed {inst or 'nothing'!r})")
            continue
        key = genesis_keys.get(inst)
        advert = Advertisement(node_id, inst, seal_key, mask_key, signature)
        try:
            if key is None:
                raise CryptoError(f"{inst!r} is not a genesis institution")
            verify_advertisement(key, binding, advert)
        except CryptoError as exc:
            fail("roster", Verdict.TAMPERED,
                 f"{where}: node {node_id} is recorded as {inst!r}, but its advertisement does not verify ({exc})")
            continue
        if inst in seen:
            fail("roster", Verdict.POLICY_VIOLATED,
                 f"{where}: nodes {seen[inst]} and {node_id} both proved the identity {inst!r}")
        seen[inst] = node_id


class Verdict(str, Enum):
    """The one verdict of a verification (see the module docstring for exit codes)."""

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
_ERRORS: dict[Verdict, type[AuditVerificationError]] = {
    Verdict.TAMPERED: LogTamperedError,
    Verdict.INCOMPLETE: LogIncompleteError,
    Verdict.POLICY_VIOLATED: PolicyViolatedError,
    Verdict.EQUIVOCATION: EquivocationError,
}
_BOOKKEEPING = frozenset({RecordKind.CHECKPOINT, RecordKind.WITNESS})


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


# ---------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------


@dataclass
class _Line:
    number: int
    offset: int
    data: bytes


@dataclass
class _SignedCp:
    cp: SignedCheckpoint
    source: str
    where: str
    witnessed: bool  # countersigned by an institution (counts for completeness)
    in_log: bool
    seq: int | None = None
    line: int | None = None
    institution: str = ""


class _Checks:
    """Collects failures, and one summary pass per step that had none."""

    def __init__(self) -> None:
        self.items: list[Check] = []
        self._failed_steps: set[str] = set()

    def fail(self, step: str, name: str, verdict: Verdict, message: str, **where: Any) -> None:
        self.items.append(Check(step, name, False, message, verdict, **where))
        self._failed_steps.add(step)

    def passed(self, step: str, name: str, message: str, source: str = "") -> None:
        if step not in self._failed_steps:
            self.items.append(Check(step, name, True, message, Verdict.VALID, source))

    def extend(self, items: Sequence[Check]) -> None:
        """Take over checks collected elsewhere (e.g. while reading the file)."""
        self.items.extend(items)
        self._failed_steps.update(c.step for c in items if not c.ok)

    def any_failed(self, step: str) -> bool:
        """Whether a check of ``step`` or of one of its sub-steps (``step.n``) failed."""
        return any(s == step or s.startswith(step + ".") for s in self._failed_steps)


#: Smallest server log (in lines) whose signatures are verified by a process
#: pool by default: below it, starting processes costs more than it saves.
PARALLEL_MIN_RECORDS = 2000

#: Largest log file the verifier reads (it holds the file in memory).
MAX_LOG_BYTES = 4 * 2**30


def read_regular_file(path: Path, what: str, limit: int = MAX_LOG_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or AuditInputError (exit 3).

    Devices (``/dev/zero``), FIFOs and sockets are refused before they are
    opened, so the verifier never blocks on them or reads without bound.
    """
    try:
        info = path.stat()
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise AuditInputError(f"{path}: {what} is not a regular file (a device, FIFO or folder)")
    if info.st_size > limit:
        raise AuditInputError(f"{path}: {what} is {info.st_size} bytes, more than the {limit} accepted")
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read {what} ({exc.strerror})") from exc
    if len(data) > limit:
        raise AuditInputError(f"{path}: {what} grew beyond the {limit} bytes accepted while read")
    return data


def _read_lines(path: Path, checks: _Checks, step: str) -> list[_Line]:
    return _split_lines(path, read_regular_file(path, "log"), checks, step)


def _split_lines(path: Path, data: bytes, checks: _Checks, step: str) -> list[_Line]:
    lines: list[_Line] = []
    offset, number, length = 0, 0, len(data)
    while offset < length:
        number += 1
        end = data.find(b"\n", offset)
        if end < 0:
            # A crash mid-write leaves exactly this: report it precisely.
            checks.fail(
                step, "torn line", Verdict.TAMPERED,
                f"line {number} at byte offset {offset} is torn: {length - offset} bytes without "
                "a terminating newline (a write was interrupted or the file was cut)",
                source=str(path), line=number, offset=offset,
                expected="a newline-terminated record", found=f"{length - offset} bytes",
            )
            break
        lines.append(_Line(number, offset, data[offset:end]))
        offset = end + 1
    return lines


def _authenticate(
    path: Path,
    lines: list[_Line],
    public_key: Ed25519PublicKey | None,
    checks: _Checks,
    step: str,
    expected_fingerprint: str | None,
    full: bool,
) -> list[tuple[_Line, Record]]:
    """Steps x.1-x.5 for one log: the fast path, or every signature (see the module docstring).

    The fast path runs into a scratch list of checks.  If it finds nothing
    wrong (and the file has no torn line), its result stands; otherwise it is
    discarded and the full path runs, so every report of a problem comes from
    the full path and pinpoints exactly what it always has.
    """
    if not full and not checks.any_failed(step):
        trial = _Checks()
        good = _decode_and_chain(path, lines, public_key, trial, step, expected_fingerprint, every_signature=False)
        if not trial.any_failed(step):
            checks.items.extend(trial.items)
            return good
    return _decode_and_chain(path, lines, public_key, checks, step, expected_fingerprint, every_signature=True)


def _decode_and_chain(
    path: Path,
    lines: list[_Line],
    public_key: Ed25519PublicKey | None,
    checks: _Checks,
    step: str,
    expected_fingerprint: str | None,
    *,
    every_signature: bool,
) -> list[tuple[_Line, Record]]:
    """Steps common to every log: decode, signature, log id, chain, time order.

    With ``every_signature`` each record's signature is verified; without it
    only the last line's (the anchor of the hash chain, see the module
    docstring).  Returns the records whose decoding *and* (checked) signature
    verified (others are reported and skipped; the chain check resynchronises
    after them).
    """
    src = str(path)
    anchor = lines[-1] if lines else None
    good: list[tuple[_Line, Record]] = []
    expected_seq, expected_prev = 0, GENESIS_PREV
    chain_known = True
    log_id: LogId | None = None
    last_ts = ""
    for ln in lines:
        where = {"source": src, "line": ln.number, "offset": ln.offset}
        # (a) strict parse, canonical form, shape, version, record hash.
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
        # (b) signature under the trusted key.
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
        # (c) the record names this log (no splicing between logs/runs/keys).
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
        # (d) sequence number and hash chain.
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
        # (e) time never goes backwards.
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


def _as_public_key(value: bytes | str | Ed25519PublicKey) -> Ed25519PublicKey:
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, str):
        return public_key_from_b64(value)
    return public_key_from_bytes(value)


def _policy_limits(policy: Mapping[str, Any]) -> dict[str, Any]:
    """Read the few limits the verifier enforces, tolerating naming variants and extras."""
    protection = policy.get("protection") or {}
    outputs = policy.get("outputs") or {}

    def pick(table: Mapping[str, Any], *names: str) -> Any:
        for name in names:
            if name in table:
                return table[name]
            if name.replace("_", "-") in table:
                return table[name.replace("_", "-")]
        return None

    modes = pick(protection, "required_aggregation", "allowed_aggregation", "aggregation_modes",
                 "allowed_aggregation_modes")
    if isinstance(modes, str):
        # ``required_aggregation = "any"`` (the policy package's spelling) allows every mode.
        modes = None if modes.lower() == "any" else [modes]
    metrics = pick(outputs, "allowed_metrics", "metrics", "released_metrics")
    return {
        "min_cohort_size": pick(protection, "min_cohort_size", "min_cohort"),
        "max_rounds": pick(protection, "max_rounds"),
        "aggregation_modes": [str(m).lower() for m in modes] if isinstance(modes, list) else None,
        "allowed_metrics": [str(m) for m in metrics] if isinstance(metrics, list) else None,
        "policy_hash": policy.get("policy_hash"),
        "min_child_rows": pick(policy.get("histograms") or {}, "min_child_rows"),
    }


def _institution_logs(
    paths: Sequence[Path],
    trusted: Mapping[str, Ed25519PublicKey],
    server_key: Ed25519PublicKey,
    checks: _Checks,
    full: bool,
    run: tuple[str, str] | None,
) -> list[_SignedCp]:
    """Step 2: verify each institution's own log and collect the checkpoints in it.

    ``run`` is the (federation, run) the server log names; an institution log
    of another run is a usage error (:class:`AuditUsageError`), not tampering.
    """
    by_fp = {fingerprint(key): inst for inst, key in trusted.items()}
    server_fp = fingerprint(server_key)
    found: list[_SignedCp] = []
    for index, path in enumerate(paths, start=1):
        step = f"2.{index}"
        src = str(path)
        # A missing or empty institution log is reported, not a crash: the
        # verdict says what cannot be checked (an institution that left
        # before its first witnessing has no log at all).
        if not path.exists() and not path.is_symlink():
            checks.fail(step, "institution log", Verdict.INCOMPLETE,
                        f"{src}: institution log not found; that institution's witnessing cannot be "
                        "checked (leave it out if it never witnessed a checkpoint)", source=src)
            continue
        lines = _read_lines(path, checks, step)
        if not lines:
            checks.fail(step, "institution log", Verdict.INCOMPLETE,
                        f"{src}: institution log is empty; it names no institution, so nothing it "
                        "witnessed can be checked", source=src)
            continue
        # The signer is identified by the fingerprint in the first record, and
        # must be a *trusted* institution key; the record signatures then prove it.
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
            continue
        records = _authenticate(path, lines, trusted[inst], checks, step, fingerprint(trusted[inst]), full)
        for ln, record in records:
            where = {"source": src, "seq": record.seq, "line": ln.number, "offset": ln.offset}
            if record.kind not in (RecordKind.WITNESS, RecordKind.WITNESS_REFUSED):
                checks.fail(f"{step}.6", "record kind", Verdict.TAMPERED,
                            f"{inst}'s log holds a {record.kind.value!r} record", **where)
                continue
            body = record.body
            if body.get("institution") != inst:
                checks.fail(f"{step}.6", "institution", Verdict.TAMPERED,
                            f"record names institution {body.get('institution')!r}, log is {inst!r}'s", **where)
                continue
            try:
                if record.kind is RecordKind.WITNESS:
                    cs = body.get("countersignature")
                    if not isinstance(cs, dict) or cs.get("institution") != inst:
                        raise AuditError("countersignature names another institution")
                    cp = verify_countersignature(cs, trusted[inst])
                    witnessed = True
                else:
                    cp = SignedCheckpoint.from_dict(body.get("checkpoint"))
                    witnessed = False
            except AuditError as exc:
                if record.kind is RecordKind.WITNESS:
                    checks.fail(f"{step}.6", "countersignature", Verdict.TAMPERED,
                                f"{inst}'s countersignature in record {record.seq} does not verify: {exc}", **where)
                continue  # a refused, malformed checkpoint is no evidence of anything
            # Only checkpoints the trusted server key really signed count.
            if cp.log_id.key_fingerprint != server_fp:
                if witnessed:
                    checks.fail(f"{step}.6", "checkpoint", Verdict.TAMPERED,
                                f"{inst} countersigned a checkpoint of another server key", **where)
                continue
            try:
                cp.verify(server_key)
            except AuditError:
                if witnessed:
                    checks.fail(f"{step}.6", "checkpoint", Verdict.TAMPERED,
                                f"{inst} countersigned a checkpoint whose server signature does not verify", **where)
                continue
            found.append(_SignedCp(cp, src, f"{inst}'s log, record {record.seq} (line {ln.number})",
                                   witnessed, False, record.seq, ln.number, inst))
        checks.passed(f"{step}.6", "institution log",
                      f"{inst}'s log: {sum(1 for c in found if c.source == src and c.witnessed)} countersigned checkpoints verify", src)
    return found


def _check_tail(
    good: Sequence[tuple[_Line, Record]],
    witnessed_size: int,
    witnesses: Sequence[_SignedCp],
    n_records: int,
    checks: _Checks,
    src: str,
) -> None:
    """Step 5.1: nothing after the last witnessed checkpoint but that checkpoint and its witnesses.

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
        cs = record.body.get("countersignature") if record.kind is RecordKind.WITNESS else None
        size = cs.get("checkpoint", {}).get("tree_size") if isinstance(cs, dict) else None
        if record.kind is not RecordKind.WITNESS or size != witnessed_size:
            checks.fail("5", "unwitnessed record", Verdict.INCOMPLETE,
                        f"record {record.seq} ({record.kind.value}) comes after the last checkpoint any "
                        f"institution countersigned (size {witnessed_size}): nothing vouches for it",
                        source=src, seq=record.seq, line=ln.number, offset=ln.offset)
            continue
        logged.add(str(record.body.get("institution")))
    missing = [inst for inst in holders if inst not in logged]
    if missing:
        checks.fail("5", "cut tail", Verdict.INCOMPLETE,
                    f"{', '.join(missing)} countersigned the final checkpoint (size {witnessed_size}) in "
                    f"their own logs, but the server log, which ends at record {n_records - 1}, has no "
                    "witness record for it: the log was cut after it was witnessed",
                    source=src, seq=n_records, expected=f"witness records of {', '.join(missing)}",
                    found="none")


def verify_log(
    log_path: str | os.PathLike[str],
    trusted_institution_keys: Mapping[str, bytes | str | Ed25519PublicKey],
    server_public_key: bytes | str | Ed25519PublicKey,
    institution_logs: Iterable[str | os.PathLike[str]] = (),
    policies: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    full: bool = True,
    workers: int | None = None,
) -> VerificationReport:
    """Verify a server audit log and return a report with one verdict.

    Parameters
    ----------
    log_path : path-like
        The server's JSONL audit log.
    trusted_institution_keys : mapping
        ``{institution_id: Ed25519 public key}`` (32 raw bytes, base64 or key
        object) from a trusted source (policy files, key file), never the log.
    server_public_key : bytes, str or Ed25519PublicKey
        The server's trusted key (required).
    institution_logs : iterable of path-like
        Institutions' local witness logs.
    policies : mapping, optional
        ``{institution_id: {"protection": {...}, "outputs": {...}}}``; enables
        the policy checks (min cohort, max rounds, aggregation mode, metrics).
    full : bool, default True
        Verify every record's signature even when the fast path (the last
        record's signature anchoring the hash chain) finds nothing wrong.
        Verdicts and pinpointed records are the same either way, except that
        only ``full`` notices a damaged signature on an otherwise intact,
        chain-authenticated record (see the module docstring).
    workers : int, optional
        Processes that verify the Ed25519 signatures while this one does the
        rest (:mod:`audit.signatures`); 0 verifies them in this process.  The
        report is the same either way.  Default: one per available CPU for a
        log of at least ``PARALLEL_MIN_RECORDS`` lines on a machine with more
        than one CPU, else 0.

    Returns
    -------
    VerificationReport
        Never raises for a bad log; the report carries the verdict.

    Raises
    ------
    AuditInputError
        If a file cannot be read or a trusted key is malformed (exit 3).
    """
    path = Path(log_path)
    try:
        server_key = _as_public_key(server_public_key)
        trusted = {inst: _as_public_key(k) for inst, k in trusted_institution_keys.items()}
    except KeyFileError as exc:
        raise AuditInputError(f"trusted key is malformed: {exc}") from exc
    # Step 1 starts here: the server log is read once; the verification
    # itself may run twice (see audit.signatures), each time from its bytes.
    data = read_regular_file(path, "log")
    inst_paths = [Path(p) for p in institution_logs]

    def run() -> VerificationReport:
        checks = _Checks()
        lines = _split_lines(path, data, checks, "1")  # a torn last line is the first check
        return _verify_lines(path, lines, checks, server_key, trusted, inst_paths, policies, full)

    if workers is None:
        workers = available_cpus() if data.count(b"\n") >= PARALLEL_MIN_RECORDS else 0
        workers = workers if workers > 1 else 0
    with _cyclic_gc_paused():
        if workers > 0:
            return run_with_signature_pool(run, workers)
        return run()


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one verification.

    A verification builds one parsed record (dicts, strings) per line and
    keeps most of them to the end; none of them form reference cycles.  The
    collector would still traverse them again and again as they accumulate
    (about a third of the per-record cost of a 100,000-record log) without
    ever finding garbage.  Reference counting frees everything as usual; the
    collector is switched back on afterwards (it is process-wide, so other
    threads see it paused meanwhile).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _verify_lines(
    path: Path,
    lines: list[_Line],
    checks: _Checks,
    server_key: Ed25519PublicKey,
    trusted: dict[str, Ed25519PublicKey],
    institution_logs: list[Path],
    policies: Mapping[str, Mapping[str, Any]] | None,
    full: bool,
) -> VerificationReport:
    """Steps 1-7 of :func:`verify_log` on the server log's lines, read already."""
    src = str(path)
    server_fp = fingerprint(server_key)
    evidence: list[dict[str, Any]] = []

    # Step 1: check every record's form, hash, signature, log id, chain
    # position and timestamp order.
    claimed_run: tuple[str, str] | None = None
    if lines:
        try:
            first_id = decode_record(lines[0].data).log_id
            claimed_run = (first_id.federation_id, first_id.run_id)
        except AuditError:
            claimed_run = None
    # Step 2: verify the institutions' own logs and collect the checkpoints
    # they countersigned (or refused).  Done first to know which tree sizes
    # the server-log pass must compute roots for.
    inst_cps = _institution_logs(institution_logs, trusted, server_key, checks, full, claimed_run)
    wanted_sizes = {c.cp.tree_size for c in inst_cps}
    good = _authenticate(path, lines, server_key, checks, "1", server_fp, full)
    log_id = good[0][1].log_id if good else None

    # Step 3: the records' meaning, in order (genesis, rounds, receipts,
    # checkpoints, witnesses, closing), with the Merkle tree over all records.
    frontier = MerkleFrontier()
    roots: dict[int, bytes] = {}
    signed_cps: list[_SignedCp] = list(inst_cps)
    genesis: dict[str, Any] | None = None
    genesis_keys: dict[str, Ed25519PublicKey] = {}
    policy_hashes: dict[str, str] = {}
    rounds: list[RoundSummary] = []
    current: RoundSummary | None = None
    round_receipts: list[dict[str, Any]] = []
    dropped: set[str] = set()
    run_closed: dict[str, Any] | None = None
    in_log_cps: dict[int, SignedCheckpoint] = {}
    server_witnessed: dict[str, int] = {}
    last_substantive = 0
    policy_events: list[tuple[str, str, dict[str, Any]]] = []

    def fail(name: str, verdict: Verdict, message: str, ln: _Line, record: Record, step: str = "3",
             expected: str | None = None, found_: str | None = None) -> None:
        checks.fail(step, name, verdict, message, source=src, seq=record.seq, line=ln.number,
                    offset=ln.offset, expected=expected, found=found_)

    for ln, record in good:
        size = frontier.size
        if size in wanted_sizes:
            roots[size] = frontier.root()
        body = record.body
        kind = record.kind
        try:
            # 3.1 Genesis comes first and exactly once.
            if kind is RecordKind.GENESIS:
                if genesis is not None or record.seq != 0:
                    fail("genesis", Verdict.TAMPERED, f"record {record.seq} is a second or misplaced genesis", ln, record)
                    continue
                genesis = body
                if body.get("run_id") != record.log_id.run_id or body.get("federation_id") != record.log_id.federation_id:
                    fail("genesis", Verdict.TAMPERED, "genesis names another federation/run than its log id", ln, record)
                if body.get("run_config_hash") != sha256_hex(canonical_dumps(body.get("run_config"))):
                    fail("genesis", Verdict.TAMPERED, "run_config_hash is not the hash of run_config", ln, record,
                         expected=sha256_hex(canonical_dumps(body.get("run_config"))), found_=str(body.get("run_config_hash")))
                # 3.2 Keys in the genesis must equal the trusted keys (key substitution).
                for inst in body.get("institutions", []):
                    inst_id = inst.get("id")
                    listed = inst.get("public_key")
                    if inst_id not in trusted:
                        fail("key substitution", Verdict.TAMPERED,
                             f"genesis lists institution {inst_id!r}, which has no trusted key", ln, record)
                        continue
                    expected_b64 = public_key_b64(trusted[inst_id])
                    if not isinstance(listed, str) or not hmac.compare_digest(listed, expected_b64):
                        fail("key substitution", Verdict.TAMPERED,
                             f"genesis lists a public key for {inst_id!r} that differs from its trusted key",
                             ln, record, expected=expected_b64, found_=str(listed))
                        continue
                    genesis_keys[inst_id] = trusted[inst_id]
                    policy_hashes[inst_id] = str(inst.get("policy_hash"))
                policy_events.append(("genesis", "", {"seq": record.seq, "line": ln.number, "offset": ln.offset,
                                                      "mode": str(body.get("aggregation", {}).get("mode", "")).lower()}))
                continue
            if genesis is None:
                fail("genesis", Verdict.TAMPERED, f"record {record.seq} ({kind.value}) comes before any genesis", ln, record)
                continue
            if run_closed is not None and kind not in _BOOKKEEPING:
                fail("order", Verdict.TAMPERED, f"{kind.value} record after run_closed", ln, record)
                continue
            # 3.3 Rounds open in order, one at a time.
            if kind is RecordKind.ROUND_OPENED:
                rnd = body.get("round")
                last = rounds[-1].round if rounds else 0
                if current is not None or rnd != last + 1:
                    fail("round order", Verdict.TAMPERED, f"round {rnd} opened out of order (after round {last})",
                         ln, record, expected=f"round {last + 1}", found_=f"round {rnd}")
                    continue
                cohort = list(body.get("cohort", []))
                unknown = [c for c in cohort if c not in genesis_keys]
                if unknown:
                    fail("cohort", Verdict.TAMPERED, f"round {rnd} cohort names unknown institutions {unknown}", ln, record)
                current = RoundSummary(rnd, cohort=cohort, seq_opened=record.seq)
                rounds.append(current)
                round_receipts, dropped = [], set()
            elif kind is RecordKind.POLICY_REFUSAL:
                rnd = body.get("round")
                inst = body.get("institution")
                if rnd != 0 and (current is None or rnd != current.round):
                    fail("round order", Verdict.TAMPERED, f"refusal for round {rnd}, which is not open", ln, record)
                    continue
                if inst not in genesis_keys:
                    fail("institution", Verdict.TAMPERED, f"refusal names unknown institution {inst!r}", ln, record)
                    continue
                policy_events.append(("policy_hash", inst, {"seq": record.seq, "line": ln.number, "offset": ln.offset,
                                                            "hash": body.get("policy_hash")}))
                if current is not None:
                    current.refusals.append({"institution": inst, "rules": body.get("rules", [])})
            elif kind is RecordKind.DROPOUT:
                if current is None or body.get("round") != current.round:
                    fail("round order", Verdict.TAMPERED, f"dropout for round {body.get('round')}, which is not open", ln, record)
                    continue
                insts = list(body.get("institutions", []))
                if any(i not in current.cohort for i in insts):
                    fail("cohort", Verdict.TAMPERED, f"dropout names institutions outside the cohort: {insts}", ln, record)
                dropped.update(insts)
                current.dropouts.append({"institutions": insts, "stage": body.get("stage")})
            # 3.4 Every receipt verifies under the trusted key and names this log and round.
            elif kind is RecordKind.RECEIPT:
                receipt = body.get("receipt")
                inst = body.get("institution")
                if current is None or body.get("round") != current.round:
                    fail("round order", Verdict.TAMPERED, f"receipt for round {body.get('round')}, which is not open", ln, record)
                    continue
                if inst not in genesis_keys or not isinstance(receipt, dict) or receipt.get("institution") != inst:
                    fail("receipt", Verdict.TAMPERED, f"receipt record names institution {inst!r} inconsistently", ln, record)
                    continue
                try:
                    verify_receipt(receipt, genesis_keys[inst], log_id=record.log_id,
                                   server_round=current.round, institution_id=inst)
                except AuditError as exc:
                    fail("receipt", Verdict.TAMPERED, f"receipt of {inst!r} in round {current.round}: {exc}", ln, record)
                    continue
                if inst not in current.cohort or inst in current.receipts:
                    fail("receipt", Verdict.TAMPERED, f"receipt of {inst!r} is outside the cohort or duplicated", ln, record)
                    continue
                current.receipts.append(inst)
                round_receipts.append(receipt)
                policy_events.append(("policy_hash", inst, {"seq": record.seq, "line": ln.number, "offset": ln.offset,
                                                            "hash": receipt.get("policy_hash")}))
            # 3.5 A round closes with survivors that all signed receipts, and the receipts' Merkle root.
            elif kind is RecordKind.ROUND_CLOSED:
                if current is None or body.get("round") != current.round:
                    fail("round order", Verdict.TAMPERED, f"round {body.get('round')} closed but not open", ln, record)
                    continue
                survivors = list(body.get("cohort", []))
                current.survivors, current.closed, current.seq_closed = survivors, True, record.seq
                current.model_hash = body.get("model_hash")
                current.metrics = dict(body.get("metrics", {}))
                bad = [s for s in survivors if s not in current.cohort or s in dropped]
                no_receipt = [s for s in survivors if s not in current.receipts]
                if bad:
                    fail("cohort", Verdict.TAMPERED, f"round {current.round}: survivors {bad} were not in the cohort or dropped out", ln, record)
                if no_receipt:
                    fail("receipt", Verdict.TAMPERED,
                         f"round {current.round}: the server claims {no_receipt} took part, but no receipt signed by them exists",
                         ln, record)
                expected_root = root([receipt_leaf(r) for r in round_receipts]).hex()
                if body.get("receipts_root") != expected_root or body.get("receipt_count") != len(round_receipts):
                    fail("receipts root", Verdict.TAMPERED,
                         f"round {current.round}: receipts_root does not match the logged receipts", ln, record,
                         expected=expected_root, found_=str(body.get("receipts_root")))
                policy_events.append(("round", "", {"seq": record.seq, "line": ln.number, "offset": ln.offset,
                                                    "round": current.round, "survivors": survivors,
                                                    "metrics": sorted(current.metrics)}))
                current = None
            # 3.6 A checkpoint commits to exactly the records before it.
            elif kind is RecordKind.CHECKPOINT:
                cp = SignedCheckpoint.from_dict(body.get("checkpoint"))
                # The record signature already authenticates this checkpoint
                # under the server key; its own signature only matters as
                # evidence, so it is checked in step 4 when a conflict uses it.
                if cp.log_id != record.log_id or cp.tree_size != record.seq:
                    fail("checkpoint", Verdict.TAMPERED, f"checkpoint in record {record.seq} covers size {cp.tree_size} of another log or position", ln, record)
                    continue
                signed_cps.append(_SignedCp(cp, src, f"server log, record {record.seq} (line {ln.number})",
                                            False, True, record.seq, ln.number))
                actual = frontier.root().hex()
                if not hmac.compare_digest(actual, cp.root):
                    fail("checkpoint", Verdict.TAMPERED,
                         f"checkpoint of size {cp.tree_size} does not match the records before it",
                         ln, record, expected=actual, found_=cp.root)
                    continue
                in_log_cps[cp.tree_size] = cp
                roots[cp.tree_size] = bytes.fromhex(actual)
            # 3.7 A witness record holds a valid countersignature of a checkpoint of this log.
            elif kind is RecordKind.WITNESS:
                inst = body.get("institution")
                if inst not in genesis_keys:
                    fail("witness", Verdict.TAMPERED, f"witness record names unknown institution {inst!r}", ln, record)
                    continue
                cs = body.get("countersignature")
                if not isinstance(cs, dict) or cs.get("institution") != inst:
                    fail("witness", Verdict.TAMPERED, "witness record names another institution than its countersignature", ln, record)
                    continue
                cp = verify_countersignature(cs, genesis_keys[inst])
                ours = in_log_cps.get(cp.tree_size)
                if ours is None or not ours.same_as(cp):
                    fail("witness", Verdict.TAMPERED,
                         f"{inst} countersigned a checkpoint of size {cp.tree_size} that is not in this log", ln, record)
                    continue
                server_witnessed[inst] = max(server_witnessed.get(inst, 0), cp.tree_size)
            # 3.9 A ckks round's ciphertext hashes belong to a ckks run's open round.
            elif kind is RecordKind.CIPHERTEXTS:
                mode = str(genesis.get("aggregation", {}).get("mode", "")).lower()
                if mode != "ckks":
                    fail("aggregation", Verdict.TAMPERED, f"ciphertexts recorded in a {mode!r} run", ln, record)
                elif current is None or body.get("round") != current.round:
                    fail("round order", Verdict.TAMPERED, f"ciphertexts for round {body.get('round')}, which is not open", ln, record)
                elif any(i not in current.cohort for i in body.get("ciphertexts", {})):
                    fail("cohort", Verdict.TAMPERED, "ciphertexts of institutions outside the cohort", ln, record)
            # 3.10 gbdt: the bin agreement, each histogram sum (with a verified receipt of
            #      every contributor of the round's cohort) and each tree (no node below
            #      the small-cell floor) belong to the open round.
            elif kind in (RecordKind.GBDT_BINS, RecordKind.GBDT_SUM, RecordKind.GBDT_TREE):
                if current is None or body.get("round") != current.round:
                    fail("round order", Verdict.TAMPERED, f"{kind.value} for round {body.get('round')}, which is not open", ln, record)
                    continue
                if kind is RecordKind.GBDT_SUM:
                    senders: list[str] = []
                    for receipt in body["receipts"]:
                        inst = receipt.get("institution") if isinstance(receipt, dict) else None
                        if inst not in genesis_keys or inst not in current.cohort or inst in senders:
                            fail("receipt", Verdict.TAMPERED, f"histogram receipt of {inst!r} is outside the cohort or duplicated", ln, record)
                            break
                        try:
                            verify_receipt(receipt, genesis_keys[inst], log_id=record.log_id,
                                           server_round=current.round, institution_id=inst)
                        except AuditError as exc:
                            fail("receipt", Verdict.TAMPERED, f"histogram receipt of {inst!r} in round {current.round}: {exc}", ln, record)
                            break
                        senders.append(inst)
                    if len(senders) < 2:
                        fail("cohort", Verdict.POLICY_VIOLATED, f"a histogram sum ({body.get('task')}) of fewer than two institutions", ln, record)
                elif kind is RecordKind.GBDT_TREE:
                    smallest, floor = int(body["smallest_node_rows"]), int(body["min_child_rows"])
                    if smallest < floor:
                        fail("small cells", Verdict.POLICY_VIOLATED,
                             f"tree {body.get('index')} has a node of {smallest} rows, below the run's minimum of {floor}", ln, record)
                    policy_events.append(("tree", "", {"seq": record.seq, "line": ln.number, "offset": ln.offset,
                                                       "round": current.round, "smallest": smallest}))
            # 3.8 Every node that took part in a secure round proved a roster identity.
            elif kind is RecordKind.PARTICIPANTS:
                _check_participants(body, genesis_keys, lambda name, verdict, message: fail(
                    name, verdict, message, ln, record))
            elif kind is RecordKind.RUN_CLOSED:
                if current is not None:
                    fail("round order", Verdict.TAMPERED, f"run closed while round {current.round} is open", ln, record)
                if body.get("rounds") != (rounds[-1].round if rounds else 0):
                    fail("run closed", Verdict.TAMPERED, "run_closed states a round count that differs from the log", ln, record)
                run_closed = body
            else:
                fail("record kind", Verdict.TAMPERED, f"{kind.value} records do not belong in a server log", ln, record)
        except (AuditError, AttributeError, TypeError, CanonicalEncodingError) as exc:
            fail("content", Verdict.TAMPERED, f"record {record.seq} ({kind.value}) is malformed: {exc}", ln, record)
        finally:
            frontier.append(leaf_hash(bytes.fromhex(record.hash)))
            if kind not in _BOOKKEEPING:
                last_substantive = frontier.size
    if frontier.size in wanted_sizes:
        roots[frontier.size] = frontier.root()
    n_records = frontier.size
    if genesis is None and good:
        checks.fail("3", "genesis", Verdict.TAMPERED, "the log has no genesis record", source=src)
    elif not good:
        checks.fail("3", "genesis", Verdict.TAMPERED, "the log holds no verifiable record", source=src)
    checks.passed("3", "content", "genesis, rounds, receipts, checkpoints and witnesses are consistent", src)

    # Step 4: every signed checkpoint (in the log or held by an institution)
    # must describe a prefix of one history.  Conflicting signed checkpoints
    # are equivocation; a witnessed checkpoint the log does not reproduce, or
    # one larger than the log, means the log was rewritten or truncated.
    by_size: dict[int, list[_SignedCp]] = {}
    for item in signed_cps:
        if log_id is not None and item.cp.log_id != log_id:
            if item.witnessed:
                checks.fail("4", "checkpoint", Verdict.TAMPERED,
                            f"{item.where}: countersigned checkpoint is for run {item.cp.log_id.run_id!r}, "
                            "not this log", source=item.source, seq=item.seq, line=item.line)
            continue
        by_size.setdefault(item.cp.tree_size, []).append(item)
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
    checks.passed("4", "checkpoints", "all signed checkpoints describe one history that the log reproduces", src)

    # Step 5: completeness: the run was closed and an institution witnessed a
    # checkpoint covering every substantive record (otherwise the tail could
    # have been cut off unnoticed).
    if good and genesis is not None:
        if run_closed is None:
            checks.fail("5", "completeness", Verdict.INCOMPLETE,
                        f"the log ends at record {n_records - 1} without run_closed: the run is unfinished or the log was cut off",
                        source=src, seq=n_records - 1 if n_records else None,
                        expected="a run_closed record", found="none")
        if witnessed_size < last_substantive:
            checks.fail("5", "completeness", Verdict.INCOMPLETE,
                        f"no institution log shows a countersigned checkpoint covering the whole log "
                        f"(latest witnessed size {witnessed_size}, log needs {last_substantive}); truncation cannot be ruled out",
                        source=src, seq=witnessed_size, expected=f">= {last_substantive}", found=str(witnessed_size))
        if witnessed_size:
            _check_tail(good, witnessed_size, by_size.get(witnessed_size, []), n_records, checks, src)
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

    # Step 6: policy.  Policy hashes must not change mid-run; with policies
    # given, cohort size, round count, aggregation mode and released metrics
    # must be within every affected institution's limits.
    limits = {inst: _policy_limits(p) for inst, p in (policies or {}).items()}
    participation: dict[str, int] = {}
    for event, inst, info in policy_events:
        where = {"source": src, "seq": info["seq"], "line": info["line"], "offset": info["offset"]}
        if event == "policy_hash":
            if inst in policy_hashes and info["hash"] != policy_hashes[inst]:
                checks.fail("6", "policy hash", Verdict.POLICY_VIOLATED,
                            f"{inst}'s policy hash changed mid-run", expected=policy_hashes[inst],
                            found=str(info["hash"]), **where)
        elif event == "genesis":
            for inst_id, lim in limits.items():
                if inst_id not in genesis_keys:
                    continue
                if lim["policy_hash"] and lim["policy_hash"] != policy_hashes.get(inst_id):
                    checks.fail("6", "policy hash", Verdict.POLICY_VIOLATED,
                                f"the genesis lists a policy hash for {inst_id} that is not its policy's",
                                expected=lim["policy_hash"], found=policy_hashes.get(inst_id), **where)
                modes = lim["aggregation_modes"]
                if modes is not None and info["mode"] not in modes:
                    checks.fail("6", "aggregation mode", Verdict.POLICY_VIOLATED,
                                f"aggregation mode {info['mode']!r} is not allowed by {inst_id}'s policy",
                                expected=", ".join(modes), found=info["mode"], **where)
        elif event == "tree":
            for inst_id, lim in limits.items():
                floor = lim["min_child_rows"]
                if isinstance(floor, int) and info["smallest"] < floor:
                    checks.fail("6", "small cells", Verdict.POLICY_VIOLATED,
                                f"round {info['round']} grew a tree with a node of {info['smallest']} rows, "
                                f"below {inst_id}'s histograms.min_child_rows of {floor}",
                                expected=f">= {floor}", found=str(info["smallest"]), **where)
        elif event == "round":
            survivors = info["survivors"]
            for inst_id in survivors:
                participation[inst_id] = participation.get(inst_id, 0) + 1
                round_lim = limits.get(inst_id)
                if round_lim is None:
                    continue
                lim = round_lim
                min_cohort = lim["min_cohort_size"]
                if isinstance(min_cohort, int) and len(survivors) < min_cohort:
                    checks.fail("6", "min cohort", Verdict.POLICY_VIOLATED,
                                f"round {info['round']} aggregated {len(survivors)} institutions, below "
                                f"{inst_id}'s minimum cohort of {min_cohort}",
                                expected=f">= {min_cohort}", found=str(len(survivors)), **where)
                max_rounds = lim["max_rounds"]
                if isinstance(max_rounds, int) and participation[inst_id] > max_rounds:
                    checks.fail("6", "max rounds", Verdict.POLICY_VIOLATED,
                                f"{inst_id} took part in round {info['round']}, beyond its maximum of {max_rounds} rounds",
                                expected=f"<= {max_rounds}", found=str(participation[inst_id]), **where)
                allowed = lim["allowed_metrics"]
                if allowed is not None:
                    extra = [m for m in info["metrics"] if m not in allowed]
                    if extra:
                        checks.fail("6", "metrics", Verdict.POLICY_VIOLATED,
                                    f"round {info['round']} released metrics {extra} that {inst_id}'s policy does not allow",
                                    expected=", ".join(allowed), found=", ".join(extra), **where)
    checks.passed("6", "policy", "policy hashes stayed fixed" + (" and every policy limit was kept" if limits else ""), src)

    # Step 7: one verdict, the most severe of all failures.
    # Checks are reported in step order (institution logs are read first but
    # are step 2); within a step they stay in file order.
    checks.items.sort(key=lambda c: int(c.step.split(".")[0]))
    failures = [c for c in checks.items if not c.ok]
    verdict = max((c.verdict for c in failures), key=lambda v: v.severity, default=Verdict.VALID)
    return VerificationReport(
        log_path=src, verdict=verdict, checks=checks.items, record_count=len(lines),
        evidence=evidence, genesis=genesis, rounds=rounds, run_closed=run_closed,
        witnessed_size=witnessed_size,
    )


def verify(
    log_path: str | os.PathLike[str],
    trusted_institution_keys: Mapping[str, bytes | str | Ed25519PublicKey],
    server_public_key: bytes | str | Ed25519PublicKey,
    institution_logs: Iterable[str | os.PathLike[str]] = (),
    policies: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    full: bool = True,
    workers: int | None = None,
) -> VerificationReport:
    """Verify like :func:`verify_log`, raising unless the verdict is VALID.

    Returns
    -------
    VerificationReport
        Only for a VALID log.

    Raises
    ------
    AuditVerificationError
        The verdict's subclass (:class:`LogTamperedError`,
        :class:`LogIncompleteError`, :class:`PolicyViolatedError`,
        :class:`EquivocationError`), carrying the report.
    AuditInputError
        If an input cannot be read.
    """
    report = verify_log(log_path, trusted_institution_keys, server_public_key, institution_logs, policies, full=full,
                        workers=workers)
    if report.verdict is not Verdict.VALID:
        first = report.first_failure
        detail = f": {first.message}" if first else ""
        raise _ERRORS[report.verdict](f"{log_path}: {report.verdict.value}{detail}", report)
    return report
