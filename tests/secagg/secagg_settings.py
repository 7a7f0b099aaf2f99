"""The SecAgg+ run-config keys the secagg tests start from (the product defaults)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from secagg.params import SecAggSettings

BASE = {
    "num-shares": 3,
    "reconstruction-threshold": 2,
    "clipping-range": 8.0,
    "quantization-range": 2**24,
    "modulus-range": 2**32,
    "max-weight": 100000.0,
    "timeout": 120.0,
}


def masked_mean(
    updates: list[list[np.ndarray]], counts: list[int], settings: SecAggSettings
) -> tuple[float, np.ndarray]:
    """fedfraud's SecAgg+ arithmetic end to end, with real masks.

    Each institution quantizes its weighted vector and adds a self mask and
    one pairwise mask per peer (AES-CTR streams under fresh random keys); the
    server sums modulo M, removes the self masks (as unmasking does; the
    pairwise masks cancel) and dequantizes. Returns (sum of weights, mean).
    """
    import os

    import numpy as np

    from secagg.masks import add_mod, decode_sum, encode_contribution, mask_stream

    m, c, q = settings.modulus_range, settings.clipping_range, settings.quantization_range
    vectors = [encode_contribution(u, n / settings.max_weight, c, q) for u, n in zip(updates, counts)]
    size = vectors[0].size
    self_keys = [os.urandom(32) for _ in vectors]
    pair_keys = {(i, j): os.urandom(32) for i in range(len(vectors)) for j in range(i + 1, len(vectors))}
    total = np.zeros(size, dtype=np.uint32)
    for i, vector in enumerate(vectors):
        words = add_mod(vector, mask_stream(self_keys[i], size, m), m)
        for (a, b), key in pair_keys.items():
            if i in (a, b):
                words = add_mod(words, mask_stream(key, size, m), m, 1 if i == a else -1)
        total = add_mod(total, words, m)
    for key in self_keys:
        total = add_mod(total, mask_stream(key, size, m), m, -1)
    return decode_sum(total, len(vectors), c, q)


def masked_integer_sum(vectors: list[np.ndarray], settings: SecAggSettings) -> np.ndarray:
    """fedfraud's exact sum end to end, with real masks: limbs, masks, unmask, decode."""
    import os

    import numpy as np

    from secagg.masks import add_mod, decode_integer_sum, encode_integers, mask_stream

    m = settings.modulus_range
    encoded = [encode_integers(v) for v in vectors]
    size = encoded[0].size
    self_keys = [os.urandom(32) for _ in encoded]
    pair_keys = {(i, j): os.urandom(32) for i in range(len(encoded)) for j in range(i + 1, len(encoded))}
    total = np.zeros(size, dtype=np.uint32)
    for i, words in enumerate(encoded):
        words = add_mod(words, mask_stream(self_keys[i], size, m), m)
        for (a, b), key in pair_keys.items():
            if i in (a, b):
                words = add_mod(words, mask_stream(key, size, m), m, 1 if i == a else -1)
        total = add_mod(total, words, m)
    for key in self_keys:
        total = add_mod(total, mask_stream(key, size, m), m, -1)
    return decode_integer_sum(total, len(encoded))
