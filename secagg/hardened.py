"""The hardened SecAgg+ protocol's cryptography: bindings, signatures, sealed shares.

fedfraud keeps the shape of SecAgg+ (Bell et al., CCS 2020) and adds the
defences of the malicious-server variant of Bonawitz et al. ("Practical Secure
Aggregation for Privacy-Preserving Machine Learning", CCS 2017, section 6.4
and appendix):

1. **Authenticated key advertisements.** Each institution signs its two X25519
   public keys (one to seal shares, one to agree pairwise masks) with its
   institution Ed25519 key, bound to the federation, run, round and task. A
   peer checks the signature against the key *it* pinned for that institution,
   never against a key the server supplies, so the server can neither invent
   peers (sybils) nor swap a peer's keys.
2. **Sealed shares.** Shares travel through the server under AES-256-GCM with a
   key derived (HKDF-SHA256) from the X25519 secret of the ordered pair, and
   the binding, the cohort digest and both ends as associated data.
3. **Consistency round.** Before any share is released, every survivor signs
   the survivor set the server claims; an institution releases shares only
   after seeing at least ``t`` valid signatures of that same set.
4. **Cryptographic masks** (:mod:`secagg.masks`) keyed by the full 256-bit
   X25519 secret.

Nothing here talks to Flower or reads files: it takes bytes and keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.errors import CryptoError

from .masks import derive_key

#: Protocol name and version, in every message and every signed payload.
PROTOCOL = "fedfraud-secagg/1"
_RAW = serialization.Encoding.Raw


@dataclass(frozen=True)
class Binding:
    """What a round's every signature and ciphertext is bound to.

    A message of another federation, run, round or task fails every check
    (replay protection): the binding is signed and authenticated throughout.
    """

    federation: str
    run_id: int
    server_round: int
    task: str
    #: The training weight bound the server announced (``max-weight`` in auto
    #: mode): signed into every advertisement, so a server that gives
    #: institutions different bounds (to reweight one of them) fails the
    #: round's signature checks. 0 when the bound is the run's fixed value.
    weight_bound: float = 0.0

    def encode(self) -> bytes:
        """Canonical bytes of the binding."""
        fields: dict[str, object] = {
            "federation": self.federation,
            "run": self.run_id,
            "round": self.server_round,
            "task": self.task,
        }
        if self.weight_bound:
            fields["weight_bound"] = int(self.weight_bound)
        return _canonical(fields)

    def label(self) -> str:
        """A short human-readable name (for errors and logs)."""
        return f"run {self.run_id} round {self.server_round} task {self.task}"


@dataclass(frozen=True)
class Advertisement:
    """One institution's signed SecAgg+ public keys for one round."""

    node_id: int
    institution: str
    seal_key: bytes
    mask_key: bytes
    signature: bytes

    def payload(self, binding: Binding) -> bytes:
        """The bytes the institution signs."""
        return _signed_payload(
            "advertise",
            binding,
            {
                "node": self.node_id,
                "institution": self.institution,
                "seal_key": self.seal_key.hex(),
                "mask_key": self.mask_key.hex(),
            },
        )


@dataclass
class RoundKeys:
    """An institution's fresh key pairs and self-mask seed for one round."""

    seal_private: X25519PrivateKey
    mask_private: X25519PrivateKey
    seed: bytes

    @classmethod
    def generate(cls) -> RoundKeys:
        """New keys from the operating system's CSPRNG."""
        return cls(X25519PrivateKey.generate(), X25519PrivateKey.generate(), os.urandom(32))

    @property
    def seal_public(self) -> bytes:
        """Raw 32-byte public key for sealing shares to this institution."""
        return self.seal_private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)

    @property
    def mask_public(self) -> bytes:
        """Raw 32-byte public key for pairwise masks."""
        return self.mask_private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)

    def mask_secret(self) -> bytes:
        """The raw mask private key (the secret whose shares rebuild a dropout's masks)."""
        return private_bytes(self.mask_private)


def private_bytes(key: X25519PrivateKey) -> bytes:
    """Raw 32 bytes of an X25519 private key."""
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def advertise(
    signing_key: Ed25519PrivateKey, binding: Binding, node_id: int, institution: str, keys: RoundKeys
) -> Advertisement:
    """Sign this institution's round keys."""
    unsigned = Advertisement(node_id, institution, keys.seal_public, keys.mask_public, b"")
    signature = signing_key.sign(unsigned.payload(binding))
    return Advertisement(node_id, institution, keys.seal_public, keys.mask_public, signature)


def verify_advertisement(pinned: Ed25519PublicKey, binding: Binding, advert: Advertisement) -> None:
    """Check an advertisement against the key pinned for its institution.

    Raises
    ------
    CryptoError
        If the signature does not verify (forged, swapped keys, replayed from
        another run, round or task).
    """
    if len(advert.seal_key) != 32 or len(advert.mask_key) != 32:
        raise CryptoError(f"{advert.institution}: malformed round keys")
    try:
        pinned.verify(advert.signature, advert.payload(binding))
    except InvalidSignature:
        raise CryptoError(
            f"{advert.institution}: key advertisement does not verify against its pinned key"
        ) from None


def cohort_digest(binding: Binding, adverts: Iterable[Advertisement]) -> bytes:
    """SHA-256 of the binding and every verified advertisement, in node order.

    Every later message is bound to it, so institutions that were shown
    different cohorts cannot be made to agree on anything.
    """
    listing = [
        [a.node_id, a.institution, a.seal_key.hex(), a.mask_key.hex()]
        for a in sorted(adverts, key=lambda a: a.node_id)
    ]
    return hashlib.sha256(_signed_payload("cohort", binding, {"adverts": listing})).digest()


