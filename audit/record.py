"""The signed, hash-chained record format of every audit log (server and institution).

One record is one line of a JSONL file, exactly::

    {"hash":"<hex>","record":<R>,"sig":"<base64>"}\\n

where the whole line is canonical JSON (:mod:`audit.canonical`) and ``R`` is::

    {"alg":"ed25519+sha256","body":{...},"kind":"<RecordKind>",
     "log_id":{"federation_id":...,"key_fingerprint":"ed25519:...","run_id":...},
     "prev":"<hash of record seq-1, or 64 zeros>","seq":<n>,
     "ts":"YYYY-MM-DDTHH:MM:SS.ffffffZ","v":"fedfraud-audit/1"}

* ``hash = SHA-256("fedfraud-audit/1 record\\0" || canonical(R))`` (hex);
* ``sig  = Ed25519(key, "fedfraud-audit/1 record-signature\\0" || hash bytes)``
  (RFC 8032), base64.

The domain prefixes keep a record hash from ever being confused with a
checkpoint, a receipt or a Merkle node.  ``log_id`` in every record binds it to
one log (federation, run and signing key), so records cannot be spliced
between logs; ``seq`` and ``prev`` bind it to its position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import CanonicalEncodingError, canonical_dumps, loads_canonical
from .errors import AuditSignatureError, RecordFormatError
from .signatures import verify_ed25519

__all__ = [
    "RECORD_VERSION",
    "RECORD_ALG",
    "GENESIS_PREV",
    "RecordKind",
    "LogId",
    "Record",
    "format_timestamp",
    "parse_timestamp",
    "encode_record",
    "decode_record",
    "verify_record_signature",
    "b64_signature",
    "decode_signature",
]

#: Format/version marker carried by every record.
RECORD_VERSION = "fedfraud-audit/1"
#: Algorithm marker: Ed25519 signatures (RFC 8032) over SHA-256 record hashes.
RECORD_ALG = "ed25519+sha256"
#: ``prev`` of the first record of a log.
GENESIS_PREV = "0" * 64

RECORD_HASH_DOMAIN = b"fedfraud-audit/1 record\x00"
RECORD_SIG_DOMAIN = b"fedfraud-audit/1 record-signature\x00"

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z\Z")
_SIG_LEN = 88  # base64 of 64 bytes
_RECORD_KEYS = frozenset({"v", "alg", "log_id", "seq", "ts", "kind", "prev", "body"})
_LOG_ID_KEYS = frozenset({"federation_id", "run_id", "key_fingerprint"})
_LINE_KEYS = frozenset({"hash", "record", "sig"})
_LINE_HEAD = b'{"hash":"'
_LINE_MID = b'","record":'
_LINE_SIG = b',"sig":"'
_LINE_TAIL = b'"}'


class RecordKind(str, Enum):
    """The kinds of audit record.

    Server logs hold ``genesis`` .. ``run_closed``; institutions' local witness
    logs hold ``witness`` and ``witness_refused``.
    """

    GENESIS = "genesis"
    ROUND_OPENED = "round_opened"
    POLICY_REFUSAL = "policy_refusal"
    DROPOUT = "dropout"
    RECEIPT = "receipt"
    ROUND_CLOSED = "round_closed"
    CHECKPOINT = "checkpoint"
    WITNESS = "witness"
    RUN_CLOSED = "run_closed"
    WITNESS_REFUSED = "witness_refused"
    PARTICIPANTS = "participants"
    CIPHERTEXTS = "ciphertexts"
    #: ``model = "gbdt"``: the bin agreement, each histogram sum, each tree.
    GBDT_BINS = "gbdt_bins"
    GBDT_SUM = "gbdt_sum"
    GBDT_TREE = "gbdt_tree"


_KINDS = {kind.value: kind for kind in RecordKind}


@dataclass(frozen=True)
class LogId:
    """The identity of one log: federation, run and the signer's key fingerprint."""

    federation_id: str
    run_id: str
    key_fingerprint: str

    def __post_init__(self) -> None:
        for name in ("federation_id", "run_id", "key_fingerprint"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise RecordFormatError(f"log_id.{name} must be a non-empty string")
        if not self.key_fingerprint.startswith("ed25519:") or not _HEX64.match(
            self.key_fingerprint[len("ed25519:"):]
        ):
            raise RecordFormatError("log_id.key_fingerprint must be 'ed25519:' + 64 hex digits")

    def to_dict(self) -> dict[str, str]:
        """Return the JSON form used inside records."""
        return {
            "federation_id": self.federation_id,
            "run_id": self.run_id,
            "key_fingerprint": self.key_fingerprint,
        }

    @classmethod
    def from_dict(cls, data: object) -> "LogId":
        """Parse the JSON form strictly (exactly the three string members).

        Raises
        ------
        RecordFormatError
            If members are missing, extra or not strings.
        """
        if not isinstance(data, dict) or set(data) != _LOG_ID_KEYS:
            raise RecordFormatError(
                "log_id must hold exactly federation_id, run_id and key_fingerprint"
            )
        return cls(data["federation_id"], data["run_id"], data["key_fingerprint"])


@dataclass(frozen=True)
class Record:
    """One signed audit record as written to (or read from) a log line.

    Attributes
    ----------
    seq, kind, ts, prev, body, log_id
        The signed content.
    hash : str
        Hex record hash (the chain link and the Merkle leaf data).
    sig : str
        Base64 Ed25519 signature over the hash.
    line : bytes
        The exact canonical line, without the newline.
    """

    seq: int
    kind: RecordKind
    ts: str
    prev: str
    body: dict[str, Any]
    log_id: LogId
    hash: str
    sig: str
    line: bytes

    def to_dict(self) -> dict[str, Any]:
        """Return the full line as a JSON object."""
        return {
            "hash": self.hash,
            "record": {
                "v": RECORD_VERSION,
                "alg": RECORD_ALG,
                "log_id": self.log_id.to_dict(),
                "seq": self.seq,
                "ts": self.ts,
                "kind": self.kind.value,
                "prev": self.prev,
                "body": self.body,
            },
            "sig": self.sig,
        }


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with microseconds and ``Z``.

    The fixed width makes string order equal time order.

    Raises
    ------
    RecordFormatError
        If ``moment`` is naive.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RecordFormatError("timestamps must be timezone-aware")
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}Z"


