"""Masks and quantization of the hardened SecAgg+ (Flower-free arithmetic).

**Masks.** Every mask is a keystream of AES-256 in counter mode (NIST SP
800-38A) under a key derived with HKDF-SHA256 (RFC 5869) from the *full*
256-bit secret it belongs to, with an ``info`` string that names the protocol
version, the purpose (pairwise or self mask), the run binding and the pair.
So two masks of different pairs, rounds, runs or vectors are independent
streams, and recovering one needs the 256-bit secret itself. (Flower's stock
``pseudo_rand_gen`` XOR-folds its seed to 32 bits and seeds numpy's Mersenne
Twister; with base64 text as the seed, 4 of those bits are always zero.) The
counter starts at zero: the derived key is used for one stream only.

The stream is read as little-endian ``uint32`` words reduced modulo the
modulus, a power of two <= 2**32, which keeps every word uniform over the
modulus (2**32 is a multiple of it).

**Quantization.** A value ``v`` in ``[-c, c]`` becomes the integer
``rint((v + c) * Q / (2c))`` in ``[0, Q]``; the sum of ``n`` of them stays below
the modulus while ``n * Q < modulus`` (checked by
:meth:`secagg.params.SecAggSettings.validate_for`). Dequantizing a sum of
``n`` quantized values gives the sum of the values within ``n c / Q``.

**Exact integer sums.** Counts (and fixed-point totals) are not quantized:
each signed integer ``|v| < 2**47`` is written in two's complement modulo
``2**48`` as :data:`LIMBS` limbs of :data:`LIMB_BITS` bits. Limb sums of
``n`` institutions stay below ``n * 2**16``, so with ``n * (2**16 - 1) <
modulus`` (checked by :meth:`secagg.params.SecAggSettings.validate_for`) no
limb wraps and :func:`decode_integer_sum` rebuilds the exact sum, which is
right whenever it lies in ``(-2**47, 2**47)``. No weight, no rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.errors import CryptoError, ProtocolError

#: Version marker of every derivation in this module (domain separation).
MASK_DOMAIN = b"fedfraud-secagg/1/mask"
_ZERO_IV = bytes(16)

Words = npt.NDArray[np.uint32]


def derive_key(secret: bytes, purpose: bytes, context: bytes) -> bytes:
    """A 256-bit key for one use, bound to its purpose and context (HKDF-SHA256)."""
    if len(secret) < 32:
        raise CryptoError("mask secrets must carry at least 256 bits")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=MASK_DOMAIN + b"\x00" + purpose + b"\x00" + context,
    ).derive(secret)


def mask_stream(key: bytes, size: int, modulus: int) -> Words:
    """``size`` mask words, uniform modulo ``modulus``, from a one-use 256-bit key."""
    if len(key) != 32:
        raise CryptoError("a mask key is 256 bits")
    _check_modulus(modulus)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()
    words: Words = np.frombuffer(encryptor.update(bytes(4 * size)), dtype="<u4")
    if modulus < 2**32:
        words = words & np.uint32(modulus - 1)
    return words


def quantize(values: npt.NDArray[np.floating], clipping_range: float, levels: int) -> Words:
    """Map values in ``[-c, c]`` to integers in ``[0, levels]``.

    Raises
    ------
    ProtocolError
        If a value is outside the range or not finite (it would be clipped:
        callers check first and refuse to send such an update).
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(flat)) or (
        flat.size and float(np.max(np.abs(flat))) > clipping_range
    ):
        raise ProtocolError("a value to be masked is outside the clipping range")
    scaled = np.rint((flat + clipping_range) * (levels / (2.0 * clipping_range)))
    return scaled.astype(np.uint32)


def dequantize_sum(
    total: npt.NDArray[np.integer], contributors: int, clipping_range: float, levels: int
) -> npt.NDArray[np.float64]:
    """The sum of ``contributors`` values from the sum of their quantized forms."""
    step = 2.0 * clipping_range / levels
    return np.asarray(total, dtype=np.float64) * step - contributors * clipping_range


def encode_contribution(
    arrays: list[npt.NDArray[np.floating]], ratio: float, clipping_range: float, levels: int
) -> Words:
    """What an institution masks: its quantized weight, then its quantized weighted update.

    The weight ``ratio = n_i / max-weight`` becomes the integer
    ``round(ratio * levels)`` (entry 0, exact in the sum), and the update is
    multiplied by that rounded weight before quantization, as in Flower's
    SecAgg+, so :func:`secagg.params.aggregation_error_bound` holds. The
    weight travels only inside the masked vector: the server learns the sum
    of the weights (to average by), never one institution's example count.
    """
    q_ratio = round(ratio * levels)
    if not 1 <= q_ratio <= levels:
        raise ProtocolError("the weight must be in (0, 1]: an example count in [1, max-weight]")
    rounded = q_ratio / levels
    flat = np.concatenate(
        [np.zeros(0)] + [np.asarray(a, dtype=np.float64).ravel() * rounded for a in arrays]
    )
    return np.concatenate(
        [np.array([q_ratio], dtype=np.uint32), quantize(flat, clipping_range, levels)]
    )


