"""The institution's side of the ``ckks`` aggregation mode (inside the SecAgg+ mod).

In ``ckks`` mode a training round runs the hardened SecAgg+ protocol, with
three additions, all on the institution's side of the trust boundary:

1. **Key ceremony** (``share-keys``). The institution first in the verified
   cohort's sorted names, the *dealer*, makes a fresh CKKS secret key for the
   round and seals it to every other member's X25519 round key (the one each
   signed in its advertisement) with :func:`secagg.ckks.seal_secret`, signed
   with its own Ed25519 key. The server relays envelopes it cannot open and
   gets the public context only (no secret, Galois or relinearization key).
   A key per round is the rotation: nothing outlives the round but the model.
2. **Encrypted contribution** (``collect``). The masked words (quantized
   update plus SecAgg+ masks, as in ``secagg+``) are encrypted and signed.
   The pairwise masks make one institution's ciphertext decrypt to uniform
   noise, so an institution that holds the key and colludes with the server
   learns nothing from another's ciphertext.
3. **Decryption** (``decrypt``). The server sends the homomorphic sum and the
   mask correction it rebuilt from the released shares; each survivor
   decrypts, removes the masks and keeps the new global model in its site
   folder. The server never holds it: the next round and the evaluation
   start from the institution's own copy, identified by the hash of the
   encrypted sum (the *model id*).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import CryptoError, ProtocolError
from core.wire import CKKS_INITIAL_MODEL, update_digest
from secagg import ckks
from secagg import hardened as hc
from secagg.masks import Words, add_mod, decode_sum, unflatten, unpack
from secagg.protocol import Field

from .node import InstitutionNode

#: The model id of the first training round: the run's public initial model.
INITIAL_MODEL = CKKS_INITIAL_MODEL
PARAMS = ckks.DEFAULT_PARAMETERS


class ModelMissing(ProtocolError):
    """This institution does not hold the round's model (it missed a round): a dropout."""
Arrays = list[npt.NDArray[Any]]


def envelope_context(binding: hc.Binding, digest: bytes) -> bytes:
    """What a sealed CKKS key is bound to: the round and its verified cohort."""
    return b"fedfraud-ckks/1/ceremony\x00" + binding.encode() + b"\x00" + digest


#: The round keys this process loaded (a ClientApp process may handle several
#: stages of a round): SHA-256 of the secret bytes -> keys. Two entries at
#: most; a round's entry is dropped once it has decrypted.
_LOADED: dict[str, ckks.CKKSKeys] = {}


def _keys(secret_hex: str) -> ckks.CKKSKeys:
    """The round's keys from the institution's protocol state (loaded once per process)."""
    secret = bytes.fromhex(secret_hex)
    tag = hashlib.sha256(secret).hexdigest()
    keys = _LOADED.get(tag)
    if keys is None:
        keys = ckks.CKKSKeys.from_secret_bytes(secret, PARAMS)
        while len(_LOADED) >= 2:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[tag] = keys
    return keys


def forget(secret_hex: str) -> None:
    """Drop a round's keys from this process once the round is over."""
    _LOADED.pop(hashlib.sha256(bytes.fromhex(secret_hex)).hexdigest(), None)


def dealer_of(cohort: list[str]) -> str:
    """The institution that makes the round's CKKS key (every member computes the same)."""
    return min(cohort)


def deal(
    me: str,
    signing_key: Ed25519PrivateKey,
    verified: dict[str, hc.Advertisement],
    binding: hc.Binding,
    digest: bytes,
    modulus: int,
) -> tuple[dict[str, Any], str]:
    """The dealer's share-keys additions, and the secret (hex) it keeps for the round."""
    PARAMS.check_capacity(len(verified), modulus)
    keys = ckks.CKKSKeys.generate(PARAMS)
    secret = keys.secret_bytes()
    context = envelope_context(binding, digest)
    recipients, envelopes = [], []
    for name in sorted(verified):
        if name == me:
            continue
        recipients.append(verified[name].node_id)
        envelopes.append(ckks.seal_secret(secret, verified[name].seal_key, signing_key, context))
    fields: dict[str, Any] = {
        Field.CKKS_CONTEXT: keys.public_context(),
        Field.CKKS_RECIPIENTS: recipients,
        Field.CKKS_ENVELOPES: envelopes,
    }
    return fields, secret.hex()