def parse_timestamp(text: object) -> datetime:
    """Parse the timestamp form written by :func:`format_timestamp`.

    Raises
    ------
    RecordFormatError
        For any other form or an impossible date.
    """
    if not isinstance(text, str) or not _TS.match(text):
        raise RecordFormatError(
            f"timestamp {text!r} is not RFC 3339 UTC 'YYYY-MM-DDTHH:MM:SS.ffffffZ'"
        )
    # The regex fixed every field's position and width, so building the
    # datetime from the fields accepts exactly what ``strptime`` with
    # "%Y-%m-%dT%H:%M:%S.%fZ" accepts (both reject month 00, day 31 of a
    # 30-day month, hour 24, second 60, year 0000 ...), at a tenth of the cost.
    try:
        return datetime(
            int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]),
            int(text[14:16]), int(text[17:19]), int(text[20:26]), tzinfo=timezone.utc,
        )
    except ValueError:
        raise RecordFormatError(f"timestamp {text!r} is not a valid date/time") from None


def b64_signature(signature: bytes) -> str:
    """Base64-encode a 64-byte Ed25519 signature."""
    return base64.b64encode(signature).decode("ascii")


def decode_signature(text: object) -> bytes:
    """Decode a base64 Ed25519 signature strictly (88 characters, 64 bytes).

    Raises
    ------
    AuditSignatureError
        If the text is not canonical base64 of 64 bytes.
    """
    if not isinstance(text, str) or len(text) != _SIG_LEN:
        raise AuditSignatureError("signature is not base64 of 64 bytes")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise AuditSignatureError("signature is not valid base64") from None
    if len(raw) != 64 or base64.b64encode(raw).decode("ascii") != text:
        raise AuditSignatureError("signature base64 is not canonical")
    return raw


def _record_content(log_id: LogId, seq: int, ts: str, kind: RecordKind, prev: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "v": RECORD_VERSION,
        "alg": RECORD_ALG,
        "log_id": log_id.to_dict(),
        "seq": seq,
        "ts": ts,
        "kind": kind.value,
        "prev": prev,
        "body": body,
    }


def encode_record(
    key: Ed25519PrivateKey,
    log_id: LogId,
    seq: int,
    ts: str,
    kind: RecordKind,
    prev: str,
    body: dict[str, Any],
) -> Record:
    """Build, hash and sign one record.

    Raises
    ------
    CanonicalEncodingError
        If ``body`` cannot be encoded canonically (NaN, huge ints, ...).
    RecordFormatError
        If an argument is malformed.
    """
    if not isinstance(body, dict):
        raise RecordFormatError("record body must be a dict")
    if not isinstance(kind, RecordKind):
        raise RecordFormatError(f"unknown record kind {kind!r}")
    parse_timestamp(ts)
    if not _HEX64.match(prev):
        raise RecordFormatError("prev must be 64 hex digits")
    content = canonical_dumps(_record_content(log_id, seq, ts, kind, prev, body))
    digest = hashlib.sha256(RECORD_HASH_DOMAIN + content).hexdigest()
    sig = b64_signature(key.sign(RECORD_SIG_DOMAIN + bytes.fromhex(digest)))
    line = b"".join(
        (_LINE_HEAD, digest.encode("ascii"), _LINE_MID, content, _LINE_SIG, sig.encode("ascii"), _LINE_TAIL)
    )
    # Bodies are re-read from the canonical bytes so the in-memory value is
    # exactly what a verifier will see (e.g. tuples become lists).
    parsed_body = loads_canonical(content)["body"]
    return Record(seq, kind, ts, prev, parsed_body, log_id, digest, sig, line)


