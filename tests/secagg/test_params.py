"""SecAgg+ settings: validation, the clipping guard and the derived error bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.settings import secagg_settings
from core.errors import ConfigError, ProtocolError
from secagg_settings import BASE, masked_mean

from secagg.params import (
    UpdateOutOfRange,
    aggregation_error_bound,
    check_update_in_range,
    check_weight,
)



def test_defaults_build_and_tolerate_one_dropout_of_three() -> None:
    settings = secagg_settings(BASE)
    settings.validate_for(3)
    assert settings.reconstruction_threshold <= 3 - 1


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("num-shares", 2, "num-shares"),
        ("reconstruction-threshold", 4, "reconstruction-threshold"),
        ("clipping-range", 0.0, "clipping-range"),
        ("modulus-range", 3 * 2**20, "modulus-range"),
        ("timeout", 0.0, "timeout"),
        ("quantization-range", "big", "quantization-range"),
        ("max-weight", True, "max-weight"),
    ],
)
def test_bad_setting_is_named(key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        secagg_settings({**BASE, key: value})


def test_overflow_and_cohort_checks() -> None:
    settings = secagg_settings({**BASE, "quantization-range": 2**30})
    with pytest.raises(ConfigError, match="overflow"):
        settings.validate_for(4)
    with pytest.raises(ConfigError, match="no room for one dropped"):
        secagg_settings(BASE).validate_for(2)
    full = secagg_settings({**BASE, "reconstruction-threshold": 3})
    with pytest.raises(ConfigError, match="no room for one dropped institution out of 3"):
        full.validate_for(3)
    # A run that tolerates no dropout (min-cohort = every institution) may
    # need every share, as a policy demanding threshold = cohort asks.
    full.validate_for(3, dropouts_tolerated=False)
    with pytest.raises(ConfigError, match="exceeds the neighbourhood of 3"):
        secagg_settings({**BASE, "num-shares": 5, "reconstruction-threshold": 5}).validate_for(3, False)


def test_clipping_guard_refuses_and_names_layer_without_values() -> None:
    weights = [np.zeros(3, dtype=np.float32), np.array([0.5, -9.25], dtype=np.float32)]
    with pytest.raises(UpdateOutOfRange) as info:
        check_update_in_range(weights, 8.0, names=["fc1.weight", "fc1.bias"])
    message = str(info.value)
    assert "fc1.bias" in message
    assert "9.25" not in message  # a statistic of a private update never leaves
    check_update_in_range([np.full(4, 8.0)], 8.0)  # the edge itself is fine
    with pytest.raises(UpdateOutOfRange, match="non-finite"):
        check_update_in_range([np.array([np.nan])], 8.0)


def test_weight_guard() -> None:
    check_weight(100, 1000.0)
    with pytest.raises(UpdateOutOfRange):
        check_weight(1001, 1000.0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=6),
    size=st.integers(min_value=1, max_value=40),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    counts=st.lists(st.integers(min_value=1, max_value=100000), min_size=6, max_size=6),
)
def test_secagg_mean_is_within_derived_bound_of_fedavg(
    n: int, size: int, seed: int, counts: list[int]
) -> None:
    settings = secagg_settings(BASE)
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-8.0, 8.0, size=size) for _ in range(n)]
    used = counts[:n]
    _, secure = masked_mean([[u] for u in updates], used, settings)
    plain = np.average(np.stack(updates), axis=0, weights=np.array(used, dtype=np.float64))
    bound = aggregation_error_bound(used, settings)
    assert np.max(np.abs(secure - plain)) <= bound


def test_threshold_bound_against_a_malicious_server() -> None:
    # Bonawitz et al. 2017: t > (n + n_C) / 2, and t > n_C.
    from core.errors import ProtocolError
    from secagg.params import check_threshold, minimum_threshold

    assert [minimum_threshold(n) for n in (2, 3, 4, 5, 10)] == [2, 2, 3, 3, 6]
    assert minimum_threshold(3, colluders=1) == 3
    check_threshold(2, 3)
    with pytest.raises(ProtocolError, match="below the bound"):
        check_threshold(2, 5)
    with pytest.raises(ProtocolError, match="exceeds the neighbourhood"):
        check_threshold(4, 3)
    # The run settings refuse it before anything starts: 5 of 5 shares, t = 2.
    settings = secagg_settings({**BASE, "num-shares": 5, "reconstruction-threshold": 2})
    with pytest.raises(ConfigError, match="below the bound"):
        settings.validate_for(5)
    secagg_settings({**BASE, "num-shares": 5, "reconstruction-threshold": 3}).validate_for(5)


def test_auto_shares_grow_with_the_log_of_the_cohort_and_keep_a_majority_threshold() -> None:
    from secagg.params import auto_shares, minimum_threshold

    assert [auto_shares(n) for n in (3, 4, 5, 10, 20, 50, 100)] == [
        (3, 2), (3, 2), (5, 3), (9, 5), (11, 6), (13, 7), (15, 8)]
    for n in (3, 4, 5, 7, 10, 20, 50, 100, 250):
        k, t = auto_shares(n)
        assert k % 2 == 1 and k <= n and t == minimum_threshold(k) and t < k
        # The defaults (0 = auto) fit every such federation with dropouts tolerated.
        settings = secagg_settings({**BASE, "num-shares": 0, "reconstruction-threshold": 0}, n)
        assert (settings.num_shares, settings.reconstruction_threshold) == (k, t)
        settings.validate_for(n)
    with pytest.raises(ConfigError, match="cohort is unknown"):
        secagg_settings({**BASE, "num-shares": 0})


def test_the_institution_reads_back_exactly_what_the_server_announces() -> None:
    from secagg.protocol import Field, announce, read_announced

    settings = secagg_settings(BASE)
    fields = announce(settings, 12345.0)
    assert read_announced(fields) == {
        "num_shares": settings.num_shares,
        "reconstruction_threshold": settings.reconstruction_threshold,
        "clipping_range": settings.clipping_range,
        "quantization_range": settings.quantization_range,
        "modulus_range": settings.modulus_range,
        "max_weight": 12345.0,
    }
    with pytest.raises(ProtocolError, match="'threshold' must be an integer in \\[1, 1000\\]"):
        read_announced({**fields, Field.THRESHOLD: 0})
    with pytest.raises(ProtocolError, match="'clipping-range' must be a finite float"):
        read_announced({**fields, Field.CLIPPING_RANGE: float("nan")})