def receive_key(
    state: dict[str, Any],
    fields: dict[str, Any],
    me: str,
    dealer_key: Ed25519PublicKey,
    seal_private: Any,
    binding: hc.Binding,
    digest: bytes,
) -> ckks.CKKSKeys:
    """Open (or, for the dealer, reload) the round's key; check the server's public context.

    Raises
    ------
    CryptoError
        If the envelope does not open for this institution under the dealer's
        key, or the public context the server relays is not the key's own.
    """
    public = fields.get(Field.CKKS_CONTEXT)
    if not isinstance(public, bytes):
        raise ProtocolError("ckks: the collect message carries no public context")
    if not state.get("ckks_secret"):
        envelope = fields.get(Field.CKKS_ENVELOPE)
        if not isinstance(envelope, bytes):
            raise ProtocolError("ckks: no sealed key for this institution")
        secret = ckks.open_secret(envelope, seal_private, dealer_key, envelope_context(binding, digest))
        state["ckks_secret"] = secret.hex()
    keys = _keys(state["ckks_secret"])
    if not hmac.compare_digest(keys.public_context(), public):
        raise CryptoError("ckks: the public context the server relays is not the round key's")
    state["ckks_context_hash"] = keys.context_hash()
    return keys


def encrypt(
    keys: ckks.CKKSKeys, words: Words, signing_key: Ed25519PrivateKey, binding: hc.Binding
) -> dict[str, Any]:
    """The encrypted, signed contribution (the masked words never leave in the clear)."""
    blobs = ckks.encrypt_words(keys, words)
    signature = ckks.sign_contribution(signing_key, binding.encode(), keys.context_hash(), blobs)
    return {Field.CKKS_BLOBS: blobs, Field.CKKS_SIGNATURE: signature}


def decrypt_model(
    state: dict[str, Any],
    blobs: list[bytes],
    correction: bytes,
    contributors: int,
) -> Arrays:
    """Decrypt the sum, remove the masks, decode the weighted mean into this round's shapes."""
    keys = _keys(state["ckks_secret"])
    size, modulus = int(state["size"]), int(state["modulus_range"])
    total = ckks.decrypt_words(keys, blobs, size, modulus, contributors)
    total = add_mod(total, unpack(correction, size, modulus), modulus)  # the correction removes the masks
    _, mean = decode_sum(total, contributors, state["clipping_range"], state["quantization_range"])
    return [a.astype(np.float32) for a in unflatten(mean, state["shapes"])]


# -- the institution-held model ------------------------------------------------------


def _model_paths(node: InstitutionNode, run: int) -> tuple[Path, Path]:
    return node.site.ckks_model(run), node.site.ckks_model_meta(run)


def save_model(node: InstitutionNode, run: int, server_round: int, model_id: str, arrays: Arrays) -> str:
    """Keep the decrypted global model in the site folder (0600); return its hash."""
    data_path, meta_path = _model_paths(node, run)
    data_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    model_hash = update_digest(arrays)
    for path, content in (
        (data_path, buffer.getvalue()),
        (meta_path, json.dumps({"run": run, "round": server_round, "model_id": model_id,
                                "model_hash": model_hash}).encode("utf-8")),
    ):
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp, path)
    return model_hash


def holds_model(node: InstitutionNode, run: int) -> bool:
    """Whether this institution decrypted a global model in this run."""
    return _model_paths(node, run)[1].exists()


def load_model(node: InstitutionNode, run: int, model_id: str) -> Arrays:
    """The model this institution decrypted under ``model_id`` in this run.

    Raises
    ------
    ProtocolError
        If it holds no such model (it missed that round): it sits this one out.
    """
    data_path, meta_path = _model_paths(node, run)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelMissing("ckks.model: this institution holds no model of this run") from exc
    if meta.get("run") != run or not hmac.compare_digest(str(meta.get("model_id")), model_id):
        raise ModelMissing("ckks.model: this institution does not hold the round's model")
    with np.load(data_path) as archive:
        arrays = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    if update_digest(arrays) != meta.get("model_hash"):
        raise ProtocolError("ckks.model: the stored model does not match its hash")
    return arrays