def decode_sum(
    total: Words, contributors: int, clipping_range: float, levels: int
) -> tuple[float, npt.NDArray[np.float64]]:
    """The sum of weights and the weighted mean, from the unmasked sum of contributions."""
    weight = int(total[0]) / levels
    if not weight > 0:
        raise CryptoError("the unmasked sum has no weight; aggregation failed")
    values = dequantize_sum(total[1:], contributors, clipping_range, levels)
    return weight, values / weight


#: Bits per limb of an exactly summed integer.
LIMB_BITS = 16
#: Limbs per integer: values are summed modulo ``2**(LIMB_BITS * LIMBS)``.
LIMBS = 3
#: Largest magnitude (exclusive) of an integer an institution may send, and of a sum.
INTEGER_LIMIT = 2 ** (LIMB_BITS * LIMBS - 1)


def encode_integers(values: npt.ArrayLike) -> Words:
    """Limbs of signed integers for an exact secure sum (``LIMBS`` words per value).

    Raises
    ------
    ProtocolError
        If a value is not a whole number or its magnitude reaches
        :data:`INTEGER_LIMIT`.
    """
    raw = np.asarray(values)
    if raw.dtype.kind not in "iu":
        raise ProtocolError("an exact sum takes whole numbers only")
    flat = raw.astype(np.int64).ravel()
    if flat.size and int(np.max(np.abs(flat))) >= INTEGER_LIMIT:
        raise ProtocolError("a value to be summed exactly is outside (-2**47, 2**47)")
    # Two's complement modulo 2**48, then LIMBS little-endian limbs per value.
    unsigned = flat.astype(np.uint64) & np.uint64(2 * INTEGER_LIMIT - 1)
    mask = np.uint64(2**LIMB_BITS - 1)
    limbs = [(unsigned >> np.uint64(LIMB_BITS * i)) & mask for i in range(LIMBS)]
    return np.stack(limbs, axis=1).ravel().astype(np.uint32)


def decode_integer_sum(total: Words, contributors: int) -> npt.NDArray[np.int64]:
    """The exact sum of the contributors' integers, from the unmasked sum of their limbs."""
    words = np.asarray(total, dtype=np.uint64)
    if words.size % LIMBS:
        raise ProtocolError(f"an exact sum has a multiple of {LIMBS} words, found {words.size}")
    if words.size and int(words.max()) > contributors * (2**LIMB_BITS - 1):
        raise CryptoError("the unmasked limbs exceed what the contributors could send; unmasking failed")
    limbs = words.reshape(-1, LIMBS)
    value = np.zeros(limbs.shape[0], dtype=np.uint64)
    for i in range(LIMBS):
        value += limbs[:, i] << np.uint64(LIMB_BITS * i)  # < 2**64 while contributors < 2**16
    value &= np.uint64(2 * INTEGER_LIMIT - 1)
    signed = value.astype(np.int64)
    return np.where(signed >= INTEGER_LIMIT, signed - 2 * INTEGER_LIMIT, signed)


def shape_text(array: npt.ArrayLike) -> str:
    """Wire form of an array's shape: ``"3,4"``, or ``"scalar"``."""
    return ",".join(str(d) for d in np.shape(array)) or "scalar"


def unflatten(flat: npt.NDArray[Any], shapes: list[str]) -> list[npt.NDArray[Any]]:
    """Cut a decoded vector into arrays of the given wire shapes.

    Raises
    ------
    ProtocolError
        If the shapes do not cover the vector exactly.
    """
    arrays, start = [], 0
    for text in shapes:
        shape = () if text == "scalar" else tuple(int(d) for d in text.split(","))
        count = int(np.prod(shape)) if shape else 1
        arrays.append(flat[start : start + count].reshape(shape))
        start += count
    if start != flat.size:
        raise ProtocolError("the shapes do not cover the summed vector")
    return arrays


def add_mod(total: Words, words: Words, modulus: int, sign: int = 1) -> Words:
    """``total + sign * words`` modulo ``modulus`` (a power of two <= 2**32)."""
    if sign == 1:
        out = total + words  # uint32 wraps modulo 2**32
    else:
        out = total - words
    if modulus < 2**32:
        out &= np.uint32(modulus - 1)
    return out


def pack(words: Words) -> bytes:
    """Wire form of a masked vector: little-endian uint32, 4 bytes per entry."""
    return np.ascontiguousarray(words, dtype="<u4").tobytes()


def unpack(data: bytes, size: int, modulus: int) -> Words:
    """Parse a masked vector of ``size`` entries; refuse any other length or range."""
    if not isinstance(data, bytes) or len(data) != 4 * size:
        raise ProtocolError(f"masked vector must be {4 * size} bytes")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    if modulus < 2**32 and words.size and int(words.max()) >= modulus:
        raise ProtocolError("masked vector has entries outside the modulus")
    return words


def _check_modulus(modulus: int) -> None:
    if not 2 <= modulus <= 2**32 or modulus & (modulus - 1):
        raise CryptoError("the modulus must be a power of two <= 2**32")
