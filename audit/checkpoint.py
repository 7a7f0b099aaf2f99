"""Server-signed checkpoints and institutions' countersignatures.

A checkpoint commits to the first ``tree_size`` records of a log through their
RFC 9162 Merkle tree hash (leaf data = the 32 raw bytes of each record hash).
Institutions that countersign a checkpoint keep a copy in their own log, so a
server that later truncates, rolls back or forks its log is caught.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import MAX_SAFE_INTEGER, canonical_dumps
from .errors import AuditSignatureError, RecordFormatError
from .record import LogId, b64_signature, decode_signature, parse_timestamp
from .signatures import verify_ed25519

__all__ = [
    "CHECKPOINT_VERSION",
    "COUNTERSIGNATURE_VERSION",
    "SignedCheckpoint",
    "sign_checkpoint",
    "make_countersignature",
    "verify_countersignature",
]

CHECKPOINT_VERSION = "fedfraud-checkpoint/1"
COUNTERSIGNATURE_VERSION = "fedfraud-witness/1"
_CHECKPOINT_DOMAIN = b"fedfraud-audit/1 checkpoint\x00"
_COUNTERSIG_DOMAIN = b"fedfraud-audit/1 countersignature\x00"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class SignedCheckpoint:
    """A server-signed commitment to the first ``tree_size`` records of a log."""

    log_id: LogId
    tree_size: int
    root: str
    sig: str

    def unsigned_dict(self) -> dict[str, Any]:
        """The signed content (everything but ``sig``)."""
        return {
            "v": CHECKPOINT_VERSION,
            "log_id": self.log_id.to_dict(),
            "tree_size": self.tree_size,
            "root": self.root,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, including the signature."""
        return {**self.unsigned_dict(), "sig": self.sig}

    @classmethod
    def from_dict(cls, data: object) -> "SignedCheckpoint":
        """Parse a checkpoint strictly (exact members, known version).

        Raises
        ------
        RecordFormatError
            If the checkpoint is malformed.
        """
        if not isinstance(data, dict) or set(data) != {"v", "log_id", "tree_size", "root", "sig"}:
            raise RecordFormatError("checkpoint must hold exactly v, log_id, tree_size, root, sig")
        if data["v"] != CHECKPOINT_VERSION:
            raise RecordFormatError(f"unknown checkpoint version {data['v']!r}")
        size = data["tree_size"]
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SAFE_INTEGER:
            raise RecordFormatError("checkpoint tree_size must be a non-negative integer")
        if not isinstance(data["root"], str) or not _HEX64.match(data["root"]):
            raise RecordFormatError("checkpoint root must be 64 hex digits")
        if not isinstance(data["sig"], str):
            raise RecordFormatError("checkpoint sig must be a string")
        return cls(LogId.from_dict(data["log_id"]), size, data["root"], data["sig"])

    def signed_bytes(self) -> bytes:
        """The exact bytes the server signs."""
        return _CHECKPOINT_DOMAIN + canonical_dumps(self.unsigned_dict())

    def verify(self, server_public_key: Ed25519PublicKey) -> None:
        """Verify the server's signature.

        Raises
        ------
        AuditSignatureError
            If the signature does not verify under ``server_public_key``.
        """
        raw = decode_signature(self.sig)
        try:
            verify_ed25519(server_public_key, raw, self.signed_bytes())
        except InvalidSignature:
            raise AuditSignatureError(
                f"checkpoint of size {self.tree_size}: server signature does not verify"
            ) from None

    def same_as(self, other: "SignedCheckpoint") -> bool:
        """Whether both commit to the same log, size and root (constant-time root compare)."""
        return (
            self.log_id == other.log_id
            and self.tree_size == other.tree_size
            and hmac.compare_digest(self.root, other.root)
        )


def sign_checkpoint(key: Ed25519PrivateKey, log_id: LogId, tree_size: int, root_hex: str) -> SignedCheckpoint:
    """Sign a checkpoint for ``tree_size`` records with Merkle root ``root_hex``."""
    unsigned = SignedCheckpoint(log_id, tree_size, root_hex, "")
    return SignedCheckpoint(log_id, tree_size, root_hex, b64_signature(key.sign(unsigned.signed_bytes())))


def _countersig_content(institution_id: str, checkpoint: dict[str, Any], ts: str) -> dict[str, Any]:
    return {"v": COUNTERSIGNATURE_VERSION, "institution": institution_id, "checkpoint": checkpoint, "ts": ts}


def make_countersignature(
    key: Ed25519PrivateKey, institution_id: str, checkpoint: SignedCheckpoint, ts: str
) -> dict[str, Any]:
    """Countersign a (verified) checkpoint with an institution's key.

    Returns
    -------
    dict
        ``{"v", "institution", "checkpoint", "ts", "sig"}``.
    """
    content = _countersig_content(institution_id, checkpoint.to_dict(), ts)
    sig = key.sign(_COUNTERSIG_DOMAIN + canonical_dumps(content))
    return {**content, "sig": b64_signature(sig)}


def verify_countersignature(countersignature: object, trusted_key: Ed25519PublicKey) -> SignedCheckpoint:
    """Verify an institution's countersignature and return the checkpoint it covers.

    The server's own signature on the embedded checkpoint is *not* checked
    here; callers check it with the trusted server key.

    Raises
    ------
    RecordFormatError
        If the countersignature is malformed.
    AuditSignatureError
        If it does not verify under ``trusted_key``.
    """
    cs = countersignature
    if not isinstance(cs, dict) or set(cs) != {"v", "institution", "checkpoint", "ts", "sig"}:
        raise RecordFormatError("countersignature must hold exactly v, institution, checkpoint, ts, sig")
    if cs["v"] != COUNTERSIGNATURE_VERSION:
        raise RecordFormatError(f"unknown countersignature version {cs['v']!r}")
    if not isinstance(cs["institution"], str):
        raise RecordFormatError("countersignature institution must be a string")
    parse_timestamp(cs["ts"])
    checkpoint = SignedCheckpoint.from_dict(cs["checkpoint"])
    raw = decode_signature(cs["sig"])
    content = _countersig_content(cs["institution"], cs["checkpoint"], cs["ts"])
    try:
        verify_ed25519(trusted_key, raw, _COUNTERSIG_DOMAIN + canonical_dumps(content))
    except InvalidSignature:
        raise AuditSignatureError(
            f"countersignature of {cs['institution']!r} does not verify under its trusted key"
        ) from None
    return checkpoint
