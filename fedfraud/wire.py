"""Encodings of the few non-scalar values institutions send in Flower metrics.

Flower's legacy metrics hold scalars only, so count vectors travel as bytes.
Every blob starts with a version tag, and decoding fails closed on anything
else (wrong tag, wrong length, negative counts).
"""

from __future__ import annotations

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
