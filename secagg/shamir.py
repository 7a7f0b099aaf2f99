"""Shamir secret sharing of 32-byte secrets over the prime field GF(2**521 - 1).

Shamir, "How to share a secret", CACM 22(11), 1979: a secret is the constant
term of a random polynomial of degree ``t - 1``; any ``t`` points rebuild it by
Lagrange interpolation at 0, and ``t - 1`` points are independent of it.
The field is the Mersenne prime ``2**521 - 1``, far above any 256-bit secret,
so every secret is a field element as it stands. Coefficients come from
:mod:`secrets` (the operating system's CSPRNG).

A share is ``(x, y)``; on the wire ``y`` is 66 bytes, big-endian, tagged with
:data:`SHARE_TAG` so a share can never be mistaken for another artefact.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from core.errors import CryptoError

#: The field's prime (a Mersenne prime; 2**521 - 1 is prime, Lucas-Lehmer).
PRIME = (1 << 521) - 1
#: Bytes of a field element on the wire.
ELEMENT_BYTES = 66
#: Version and algorithm marker of an encoded share.
SHARE_TAG = b"fedfraud-shamir/1"
SECRET_BYTES = 32


def split_secret(secret: bytes, threshold: int, xs: Sequence[int]) -> dict[int, bytes]:
    """Share ``secret`` so that any ``threshold`` of the shares at ``xs`` rebuild it.

    Parameters
    ----------
    secret : bytes
        Exactly 32 bytes.
    threshold : int
        Shares needed to rebuild (the polynomial has degree ``threshold - 1``).
    xs : sequence of int
        Distinct evaluation points, each in ``[1, 2**32)``; 0 would be the secret.

    Returns
    -------
    dict
        ``x -> encoded share``.
    """
    if len(secret) != SECRET_BYTES:
        raise CryptoError("a shared secret must be 32 bytes")
    if not 2 <= threshold <= len(xs):
        raise CryptoError(f"threshold {threshold} does not fit {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < 2**32 for x in xs):
        raise CryptoError("share points must be distinct and in [1, 2**32)")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    return {x: encode_share(x, _evaluate(coefficients, x)) for x in xs}


def combine_shares(shares: Sequence[bytes], threshold: int) -> bytes:
    """Rebuild a secret from at least ``threshold`` encoded shares.

    Raises
    ------
    CryptoError
        With fewer than ``threshold`` distinct shares, or a malformed share.
    """
    points: dict[int, int] = {}
    for share in shares:
        x, y = decode_share(share)
        if x in points and points[x] != y:
            raise CryptoError("two different shares for one point")
        points[x] = y
    if len(points) < threshold:
        raise CryptoError(f"{len(points)} distinct shares, {threshold} needed")
    chosen = sorted(points.items())[:threshold]
    secret = 0
    for i, (x_i, y_i) in enumerate(chosen):
        numerator, denominator = 1, 1
        for j, (x_j, _) in enumerate(chosen):
            if i != j:
                numerator = numerator * (-x_j) % PRIME
                denominator = denominator * (x_i - x_j) % PRIME
        secret = (secret + y_i * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise CryptoError("shares do not rebuild a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")


def encode_share(x: int, y: int) -> bytes:
    """``SHARE_TAG || x (4 bytes) || y (66 bytes)``."""
    return SHARE_TAG + x.to_bytes(4, "big") + y.to_bytes(ELEMENT_BYTES, "big")


def decode_share(share: bytes) -> tuple[int, int]:
    """The point of an encoded share; fails closed on anything else."""
    if len(share) != len(SHARE_TAG) + 4 + ELEMENT_BYTES or not share.startswith(SHARE_TAG):
        raise CryptoError("malformed secret share")
    body = share[len(SHARE_TAG) :]
    x, y = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big")
    if x == 0 or y >= PRIME:
        raise CryptoError("malformed secret share")
    return x, y


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result
