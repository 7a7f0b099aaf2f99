"""The CKKS layer of the ``ckks`` aggregation mode: exact sums, strict parsing, sealed keys.

Real TenSEAL and real ``cryptography`` throughout. Invalid inputs are named
after the attack they stand for.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import numpy as np
import pytest
import tenseal as ts
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.errors import ConfigError, CryptoError, ProtocolError
from secagg import ckks
from secagg.ckks import (
    DEFAULT_PARAMETERS,
    CKKSKeys,
    CKKSParameters,
    PublicCKKS,
    contribution_digest,
    decrypt_words,
    encrypt_words,
    open_secret,
    seal_secret,
    sign_contribution,
    verify_contribution,
)

P = DEFAULT_PARAMETERS
M32 = 2**32
BINDING = b'{"federation":"fedfraud-test","round":3,"run":7,"task":"fit"}'


@pytest.fixture(scope="module")
def keys() -> CKKSKeys:
    return CKKSKeys.generate()


@pytest.fixture(scope="module")
def other_keys() -> CKKSKeys:
    """Another key set with the same parameters (another federation or epoch)."""
    return CKKSKeys.generate()


@pytest.fixture(scope="module")
def public(keys: CKKSKeys) -> PublicCKKS:
    return PublicCKKS.load(keys.public_context(), keys.context_hash(), P)


@pytest.fixture(scope="module")
def blobs(keys: CKKSKeys) -> list[bytes]:
    """A contribution of 2049 words: one full chunk and a one-word chunk."""
    return encrypt_words(keys, _words(2049, M32, seed=1))


def _words(size: int, modulus: int, seed: int) -> np.ndarray:
    # A seeded generator stands in for masked words in tests only.
    return np.random.default_rng(seed).integers(0, modulus, size, dtype=np.uint64).astype(np.uint32)


def _plain_sum(vectors: list[np.ndarray], modulus: int) -> np.ndarray:
    return (np.sum(np.stack(vectors).astype(np.uint64), axis=0) % modulus).astype(np.uint32)


def _raw_public(context: ts.Context, **saved: bool) -> bytes:
    """A TenSEAL context, framed as fedfraud's public context (for hostile variants)."""
    raw = context.serialize(
        save_public_key=saved.get("public", False),
        save_secret_key=saved.get("secret", False),
        save_galois_keys=saved.get("galois", False),
        save_relin_keys=saved.get("relin", False),
    )
    return ckks._frame(ckks.Marker.PUBLIC_CONTEXT, P, bytes(32) + raw)


# -- parameters --------------------------------------------------------------------------


def test_default_parameters_fit_128_contributions_of_32_bit_words() -> None:
    assert P.slots == 2048
    assert P.value_bound == 2**39
    assert P.max_contributors(2**32) == 128
    assert P.max_contributors(2**24) == 2**15
    P.check_capacity(128, 2**32)
    with pytest.raises(ProtocolError, match="overflow"):
        P.check_capacity(129, 2**32)
    with pytest.raises(ProtocolError, match="power of two"):
        P.max_contributors(3 * 2**20)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"coeff_mod_bit_sizes": (60, 50)},  # 110 bits at N=4096: below 128-bit security
        {"poly_modulus_degree": 3000},
        {"coeff_mod_bit_sizes": (60,)},
        {"scale_bits": 12},
        {"name": ""},
    ],
)
def test_unsafe_or_unusable_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CKKSParameters(**kwargs)  # type: ignore[arg-type]


