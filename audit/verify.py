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

The steps, one function each (``x`` is 1 for the server log, ``2.k`` for
institution log k):

==========  ==========================================================  ================================
step        checks                                                      in
==========  ==========================================================  ================================
x.1-x.5     records decode, are signed, name one log, chain, in time    :mod:`audit.verify_chain`
2           the institutions' own logs and their countersignatures     :mod:`audit.verify_institutions`
3           what the server log's records mean (3.1-3.11)               :mod:`audit.verify_content`
4           all signed checkpoints describe one history                 :mod:`audit.verify_history`
5           the run was closed and witnessed to its end                 :mod:`audit.verify_history`
6           the institutions' policies were kept                        :mod:`audit.verify_policy`
7           one verdict, the most severe of all failures                :func:`verify_log` (here)
==========  ==========================================================  ================================
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import AuditError, AuditInputError, KeyFileError
from .keys import fingerprint, public_key_from_b64, public_key_from_bytes
from .lines import MAX_LOG_BYTES, Line, read_regular_file
from .record import decode_record
from .signatures import available_cpus, run_with_signature_pool
from .verdict import (
    VERDICT_ERRORS,
    Check,
    Checks,
    RoundSummary,
    Verdict,
    VerificationReport,
)
from .verify_chain import authenticate, log_lines
from .verify_content import check_content
from .verify_history import check_completeness, check_one_history
from .verify_institutions import check_institution_logs
from .verify_policy import check_policies

__all__ = [
    "Verdict",
    "MAX_LOG_BYTES",
    "PARALLEL_MIN_RECORDS",
    "Check",
    "VerificationReport",
    "RoundSummary",
    "read_regular_file",
    "verify_log",
    "verify_log_data",
    "verify",
]

#: Smallest server log (in lines) whose signatures are verified by a process
#: pool by default: below it, starting processes costs more than it saves.
PARALLEL_MIN_RECORDS = 2000

#: A trusted Ed25519 public key: 32 raw bytes, base64 or a key object.
PublicKeyLike = bytes | str | Ed25519PublicKey


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
    # The server log is read once; the verification itself may run twice
    # (see audit.signatures), each time from its bytes.  Trusted keys are
    # checked first: a malformed key is a usage error before any file is read.
    _trusted_keys(server_public_key, trusted_institution_keys)
    data = read_regular_file(Path(log_path), "log")
    return verify_log_data(log_path, data, trusted_institution_keys, server_public_key, institution_logs,
                           policies, full=full, workers=workers)


def verify_log_data(
    log_path: str | os.PathLike[str],
    data: bytes,
    trusted_institution_keys: Mapping[str, bytes | str | Ed25519PublicKey],
    server_public_key: bytes | str | Ed25519PublicKey,
    institution_logs: Iterable[str | os.PathLike[str]] = (),
    policies: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    full: bool = True,
    workers: int | None = None,
) -> VerificationReport:
    """Verify like :func:`verify_log` the bytes ``data`` already read from ``log_path``.

    For a caller that needs the log's bytes for something else too (``audit
    report``), so the file is read once and both see the same bytes.

    Raises
    ------
    AuditInputError
        If an institution log cannot be read or a trusted key is malformed (exit 3).
    """
    server_key, trusted = _trusted_keys(server_public_key, trusted_institution_keys)
    return _verify_bytes(Path(log_path), data, server_key, trusted, institution_logs, policies, full, workers)


def _trusted_keys(
    server_public_key: PublicKeyLike, trusted_institution_keys: Mapping[str, PublicKeyLike]
) -> tuple[Ed25519PublicKey, dict[str, Ed25519PublicKey]]:
    """The trusted keys as key objects.

    Raises
    ------
    AuditInputError
        If a key is malformed.
    """
    try:
        server_key = _as_public_key(server_public_key)
        trusted = {inst: _as_public_key(k) for inst, k in trusted_institution_keys.items()}
    except KeyFileError as exc:
        raise AuditInputError(f"trusted key is malformed: {exc}") from exc
    return server_key, trusted


def _as_public_key(value: PublicKeyLike) -> Ed25519PublicKey:
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, str):
        return public_key_from_b64(value)
    return public_key_from_bytes(value)


