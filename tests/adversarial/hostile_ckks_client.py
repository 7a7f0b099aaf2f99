"""A ClientApp whose institution insurer-c sends a hostile ckks contribution every round.

The product's ClientApp with one change, as a malicious institution could run
it: the encryption step (``client.ckks_mode.encrypt``) of the institutions
named in ``ATTACKS`` replaces their ciphertexts with hostile bytes and then
*signs them with the institution's own key*, so the signature verifies and
only the server's own checks of the ciphertexts stand between them and the
sum. Each attacker makes one attack:

- ``truncated``: the first ciphertext cut in half;
- ``wrong count``: one ciphertext more than the model needs;
- ``oversized``: the first ciphertext padded past the size cap;
- ``foreign context``: ciphertexts of the right size and scale, serialized
  under another CKKS context (N = 4096, another modulus chain).

Every other institution runs the unchanged product.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tenseal as ts
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from client import ckks_mode
from client.app import client_fn
from client.secagg_mod import hardened_secagg_mod
from secagg import ckks
from secagg.hardened import Binding
from secagg.protocol import Field

#: Attacker institution -> its attack.
ATTACKS = {"mallory-a": "truncated", "mallory-b": "wrong count", "mallory-c": "oversized",
           "mallory-d": "foreign context"}

_honest_encrypt = ckks_mode.encrypt


def _hostile_blobs(keys: ckks.CKKSKeys, words: np.ndarray, attack: str) -> list[bytes]:
    blobs = ckks.encrypt_words(keys, words)
    if attack == "truncated":
        return [blobs[0][: len(blobs[0]) // 2], *blobs[1:]]
    if attack == "wrong count":
        return [*blobs, blobs[-1]]
    if attack == "oversized":
        return [blobs[0] + bytes(keys.params.ciphertext_cap), *blobs[1:]]
    foreign = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[58, 40])
    values = words.astype(np.float64)
    step = keys.params.slots
    return [ts.ckks_vector(foreign, values[i : i + step].tolist(), 2.0**20).serialize()
            for i in range(0, values.size, step)]


def hostile_encrypt(keys: ckks.CKKSKeys, words: Any, signing_key: Any, binding: Binding) -> dict[str, Any]:
    """insurer-c: hostile ciphertexts, honestly signed; everyone else: the product's own encryption."""
    attack = ATTACKS.get(_node["institution"])
    if attack is None:
        return _honest_encrypt(keys, words, signing_key, binding)
    blobs = _hostile_blobs(keys, words, attack)
    signature = ckks.sign_contribution(signing_key, binding.encode(), keys.context_hash(), blobs)
    return {Field.CKKS_BLOBS: blobs, Field.CKKS_SIGNATURE: signature}


#: The node handling the current message (a simulated node handles one message at a time).
_node: dict[str, Any] = {"institution": None}


def remember_node(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Note which institution this simulated node is (the run config lists them in partition order)."""
    names = str(ctxt.run_config.get("institutions", "")).split(",")
    partition = ctxt.node_config.get("partition-id")
    _node["institution"] = names[partition] if isinstance(partition, int) and partition < len(names) else None
    return call_next(msg, ctxt)


ckks_mode.encrypt = hostile_encrypt  # type: ignore[assignment]
app = ClientApp(client_fn=client_fn, mods=[remember_node, hardened_secagg_mod])
