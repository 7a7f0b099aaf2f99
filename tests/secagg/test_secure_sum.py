"""Secure summation of counts through fedfraud's SecAgg+ (real masks) is exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedfraud.errors import ProtocolError
from secagg_settings import BASE, masked_mean

from secagg.params import SecAggSettings, UpdateOutOfRange, check_update_in_range
from secagg.secure_sum import (
    COUNT_SCALE,
    counts_from_sum,
    counts_to_vector,
    total_from_sum,
    total_to_vector,
    unscaled_sum,
)



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
    _, mean = masked_mean([[v] for v in vectors], [int(s.max_weight)] * n, s)
    assert np.array_equal(counts_from_sum(unscaled_sum(mean, n), n, s), np.sum(counts, axis=0))


def test_totals_come_back_within_the_scaled_bound() -> None:
    s = SecAggSettings.from_run_config(BASE)
    totals = [1234.5678, 98765.4321, 0.25]
    vectors = [total_to_vector(t) for t in totals]
    _, mean = masked_mean([[v] for v in vectors], [int(s.max_weight)] * 3, s)
    assert abs(total_from_sum(float(unscaled_sum(mean, 3)[0])) - sum(totals)) < 1.0


def test_counts_too_large_for_the_range_are_refused_not_clipped() -> None:
    with pytest.raises(UpdateOutOfRange):
        check_update_in_range([counts_to_vector([9 * COUNT_SCALE])], 8.0)


def test_inexact_settings_are_refused() -> None:
    s = SecAggSettings.from_run_config({**BASE, "quantization-range": 2**12})
    with pytest.raises(ProtocolError, match="not exact"):
        counts_from_sum(np.zeros(3), 3, s)
