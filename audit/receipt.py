"""Institution-signed receipts of round participation.

Each institution signs, with its own Ed25519 key, what it sent in a round.  The
server logs the receipt verbatim; a Merkle root over the round's receipts goes
into ``round_closed``.  Since the verifier checks every receipt against the
institution's *trusted* key, the server cannot claim that an institution took
part when it did not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import canonical_dumps
from .errors import AuditSignatureError, ReceiptError, RecordFormatError
from .merkle import leaf_hash, root
from .record import LogId, b64_signature, decode_signature
from .signatures import verify_ed25519

__all__ = ["RECEIPT_VERSION", "make_receipt", "verify_receipt", "receipt_leaf", "receipts_root"]

RECEIPT_VERSION = "fedfraud-receipt/1"
_RECEIPT_DOMAIN = b"fedfraud-audit/1 receipt\x00"
_KEYS = frozenset({"v", "log_id", "round", "institution", "sent_hash", "policy_hash", "sig"})
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _log_id_dict(log_id: LogId | dict[str, Any]) -> dict[str, Any]:
    return log_id.to_dict() if isinstance(log_id, LogId) else LogId.from_dict(log_id).to_dict()


def make_receipt(
    inst_key: Ed25519PrivateKey,
    institution_id: str,
    log_id: LogId | dict[str, Any],
    server_round: int,
    sent_hash: str,
    policy_hash: str,
) -> dict[str, Any]:
    """Sign a receipt of an institution's participation in one round.

    Parameters
    ----------
    inst_key : Ed25519PrivateKey
        The institution's own signing key.
    institution_id : str
        The institution's id.
    log_id : LogId or dict
        The server log the receipt is for (binds it to federation, run, server key).
    server_round : int
        The round (>= 1).
    sent_hash : str
        SHA-256 hex of exactly what the institution sent (e.g. its masked update).
    policy_hash : str
        SHA-256 hex of the institution's policy in force.

    Returns
    -------
    dict
        ``{"v","log_id","round","institution","sent_hash","policy_hash","sig"}``.
    """
    if not isinstance(server_round, int) or isinstance(server_round, bool) or server_round < 1:
        raise ReceiptError("round must be an integer >= 1")
    for name, value in (("sent_hash", sent_hash), ("policy_hash", policy_hash)):
        if not isinstance(value, str) or not _HEX64.match(value):
            raise ReceiptError(f"{name} must be 64 lower-case hex digits")
    if not isinstance(institution_id, str) or not institution_id:
        raise ReceiptError("institution_id must be a non-empty string")
    content = {
        "v": RECEIPT_VERSION,
        "log_id": _log_id_dict(log_id),
        "round": server_round,
        "institution": institution_id,
        "sent_hash": sent_hash,
        "policy_hash": policy_hash,
    }
    sig = inst_key.sign(_RECEIPT_DOMAIN + canonical_dumps(content))
    return {**content, "sig": b64_signature(sig)}


def verify_receipt(
    receipt: object,
    trusted_pubkey: Ed25519PublicKey,
    *,
    log_id: LogId | None = None,
    server_round: int | None = None,
    institution_id: str | None = None,
) -> None:
    """Verify a receipt's form and signature, and optionally what it names.

    Steps: (1) exact members and known version; (2) Ed25519 signature under the
    *trusted* institution key; (3) if given, the receipt names this log, this
    round and this institution (a receipt replayed from another run or round
    fails here).

    Raises
    ------
    ReceiptError
        On any failure (the cause is chained).
    """
    # Step 1: shape and version.
    if not isinstance(receipt, dict) or receipt.keys() != _KEYS:
        raise ReceiptError(f"receipt must hold exactly {sorted(_KEYS)}")
    if receipt["v"] != RECEIPT_VERSION:
        raise ReceiptError(f"unknown receipt version {receipt['v']!r}")
    try:
        named_log = LogId.from_dict(receipt["log_id"])
    except RecordFormatError as exc:
        raise ReceiptError(f"receipt log_id malformed: {exc}") from exc
    rnd = receipt["round"]
    if not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 1:
        raise ReceiptError("receipt round must be an integer >= 1")
    # Step 2: signature under the trusted key.
    content = {k: v for k, v in receipt.items() if k != "sig"}
    try:
        raw = decode_signature(receipt["sig"])
        verify_ed25519(trusted_pubkey, raw, _RECEIPT_DOMAIN + canonical_dumps(content))
    except (InvalidSignature, AuditSignatureError):
        raise ReceiptError(
            f"receipt of {receipt['institution']!r} for round {rnd}: signature does not verify "
            "under the institution's trusted key"
        ) from None
    # Step 3: it names this log, round and institution.
    if log_id is not None and named_log != log_id:
        raise ReceiptError(
            f"receipt names log {named_log.federation_id}/{named_log.run_id}, "
            f"expected {log_id.federation_id}/{log_id.run_id} (replayed from another log)"
        )
    if server_round is not None and rnd != server_round:
        raise ReceiptError(f"receipt is for round {rnd}, expected round {server_round} (replayed)")
    if institution_id is not None and receipt["institution"] != institution_id:
        raise ReceiptError(
            f"receipt is signed for {receipt['institution']!r}, expected {institution_id!r}"
        )


def receipt_leaf(receipt: dict[str, Any]) -> bytes:
    """Merkle leaf hash of a receipt: ``leaf_hash(canonical(receipt incl. sig))``."""
    return leaf_hash(canonical_dumps(receipt))


def receipts_root(receipts: Sequence[dict[str, Any]]) -> str:
    """Hex RFC 9162 Merkle root over receipts, in the order they were logged."""
    return root([receipt_leaf(r) for r in receipts]).hex()