def _verify_bytes(
    path: Path,
    data: bytes,
    server_key: Ed25519PublicKey,
    trusted: dict[str, Ed25519PublicKey],
    institution_logs: Iterable[str | os.PathLike[str]],
    policies: Mapping[str, Mapping[str, Any]] | None,
    full: bool,
    workers: int | None,
) -> VerificationReport:
    """Run the steps on the server log's bytes, with signatures checked across cores when it pays."""
    inst_paths = [Path(p) for p in institution_logs]

    def run() -> VerificationReport:
        checks = Checks()
        lines = log_lines(path, data, checks, "1")  # a torn last line is the first check
        return _run_steps(path, lines, checks, server_key, trusted, inst_paths, policies, full)

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


def _run_steps(
    path: Path,
    lines: list[Line],
    checks: Checks,
    server_key: Ed25519PublicKey,
    trusted: dict[str, Ed25519PublicKey],
    institution_logs: list[Path],
    policies: Mapping[str, Mapping[str, Any]] | None,
    full: bool,
) -> VerificationReport:
    """Steps 1-7 of :func:`verify_log` on the server log's lines, read already."""
    src = str(path)
    evidence: list[dict[str, Any]] = []
    # Step 2 runs first, to know which tree sizes step 3 must compute Merkle
    # roots for; an institution log of another run than the one the server
    # log's first record names is a usage error.
    inst_cps = check_institution_logs(institution_logs, trusted, server_key, checks, full, _claimed_run(lines))
    # Step 1: every record's form, hash, signature, log id, chain position
    # and timestamp order.
    good = authenticate(path, lines, server_key, checks, "1", fingerprint(server_key), full)
    log_id = good[0][1].log_id if good else None
    # Steps 3-6 read the meaning of records the server key signed.  A record
    # whose form no step expects (a member of the wrong type, one missing)
    # must end in a verdict, never in a crash: the server holds its key, so a
    # dishonest server can sign anything.  Whatever a step did not foresee is
    # reported as TAMPERED, naming the step, and the later steps are skipped.
    content, witnessed_size, step = None, 0, "3"
    try:
        # Step 3: the records' meaning, in order, with the Merkle tree over all records.
        content = check_content(good, trusted, inst_cps, checks, src)
        n_records = content.frontier.size
        # Step 4: every signed checkpoint (in the log or held by an institution)
        # describes a prefix of one history that the log reproduces.
        step = "4"
        by_size, witnessed_size = check_one_history(content.signed_cps, log_id, server_key, content.roots,
                                                    n_records, checks, evidence, src)
        # Step 5: the run was closed and witnessed to its end.
        step = "5"
        check_completeness(good, n_records, content.genesis is not None, content.run_closed, witnessed_size,
                           content.last_substantive, by_size, inst_cps, content.server_witnessed, log_id,
                           checks, src)
        # Step 6: policy hashes stay fixed and, with policies given, every limit is kept.
        step = "6"
        check_policies(content.policy_events, policies, content.genesis_keys, content.policy_hashes, checks, src)
    except _UNFORESEEN as exc:
        checks.fail(
            step, "malformed", Verdict.TAMPERED,
            f"a record signed by the server key has a form step {step} does not accept "
            f"({type(exc).__name__}: {str(exc)[:200]}); steps {step}-6 could not finish",
            source=src,
        )
    # Step 7: one verdict, the most severe of all failures.  Checks are
    # reported in step order (institution logs are read first but are step
    # 2); within a step they stay in file order.
    checks.items.sort(key=lambda c: int(c.step.split(".")[0]))
    failures = [c for c in checks.items if not c.ok]
    verdict = max((c.verdict for c in failures), key=lambda v: v.severity, default=Verdict.VALID)
    return VerificationReport(
        log_path=src, verdict=verdict, checks=checks.items, record_count=len(lines),
        evidence=evidence, genesis=content.genesis if content else None,
        rounds=content.rounds if content else [], run_closed=content.run_closed if content else None,
        witnessed_size=witnessed_size,
    )


#: What a step's reading of an unforeseen record form raises (never a usage error).
_UNFORESEEN = (AttributeError, KeyError, TypeError, ValueError, IndexError, OverflowError, RecursionError)


def _claimed_run(lines: list[Line]) -> tuple[str, str] | None:
    """The (federation, run) the server log's first record names, if it decodes."""
    if not lines:
        return None
    try:
        first_id = decode_record(lines[0].data).log_id
    except AuditError:
        return None
    return first_id.federation_id, first_id.run_id


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
        raise VERDICT_ERRORS[report.verdict](f"{log_path}: {report.verdict.value}{detail}", report)
    return report
