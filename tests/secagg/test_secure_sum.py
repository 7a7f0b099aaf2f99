"""Exact secure sums of counts and fixed-point totals through fedfraud's SecAgg+ (real masks)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.settings import secagg_settings
from core.errors import ConfigError, CryptoError, ProtocolError
from secagg_settings import BASE, masked_integer_sum

from secagg.masks import INTEGER_LIMIT, decode_integer_sum, encode_integers
from secagg.secure_sum import (
    LOSS_SCALE,
    STATS_SCALE,
    SumOutOfRange,
    counts_and_totals,
    fixed_point_error,
    from_fixed_point,
    split_counts_and_totals,
    to_counts,
    to_fixed_point,
)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=8),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    size=st.integers(min_value=1, max_value=50),
)
def test_counts_survive_secagg_exactly(n: int, seed: int, size: int) -> None:
    s = secagg_settings(BASE)
    rng = np.random.default_rng(seed)
    counts = [rng.integers(0, 50_000_000, size=size) for _ in range(n)]
    summed = masked_integer_sum([to_counts(c, "counts") for c in counts], s)
    assert np.array_equal(summed, np.sum(counts, axis=0))


def test_counts_of_a_bank_with_ten_million_rows_sum_exactly() -> None:
    # The old encoding (counts / 16384 inside the clipping range [-8, 8])
    # refused any count above 131072; whole numbers now have no such limit.
    s = secagg_settings(BASE)
    banks = [np.array([10_000_000, 9_999_999, 1, 0]), np.array([3_456_789, 0, 2**40, 7])]
    summed = masked_integer_sum(banks, s)
    assert summed.tolist() == [13_456_789, 9_999_999, 2**40 + 1, 7]


@settings(max_examples=30, deadline=None)
@given(
    totals=st.lists(
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), min_size=2, max_size=10
    )
)
def test_fixed_point_totals_come_back_within_the_asserted_bound(totals: list[float]) -> None:
    s = secagg_settings(BASE)
    vectors = [to_fixed_point([t], LOSS_SCALE, "loss") for t in totals]
    summed = from_fixed_point(masked_integer_sum(vectors, s), LOSS_SCALE)[0]
    assert abs(summed - sum(totals)) <= fixed_point_error(len(totals), LOSS_SCALE) + 1e-6 * abs(sum(totals))


def test_negative_totals_sum_through_twos_complement() -> None:
    s = secagg_settings(BASE)
    summed = masked_integer_sum([np.array([-5, 3]), np.array([2, -3]), np.array([-1, 0])], s)
    assert summed.tolist() == [-4, 0]


def test_counts_and_totals_round_trip() -> None:
    s = secagg_settings(BASE)
    sites = [([100, 40], [12.5, -3.25]), ([7, 7], [0.125, 1000.0])]
    vectors = [counts_and_totals(c, t, STATS_SCALE, "stats") for c, t in sites]
    counts, totals = split_counts_and_totals(masked_integer_sum(vectors, s), 2, STATS_SCALE)
    assert counts.tolist() == [107, 47]
    np.testing.assert_allclose(totals, [12.625, 996.75], atol=fixed_point_error(2, STATS_SCALE))


@pytest.mark.parametrize(
    ("values", "match"),
    [([-1], "whole numbers >= 0"), ([1.5], "whole numbers >= 0"), ([float("nan")], "whole"),
     ([2.0**47], "2\\*\\*47")],
)
def test_bad_counts_are_refused_not_wrapped(values: list[float], match: str) -> None:
    with pytest.raises(SumOutOfRange, match=match):
        to_counts(values, "counts")


def test_totals_too_large_or_not_finite_are_refused() -> None:
    with pytest.raises(SumOutOfRange, match="too large"):
        to_fixed_point([1e12], LOSS_SCALE, "loss")
    with pytest.raises(SumOutOfRange, match="finite"):
        to_fixed_point([float("inf")], LOSS_SCALE, "loss")


def test_encoding_refuses_values_outside_the_exact_range_and_fractions() -> None:
    with pytest.raises(ProtocolError, match="outside"):
        encode_integers(np.array([INTEGER_LIMIT]))
    with pytest.raises(ProtocolError, match="whole numbers"):
        encode_integers(np.array([0.5]))


def test_limbs_larger_than_any_contributors_could_send_mean_a_failed_unmask() -> None:
    with pytest.raises(CryptoError, match="unmasking failed"):
        decode_integer_sum(np.array([70_000, 0, 0], dtype=np.uint32), 1)


def test_a_modulus_too_small_for_exact_limbs_is_refused() -> None:
    s = secagg_settings({**BASE, "modulus-range": 2**25, "quantization-range": 2**12})
    with pytest.raises(ConfigError, match="limbs"):
        s.validate_for(1024)


def test_max_weight_zero_means_auto_and_negative_is_refused() -> None:
    assert secagg_settings({**BASE, "max-weight": 0.0}).auto_weight
    assert not secagg_settings(BASE).auto_weight
    with pytest.raises(ConfigError, match="max-weight"):
        secagg_settings({**BASE, "max-weight": 0.5})