# -- exact sums --------------------------------------------------------------------------


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(contributors=8, size=5000, modulus=2**32, seed=0)
@example(contributors=1, size=2049, modulus=2**32, seed=1)
@given(
    contributors=st.integers(min_value=1, max_value=8),
    size=st.sampled_from([1, 2047, 2048, 2049, 5000]),
    modulus=st.sampled_from([2**32, 2**24, 2**8]),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_decrypted_sum_is_the_plain_sum_modulo_m(
    keys: CKKSKeys, public: PublicCKKS, contributors: int, size: int, modulus: int, seed: int
) -> None:
    vectors = [_words(size, modulus, seed + i) for i in range(contributors)]
    loaded = [public.load_contribution(encrypt_words(keys, v), size) for v in vectors]
    total = decrypt_words(keys, public.add(loaded), size, modulus, contributors)
    assert total.dtype == np.uint32
    assert np.array_equal(total, _plain_sum(vectors, modulus))


def test_32_contributions_of_uniform_32_bit_words_decode_exactly(
    keys: CKKSKeys, public: PublicCKKS
) -> None:
    vectors = [_words(P.slots, M32, seed=100 + i) for i in range(32)]
    encrypted = public.add(
        [public.load_contribution(encrypt_words(keys, v), P.slots) for v in vectors]
    )
    # The raw CKKS error, read with TenSEAL directly: far below the 0.25 margin.
    raw = np.asarray(ts.ckks_vector_from(keys._context, encrypted[0]).decrypt())
    exact = np.sum(np.stack(vectors).astype(np.float64), axis=0)
    assert float(np.max(np.abs(raw - exact))) < 0.02
    assert np.array_equal(
        decrypt_words(keys, encrypted, P.slots, M32, 32), _plain_sum(vectors, M32)
    )


def test_the_largest_sum_the_capacity_allows_decodes_exactly(
    keys: CKKSKeys, public: PublicCKKS
) -> None:
    # 128 contributions of the largest word in every slot: the largest
    # plaintext coefficient the parameters promise to decode.
    top = np.full(3, M32 - 1, dtype=np.uint32)
    contributions = [public.load_contribution(encrypt_words(keys, top), 3) for _ in range(128)]
    total = decrypt_words(keys, public.add(contributions), 3, M32, 128)
    assert np.array_equal(total, np.full(3, (128 * (M32 - 1)) % M32, dtype=np.uint32))


def test_adding_leaves_the_contributions_unchanged(
    keys: CKKSKeys, public: PublicCKKS, blobs: list[bytes]
) -> None:
    first = public.load_contribution(blobs, 2049)
    second = public.load_contribution(blobs, 2049)
    once = public.add([first, second])
    again = public.add([first, second])
    words = _words(2049, M32, seed=1)
    assert np.array_equal(decrypt_words(keys, once, 2049, M32, 2), _plain_sum([words, words], M32))
    assert np.array_equal(decrypt_words(keys, again, 2049, M32, 2), _plain_sum([words, words], M32))


def test_encrypt_refuses_what_is_not_a_word_vector_and_keeps_the_input(keys: CKKSKeys) -> None:
    words = _words(10, M32, seed=3)
    before = words.copy()
    encrypt_words(keys, words)
    assert np.array_equal(words, before)
    for bad in (
        words.astype(np.float64),
        words.reshape(2, 5),
        np.zeros(0, dtype=np.uint32),
        list(words),
    ):
        with pytest.raises(ProtocolError):
            encrypt_words(keys, bad)  # type: ignore[arg-type]


# -- keys and contexts -------------------------------------------------------------------


def test_context_hash_is_stable_for_the_same_keys_and_differs_between_key_sets(
    keys: CKKSKeys, other_keys: CKKSKeys
) -> None:
    copy = CKKSKeys.from_secret_bytes(keys.secret_bytes(), P)
    assert keys.public_context() == keys.public_context() == copy.public_context()
    assert keys.context_hash() == copy.context_hash()
    assert keys.context_hash() != other_keys.context_hash()
    assert keys.secret_bytes().startswith(b"fedfraud-ckks/1/secret-context\x00")
    assert keys.public_context().startswith(b"fedfraud-ckks/1/public-context\x00")


def test_secret_context_holds_no_galois_or_relinearization_keys(keys: CKKSKeys) -> None:
    assert keys._context.is_private()
    assert not keys._context.has_galois_keys()
    assert not keys._context.has_relin_keys()


@pytest.mark.parametrize(
    "attack",
    ["unmarked", "truncated", "public_context_as_secret", "other_parameter_set", "garbage"],
)
def test_bad_secret_contexts_are_refused_with_one_opaque_message(
    keys: CKKSKeys, attack: str
) -> None:
    secret = keys.secret_bytes()
    data, params = {
        "unmarked": (secret[len(ckks.Marker.SECRET_CONTEXT.value) :], P),
        "truncated": (secret[:-100], P),
        "public_context_as_secret": (
            ckks._frame(
                ckks.Marker.SECRET_CONTEXT,
                P,
                keys._context.serialize(
                    save_public_key=False,
                    save_secret_key=False,
                    save_galois_keys=False,
                    save_relin_keys=False,
                ),
            ),
            P,
        ),
        "other_parameter_set": (secret, CKKSParameters(coeff_mod_bit_sizes=(50, 50), name=P.name)),
        "garbage": (ckks._frame(ckks.Marker.SECRET_CONTEXT, P, os.urandom(2000)), P),
    }[attack]
    with pytest.raises(CryptoError) as raised:
        CKKSKeys.from_secret_bytes(data, params)
    assert (
        str(raised.value) == f"the CKKS secret context is malformed or does not match {params.name}"
    )


def test_public_context_loads_under_its_pinned_hash(keys: CKKSKeys, public: PublicCKKS) -> None:
    assert public.context_hash == keys.context_hash()
    assert (
        PublicCKKS.load(keys.public_context(), keys.context_hash().upper(), P).context_hash
        == public.context_hash
    )


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("secret_key_included", "secret key"),
        ("galois_keys_included", "Galois keys"),
        ("relin_keys_included", "relinearization keys"),
        ("public_key_context", "symmetric"),
    ],
)
def test_public_context_refuses_any_key(attack: str, message: str) -> None:
    symmetric = P._new_context()
    if attack == "galois_keys_included":
        symmetric.generate_galois_keys()
    asymmetric = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[60, 49])
    asymmetric.global_scale = 2.0**20
    data = {
        "secret_key_included": _raw_public(symmetric, secret=True),
        "galois_keys_included": _raw_public(symmetric, galois=True),
        "relin_keys_included": _raw_public(symmetric, relin=True),
        "public_key_context": _raw_public(asymmetric, public=True),
    }[attack]
    with pytest.raises(CryptoError, match=message):
        PublicCKKS.load(data, None, P, max_bytes=len(data))
    with pytest.raises(CryptoError, match="at most"):  # and the default size cap stops each earlier
        PublicCKKS.load(data, None, P)


