"""Secure summation of counts through SecAgg+'s weighted mean is exact."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common.secure_aggregation.ndarrays_arithmetic import factor_combine, factor_extract
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfraud.errors import ProtocolError
from secagg_settings import BASE

from secagg.params import SecAggSettings, UpdateOutOfRange, check_update_in_range
from secagg.secure_sum import (
    COUNT_SCALE,
    counts_from_sum,
    counts_to_vector,
    total_from_sum,
    total_to_vector,
    unscaled_sum,
)



def flower_mean(vectors: list[np.ndarray], weight: int, s: SecAggSettings, seed: int) -> np.ndarray:
    """Flower's SecAgg+ arithmetic for equal weights (masks cancel exactly mod M)."""
    np.random.seed(seed)
    q, c, m = s.quantization_range, s.clipping_range, s.modulus_range
    total = None
    for vector in vectors:
        q_ratio = round(weight / s.max_weight * q)
        quantized = [
            a.astype(np.int64)
            for a in factor_combine(q_ratio, quantize([vector * (q_ratio / q)], c, q))
        ]
        total = quantized if total is None else [a + b for a, b in zip(total, quantized)]
    assert total is not None
    q_total, params = factor_extract([np.mod(a, m) for a in total])
    mean = dequantize(params, c, q)[0]
    return (mean - (len(vectors) - 1) * c) * (q / q_total)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=8),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    size=st.integers(min_value=1, max_value=50),
)
def test_counts_survive_secagg_exactly(n: int, seed: int, size: int) -> None:
    s = SecAggSettings.from_run_config(BASE)
    rng = np.random.default_rng(seed)
    counts = [rng.integers(0, 120_000, size=size) for _ in range(n)]
    vectors = [counts_to_vector(c) for c in counts]
    for vector in vectors:
        check_update_in_range([vector], s.clipping_range)
    mean = flower_mean(vectors, int(s.max_weight), s, seed)
    assert np.array_equal(counts_from_sum(unscaled_sum(mean, n), n, s), np.sum(counts, axis=0))


def test_totals_come_back_within_the_scaled_bound() -> None:
    s = SecAggSettings.from_run_config(BASE)
    totals = [1234.5678, 98765.4321, 0.25]
    vectors = [total_to_vector(t) for t in totals]
    mean = flower_mean(vectors, int(s.max_weight), s, 3)
    assert abs(total_from_sum(float(unscaled_sum(mean, 3)[0])) - sum(totals)) < 1.0


def test_counts_too_large_for_the_range_are_refused_not_clipped() -> None:
    with pytest.raises(UpdateOutOfRange):
        check_update_in_range([counts_to_vector([9 * COUNT_SCALE])], 8.0)


def test_inexact_settings_are_refused() -> None:
    s = SecAggSettings.from_run_config({**BASE, "quantization-range": 2**12})
    with pytest.raises(ProtocolError, match="not exact"):
        counts_from_sum(np.zeros(3), 3, s)
