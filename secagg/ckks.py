"""CKKS layer of the ``ckks`` aggregation mode (TenSEAL; Flower-free, no I/O).

In ``ckks`` mode every institution also encrypts its SecAgg+-masked words
(:data:`secagg.masks.Words`, integers in ``[0, M)``) under a CKKS key that
only the institutions hold, so the server adds ciphertexts and never sees
even the masked aggregate. The institutions decrypt the sum, round each slot
to the nearest integer and reduce modulo ``M``: the sum of ``n`` words is an
exact integer below ``n * M``, and the CKKS noise (measured below 0.01 for
128 contributors) vanishes in the rounding. :func:`decrypt_words` refuses a
sum whose slots are not whole numbers in range (an altered or foreign sum).

Pieces, in the order a round uses them:

1. :class:`CKKSKeys` (institutions): a *symmetric-key* CKKS context, add-only
   (no Galois, no relinearization keys). It travels between institutions only
   inside :func:`seal_secret` envelopes.
2. :meth:`CKKSKeys.public_context` / :meth:`PublicCKKS.load` (server): the
   parameters without any key, pinned by :meth:`CKKSKeys.context_hash`.
3. :func:`encrypt_words` (institution), :func:`sign_contribution` over
   :func:`contribution_digest`; the server checks :func:`verify_contribution`
   and :meth:`PublicCKKS.load_contribution`, then :meth:`PublicCKKS.add`.
4. :func:`decrypt_words` (institution) on the sum the server returns.

Why symmetric encryption: the institutions hold the secret key anyway, and
in TenSEAL 0.3.18 (SEAL 4) a symmetric encryption of 2048 words takes about
half the time of a public-key one (no ``u * pk`` products, no modulus switch
from the special prime) with about a seventh of the noise (worst slot error of
a sum of 32 ciphertexts of random 32-bit words: about 0.003 vs 0.02; of 128:
0.006 vs 0.045). The server only adds, which needs the parameters and no key;
without a public key it cannot encrypt values of its own.

A CKKS ciphertext is malleable and one encrypted under another key set with
the same parameters parses fine: parsing checks structure, not origin. Each
contribution is therefore signed by its institution's Ed25519 key over
:func:`contribution_digest`, and the server must check it before adding.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import tenseal as ts
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.errors import ConfigError, CryptoError, ProtocolError

from .masks import Words

#: Protocol name and version of every artifact of this module.
PROTOCOL = "fedfraud-ckks/1"


class Marker(bytes, Enum):
    """Domain-separation prefixes, one per kind of artifact or derivation."""

    SECRET_CONTEXT = b"fedfraud-ckks/1/secret-context\x00"
    PUBLIC_CONTEXT = b"fedfraud-ckks/1/public-context\x00"
    KEY_ID = b"fedfraud-ckks/1/key-id\x00"
    CONTRIBUTION = b"fedfraud-ckks/1/contribution\x00"
    SEAL_KDF = b"fedfraud-ckks/1/seal-kdf\x00"
    SEAL_SIGNATURE = b"fedfraud-ckks/1/seal-signature\x00"


#: Version byte that opens a sealed-secret envelope (see :func:`seal_secret`).
ENVELOPE_VERSION = b"\x01"

# Largest total coefficient modulus (bits) per ring degree for 128-bit classical
# security with a ternary secret: HomomorphicEncryption.org Security Standard
# (Albrecht et al., November 2018), Table 1. SEAL enforces the same table.
_MAX_MODULUS_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
# SEAL's ciphertext header and metadata plus TenSEAL's protobuf framing take
# about 150 bytes; zstd adds at most 1/256 to incompressible data.
_CIPHERTEXT_SLACK = 1024
_KEY_ID_BYTES = 32
_PUBLIC_CONTEXT_MAX = 16 * 1024
_OPAQUE_SECRET = "the CKKS secret context is malformed or does not match {name}"
_OPAQUE_ENVELOPE = "the sealed secret cannot be opened"
_RAW = serialization.Encoding.Raw
# What pybind11 turns TenSEAL's and SEAL's C++ exceptions into: invalid_argument,
# domain, length and range errors -> ValueError; out_of_range -> IndexError;
# overflow_error -> OverflowError; bad_alloc -> MemoryError; any other std::exception
# (logic_error, runtime_error, protobuf failures) -> RuntimeError; bad argument types
# -> TypeError.
_TENSEAL_ERRORS = (ValueError, RuntimeError, TypeError, IndexError, OverflowError, MemoryError)


@dataclass(frozen=True)
class CKKSParameters:
    """A CKKS parameter set for exact sums of integer words.

    Parameters
    ----------
    poly_modulus_degree : int
        Ring degree ``N``; a ciphertext holds ``N / 2`` slots.
    coeff_mod_bit_sizes : tuple[int, ...]
        Bit sizes of the RNS primes. The last is SEAL's special prime (key
        switching only); fresh ciphertexts live modulo the others.
    scale_bits : int
        Values are encoded times ``2**scale_bits``.
    name : str
        Name and version of the set; in every context and contribution digest.
    """

    poly_modulus_degree: int = 4096
    # 60 + 49 = 109 bits at N = 4096: the 128-bit classical bound of the
    # HomomorphicEncryption.org Security Standard (Albrecht et al., Nov 2018,
    # Table 1, ternary secret: n = 4096, log q <= 109).
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 49)
    scale_bits: int = 20
    name: str = "ckks-n4096-q109/v1"

    def __post_init__(self) -> None:
        n, bits = self.poly_modulus_degree, self.coeff_mod_bit_sizes
        limit = _MAX_MODULUS_BITS_128.get(n)
        if limit is None:
            raise ConfigError(
                f"CKKS poly_modulus_degree must be one of {sorted(_MAX_MODULUS_BITS_128)}"
            )
        if len(bits) < 2 or any(not 20 <= b <= 60 for b in bits):
            raise ConfigError("CKKS coeff_mod_bit_sizes needs >= 2 primes of 20..60 bits")
        if sum(bits) > limit:
            raise ConfigError(
                f"CKKS modulus of {sum(bits)} bits at N={n} is above the 128-bit bound {limit}"
            )
        # Below 2**20 the fresh noise (about 2**-13 per slot) nears the 0.25
        # rounding margin of large sums; above, the values need 20 bits of room.
        if self.scale_bits < 20 or self.data_bits - 1 - self.scale_bits < 20:
            raise ConfigError("CKKS scale_bits must be >= 20 and leave 20 bits for the values")
        if not self.name or not self.name.isascii() or len(self.name) > 255:
            raise ConfigError("CKKS parameter name must be 1..255 ASCII characters")

    @property
    def slots(self) -> int:
        """Values per ciphertext (``N / 2``)."""
        return self.poly_modulus_degree // 2

    @property
    def data_bits(self) -> int:
        """Bits of the modulus fresh ciphertexts live under (all but the special prime)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def value_bound(self) -> int:
        """Decoded integers must stay below this (``value * scale < q / 2``).

        With the default set: ``2**39``, as ``value * 2**20 < 2**59`` and the
        60-bit data prime is ``2**60 - 16383``. A plaintext coefficient is at
        most the largest slot times the scale, so no sum below the bound wraps.
        """
        # Double precision also bounds the exact integers that decode (2**52).
        return 1 << min(self.data_bits - 1 - self.scale_bits, 52)

    @property
    def ciphertext_cap(self) -> int:
        """Largest accepted serialized ciphertext of one chunk, in bytes."""
        data_primes = len(self.coeff_mod_bit_sizes) - 1
        raw = 2 * self.poly_modulus_degree * data_primes * 8
        return raw + raw // 256 + _CIPHERTEXT_SLACK

    def max_contributors(self, modulus: int) -> int:
        """Most contributions of words modulo ``modulus`` whose sum decodes exactly."""
        _check_modulus(modulus)
        return self.value_bound // modulus

    def check_capacity(self, contributors: int, modulus: int) -> None:
        """Check that sums of ``contributors`` words modulo ``modulus`` decode exactly.

        Raises
        ------
        ProtocolError
            If ``contributors * modulus`` exceeds :attr:`value_bound`.
        """
        if isinstance(contributors, bool) or not isinstance(contributors, int) or contributors < 1:
            raise ProtocolError("the number of CKKS contributors must be a positive integer")
        most = self.max_contributors(modulus)
        if contributors > most:
            raise ProtocolError(
                f"{self.name}: {contributors} contributors of words modulo 2**"
                f"{modulus.bit_length() - 1} would overflow the CKKS plaintext "
                f"(at most {most}; sums must stay below 2**{self.value_bound.bit_length() - 1})"
            )

    def chunks(self, size: int) -> int:
        """Ciphertexts needed for ``size`` words."""
        return math.ceil(size / self.slots)

    def _new_context(self) -> Any:
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=self.poly_modulus_degree,
            coeff_mod_bit_sizes=list(self.coeff_mod_bit_sizes),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
            n_threads=1,
        )
        context.global_scale = float(2**self.scale_bits)
        return context