@pytest.mark.parametrize(
    "attack", ["not_pinned", "malformed_pin", "unmarked", "other_parameter_name", "garbage"]
)
def test_public_context_refuses_what_is_not_the_pinned_context(
    keys: CKKSKeys, other_keys: CKKSKeys, attack: str
) -> None:
    data, pin = {
        "not_pinned": (other_keys.public_context(), keys.context_hash()),
        "malformed_pin": (keys.public_context(), "sha256:" + keys.context_hash()),
        "unmarked": (keys.public_context()[len(ckks.Marker.PUBLIC_CONTEXT.value) :], None),
        "other_parameter_name": (keys.public_context().replace(b"/v1", b"/v2"), None),
        "garbage": (ckks._frame(ckks.Marker.PUBLIC_CONTEXT, P, os.urandom(200)), None),
    }[attack]
    with pytest.raises(CryptoError):
        PublicCKKS.load(data, pin, P)


def test_the_server_context_cannot_decrypt(public: PublicCKKS, blobs: list[bytes]) -> None:
    total = public.add([public.load_contribution(blobs, 2049)] * 2)
    vector = ts.ckks_vector_from(public._context, total[0])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()


# -- hostile contributions ---------------------------------------------------------------


def _with_scale(blob: bytes, scale: float) -> bytes:
    """The same vector with another scale field (the last 8 bytes of TenSEAL's framing)."""
    assert blob[-9] == 0x19
    return blob[:-8] + struct.pack("<d", scale)