def neighbours(institutions: Sequence[str], me: str, num_shares: int) -> tuple[str, ...]:
    """The institutions ``me`` shares secrets with (itself included), in order.

    Computed by every institution from the verified cohort alone, so the
    server cannot pick them. With ``num_shares`` at least the cohort, everyone;
    otherwise the ``num_shares // 2`` nearest on each side on the ring of
    sorted ids (the graph of Bell et al. 2020 built from public data).
    """
    ordered = sorted(institutions)
    if me not in ordered:
        raise CryptoError(f"{me} is not in the cohort")
    if num_shares >= len(ordered):
        return tuple(ordered)
    half = num_shares // 2
    index = ordered.index(me)
    chosen = {ordered[(index + offset) % len(ordered)] for offset in range(-half, half + 1)}
    return tuple(sorted(chosen))


def _share_context(binding: Binding, digest: bytes, src: str, dst: str) -> bytes:
    return binding.encode() + b"\x00" + digest + b"\x00" + _canonical([src, dst])


def _seal_key(private: X25519PrivateKey, peer_public: bytes, context: bytes) -> bytes:
    try:
        secret = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise CryptoError("peer key is not a valid X25519 key") from None
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedfraud-secagg/1/seal\x00" + context
    ).derive(secret)


def seal_shares(
    keys: RoundKeys,
    peer_seal_key: bytes,
    binding: Binding,
    digest: bytes,
    src: str,
    dst: str,
    seed_share: bytes,
    mask_share: bytes,
) -> bytes:
    """Encrypt ``src``'s two shares for ``dst`` (AES-256-GCM, random 96-bit nonce)."""
    context = _share_context(binding, digest, src, dst)
    nonce = os.urandom(12)
    plaintext = _canonical({"seed": seed_share.hex(), "mask": mask_share.hex()})
    sealed = AESGCM(_seal_key(keys.seal_private, peer_seal_key, context)).encrypt(
        nonce, plaintext, context
    )
    return nonce + sealed


def open_shares(
    keys: RoundKeys, peer_seal_key: bytes, binding: Binding, digest: bytes, src: str, dst: str, box: bytes
) -> tuple[bytes, bytes]:
    """Decrypt and authenticate shares ``src`` sealed for ``dst``; opaque on failure."""
    context = _share_context(binding, digest, src, dst)
    if not isinstance(box, bytes) or not 12 + 16 < len(box) <= 4096:
        raise CryptoError(f"sealed shares from {src} are malformed")
    try:
        plaintext = AESGCM(_seal_key(keys.seal_private, peer_seal_key, context)).decrypt(
            box[:12], box[12:], context
        )
        data = json.loads(plaintext)
        return bytes.fromhex(data["seed"]), bytes.fromhex(data["mask"])
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise CryptoError(f"sealed shares from {src} fail authentication") from None


def pair_mask_key(
    mask_private: X25519PrivateKey,
    peer_mask_key: bytes,
    binding: Binding,
    digest: bytes,
    a: str,
    b: str,
) -> bytes:
    """The one-use key of the pairwise mask between institutions ``a`` and ``b``."""
    try:
        secret = mask_private.exchange(X25519PublicKey.from_public_bytes(peer_mask_key))
    except ValueError:
        raise CryptoError("peer mask key is not a valid X25519 key") from None
    pair = _canonical(sorted([a, b]))
    return derive_key(secret, b"pair", binding.encode() + b"\x00" + digest + b"\x00" + pair)


def self_mask_key(seed: bytes, binding: Binding, digest: bytes, institution: str) -> bytes:
    """The one-use key of an institution's self mask."""
    return derive_key(
        seed, b"self", binding.encode() + b"\x00" + digest + b"\x00" + _canonical([institution])
    )


def pair_sign(me: str, peer: str) -> int:
    """+1 if ``me`` adds the pair's mask, -1 if it subtracts it (ids ordered)."""
    if me == peer:
        raise CryptoError("no pairwise mask with oneself")
    return 1 if me < peer else -1


def consistency_payload(binding: Binding, digest: bytes, survivors: Iterable[str]) -> bytes:
    """The bytes each survivor signs in the consistency round."""
    return _signed_payload(
        "consistency", binding, {"cohort": digest.hex(), "survivors": sorted(survivors)}
    )


def sign_consistency(
    signing_key: Ed25519PrivateKey, binding: Binding, digest: bytes, survivors: Iterable[str]
) -> bytes:
    """This institution's signature over the survivor set."""
    return signing_key.sign(consistency_payload(binding, digest, survivors))


def count_consistency_signatures(
    pinned: Callable[[str], Ed25519PublicKey],
    binding: Binding,
    digest: bytes,
    survivors: Sequence[str],
    signatures: dict[str, bytes],
    enough: int | None = None,
) -> set[str]:
    """The survivors whose signature over exactly ``survivors`` verifies.

    ``pinned`` gives the key the verifier pinned for an institution (it is
    asked only for survivors that signed). With ``enough``, stops once that
    many are valid (the caller needs no more).
    """
    payload = consistency_payload(binding, digest, survivors)
    valid: set[str] = set()
    for institution, signature in signatures.items():
        if enough is not None and len(valid) >= enough:
            break
        if institution not in survivors:
            continue
        try:
            pinned(institution).verify(signature, payload)
        except InvalidSignature:
            continue
        valid.add(institution)
    return valid


def same_bytes(a: bytes, b: bytes) -> bool:
    """Constant-time equality of two byte strings (for keys and digests)."""
    return hmac.compare_digest(a, b)


def _signed_payload(kind: str, binding: Binding, body: dict[str, object]) -> bytes:
    return (
        f"{PROTOCOL}/{kind}".encode("ascii")
        + b"\x00"
        + binding.encode()
        + b"\x00"
        + _canonical(body)
    )


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
