"""Institution-side decisions: check_round refusals and release_metrics suppression."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.errors import PolicyViolation, ProtocolError
from policy import Policy, PolicyRefusal, RoundInstructions, check_round, release_metrics

FEATURES = ("amount", "log_amount", "merchant_risk")


@pytest.fixture
def policy(make_policy: Callable[..., Policy]) -> Policy:
    return make_policy()


@pytest.fixture
def good() -> RoundInstructions:
    """Instructions the default test policy accepts."""
    return RoundInstructions(
        purpose="FraudPreventionAndDetection",
        partners=("bank-b", "insurer-c"),
        server_round=1,
        num_rounds=10,
        aggregation="secagg+",
        secagg_threshold=2,
        cohort_size=3,
        local_epochs=2,
        features=FEATURES,
    )


def _refusal(policy: Policy, instructions: RoundInstructions, now: datetime) -> PolicyRefusal:
    with pytest.raises(PolicyRefusal) as caught:
        check_round(policy, instructions, now)
    return caught.value


def test_acceptable_round_passes(policy: Policy, good: RoundInstructions, now: datetime) -> None:
    check_round(policy, good, now)


def test_ckks_round_passes_when_any_is_allowed(
    policy: Policy, good: RoundInstructions, now: datetime
) -> None:
    check_round(policy, replace(good, aggregation="ckks"), now)


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"purpose": "CommercialResearch"}, "data_use.purposes"),
        ({"purpose": "Marketing"}, "data_use.purposes"),
        ({"partners": ("bank-b", "data-broker")}, "data_use.accepted_partners"),
        ({"partners": (), "cohort_size": 1}, "data_use.min_partners"),
        ({"num_rounds": 21, "server_round": 1}, "protection.max_rounds"),
        ({"num_rounds": 30, "server_round": 25}, "protection.max_rounds"),
        ({"aggregation": "plaintext"}, "protection.required_aggregation"),
        ({"secagg_threshold": 1}, "protection.min_secagg_threshold"),
        ({"partners": ("bank-b",), "cohort_size": 2, "secagg_threshold": 2}, None),
        ({"local_epochs": 6}, "protection.max_local_epochs"),
        ({"features": ("amount", "iban")}, "data_use.forbidden_features"),
        ({"features": ("amount", "IBAN")}, "data_use.forbidden_features"),
        ({"features": ("amount", "zip_code")}, "data_use.allowed_features"),
        ({"server_round": 11}, "instructions.server_round"),
        ({"cohort_size": 5}, "instructions.cohort_size"),
        ({"secagg_threshold": 4}, "instructions.secagg_threshold"),
        ({"features": ()}, "instructions.features"),
        ({"features": ("amount", "amount")}, "instructions.features"),
        ({"partners": ("bank-b", "bank-a"), "cohort_size": 3}, "instructions.partners"),
        ({"partners": ("bank-b", "bank-b"), "cohort_size": 2}, "instructions.partners"),
        ({"local_epochs": 0}, "instructions.local_epochs"),
    ],
)
def test_each_broken_rule_is_named(
    policy: Policy,
    good: RoundInstructions,
    now: datetime,
    change: dict[str, Any],
    rule: str | None,
) -> None:
    instructions = replace(good, **change)
    if rule is None:  # A smaller, still acceptable cohort.
        check_round(policy, instructions, now)
        return

    refusal = _refusal(policy, instructions, now)

    assert any(v.startswith(f"{rule}: ") for v in refusal.violations), refusal.violations


def test_cohort_below_the_minimum_is_refused(
    make_policy: Callable[..., Policy], good: RoundInstructions, now: datetime
) -> None:
    strict = make_policy(protection={"min_cohort_size": 3, "min_secagg_threshold": 2})

    refusal = _refusal(strict, replace(good, partners=("bank-b",), cohort_size=2), now)

    assert refusal.violations == (
        "protection.min_cohort_size: the round sums 2 institution(s), fewer than the minimum of 3",
    )


def test_ckks_only_policy_refuses_secagg(
    make_policy: Callable[..., Policy], good: RoundInstructions, now: datetime
) -> None:
    strict = make_policy(protection={"required_aggregation": "ckks"})

    refusal = _refusal(strict, good, now)

    assert refusal.violations == (
        "protection.required_aggregation: the round uses 'secagg+' but this policy requires 'ckks'",
    )


def test_every_broken_rule_is_reported_at_once(
    policy: Policy, good: RoundInstructions, now: datetime
) -> None:
    bad = replace(
        good,
        purpose="Marketing",
        partners=("bank-b", "stranger"),
        num_rounds=50,
        server_round=2,
        aggregation="plaintext",
        secagg_threshold=1,
        local_epochs=9,
        features=("amount", "iban", "zip_code"),
    )

    refusal = _refusal(policy, bad, now)

    rules = [v.split(":", 1)[0] for v in refusal.violations]
    assert rules == [
        "data_use.purposes",
        "data_use.accepted_partners",
        "protection.max_rounds",
        "protection.required_aggregation",
        "protection.min_secagg_threshold",
        "protection.max_local_epochs",
        "data_use.forbidden_features",
        "data_use.allowed_features",
    ]
    assert str(refusal).startswith("bank-a refuses round 2: 8 rules broken")


def test_refusal_carries_the_policy_hash_and_institution(
    policy: Policy, good: RoundInstructions, now: datetime
) -> None:
    refusal = _refusal(policy, replace(good, local_epochs=99), now)

    assert isinstance(refusal, PolicyViolation)
    assert refusal.policy_hash == policy.policy_hash
    assert refusal.institution == "bank-a"
    assert refusal.exit_code == 4


def test_expired_and_not_yet_valid_policies_refuse(
    policy: Policy, good: RoundInstructions
) -> None:
    late = datetime(2027, 12, 31, tzinfo=UTC)
    early = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)

    assert _refusal(policy, good, late).violations[0].startswith("identity.valid_until: ")
    assert _refusal(policy, good, early).violations[0].startswith("identity.valid_from: ")
    check_round(policy, good, late - timedelta(microseconds=1))
    check_round(policy, good, datetime(2026, 1, 1, tzinfo=UTC))


def test_ensure_current_raises_outside_the_window(policy: Policy) -> None:
    policy.ensure_current(datetime(2026, 6, 1, tzinfo=UTC))

    with pytest.raises(PolicyRefusal) as caught:
        policy.ensure_current(datetime(2028, 1, 1, tzinfo=UTC))

    assert caught.value.policy_hash == policy.policy_hash
    assert "identity.valid_until" in caught.value.violations[0]


def test_naive_now_is_refused(policy: Policy, good: RoundInstructions) -> None:
    with pytest.raises(TypeError):
        check_round(policy, good, datetime(2026, 6, 1))
    with pytest.raises(TypeError):
        policy.ensure_current(datetime(2026, 6, 1))


def test_malformed_instructions_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        RoundInstructions(
            purpose="FraudPreventionAndDetection",
            partners="bank-b",  # type: ignore[arg-type]
            server_round=True,
            num_rounds=10,
            aggregation="secagg+",
            secagg_threshold="2",  # type: ignore[arg-type]
            cohort_size=2,
            local_epochs=1,
            features=("amount",),
        )

    message = str(caught.value)
    assert "partners" in message and "server_round" in message and "secagg_threshold" in message


def test_lists_are_frozen_into_tuples(good: RoundInstructions) -> None:
    features = ["amount"]
    instructions = replace(good, features=features)  # type: ignore[arg-type]
    features.append("iban")

    assert instructions.features == ("amount",)


# -- release_metrics --------------------------------------------------------------


def test_release_keeps_allowed_metrics_and_drops_the_rest(policy: Policy) -> None:
    release = release_metrics(
        policy,
        {"loss": 0.25, "f1": 0.5, "auc_pr": 0.7, "gradient_norm": 3.0, "num_examples": 400},
    )

    assert dict(release.released) == {"loss": 0.25, "f1": 0.5, "num_examples": 400}
    assert release.not_allowed == ("auc_pr", "gradient_norm")
    assert release.suppressed == ()
    assert release.policy_hash == policy.policy_hash


def test_small_count_cells_are_suppressed(policy: Policy) -> None:
    release = release_metrics(policy, {"num_examples": 4, "loss": 0.1})

    assert dict(release.released) == {"loss": 0.1}
    assert release.suppressed == ("num_examples",)


def test_count_at_the_threshold_is_released(policy: Policy) -> None:
    release = release_metrics(policy, {"num_examples": 5})

    assert dict(release.released) == {"num_examples": 5}


def test_one_small_confusion_cell_suppresses_all_four(policy: Policy) -> None:
    metrics = {
        "true_positives": 3,
        "false_positives": 40,
        "true_negatives": 900,
        "false_negatives": 12,
        "num_examples": 955,
        "precision": 0.07,
    }

    release = release_metrics(policy, metrics)

    # num_examples minus the other three cells would otherwise reveal the 3.
    assert release.suppressed == (
        "false_negatives",
        "false_positives",
        "true_negatives",
        "true_positives",
    )
    assert dict(release.released) == {"num_examples": 955, "precision": 0.07}


def test_custom_count_fields(policy: Policy) -> None:
    release = release_metrics(policy, {"loss": 2.0, "num_examples": 2}, count_fields={"loss"})

    assert release.suppressed == ("loss",)
    assert dict(release.released) == {"num_examples": 2}


def test_released_mapping_is_read_only(policy: Policy) -> None:
    release = release_metrics(policy, {"loss": 0.1})

    with pytest.raises(TypeError):
        release.released["loss"] = 0.0  # type: ignore[index]


@pytest.mark.parametrize("value", [True, "0.5", None])
def test_non_numeric_values_are_refused(policy: Policy, value: object) -> None:
    with pytest.raises(TypeError):
        release_metrics(policy, {"loss": value})  # type: ignore[dict-item]


def test_fractional_count_is_refused(policy: Policy) -> None:
    with pytest.raises(TypeError):
        release_metrics(policy, {"num_examples": 10.5})


def test_integral_float_count_is_accepted(policy: Policy) -> None:
    release = release_metrics(policy, {"num_examples": 10.0})

    assert release.released["num_examples"] == 10
    assert isinstance(release.released["num_examples"], int)