def _split_sizes(blob: bytes) -> bytes:
    """The same ciphertext, its 2048 values declared as two chunks of 1024."""
    assert blob[:4] == b"\x0a\x02\x80\x10"
    return b"\x0a\x04\x80\x08\x80\x08" + blob[4:]


HOSTILE: dict[str, tuple[Callable[[list[bytes], CKKSKeys], object], int, str]] = {
    "missing_ciphertext": (lambda b, k: b[:1], 2049, "expected 2 ciphertexts"),
    "extra_ciphertext": (lambda b, k: b + b[:1], 2049, "expected 2 ciphertexts"),
    "not_a_sequence": (lambda b, k: b[0], 2049, "sequence"),
    "not_bytes": (lambda b, k: [bytearray(b[0]), b[1]], 2049, "not bytes"),
    "oversized": (lambda b, k: [b[0] + bytes(P.ciphertext_cap), b[1]], 2049, "over the cap"),
    "truncated": (lambda b, k: [b[0][:-5], b[1]], 2049, "truncated"),
    "truncated_inside_ciphertext": (lambda b, k: [b[0][:30000], b[1]], 2049, "truncated"),
    "empty": (lambda b, k: [b"", b[1]], 2049, "exactly one"),
    "garbage": (lambda b, k: [os.urandom(len(b[0])), b[1]], 2049, "truncated or not"),
    "trailing_bytes": (lambda b, k: [b[0] + b"\x00", b[1]], 2049, "truncated or not"),
    "chunks_swapped": (lambda b, k: b[::-1], 2049, "holds 1 values, expected 2048"),
    "wrong_last_chunk_length": (lambda b, k: b, 2050, "holds 1 values, expected 2"),
    "split_chunk_sizes": (lambda b, k: [_split_sizes(b[0]), b[1]], 2049, "exactly one"),
    "wrong_scale_field": (lambda b, k: [_with_scale(b[0], 2.0**21), b[1]], 2049, "scale"),
    "wrong_ciphertext_scale": (
        lambda b, k: [
            _with_scale(ts.ckks_vector(k._context, [1.0] * 2048, 2.0**21).serialize(), 2.0**20),
            b[1],
        ],
        2049,
        "scale",
    ),
    "other_parameter_set": (
        lambda b, k: [
            ts.ckks_vector(
                ts.context(
                    ts.SCHEME_TYPE.CKKS,
                    4096,
                    coeff_mod_bit_sizes=[40, 40],
                    encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
                ),
                [1.0] * 2048,
                2.0**20,
            ).serialize(),
            b[1],
        ],
        2049,
        "not a valid SEAL ciphertext",
    ),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE))
def test_hostile_contributions_are_refused_naming_the_fault(
    keys: CKKSKeys, public: PublicCKKS, blobs: list[bytes], attack: str
) -> None:
    make, size, message = HOSTILE[attack]
    with pytest.raises(ProtocolError, match=message):
        public.load_contribution(make(blobs, keys), size)  # type: ignore[arg-type]


def test_a_lower_level_ciphertext_is_refused() -> None:
    # Only a parameter set with two data primes has a level below the fresh one.
    params = CKKSParameters(8192, (60, 40, 60), 20, "test-n8192-three-primes")
    keys = CKKSKeys.generate(params)
    public = PublicCKKS.load(keys.public_context(), keys.context_hash(), params)
    rescaled = ts.ckks_vector(keys._context, [1.0, 2.0], 2.0**20) * 1.0  # multiply and rescale
    with pytest.raises(ProtocolError, match="not a fresh-level ciphertext"):
        public.load_contribution([rescaled.serialize()], 2)