class DecodeFailure(RecordFormatError):
    """A record line failed one named decoding step (``check``)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


def decode_record(line: bytes, known_log_id: LogId | None = None) -> Record:
    """Decode one line and check its form and hash (not its signature).

    ``known_log_id`` (optional) is a speed-up for reading a whole log: when the
    record's ``log_id`` member equals it, that object is reused instead of
    being parsed and validated again.  It never changes the result.

    Steps:

    1. the line parses strictly and is byte-identical to its canonical form;
    2. it holds exactly ``hash``, ``record``, ``sig``; the record holds exactly
       the members of the format, with a known version, algorithm and kind;
    3. the stored hash equals the hash of the canonical record content.

    Raises
    ------
    DecodeFailure
        With ``check`` naming the failed step (``canonical``, ``format``,
        ``version``, ``hash``).
    """
    # Step 1: strict parse + canonical form.
    try:
        top = loads_canonical(line)
    except CanonicalEncodingError as exc:
        raise DecodeFailure("canonical", str(exc)) from None
    # Step 2: exact shape, known markers.
    if top.keys() != _LINE_KEYS:
        raise DecodeFailure("format", "line must hold exactly 'hash', 'record' and 'sig'")
    digest, content, sig = top["hash"], top["record"], top["sig"]
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise DecodeFailure("format", "'hash' must be 64 lower-case hex digits")
    if not isinstance(sig, str) or len(sig) != _SIG_LEN:
        raise DecodeFailure("format", "'sig' must be base64 of a 64-byte signature")
    if not isinstance(content, dict) or content.keys() != _RECORD_KEYS:
        raise DecodeFailure("format", f"record must hold exactly {sorted(_RECORD_KEYS)}")
    if content["v"] != RECORD_VERSION:
        raise DecodeFailure("version", f"unknown record version {content['v']!r} (expected {RECORD_VERSION!r})")
    if content["alg"] != RECORD_ALG:
        raise DecodeFailure("version", f"unknown algorithm {content['alg']!r} (expected {RECORD_ALG!r})")
    kind = _KINDS.get(content["kind"]) if isinstance(content["kind"], str) else None
    if kind is None:
        raise DecodeFailure("format", f"unknown record kind {content['kind']!r}")
    seq = content["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise DecodeFailure("format", "'seq' must be a non-negative integer")
    prev = content["prev"]
    if not isinstance(prev, str) or not _HEX64.match(prev):
        raise DecodeFailure("format", "'prev' must be 64 lower-case hex digits")
    if not isinstance(content["body"], dict):
        raise DecodeFailure("format", "'body' must be an object")
    try:
        raw_log_id = content["log_id"]
        if known_log_id is not None and type(raw_log_id) is dict and raw_log_id.keys() == _LOG_ID_KEYS and (
            raw_log_id["federation_id"] == known_log_id.federation_id
            and raw_log_id["run_id"] == known_log_id.run_id
            and raw_log_id["key_fingerprint"] == known_log_id.key_fingerprint
        ):
            log_id = known_log_id  # the same three members as the known id (no dict built)
        else:
            log_id = LogId.from_dict(raw_log_id)
        parse_timestamp(content["ts"])
    except RecordFormatError as exc:
        raise DecodeFailure("format", str(exc)) from None
    # The canonical line has a fixed layout, so the canonical bytes of the
    # record content are a slice of it; slicing avoids encoding twice.
    start = len(_LINE_HEAD) + 64 + len(_LINE_MID)
    end = len(line) - len(_LINE_SIG) - _SIG_LEN - len(_LINE_TAIL)
    if line[start - len(_LINE_MID):start] != _LINE_MID or line[end:end + len(_LINE_SIG)] != _LINE_SIG:
        raise DecodeFailure("format", "line layout is not the canonical record layout")
    content_bytes = line[start:end]
    # Step 3: the stored hash must be the hash of the content.
    computed = hashlib.sha256(RECORD_HASH_DOMAIN + content_bytes).hexdigest()
    if not hmac.compare_digest(computed, digest):
        raise DecodeFailure("hash", f"stored hash {digest[:16]}… differs from computed {computed[:16]}…")
    return Record(seq, kind, content["ts"], prev, content["body"], log_id, digest, sig, line)


def verify_record_signature(public_key: Ed25519PublicKey, record: Record) -> None:
    """Verify a record's Ed25519 signature over its hash.

    Raises
    ------
    AuditSignatureError
        If the signature is malformed or does not verify under ``public_key``.
    """
    raw = decode_signature(record.sig)
    try:
        verify_ed25519(public_key, raw, RECORD_SIG_DOMAIN + bytes.fromhex(record.hash))
    except InvalidSignature:
        raise AuditSignatureError(f"record {record.seq}: signature does not verify under the trusted key") from None
