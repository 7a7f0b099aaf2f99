"""Flower's STOCK ``secaggplus_mod`` gives one client's update to a dishonest server.

Each test hand-plays a dishonest SecAgg+ server (``stock_flower``) against
real, unmodified Flower ClientApps (``ClientApp(mods=[secaggplus_mod])`` around a
``NumPyClient`` with a known update) and asserts that the attack **succeeds**:
what the server recovers matches the victim's true update to within
quantization error. A passing test here documents a weakness of stock Flower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import generate_key_pairs
from numpy.typing import NDArray

from .stock_flower import (
    BASE64_ZERO_MASK,
    NAMES,
    SecAggConfig,
    bruteforce_two_party_update,
    candidate_index,
    candidate_seeds,
    differencing,
    fake_peers_sybil,
    fold_entropy,
    fold_seed,
    honest_round,
    known_histogram,
    measure_candidate_cost,
    mt19937_first_outputs,
    overlap_at_unmask,
    real_pairwise_keys,
    stock_victim,
    stock_victims,
    victim_pairwise_seed_oracle,
    zero_bit_mask,
)


def max_abs_error(recovered: Sequence[NDArray[Any]], truth: Sequence[NDArray[Any]]) -> float:
    """Largest absolute difference, after checking the shapes agree."""
    assert [a.shape for a in recovered] == [b.shape for b in truth]
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - b))) for a, b in zip(recovered, truth))


def tolerance(cfg: SecAggConfig, num_examples: int, steps: float = 2.0) -> float:
    """A few quantization steps, in the units of the client's *unweighted* update.

    The client quantizes ``update * ratio`` with step ``2 * clip / target``
    (stochastic rounding: error below one step), so after dividing by its ratio
    the error is below ``step / ratio``.
    """
    ratio = cfg.q_ratio(num_examples) / cfg.target_range
    return steps * (2 * cfg.clipping_range / cfg.target_range) / ratio


def test_overlap_at_unmask_recovers_update_from_stock_flower() -> None:
    # Three honest stock clients; the server lies only at unmask, listing
    # bank-a as both active and dead.
    victims = stock_victims(NAMES, num_examples=5000)
    bank_a = victims[0]
    cfg = SecAggConfig(sample_num=3)

    recovered = overlap_at_unmask(victims, bank_a.node_id, cfg)

    error = max_abs_error(recovered, bank_a.update)
    assert error <= tolerance(cfg, bank_a.num_examples) < 1e-3
    # It is bank-a's update and nobody else's (they are far apart).
    assert max_abs_error(recovered, victims[1].update) > 0.5


def test_fake_peers_sybil_recovers_lone_victims_update_from_stock_flower() -> None:
    # bank-a is the only real client; the two "peers" are key pairs the
    # server made itself. No unmask stage is ever sent.
    bank_a = stock_victim("bank-a", num_examples=5000)
    cfg = SecAggConfig(sample_num=3)

    recovered = fake_peers_sybil(bank_a, cfg, fake_ids=(9001, 9002))

    assert max_abs_error(recovered, bank_a.update) <= tolerance(cfg, bank_a.num_examples)


def test_bruteforce_of_folded_mask_seed_recovers_update_in_round_of_two() -> None:
    # Stock SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=1.0)
    # (an int 1 is turned into 1.0) sets share_num = threshold = 2 for two
    # clients; we send the same setup config directly.
    bank_a, bank_b = stock_victims(("bank-a", "bank-b"), num_examples=5000)
    cfg = SecAggConfig(sample_num=2, share_num=2, threshold=2)

    # An honest round: the server legitimately learns both self-mask seeds
    # and the aggregate, but not the pairwise mask.
    transcript, honest = honest_round([bank_a, bank_b], cfg, group_id="1")
    mean = [(a.astype(np.float64) + b) / 2 for a, b in zip(bank_a.update, bank_b.update)]
    assert max_abs_error(honest.aggregate, mean) <= tolerance(cfg, 5000)

    # Test oracle (not the attack): place a 2**16 window of the 2**28 space,
    # aligned as one block of a full scan, around the true folded seed.
    true_seed = victim_pairwise_seed_oracle(bank_a, transcript.public_keys[bank_b.node_id][0])
    assert true_seed & BASE64_ZERO_MASK == 0
    block = candidate_index(true_seed, BASE64_ZERO_MASK) >> 16
    window = candidate_seeds(BASE64_ZERO_MASK, block << 16, 1 << 16)

    # The vectorised generator is exactly Flower's MT19937 first draw.
    sample = window[:: 1 << 10]
    flower_first = [
        int(pseudo_rand_gen(int(s).to_bytes(4, "little"), cfg.mod_range, [(1,)])[0][0]) for s in sample
    ]
    assert mt19937_first_outputs(sample).astype(np.int64).tolist() == flower_first

    recovered = bruteforce_two_party_update(transcript, honest.rd_seeds, bank_a.node_id, window)

    assert recovered is not None
    assert max_abs_error(recovered, bank_a.update) <= tolerance(cfg, bank_a.num_examples)
    # A window that misses the seed finds nothing (no false positive).
    other = candidate_seeds(BASE64_ZERO_MASK, ((block + 1) % (1 << 12)) << 16, 1 << 16)
    assert bruteforce_two_party_update(transcript, honest.rd_seeds, bank_a.node_id, other) is None

    # The full 2**28 scan is cheap (measured ~0.1 us per candidate: ~30 s);
    # an hour is a very generous bound for any machine running this suite.
    cost = measure_candidate_cost(n_vectorised=1 << 16, n_reseed=1 << 10, n_flower=1 << 8)
    assert cost.space == 2**28
    assert cost.full_scan_vectorised_s < 3600


def test_fold_loses_four_bits_of_entropy_of_pairwise_seed() -> None:
    # Our fold is Flower's: a 44-byte key and its 4-byte fold give the same mask.
    sk, _ = generate_key_pairs()
    _, pk = generate_key_pairs()
    key = generate_shared_key(sk, pk)
    assert len(key) == 44
    shapes: list[tuple[int, ...]] = [(1,), (7,)]
    direct = pseudo_rand_gen(key, 2**32, shapes)
    folded = pseudo_rand_gen(fold_seed(key).to_bytes(4, "little"), 2**32, shapes)
    assert all(np.array_equal(a, b) for a, b in zip(direct, folded))

    # Over 2016 real pairwise keys the top bit of every byte lane is never set.
    keys = real_pairwise_keys(64)
    assert zero_bit_mask(keys) == BASE64_ZERO_MASK == 0x80808080

    report = fold_entropy(keys)
    assert report.n_keys == 2016
    assert report.free_bits == 28
    # Each 7-bit lane is close to uniform (collision probability ~1/128), so
    # the seed has ~28 bits, not the 32 the fold could hold nor the 256 of the key.
    assert all(abs(c * 128 - 1) < 0.1 for c in report.lane_collision)
    assert 27.7 < report.collision_entropy_bits < 28.3
    assert 27.99 < report.model_entropy_bits <= 28.0
    assert report.expected_collisions_28 == 16 * report.expected_collisions_32


def test_differencing_and_replay_of_round_number_recover_third_partys_vector() -> None:
    # An evaluation-style vector (a histogram) with weight = max_weight, so
    # every ratio is 1 and the aggregate is the plain mean.
    cfg = SecAggConfig(sample_num=3)
    weight = int(cfg.max_weight)
    victims = [stock_victim(n, update=known_histogram(n), num_examples=weight) for n in NAMES]
    insurer_c = victims[2]

    # Both rounds use group_id "7": bank-a and bank-b (same contexts) accept a
    # new setup for a round number they have already completed.
    recovered = differencing(victims, insurer_c.node_id, cfg, group_ids=("7", "7"))

    step = 2 * cfg.clipping_range / cfg.target_range
    assert max_abs_error(recovered, insurer_c.update) <= 5 * step
    assert max_abs_error(recovered, victims[0].update) > 0.01
