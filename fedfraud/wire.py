"""Encodings of the few non-scalar values institutions send in Flower metrics.

Flower's legacy metrics hold scalars only, so count vectors travel as bytes.
Every blob starts with a version tag, and decoding fails closed on anything
else (wrong tag, wrong length, negative counts).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedfraud.errors import ProtocolError

_COUNTS_TAG = b"ffc1"


def encode_counts(counts: npt.NDArray[np.integer]) -> bytes:
    """Encode a 1-D vector of non-negative counts as tagged little-endian int64."""
    array = np.asarray(counts)
    if array.ndim != 1 or (array.size and int(array.min()) < 0):
        raise ProtocolError("counts must be a 1-D vector of non-negative integers")
    return _COUNTS_TAG + array.astype("<i8").tobytes()


def decode_counts(blob: object, length: int) -> npt.NDArray[np.int64]:
    """Decode :func:`encode_counts` output, checking tag, length and signs."""
    if not isinstance(blob, bytes) or not blob.startswith(_COUNTS_TAG):
        raise ProtocolError("count vector has an unknown encoding")
    body = blob[len(_COUNTS_TAG):]
    if len(body) != 8 * length:
        raise ProtocolError(f"count vector has {len(body) // 8} entries, expected {length}")
    array = np.frombuffer(body, dtype="<i8").astype(np.int64)
    if array.size and int(array.min()) < 0:
        raise ProtocolError("count vector has negative entries")
    return array


# ---------------------------------------------------------------------------
# Refusals. An institution that refuses a round raises an error whose text
# carries a token, so the server can log *who* refused *which rules* under
# *which policy hash*, although Flower reports client errors as plain text.
# ---------------------------------------------------------------------------
_REFUSAL_TAG = "fedfraud-refusal/1:"
_REFUSAL_RE = re.compile(re.escape(_REFUSAL_TAG) + r"([A-Za-z0-9_-]+={0,2})")


@dataclass(frozen=True)
class Refusal:
    """One institution's refusal of one round."""

    institution: str
    server_round: int
    rules: tuple[str, ...]
    policy_hash: str

    def token(self) -> str:
        """The refusal as a tagged, base64url-encoded JSON token."""
        body = json.dumps(
            {
                "institution": self.institution,
                "round": self.server_round,
                "rules": list(self.rules),
                "policy_hash": self.policy_hash,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode("utf-8")
        return _REFUSAL_TAG + base64.urlsafe_b64encode(body).decode("ascii")


def find_refusals(text: str) -> list[Refusal]:
    """Every well-formed refusal token in an error text (malformed ones are ignored)."""
    found: list[Refusal] = []
    for match in _REFUSAL_RE.finditer(text):
        try:
            data = json.loads(base64.urlsafe_b64decode(match.group(1)))
            refusal = Refusal(
                institution=str(data["institution"]),
                server_round=int(data["round"]),
                rules=tuple(str(rule) for rule in data["rules"]),
                policy_hash=str(data["policy_hash"]),
            )
        except (ValueError, KeyError, TypeError):
            continue
        found.append(refusal)
    return found


def update_digest(weights: list[npt.NDArray[np.floating]]) -> str:
    """SHA-256 over a model update's arrays (shapes, dtypes and bytes), tagged.

    An institution signs this in its round receipt: a commitment to exactly the
    update it contributed, which reveals nothing usable about the update.
    """
    digest = hashlib.sha256(b"fedfraud/update/v1\x00")
    for array in weights:
        data = np.ascontiguousarray(array)
        digest.update(f"{data.dtype.str}{data.shape}".encode("ascii"))
        digest.update(data.tobytes())
    return digest.hexdigest()
