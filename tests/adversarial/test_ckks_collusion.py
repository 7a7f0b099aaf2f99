"""Collusion of one institution with the server in ``ckks`` mode.

Every institution of a round holds the same CKKS secret key (it must, to
decrypt the sum). A server that passes one institution's ciphertext to a
colluding institution would let it decrypt that update, unless the update was
masked before encryption. fedfraud encrypts the SecAgg+-masked words, so the
ciphertext decrypts to uniform noise; the pairwise masks cancel only in the
sum. The victims are the product's real ClientApps (``client.app:app``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from secagg import ckks
from secagg.masks import encode_contribution
from secagg.protocol import STATE_RECORD, Field

from .hardened_driver import global_model, make_federation, parties, play_ckks_until_collected

QUANTIZATION = 2**24
MODULUS = 2**32


def _ckks_round(tmp_path: Path) -> tuple[dict[str, list[bytes]], bytes, int]:
    """One honest ckks round up to the encrypted contributions; the colluder's key."""
    config = make_federation(tmp_path)
    config["aggregation"] = "ckks"
    victims = parties(config)
    blobs: dict[str, list[bytes]] = {}
    size = 0
    for name, reply in play_ckks_until_collected(victims).items():
        assert isinstance(reply, dict), f"{name} refused: {reply}"
        assert Field.MASKED not in reply  # nothing leaves in the clear
        blobs[name] = [bytes(b) for b in reply[Field.CKKS_BLOBS]]
        size = int(reply[Field.SIZE])
    # The colluding institution (insurer-c) hands the server the round key it holds.
    colluder = next(p for p in victims if p.name == "insurer-c")
    state = json.loads(str(colluder.context.state.config_records[STATE_RECORD]["json"]))
    return blobs, bytes.fromhex(state["ckks_secret"]), size


def test_collusion_of_an_institution_with_the_server_decrypts_only_noise(tmp_path: Path) -> None:
    # Arrange: a real ckks round; the server holds every ciphertext, and
    # insurer-c gives it the round's secret key.
    blobs, secret, size = _ckks_round(tmp_path)
    keys = ckks.CKKSKeys.from_secret_bytes(secret, ckks.DEFAULT_PARAMETERS)
    # Act: decrypt bank-b's individual ciphertext with the colluder's key.
    words = ckks.decrypt_words(keys, blobs["bank-b"], size, MODULUS, contributors=1)
    # Assert: without the masks a contribution's words are all <= 2**24 (its
    # quantized values); bank-b's decrypt to words uniform modulo 2**32.
    in_range = float(np.mean(words <= QUANTIZATION))
    assert in_range < 0.02, f"{in_range:.3f} of the words look like a quantized update"
    assert abs(float(np.mean(words)) / MODULUS - 0.5) < 0.05


def test_collusion_without_masks_would_recover_the_update(tmp_path: Path) -> None:
    # The attack the masks defeat: an institution's quantized update encrypted
    # under the shared key without masks (a design fedfraud does not use)
    # decrypts, with the colluder's key, to exactly the update.
    _, secret, _ = _ckks_round(tmp_path)
    keys = ckks.CKKSKeys.from_secret_bytes(secret, ckks.DEFAULT_PARAMETERS)
    update = [a + np.float32(0.01) for a in global_model()]
    words = encode_contribution(update, 0.5, 8.0, QUANTIZATION)
    blobs = ckks.encrypt_words(keys, words)
    recovered = ckks.decrypt_words(keys, blobs, int(words.size), MODULUS, contributors=1)
    assert np.array_equal(recovered, words)
    assert float(np.mean(recovered <= QUANTIZATION)) == 1.0
