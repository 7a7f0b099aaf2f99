"""Append-only, fsync'ed, signed and hash-chained JSONL audit log writer.

The writer opens the file with ``O_APPEND`` and never seeks or rewrites; each
record is written with one ``write`` call, then ``fsync``ed before
:meth:`AuditLogWriter.append` returns.  Opening an existing log re-verifies
every record under the writer's own key and refuses (raises
:class:`~audit.errors.TornLogError`) if the last line is torn, rather than
repairing it: a repair would destroy evidence.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .checkpoint import SignedCheckpoint, sign_checkpoint
from .errors import AuditError, AuditInputError, RecordFormatError, TornLogError
from .keys import fingerprint
from .lines import split_lines
from .merkle import MerkleFrontier, consistency_proof, leaf_hash
from .record import (
    GENESIS_PREV,
    LogId,
    Record,
    RecordKind,
    decode_record,
    encode_record,
    format_timestamp,
    verify_record_signature,
)

__all__ = ["AuditLogWriter", "LogId", "RecordKind", "Record", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Return the current time in UTC (the default clock)."""
    return datetime.now(timezone.utc)


class AuditLogWriter:
    """Writer of one audit log (server log or an institution's witness log).

    Use :meth:`create` for a new log and :meth:`open_existing` to continue one.
    Not safe across processes; one writer per file.
    """

    def __init__(
        self,
        path: Path,
        fd: int,
        signing_key: Ed25519PrivateKey,
        log_id: LogId,
        records: list[Record],
        clock: Clock,
    ) -> None:
        self._path = path
        self._fd = fd
        self._key = signing_key
        self._log_id = log_id
        self._records = records
        self._clock = clock
        self._lock = threading.Lock()
        self._leaves: list[bytes] = []
        self._frontier = MerkleFrontier()
        for record in records:
            self._add_leaf(record)

    # -- construction -------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        signing_key: Ed25519PrivateKey,
        log_id: LogId,
        *,
        clock: Clock | None = None,
    ) -> "AuditLogWriter":
        """Create a new, empty log file (mode 0600; fails if the file exists).

        Raises
        ------
        AuditError
            If ``log_id`` does not name ``signing_key``'s fingerprint.
        AuditInputError
            If the file exists or cannot be created.
        """
        if log_id.key_fingerprint != fingerprint(signing_key):
            raise AuditError("log_id.key_fingerprint does not match the signing key")
        path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError as exc:
            raise AuditInputError(f"{path}: audit log already exists; use open_existing") from exc
        except OSError as exc:
            raise AuditInputError(f"{path}: cannot create audit log ({exc.strerror})") from exc
        _fsync_dir(path)
        return cls(path, fd, signing_key, log_id, [], clock or utc_now)

    @classmethod
    def open_existing(
        cls,
        path: str | os.PathLike[str],
        signing_key: Ed25519PrivateKey,
        log_id: LogId | None = None,
        *,
        clock: Clock | None = None,
    ) -> "AuditLogWriter":
        """Open an existing log for appending, after verifying all of it.

        Every record must decode, chain, and verify under ``signing_key``'s
        public key; an empty file is accepted only together with ``log_id``.

        Raises
        ------
        TornLogError
            If the last line is torn (the file is left untouched).
        RecordFormatError, AuditSignatureError
            If any record is malformed, out of chain, or not signed by this key.
        AuditError
            If the log belongs to another log id.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AuditInputError(f"{path}: cannot read audit log ({exc.strerror})") from exc
        public_key = signing_key.public_key()
        records: list[Record] = []
        prev = GENESIS_PREV
        lines, torn = split_lines(data)
        if torn is not None:
            raise TornLogError(
                f"{path}: line {torn.number} (byte offset {torn.offset}) is torn: "
                f"{len(torn.data)} bytes without a terminating newline",
                line=torn.number,
                offset=torn.offset,
            )
        for number, offset, line in lines:
            try:
                record = decode_record(line)
            except RecordFormatError as exc:
                raise RecordFormatError(f"{path}: line {number} (offset {offset}): {exc}") from None
            verify_record_signature(public_key, record)
            if record.seq != len(records) or record.prev != prev:
                raise RecordFormatError(f"{path}: line {number}: record out of chain")
            if records and (record.log_id != records[0].log_id or record.ts < records[-1].ts):
                raise RecordFormatError(f"{path}: line {number}: log id or timestamp inconsistent")
            records.append(record)
            prev = record.hash
        found = records[0].log_id if records else None
        if found is not None and log_id is not None and found != log_id:
            raise AuditError(f"{path}: log belongs to {found}, not {log_id}")
        effective = found or log_id
        if effective is None:
            raise AuditError(f"{path}: empty log and no log_id given")
        if effective.key_fingerprint != fingerprint(signing_key):
            raise AuditError(f"{path}: log_id.key_fingerprint does not match the signing key")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise AuditInputError(f"{path}: cannot open audit log ({exc.strerror})") from exc
        return cls(path, fd, signing_key, effective, records, clock or utc_now)

    # -- properties ---------------------------------------------------------

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    @property
    def log_id(self) -> LogId:
        """The identity every record of this log carries."""
        return self._log_id

    @property
    def records(self) -> tuple[Record, ...]:
        """All records, oldest first."""
        return tuple(self._records)

    @property
    def size(self) -> int:
        """Number of records (the Merkle tree size)."""
        return len(self._records)

    # -- writing ------------------------------------------------------------

    def _add_leaf(self, record: Record) -> None:
        leaf = leaf_hash(bytes.fromhex(record.hash))
        self._leaves.append(leaf)
        self._frontier.append(leaf)

    def append(self, kind: RecordKind, body: dict[str, Any]) -> Record:
        """Sign, chain and durably append one record.

        The record is written with a single ``write`` to an ``O_APPEND``
        descriptor and ``fsync``ed before this returns.  Timestamps never go
        backwards: a clock that steps back is clamped to the last timestamp.

        Raises
        ------
        AuditError
            If the writer is closed or the write fails.
        """
        with self._lock:
            if self._fd < 0:
                raise AuditError(f"{self._path}: writer is closed")
            ts = format_timestamp(self._clock())
            if self._records and ts < self._records[-1].ts:
                ts = self._records[-1].ts
            prev = self._records[-1].hash if self._records else GENESIS_PREV
            record = encode_record(self._key, self._log_id, len(self._records), ts, kind, prev, body)
            payload = record.line + b"\n"
            try:
                written = os.write(self._fd, payload)
                if written != len(payload):
                    # A short write leaves a torn line; never try to patch it.
                    raise AuditError(f"{self._path}: short write ({written} of {len(payload)} bytes)")
                os.fsync(self._fd)
            except OSError as exc:
                raise AuditError(f"{self._path}: cannot append record ({exc.strerror})") from exc
            self._records.append(record)
            self._add_leaf(record)
            return record

    def tree_root(self) -> str:
        """Return the hex RFC 9162 Merkle root over all records so far."""
        return self._frontier.root().hex()

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[str]:
        """Return the hex RFC 9162 consistency proof from ``old_size`` to ``new_size``.

        ``new_size`` defaults to the current size.
        """
        new = self.size if new_size is None else new_size
        if not 0 <= old_size <= new <= self.size:
            raise AuditError(f"cannot prove consistency from {old_size} to {new} (log has {self.size})")
        return [node.hex() for node in consistency_proof(self._leaves[:new], old_size)]

    def checkpoint(self) -> SignedCheckpoint:
        """Sign a checkpoint over all records so far and append it as a record.

        The checkpoint covers records ``0 .. size-1``; the ``checkpoint``
        record itself gets ``seq == tree_size``.
        """
        with self._lock:
            cp = sign_checkpoint(self._key, self._log_id, self.size, self._frontier.root().hex())
        self.append(RecordKind.CHECKPOINT, {"checkpoint": cp.to_dict()})
        return cp

    def close(self) -> None:
        """Close the file descriptor (idempotent)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> "AuditLogWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(path: Path) -> None:
    # Make the new directory entry durable too (POSIX needs an fsync of the dir).
    try:
        fd = os.open(path.parent if str(path.parent) else Path("."), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