def test_add_refuses_empty_mixed_or_foreign_contributions(
    keys: CKKSKeys, other_keys: CKKSKeys, public: PublicCKKS, blobs: list[bytes]
) -> None:
    ours = public.load_contribution(blobs, 2049)
    shorter = public.load_contribution(encrypt_words(keys, _words(5, M32, seed=2)), 5)
    other_public = PublicCKKS.load(other_keys.public_context(), other_keys.context_hash(), P)
    foreign = other_public.load_contribution(
        encrypt_words(other_keys, _words(2049, M32, seed=2)), 2049
    )
    forged = ckks.Contribution(2049, public.context_hash, foreign.vectors, loaded_by=object())
    for bad in ([], [ours, shorter], [ours, foreign], [ours, forged]):
        with pytest.raises(ProtocolError):
            public.add(bad)


# -- signatures: what parsing cannot see -------------------------------------------------


@pytest.fixture(scope="module")
def institution_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _flip(blob: bytes, position: int) -> bytes:
    flipped = bytearray(blob)
    flipped[position] ^= 0x01
    return bytes(flipped)


def _parsing_flip(public: PublicCKKS, blobs: list[bytes], size: int) -> list[bytes]:
    """``blobs`` with one bit flipped in the first ciphertext's body where it still parses.

    Most flips leave a valid ciphertext (a coefficient stays below its
    prime); the first such position from the middle on is used.
    """
    for position in range(len(blobs[0]) // 2, len(blobs[0]) // 2 + 64):
        flipped = [_flip(blobs[0], position), *blobs[1:]]
        try:
            public.load_contribution(flipped, size)
        except ProtocolError:
            continue
        return flipped
    raise AssertionError("no bit flip in 64 positions left a valid ciphertext")


def test_a_signed_contribution_verifies(
    keys: CKKSKeys, blobs: list[bytes], institution_key: Ed25519PrivateKey
) -> None:
    signature = sign_contribution(institution_key, BINDING, keys.context_hash(), blobs)
    verify_contribution(
        institution_key.public_key(), signature, BINDING, keys.context_hash(), blobs
    )
    assert len(contribution_digest(BINDING, keys.context_hash(), blobs)) == 32


def test_a_bit_flipped_ciphertext_parses_but_its_signature_fails(
    keys: CKKSKeys, public: PublicCKKS, blobs: list[bytes], institution_key: Ed25519PrivateKey
) -> None:
    signature = sign_contribution(institution_key, BINDING, keys.context_hash(), blobs)
    flipped = _parsing_flip(public, blobs, 2049)  # parses: parsing cannot see it
    with pytest.raises(CryptoError, match="does not verify"):
        verify_contribution(
            institution_key.public_key(), signature, BINDING, keys.context_hash(), flipped
        )


def test_a_ciphertext_of_another_key_set_parses_but_its_signature_fails(
    keys: CKKSKeys,
    other_keys: CKKSKeys,
    public: PublicCKKS,
    blobs: list[bytes],
    institution_key: Ed25519PrivateKey,
) -> None:
    signature = sign_contribution(institution_key, BINDING, keys.context_hash(), blobs)
    foreign = encrypt_words(other_keys, _words(2049, M32, seed=1))
    public.load_contribution(foreign, 2049)  # same parameters: it parses
    with pytest.raises(CryptoError, match="does not verify"):
        verify_contribution(
            institution_key.public_key(), signature, BINDING, keys.context_hash(), foreign
        )
    # Signed by its own institution under its own context, it names that context.
    own = sign_contribution(institution_key, BINDING, other_keys.context_hash(), foreign)
    with pytest.raises(CryptoError, match="does not verify"):
        verify_contribution(
            institution_key.public_key(), own, BINDING, keys.context_hash(), foreign
        )


@pytest.mark.parametrize(
    "attack", ["wrong_signer", "other_round", "other_context", "reordered", "dropped_chunk"]
)
def test_contribution_signatures_are_bound_to_signer_round_context_and_order(
    keys: CKKSKeys,
    other_keys: CKKSKeys,
    blobs: list[bytes],
    institution_key: Ed25519PrivateKey,
    attack: str,
) -> None:
    signature = sign_contribution(institution_key, BINDING, keys.context_hash(), blobs)
    signer, binding, context_hash, claimed = {
        "wrong_signer": (
            Ed25519PrivateKey.generate().public_key(),
            BINDING,
            keys.context_hash(),
            blobs,
        ),
        "other_round": (
            institution_key.public_key(),
            BINDING.replace(b"3", b"4"),
            keys.context_hash(),
            blobs,
        ),
        "other_context": (institution_key.public_key(), BINDING, other_keys.context_hash(), blobs),
        "reordered": (institution_key.public_key(), BINDING, keys.context_hash(), blobs[::-1]),
        "dropped_chunk": (institution_key.public_key(), BINDING, keys.context_hash(), blobs[:1]),
    }[attack]
    with pytest.raises(CryptoError, match="does not verify"):
        verify_contribution(signer, signature, binding, context_hash, claimed)


# -- a hostile server's sum --------------------------------------------------------------


def test_a_sum_of_foreign_ciphertexts_does_not_decode(keys: CKKSKeys, other_keys: CKKSKeys) -> None:
    other_public = PublicCKKS.load(other_keys.public_context(), other_keys.context_hash(), P)
    foreign = [
        other_public.load_contribution(encrypt_words(other_keys, _words(100, M32, seed=s)), 100)
        for s in (1, 2)
    ]
    with pytest.raises(CryptoError, match="does not decode to whole words"):
        decrypt_words(keys, other_public.add(foreign), 100, M32, 2)


def test_an_altered_sum_does_not_decode(
    keys: CKKSKeys, public: PublicCKKS, blobs: list[bytes]
) -> None:
    total = public.add([public.load_contribution(blobs, 2049)] * 2)
    shifted = (ts.ckks_vector_from(public._context, total[1]) + [0.5]).serialize()
    for bad in (_parsing_flip(public, total, 2049), [total[0], shifted]):
        with pytest.raises(CryptoError, match="does not decode to whole words"):
            decrypt_words(keys, bad, 2049, M32, 2)


def test_a_malformed_sum_or_capacity_is_a_protocol_error(
    keys: CKKSKeys, public: PublicCKKS, blobs: list[bytes]
) -> None:
    total = public.add([public.load_contribution(blobs, 2049)])
    with pytest.raises(ProtocolError, match="expected 2 ciphertexts"):
        decrypt_words(keys, total[:1], 2049, M32, 1)
    with pytest.raises(ProtocolError, match="overflow"):
        decrypt_words(keys, total, 2049, M32, 129)


# -- the key ceremony envelope -----------------------------------------------------------


@pytest.fixture(scope="module")
def ceremony() -> tuple[Ed25519PrivateKey, X25519PrivateKey]:
    return Ed25519PrivateKey.generate(), X25519PrivateKey.generate()


def _raw(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_a_sealed_secret_context_opens_for_its_recipient(
    keys: CKKSKeys, ceremony: tuple[Ed25519PrivateKey, X25519PrivateKey]
) -> None:
    sender, recipient = ceremony
    envelope = seal_secret(keys.secret_bytes(), _raw(recipient), sender, b"epoch-1")
    assert envelope[:1] == ckks.ENVELOPE_VERSION
    opened = open_secret(envelope, recipient, sender.public_key(), b"epoch-1")
    assert CKKSKeys.from_secret_bytes(opened, P).context_hash() == keys.context_hash()
    assert seal_secret(b"s", _raw(recipient), sender, b"c") != seal_secret(
        b"s", _raw(recipient), sender, b"c"
    )


ENVELOPE_ATTACKS = [
    "wrong_recipient",
    "wrong_sender",
    "wrong_context",
    "replayed_into_other_context",
    "truncated",
    "flipped_version",
    "flipped_ephemeral_key",
    "flipped_nonce",
    "flipped_signature",
    "flipped_ciphertext",
    "resigned_by_attacker",
    "empty",
]


@pytest.mark.parametrize("attack", ENVELOPE_ATTACKS)
def test_envelope_attacks_are_refused_with_one_opaque_message(
    ceremony: tuple[Ed25519PrivateKey, X25519PrivateKey], attack: str
) -> None:
    sender, recipient = ceremony
    envelope = seal_secret(b"the secret context", _raw(recipient), sender, b"epoch-1")
    attacker = Ed25519PrivateKey.generate()
    other = X25519PrivateKey.generate()
    body = envelope[:45] + envelope[109:]
    resigned = (
        envelope[:45]
        + attacker.sign(
            ckks.Marker.SEAL_SIGNATURE.value + ckks._lp(b"epoch-1") + _raw(recipient) + body
        )
        + envelope[109:]
    )
    data, opener, signer, context = {
        "wrong_recipient": (envelope, other, sender.public_key(), b"epoch-1"),
        "wrong_sender": (envelope, recipient, attacker.public_key(), b"epoch-1"),
        "wrong_context": (envelope, recipient, sender.public_key(), b"epoch-2"),
        "replayed_into_other_context": (
            seal_secret(b"the secret context", _raw(recipient), sender, b"epoch-0"),
            recipient,
            sender.public_key(),
            b"epoch-1",
        ),
        "truncated": (envelope[:-1], recipient, sender.public_key(), b"epoch-1"),
        "flipped_version": (_flip(envelope, 0), recipient, sender.public_key(), b"epoch-1"),
        "flipped_ephemeral_key": (_flip(envelope, 5), recipient, sender.public_key(), b"epoch-1"),
        "flipped_nonce": (_flip(envelope, 40), recipient, sender.public_key(), b"epoch-1"),
        "flipped_signature": (_flip(envelope, 70), recipient, sender.public_key(), b"epoch-1"),
        "flipped_ciphertext": (
            _flip(envelope, len(envelope) - 20),
            recipient,
            sender.public_key(),
            b"epoch-1",
        ),
        "resigned_by_attacker": (resigned, recipient, sender.public_key(), b"epoch-1"),
        "empty": (b"", recipient, sender.public_key(), b"epoch-1"),
    }[attack]
    with pytest.raises(CryptoError) as raised:
        open_secret(data, opener, signer, context)
    assert str(raised.value) == "the sealed secret cannot be opened"


def test_sealing_to_a_malformed_key_is_refused(
    ceremony: tuple[Ed25519PrivateKey, X25519PrivateKey],
) -> None:
    sender, _ = ceremony
    for bad in (bytes(31), bytes(32)):  # short; the all-zero (low-order) point
        with pytest.raises(CryptoError):
            seal_secret(b"secret", bad, sender, b"epoch-1")


def test_server_never_deserializes_a_secret_key_hidden_in_a_public_context(monkeypatch) -> None:
    # A dishonest dealer frames its *secret* context as a public one: the
    # server refuses it from the framing, and TenSEAL is never asked to parse it.
    import secagg.ckks as module

    keys = module.CKKSKeys.generate()
    raw_secret = keys._context.serialize(
        save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    public = keys.public_context()
    head = public[: len(public) - len(keys._context.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    ))]
    hostile = head + raw_secret
    parsed: list[bytes] = []
    real_context_from = module.ts.context_from

    def spy(data: bytes, *args: object, **kwargs: object) -> object:
        parsed.append(data)
        return real_context_from(data, *args, **kwargs)

    monkeypatch.setattr(module.ts, "context_from", spy)
    with pytest.raises(module.CryptoError, match="secret key"):
        module.PublicCKKS.load(hostile, None, module.DEFAULT_PARAMETERS, max_bytes=1 << 20)
    assert parsed == []
    # The genuine public context still loads (and is parsed once).
    module.PublicCKKS.load(public, None, module.DEFAULT_PARAMETERS)
    assert len(parsed) == 1
