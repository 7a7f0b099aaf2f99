"""An institution's witness: check, countersign and keep server checkpoints.

Each institution keeps its **own** audit log (same record format, signed with
its own key, log id = federation, run and the institution's key fingerprint).
The last checkpoint it countersigned is read back from that log, so the check
"the new checkpoint extends the last one I saw" survives restarts.  Any one
institution's copy then catches a server that truncates, rolls back or shows
different histories to different institutions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import CanonicalEncodingError, canonical_dumps
from .checkpoint import SignedCheckpoint, make_countersignature, verify_countersignature
from .errors import AuditError, MerkleProofError, WitnessRefusal
from .keys import fingerprint, public_key_from_bytes
from .log import AuditLogWriter, Clock, utc_now
from .merkle import verify_consistency
from .record import LogId, RecordKind, format_timestamp

__all__ = ["InstitutionWitness"]


class InstitutionWitness:
    """Countersigns server checkpoints for one institution and keeps its own log.

    Parameters
    ----------
    log_path : path-like
        The institution's local witness log (created at the first accepted
        checkpoint; re-verified under the institution's key when it exists).
    institution_id : str
        The institution's id, as in the run's genesis.
    signing_key : Ed25519PrivateKey
        The institution's own key.
    server_public_key : Ed25519PublicKey or bytes
        The server's trusted key (from the institution's configuration).
    clock : callable, optional
        Source of aware datetimes (tests); defaults to the UTC wall clock.
    """

    def __init__(
        self,
        log_path: str | os.PathLike[str],
        institution_id: str,
        signing_key: Ed25519PrivateKey,
        server_public_key: Ed25519PublicKey | bytes,
        *,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(institution_id, str) or not institution_id:
            raise AuditError("institution_id must be a non-empty string")
        self._path = Path(log_path)
        self._institution = institution_id
        self._key = signing_key
        self._server_key = (
            public_key_from_bytes(server_public_key)
            if isinstance(server_public_key, (bytes, bytearray))
            else server_public_key
        )
        self._clock = clock or utc_now
        self._writer: AuditLogWriter | None = None
        self._last: SignedCheckpoint | None = None
        if self._path.exists() and self._path.stat().st_size > 0:
            self._writer = AuditLogWriter.open_existing(self._path, signing_key, clock=self._clock)
            for record in self._writer.records:
                if record.kind is RecordKind.WITNESS:
                    self._last = SignedCheckpoint.from_dict(record.body["countersignature"]["checkpoint"])

    @property
    def last_checkpoint(self) -> SignedCheckpoint | None:
        """The last checkpoint this institution countersigned (``None`` if none yet)."""
        return self._last

    @property
    def log_path(self) -> Path:
        """The institution's local witness log."""
        return self._path

    def _log_id_for(self, checkpoint: SignedCheckpoint) -> LogId:
        return LogId(checkpoint.log_id.federation_id, checkpoint.log_id.run_id, fingerprint(self._key))

    def _refuse(self, reason: str, checkpoint: object, exc: Exception | None = None) -> WitnessRefusal:
        # The refusal goes into the institution's own log when one exists, so
        # the evidence of a misbehaving server is kept.  Before the first
        # accepted checkpoint there is no trustworthy log id to bind it to.
        if self._writer is not None:
            try:
                canonical_dumps(checkpoint)
                stored: object = checkpoint
            except CanonicalEncodingError:
                stored = None
            self._writer.append(
                RecordKind.WITNESS_REFUSED,
                {
                    "institution": self._institution,
                    "checkpoint": stored,
                    "reason": reason,
                    "last_tree_size": self._last.tree_size if self._last else 0,
                },
            )
        error = WitnessRefusal(f"{self._institution}: refusing to countersign: {reason}")
        if exc is not None:
            error.__cause__ = exc
        return error

    def witness(self, checkpoint: dict[str, Any], consistency_proof: list[str]) -> dict[str, Any]:
        """Check a server checkpoint, countersign it and append it to the local log.

        Steps:

        1. the checkpoint is well formed and names the trusted server key;
        2. the server's signature verifies under the trusted key;
        3. it names the same federation and run as this local log;
        4. it extends the last checkpoint seen: equal size needs an equal root
           (else fork), smaller size is a rollback, larger size needs a valid
           RFC 9162 consistency proof;
        5. countersign, append a ``witness`` record (fsync'ed), return it.

        Returns
        -------
        dict
            The countersignature, to hand back to the server.

        Raises
        ------
        WitnessRefusal
            On any failed step (recorded in the local log when it exists).
        """
        # Step 1: form and server identity.
        try:
            cp = SignedCheckpoint.from_dict(checkpoint)
        except AuditError as exc:
            raise self._refuse(f"malformed checkpoint: {exc}", checkpoint, exc) from exc
        if cp.log_id.key_fingerprint != fingerprint(self._server_key):
            raise self._refuse("checkpoint names a different server key", checkpoint)
        # Step 2: server signature.
        try:
            cp.verify(self._server_key)
        except AuditError as exc:
            raise self._refuse("server signature does not verify", checkpoint, exc) from exc
        # Step 3: same federation and run as the local log.
        if self._writer is not None:
            expected = self._writer.log_id
            if (cp.log_id.federation_id, cp.log_id.run_id) != (expected.federation_id, expected.run_id):
                raise self._refuse(
                    f"checkpoint is for run {cp.log_id.run_id!r}, local log is for run {expected.run_id!r}",
                    checkpoint,
                )
        # Step 4: consistency with the last checkpoint seen.
        last = self._last
        if last is not None:
            if cp.tree_size < last.tree_size:
                raise self._refuse(
                    f"rollback: tree size {cp.tree_size} is smaller than the last witnessed {last.tree_size}",
                    checkpoint,
                )
            try:
                proof = [bytes.fromhex(node) for node in consistency_proof]
            except (TypeError, ValueError) as exc:
                raise self._refuse("consistency proof is not hex", checkpoint, exc) from exc
            try:
                verify_consistency(
                    last.tree_size, cp.tree_size, bytes.fromhex(last.root), bytes.fromhex(cp.root), proof
                )
            except MerkleProofError as exc:
                kind = "fork" if cp.tree_size == last.tree_size else "inconsistent history"
                raise self._refuse(
                    f"{kind}: checkpoint of size {cp.tree_size} does not extend the witnessed size "
                    f"{last.tree_size} ({exc})",
                    checkpoint,
                    exc,
                ) from exc
        # Step 5: countersign and keep.
        if self._writer is None:
            self._writer = AuditLogWriter.create(self._path, self._key, self._log_id_for(cp), clock=self._clock)
        ts = format_timestamp(self._clock())
        countersignature = make_countersignature(self._key, self._institution, cp, ts)
        self._writer.append(
            RecordKind.WITNESS, {"institution": self._institution, "countersignature": countersignature}
        )
        self._last = cp
        # Make sure what we return verifies (fail closed on our own bugs).
        verify_countersignature(countersignature, self._key.public_key())
        return countersignature

    def close(self) -> None:
        """Close the local log."""
        if self._writer is not None:
            self._writer.close()