DEFAULT_PARAMETERS = CKKSParameters()


class CKKSKeys:
    """An institution's CKKS secret context (symmetric, add-only).

    Create with :meth:`generate` (one institution, once per key epoch) or
    :meth:`from_secret_bytes` (the others, after :func:`open_secret`).
    """

    def __init__(self, params: CKKSParameters, context: Any, raw_secret: bytes) -> None:
        # Private: use generate() or from_secret_bytes(), which check the context.
        self.params = params
        self._context = context
        self._raw_secret = raw_secret
        self._key_id = hashlib.sha256(Marker.KEY_ID.value + raw_secret).digest()

    def __repr__(self) -> str:
        return f"CKKSKeys({self.params.name}, context {self.context_hash()[:16]}...)"

    @classmethod
    def generate(cls, params: CKKSParameters = DEFAULT_PARAMETERS) -> CKKSKeys:
        """A fresh secret key (SEAL's CSPRNG), without Galois or relinearization keys."""
        # TenSEAL creates relinearization keys with every new context; they are
        # left out of the serialization and the context is rebuilt from it,
        # so what is held is exactly what is sealed to the others.
        raw = params._new_context().serialize(
            save_public_key=False,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return cls.from_secret_bytes(_frame(Marker.SECRET_CONTEXT, params, raw), params)

    @classmethod
    def from_secret_bytes(cls, data: bytes, params: CKKSParameters) -> CKKSKeys:
        """Load a secret context made by :meth:`secret_bytes`.

        Raises
        ------
        CryptoError
            One opaque message whatever is wrong: marker, parameter set, no
            secret key, Galois or relinearization keys, unparsable bytes.
        """
        opaque = _OPAQUE_SECRET.format(name=params.name)
        raw = _unframe(Marker.SECRET_CONTEXT, params, data)
        if raw is None:
            raise CryptoError(opaque)
        try:
            context = ts.context_from(raw, n_threads=1)
        except _TENSEAL_ERRORS:
            raise CryptoError(opaque) from None
        if not context.is_private() or _context_problem(context, params) is not None:
            raise CryptoError(opaque)
        return cls(params, context, raw)

    def secret_bytes(self) -> bytes:
        """The secret context, marked; only ever to be passed to :func:`seal_secret`."""
        return _frame(Marker.SECRET_CONTEXT, self.params, self._raw_secret)

    def public_context(self) -> bytes:
        """What the server gets: parameters and a key identifier, no key.

        Layout: :attr:`Marker.PUBLIC_CONTEXT` | name length (1 byte) | name |
        key id (32 bytes) | TenSEAL context without any key. A symmetric
        context has no public key, so TenSEAL's part is the same for every key
        set with these parameters; the key id, ``SHA-256(Marker.KEY_ID |
        secret context)``, a key check value, tells key sets apart.
        """
        raw = self._context.serialize(
            save_public_key=False,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        return _frame(Marker.PUBLIC_CONTEXT, self.params, self._key_id + raw)

    def context_hash(self) -> str:
        """SHA-256 (hex) of :meth:`public_context`; stable for the same keys.

        TenSEAL's serialization of a context (and of a secret key reloaded
        from it) is deterministic, so every institution holding these keys
        computes the same hash and can pin it.
        """
        return hashlib.sha256(self.public_context()).hexdigest()


@dataclass(frozen=True)
class Contribution:
    """One institution's encrypted words, checked by :meth:`PublicCKKS.load_contribution`.

    Only the :class:`PublicCKKS` that loaded it adds it.
    """

    size: int
    context_hash: str
    vectors: tuple[Any, ...] = field(repr=False)
    loaded_by: object = field(repr=False, compare=False)


class PublicCKKS:
    """The server's side: a keyless context that parses and adds ciphertexts.

    Load with :meth:`load`. It cannot decrypt, nor encrypt.
    """

    def __init__(self, params: CKKSParameters, context: Any, context_hash: str) -> None:
        # Private: use load(), which checks the context.
        self.params = params
        self.context_hash = context_hash
        self._context = context

    def __repr__(self) -> str:
        return f"PublicCKKS({self.params.name}, context {self.context_hash[:16]}...)"

    @classmethod
    def load(
        cls,
        data: bytes,
        expected_hash: str | None,
        params: CKKSParameters,
        max_bytes: int = _PUBLIC_CONTEXT_MAX,
    ) -> PublicCKKS:
        """Load and check a public context from :meth:`CKKSKeys.public_context`.

        ``expected_hash`` is the :meth:`CKKSKeys.context_hash` the caller
        pinned; ``None`` skips that check and leaves binding the context to
        the institutions' keys to the caller.

        Raises
        ------
        CryptoError
            If the context is too large, unmarked, of another parameter set,
            not the pinned one, unparsable, or carries a secret key, a public
            key, Galois keys or relinearization keys.
        """
        # 1. Size and marker, before anything parses the bytes.
        if not isinstance(data, bytes) or len(data) > max_bytes:
            raise CryptoError(f"the CKKS public context must be bytes of at most {max_bytes}")
        body = _unframe(Marker.PUBLIC_CONTEXT, params, data)
        if body is None or len(body) <= _KEY_ID_BYTES:
            raise CryptoError(f"not a {PROTOCOL} public context for {params.name}")
        # 2. The pinned hash (constant time).
        context_hash = hashlib.sha256(data).hexdigest()
        if expected_hash is not None:
            if not isinstance(expected_hash, str) or not _is_sha256_hex(expected_hash):
                raise CryptoError("the expected CKKS context hash must be 64 hex digits")
            if not hmac.compare_digest(context_hash, expected_hash.lower()):
                raise CryptoError("the CKKS public context is not the one pinned")
        # 3. No key of any kind in TenSEAL's part, read from its protobuf
        #    framing *before* TenSEAL parses it: the server never deserializes
        #    a secret key, even one hidden in a context marked public.
        _check_keyless(body[_KEY_ID_BYTES:])
        # 4. TenSEAL's part parses, holds no key of any kind, matches the parameters.
        try:
            context = ts.context_from(body[_KEY_ID_BYTES:], n_threads=1)
        except _TENSEAL_ERRORS as exc:
            raise CryptoError("the CKKS public context cannot be parsed") from exc
        if context.is_private():
            raise CryptoError("the CKKS public context carries a secret key; refused")
        problem = _context_problem(context, params)
        if problem is not None:
            raise CryptoError(f"the CKKS public context {problem}; refused")
        return cls(params, context, context_hash)

    def load_contribution(self, blobs: Sequence[bytes], size: int) -> Contribution:
        """Parse one institution's ciphertexts of ``size`` words, checking every field first.

        Check the contribution's signature (:func:`verify_contribution`)
        before this: parsing cannot tell a bit-flipped or foreign ciphertext
        from a genuine one.

        Raises
        ------
        ProtocolError
            Naming what is wrong (count, type, size cap, framing, chunk length,
            scale, parameter set or level), never the content.
        """
        vectors = _parse_vectors(self._context, self.params, blobs, size, "contribution")
        return Contribution(size, self.context_hash, tuple(vectors), loaded_by=self)

    def add(self, contributions: Sequence[Contribution]) -> list[bytes]:
        """Homomorphic sum of contributions; the serialized ciphertexts of the sum.

        Raises
        ------
        ProtocolError
            If there is no contribution, or they differ in size or were not
            loaded under this context.
        """
        if isinstance(contributions, Contribution) or not contributions:
            raise ProtocolError("the CKKS sum needs a non-empty sequence of contributions")
        first = contributions[0]
        for index, item in enumerate(contributions):
            if not isinstance(item, Contribution) or item.loaded_by is not self:
                raise ProtocolError(f"contribution {index} was not loaded by this PublicCKKS")
            if item.size != first.size:
                raise ProtocolError(
                    f"contribution {index} has {item.size} words, contribution 0 has {first.size}"
                )
        if len(contributions) == 1:
            return [vector.serialize() for vector in first.vectors]
        # The first addition makes new vectors (TenSEAL's copy() needs a secret
        # key); the others add into them, leaving the contributions unchanged.
        sums = [a.add(b) for a, b in zip(first.vectors, contributions[1].vectors, strict=True)]
        for item in contributions[2:]:
            for total, vector in zip(sums, item.vectors, strict=True):
                total.add_(vector)
        return [total.serialize() for total in sums]


def encrypt_words(keys: CKKSKeys, words: Words) -> list[bytes]:
    """Encrypt masked words under the institutions' key, ``slots`` words per ciphertext.

    Words are integers below 2**32, exact as float64. The caller's array is
    not modified.

    Raises
    ------
    ProtocolError
        If ``words`` is not a non-empty one-dimensional ``uint32`` array.
    """
    if not isinstance(words, np.ndarray) or words.dtype != np.uint32 or words.ndim != 1:
        raise ProtocolError("CKKS encrypts a one-dimensional uint32 array of words")
    if words.size == 0:
        raise ProtocolError("CKKS cannot encrypt an empty vector of words")
    params, context = keys.params, keys._context
    scale = float(2**params.scale_bits)
    values = words.astype(np.float64)
    # One ciphertext per chunk, from a Python list: TenSEAL converts a list of
    # floats fastest, and a one-chunk vector serializes on its own.
    return [
        ts.ckks_vector(context, values[start : start + params.slots].tolist(), scale).serialize()
        for start in range(0, values.size, params.slots)
    ]


def decrypt_words(
    keys: CKKSKeys, blobs: Sequence[bytes], size: int, modulus: int, contributors: int
) -> Words:
    """Decrypt the sum of ``contributors`` contributions; the words of the sum modulo ``modulus``.

    Raises
    ------
    ProtocolError
        If the blobs are malformed (count, type, size, framing, chunk length,
        scale, level; the server is not trusted), or the capacity is exceeded.
    CryptoError
        If a slot is not within 0.25 of a whole number in
        ``[0, contributors * (modulus - 1)]``: the sum was altered or built from
        foreign ciphertexts.
    """
    params = keys.params
    params.check_capacity(contributors, modulus)
    vectors = _parse_vectors(keys._context, params, blobs, size, "encrypted sum")
    parts = []
    for vector in vectors:
        try:
            parts.append(np.asarray(vector.decrypt(), dtype=np.float64))
        except _TENSEAL_ERRORS:
            raise CryptoError("the encrypted sum cannot be decrypted") from None
    values = np.concatenate(parts)
    rounded = np.rint(values)
    top = contributors * (modulus - 1)
    if (
        values.shape != (size,)
        or not np.all(np.isfinite(values))
        or not np.all(np.abs(values - rounded) <= 0.25)
        or not np.all((rounded >= 0) & (rounded <= top))
    ):
        raise CryptoError(
            "the encrypted sum does not decode to whole words; "
            "it was altered or built from foreign ciphertexts"
        )
    return (rounded.astype(np.int64) & (modulus - 1)).astype(np.uint32)


# -- contribution signatures -------------------------------------------------------------


def contribution_digest(binding: bytes, context_hash: str, blobs: Sequence[bytes]) -> bytes:
    """SHA-256 of what an institution signs for its encrypted contribution.

    Domain-separated (:attr:`Marker.CONTRIBUTION`) and length-prefixed: the
    round binding, the pinned context hash, the number of ciphertexts and each
    ciphertext.
    """
    if not isinstance(binding, bytes) or not isinstance(context_hash, str):
        raise ProtocolError("a contribution digest takes the binding bytes and the context hash")
    if not _is_sha256_hex(context_hash):
        raise ProtocolError("the context hash must be 64 hex digits")
    if isinstance(blobs, (bytes, str)) or not all(isinstance(b, bytes) for b in blobs):
        raise ProtocolError("a contribution is a sequence of bytes")
    digest = hashlib.sha256(Marker.CONTRIBUTION.value)
    for part in (binding, context_hash.lower().encode("ascii")):
        digest.update(_lp(part))
    digest.update(struct.pack(">Q", len(blobs)))
    for blob in blobs:
        digest.update(_lp(blob))
    return digest.digest()


def sign_contribution(
    signing_key: Ed25519PrivateKey, binding: bytes, context_hash: str, blobs: Sequence[bytes]
) -> bytes:
    """The institution's Ed25519 signature over :func:`contribution_digest`."""
    return signing_key.sign(contribution_digest(binding, context_hash, blobs))


def verify_contribution(
    public_key: Ed25519PublicKey,
    signature: bytes,
    binding: bytes,
    context_hash: str,
    blobs: Sequence[bytes],
) -> None:
    """Check a contribution's signature against the institution's pinned key.

    Raises
    ------
    CryptoError
        If it does not verify (altered ciphertext, another context, round or
        institution).
    """
    digest = contribution_digest(binding, context_hash, blobs)
    if not isinstance(signature, bytes):
        raise CryptoError("the CKKS contribution signature does not verify")
    try:
        public_key.verify(signature, digest)
    except InvalidSignature:
        raise CryptoError("the CKKS contribution signature does not verify") from None


# -- key ceremony envelope ---------------------------------------------------------------

_NONCE_BYTES = 12
_SIGNATURE_BYTES = 64
_HEADER_BYTES = len(ENVELOPE_VERSION) + 32 + _NONCE_BYTES


def seal_secret(
    secret: bytes, recipient_public: bytes, sender_signing: Ed25519PrivateKey, context: bytes
) -> bytes:
    """Encrypt ``secret`` to one recipient, signed by the sender (ECIES-style).

    An ephemeral X25519 key agrees a secret with the recipient's key (RFC
    7748); HKDF-SHA256 (RFC 5869) derives an AES-256-GCM key with ``info =
    Marker.SEAL_KDF | len | context | ephemeral public | recipient public``;
    the header is the associated data. The sender's Ed25519 key (RFC 8032)
    signs ``Marker.SEAL_SIGNATURE | len | context | recipient public |
    header | ciphertext``.

    Layout: version (1 byte, ``0x01``) | ephemeral X25519 public (32) |
    nonce (12) | Ed25519 signature (64) | AES-GCM ciphertext and tag.
    """
    if not isinstance(secret, bytes) or not isinstance(context, bytes):
        raise CryptoError("seal_secret takes bytes")
    if not isinstance(recipient_public, bytes) or len(recipient_public) != 32:
        raise CryptoError("the recipient key must be a raw 32-byte X25519 public key")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError:
        raise CryptoError("the recipient key is not a usable X25519 public key") from None
    header = ENVELOPE_VERSION + ephemeral_public + os.urandom(_NONCE_BYTES)
    key = _envelope_key(shared, context, ephemeral_public, recipient_public)
    ciphertext = AESGCM(key).encrypt(header[-_NONCE_BYTES:], secret, header)
    signature = sender_signing.sign(
        _envelope_payload(context, recipient_public, header, ciphertext)
    )
    return header + signature + ciphertext


def open_secret(
    envelope: bytes,
    recipient_private: X25519PrivateKey,
    sender_public: Ed25519PublicKey,
    context: bytes,
) -> bytes:
    """Verify the sender's signature, then decrypt a :func:`seal_secret` envelope.

    Raises
    ------
    CryptoError
        One opaque message for every failure (no oracle).
    """
    if (
        not isinstance(envelope, bytes)
        or not isinstance(context, bytes)
        or len(envelope) < _HEADER_BYTES + _SIGNATURE_BYTES + 16
        or envelope[:1] != ENVELOPE_VERSION
    ):
        raise CryptoError(_OPAQUE_ENVELOPE)
    header = envelope[:_HEADER_BYTES]
    signature = envelope[_HEADER_BYTES : _HEADER_BYTES + _SIGNATURE_BYTES]
    ciphertext = envelope[_HEADER_BYTES + _SIGNATURE_BYTES :]
    recipient_public = recipient_private.public_key().public_bytes(
        _RAW, serialization.PublicFormat.Raw
    )
    ephemeral_public = header[1 : 1 + 32]
    try:
        # 1. The sender's signature over the whole envelope, for this recipient and context.
        sender_public.verify(
            signature, _envelope_payload(context, recipient_public, header, ciphertext)
        )
        # 2. Only then the key agreement and the authenticated decryption.
        shared = recipient_private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        key = _envelope_key(shared, context, ephemeral_public, recipient_public)
        return AESGCM(key).decrypt(header[-_NONCE_BYTES:], ciphertext, header)
    except (InvalidSignature, InvalidTag, ValueError):
        raise CryptoError(_OPAQUE_ENVELOPE) from None


def _envelope_key(
    shared: bytes, context: bytes, ephemeral_public: bytes, recipient_public: bytes
) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=Marker.SEAL_KDF.value + _lp(context) + ephemeral_public + recipient_public,
    ).derive(shared)


def _envelope_payload(
    context: bytes, recipient_public: bytes, header: bytes, ciphertext: bytes
) -> bytes:
    return Marker.SEAL_SIGNATURE.value + _lp(context) + recipient_public + header + ciphertext


# -- helpers -----------------------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    """Length-prefixed bytes (8-byte big-endian length)."""
    return struct.pack(">Q", len(data)) + data


def _frame(marker: Marker, params: CKKSParameters, body: bytes) -> bytes:
    name = params.name.encode("ascii")
    return marker.value + bytes([len(name)]) + name + body


def _unframe(marker: Marker, params: CKKSParameters, data: bytes) -> bytes | None:
    """The body after ``marker`` and ``params.name``; ``None`` if either differs."""
    prefix = _frame(marker, params, b"")
    if not isinstance(data, bytes) or not data.startswith(prefix):
        return None
    return data[len(prefix) :]


def _is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def _check_modulus(modulus: int) -> None:
    if isinstance(modulus, bool) or not isinstance(modulus, int):
        raise ProtocolError("the modulus must be an integer")
    if not 2 <= modulus <= 2**32 or modulus & (modulus - 1):
        raise ProtocolError("the modulus must be a power of two <= 2**32")


@functools.lru_cache(maxsize=4)
def _reference_seal(params: CKKSParameters) -> Any:
    """SEAL's view of a reference context of ``params`` (made once per process: ~18 ms)."""
    context = params._new_context()
    _REFERENCES.append(context)  # keeps the TenSEAL context behind the SEAL view alive
    return context.seal_context().data


_REFERENCES: list[Any] = []


def _context_problem(context: Any, params: CKKSParameters) -> str | None:
    """What makes a loaded TenSEAL context unfit for ``params``; ``None`` if nothing."""
    # TenSEAL 0.3.18 has no getter for the encryption type; has_public_key()
    # refuses (ValueError) a symmetric context and answers for an asymmetric one.
    try:
        context.data.has_public_key()
    except ValueError:
        pass
    else:
        return "is not a symmetric-key context"
    if context.has_galois_keys():
        return "carries Galois keys"
    if context.has_relin_keys():
        return "carries relinearization keys"
    # SEAL's parms_id hashes the scheme, ring degree and every prime, so equal
    # ids at the key and data levels mean the same parameter set.
    reference = _reference_seal(params)
    seal = context.seal_context().data
    if (
        seal.key_parms_id() != reference.key_parms_id()
        or seal.first_parms_id() != reference.first_parms_id()
    ):
        return f"is not of the parameter set {params.name}"
    try:
        scale = context.global_scale
    except ValueError:
        return "has no scale"
    if scale != float(2**params.scale_bits):
        return f"does not use the scale 2**{params.scale_bits}"
    return None


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(data):
            raise ValueError("truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ValueError("varint too long")


def _vector_layout(blob: bytes) -> tuple[list[int], int, float]:
    """Chunk lengths, ciphertext count and scale of a serialized TenSEAL ``CKKSVectorProto``.

    A strict reader of the protobuf wire format, run before TenSEAL sees the
    bytes: field 1 (packed ``sizes``), field 2 (``ciphertexts``), field 3
    (``scale``, a double); any other field or wire type is refused.
    """
    sizes: list[int] = []
    count, scale, pos = 0, float("nan"), 0
    while pos < len(blob):
        key, pos = _read_varint(blob, pos)
        if key == 0x0A or key == 0x12:  # fields 1 and 2, length-delimited
            length, pos = _read_varint(blob, pos)
            end = pos + length
            if end > len(blob):
                raise ValueError("truncated")
            if key == 0x0A:
                while pos < end:
                    value, pos = _read_varint(blob, pos)
                    sizes.append(value)
                if pos != end:
                    raise ValueError("bad packed field")
            else:
                count += 1
            pos = end
        elif key == 0x19:  # field 3, 64-bit
            if pos + 8 > len(blob):
                raise ValueError("truncated")
            (scale,) = struct.unpack_from("<d", blob, pos)
            pos += 8
        else:
            raise ValueError("unexpected field")
    return sizes, count, scale


def _parse_vectors(
    context: Any, params: CKKSParameters, blobs: Sequence[bytes], size: int, what: str
) -> list[Any]:
    """Check and parse ``blobs`` as the ciphertexts of ``size`` words.

    Raises ProtocolError naming the fault (never the content).
    """
    # 1. The shape of the sequence.
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ProtocolError(f"{what}: the number of words must be a positive integer")
    if isinstance(blobs, (bytes, bytearray, str)) or not isinstance(blobs, Sequence):
        raise ProtocolError(f"{what}: expected a sequence of ciphertexts")
    expected = params.chunks(size)
    if len(blobs) != expected:
        raise ProtocolError(
            f"{what}: expected {expected} ciphertexts for {size} words, got {len(blobs)}"
        )
    scale = float(2**params.scale_bits)
    cap = params.ciphertext_cap
    fresh_level = context.seal_context().data.first_parms_id()
    vectors = []
    for index, blob in enumerate(blobs):
        where = f"{what}: ciphertext {index + 1} of {expected}"
        length = params.slots if index < expected - 1 else size - params.slots * (expected - 1)
        # 2. Type and size cap, before any parsing.
        if not isinstance(blob, bytes):
            raise ProtocolError(f"{where} is not bytes")
        if len(blob) > cap:
            raise ProtocolError(f"{where} has {len(blob)} bytes, over the cap of {cap}")
        # 3. TenSEAL's framing: one chunk of the expected length, at the expected scale.
        try:
            sizes, count, wire_scale = _vector_layout(blob)
        except ValueError as exc:
            raise ProtocolError(f"{where} is truncated or not a serialized CKKS vector") from exc
        if count != 1 or len(sizes) != 1:
            raise ProtocolError(f"{where} must hold exactly one ciphertext chunk")
        if sizes[0] != length:
            raise ProtocolError(f"{where} holds {sizes[0]} values, expected {length}")
        if wire_scale != scale:
            raise ProtocolError(f"{where} is not at the scale 2**{params.scale_bits}")
        # 4. SEAL's parse (checks the parameter id and every coefficient's range).
        try:
            vector = ts.ckks_vector_from(context, blob)
            (ciphertext,) = vector.ciphertext()
        except _TENSEAL_ERRORS as exc:
            raise ProtocolError(f"{where} is truncated or not a valid SEAL ciphertext") from exc
        # 5. A fresh-level, two-polynomial ciphertext of this parameter set.
        if (
            ciphertext.parms_id() != fresh_level
            or ciphertext.size() != 2
            or ciphertext.poly_modulus_degree() != params.poly_modulus_degree
            or ciphertext.coeff_modulus_size() != len(params.coeff_mod_bit_sizes) - 1
            or not ciphertext.is_ntt_form()
            or ciphertext.is_transparent()
        ):
            raise ProtocolError(f"{where} is not a fresh-level ciphertext of {params.name}")
        if ciphertext.scale != scale:
            raise ProtocolError(f"{where} is not at the scale 2**{params.scale_bits}")
        if vector.size() != length:
            raise ProtocolError(f"{where} holds {vector.size()} values, expected {length}")
        vectors.append(vector)
    return vectors


def model_id_of(blobs: Sequence[bytes]) -> str:
    """The id of a model decrypted from an encrypted sum: SHA-256 over its ciphertexts.

    Institutions keep the model under this id; the server names the model by
    it without ever holding it.
    """
    digest = hashlib.sha256(b"fedfraud-ckks/1/model-id")
    for blob in blobs:
        digest.update(len(blob).to_bytes(8, "big"))
        digest.update(blob)
    return digest.hexdigest()


#: TenSEAL 0.3.18's ``TenSEALContextProto``, as serialized: field 1 the
#: encryption parameters, 2 the public-key material (public, Galois and
#: relinearization keys), 3 the secret key, 4 the scale flag. Measured on
#: TenSEAL's own output.
_KEYLESS_FIELDS = {1, 4}
_PUBLIC_KEYS_FIELD = 2


def _check_keyless(raw: bytes) -> None:
    """Refuse a serialized TenSEAL context that carries a key, without parsing it as one.

    Reads the top-level protobuf fields only (tag, wire type, length) and
    refuses a secret-key field or any field it does not know.

    Raises
    ------
    CryptoError
        If the framing is malformed, or a secret key or unknown field is present.
    """
    position = 0
    while position < len(raw):
        tag, position = _varint(raw, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, position = _varint(raw, position)
            length = 0
        elif wire == 2:
            length, position = _varint(raw, position)
            if position + length > len(raw):
                raise CryptoError("the CKKS public context is truncated; refused")
            position += length
        else:
            raise CryptoError("the CKKS public context has an unknown field type; refused")
        # Public, Galois and relinearization keys (field 2) are not secret:
        # TenSEAL parses them and the checks after it refuse them by name.
        if number not in _KEYLESS_FIELDS | {_PUBLIC_KEYS_FIELD}:
            raise CryptoError("the CKKS public context carries a secret key or an unknown field; refused")


def _varint(raw: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(raw) or shift > 63:
            raise CryptoError("the CKKS public context is malformed; refused")
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, position
