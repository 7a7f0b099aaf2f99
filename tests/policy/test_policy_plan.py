"""The combined run plan: strictest terms, conflicts, run and cohort checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from core.errors import ConfigError, PolicyViolation
from policy import AggregationMode, Metric, PlanConflict, Policy, Purpose, RunRequest, combine

PARTNERS = {
    "bank-a": ["bank-b", "insurer-c"],
    "bank-b": ["bank-a", "insurer-c"],
    "insurer-c": ["bank-a", "bank-b"],
}


@pytest.fixture
def federation(make_policy: Callable[..., Policy]) -> Callable[..., list[Policy]]:
    """Build three mutually accepting policies, with per-institution overrides."""

    def build(**overrides: dict[str, dict[str, object]]) -> list[Policy]:
        policies = []
        for institution, partners in PARTNERS.items():
            sections: dict[str, dict[str, object]] = {
                "identity": {"id": institution},
                "data_use": {"accepted_partners": partners},
            }
            for section, values in overrides.get(institution.replace("-", "_"), {}).items():
                sections.setdefault(section, {}).update(values)  # type: ignore[union-attr]
            policies.append(make_policy(**sections))
        return policies

    return build


def _request(**changes: object) -> RunRequest:
    values: dict[str, object] = {
        "purpose": "FraudPreventionAndDetection",
        "institutions": ("bank-a", "bank-b", "insurer-c"),
        "num_rounds": 10,
        "aggregation": "secagg+",
        "secagg_threshold": 2,
        "cohort_size": 3,
        "local_epochs": 2,
        "features": ("amount", "log_amount"),
    }
    values.update(changes)
    return RunRequest(**values)  # type: ignore[arg-type]


def _conflicts(plan_request: tuple[object, RunRequest], now: datetime) -> tuple[str, ...]:
    plan, request = plan_request
    with pytest.raises(PlanConflict) as caught:
        plan.check_run(request, now=now)  # type: ignore[attr-defined]
    return caught.value.violations


def test_plan_takes_the_strictest_terms(federation: Callable[..., list[Policy]]) -> None:
    policies = federation(
        bank_a={
            "protection": {"max_rounds": 8, "min_cohort_size": 3, "min_secagg_threshold": 3},
            "outputs": {"min_cell_count": 10, "synthetic_release_allowed": True},
        },
        bank_b={
            "protection": {"max_local_epochs": 2, "required_aggregation": "secagg+"},
            "data_use": {"purposes": ["FraudPreventionAndDetection", "CounterMoneyLaundering"],
                         "min_partners": 2},
            "audit": {"retention_days": 700, "require_countersigned_receipts": False},
            "outputs": {"allowed_metrics": ["loss", "f1"], "synthetic_release_allowed": True},
        },
        insurer_c={
            "data_use": {"allowed_features": ["amount", "log_amount", "new_device"],
                         "forbidden_features": ["customer_name", "merchant_risk"]},
            "audit": {"require_countersigned_receipts": False},
        },
    )

    plan = combine(policies)

    assert plan.conflicts == ()
    assert plan.institutions == ("bank-a", "bank-b", "insurer-c")
    assert plan.purposes == (Purpose.FRAUD_PREVENTION_AND_DETECTION,)
    assert plan.aggregation_modes == (AggregationMode.SECAGG_PLUS,)
    assert plan.max_rounds == 8
    assert plan.max_local_epochs == 2
    assert plan.min_cohort_size == 3
    assert plan.min_secagg_threshold == 3
    assert plan.min_partners == 2
    assert plan.allowed_features == ("amount", "log_amount", "new_device")
    assert "merchant_risk" in plan.forbidden_features
    assert plan.allowed_metrics == (Metric.F1, Metric.LOSS)
    assert plan.min_cell_count == 10
    assert plan.synthetic_release_allowed is False
    assert plan.retention_days == 700
    assert plan.require_countersigned_receipts is True
    assert plan.model_recipients == ("bank-a", "bank-b", "insurer-c")
    assert [ref.policy_hash for ref in plan.contributing] == [p.policy_hash for p in policies]


def test_plan_hash_does_not_depend_on_input_order(
    federation: Callable[..., list[Policy]],
) -> None:
    policies = federation()

    assert combine(policies).plan_hash == combine(reversed(policies)).plan_hash
    assert combine(policies).plan_hash != combine(policies[:2]).plan_hash


def test_acceptable_run_passes(federation: Callable[..., list[Policy]], now: datetime) -> None:
    combine(federation()).check_run(_request(), now=now)


def test_every_run_conflict_names_institution_and_rule(
    federation: Callable[..., list[Policy]], now: datetime
) -> None:
    plan = combine(
        federation(
            bank_b={"protection": {"max_rounds": 5}},
            insurer_c={"protection": {"required_aggregation": "ckks", "max_local_epochs": 1}},
        )
    )

    violations = _conflicts((plan, _request(num_rounds=10, local_epochs=2)), now)

    assert violations == (
        "bank-b: protection.max_rounds is 5 but the run asks for 10 rounds",
        "insurer-c: protection.required_aggregation is 'ckks' but the run uses 'secagg+'",
        "insurer-c: protection.max_local_epochs is 1 but the run asks for 2",
    )


def test_request_conflicts_are_all_reported(
    federation: Callable[..., list[Policy]], now: datetime
) -> None:
    plan = combine(federation())
    request = _request(
        purpose="CommercialResearch",
        num_rounds=21,
        secagg_threshold=1,
        cohort_size=1,
        local_epochs=6,
        features=("amount", "iban", "zip_code"),
    )

    violations = _conflicts((plan, request), now)

    text = "\n".join(violations)
    for institution in PARTNERS:
        for rule in (
            "data_use.purposes",
            "protection.max_rounds",
            "protection.min_secagg_threshold",
            "protection.min_cohort_size",
            "data_use.min_partners",
            "protection.max_local_epochs",
            "data_use.forbidden_features lists 'iban'",
            "data_use.allowed_features does not include 'zip_code'",
        ):
            assert f"{institution}: {rule}" in text, (institution, rule)


def test_run_shape_conflicts(federation: Callable[..., list[Policy]], now: datetime) -> None:
    plan = combine(federation())

    violations = _conflicts((plan, _request(secagg_threshold=3, cohort_size=2)), now)
    assert violations == (
        "run: secagg_threshold 3 exceeds cohort_size 2, so no sum could ever be unmasked",
    )
    violations = _conflicts((plan, _request(cohort_size=4, institutions=("bank-a", "bank-b", "insurer-c", "bank-d"))), now)
    assert "run: bank-d take(s) part but no policy for them is in the plan" in violations
    violations = _conflicts((plan, _request(institutions=("bank-a", "bank-b"), cohort_size=2)), now)
    assert any("insurer-c, who are not in the run" in v for v in violations)


def test_unsatisfiable_plan_lists_every_reason(
    federation: Callable[..., list[Policy]], now: datetime
) -> None:
    policies = federation(
        bank_a={"data_use": {"purposes": ["CounterMoneyLaundering"]},
                "protection": {"required_aggregation": "secagg+"}},
        bank_b={"data_use": {"accepted_partners": ["bank-a"]}},
        insurer_c={"protection": {"required_aggregation": "ckks"}},
    )

    plan = combine(policies)

    assert plan.conflicts[0].startswith("data_use.purposes: no purpose is allowed by every institution")
    assert "bank-b: data_use.accepted_partners does not include insurer-c" in plan.conflicts
    assert any(c.startswith("protection.required_aggregation: no aggregation mode") for c in plan.conflicts)
    with pytest.raises(PlanConflict) as caught:
        plan.ensure_satisfiable()
    assert caught.value.violations == plan.conflicts
    # check_run repeats every plan conflict, whatever the request.
    violations = _conflicts((plan, _request()), now)
    assert set(plan.conflicts) <= set(violations)


def test_federation_too_small_for_a_policy(make_policy: Callable[..., Policy], now: datetime) -> None:
    a = make_policy(identity={"id": "bank-a"}, data_use={"accepted_partners": ["bank-b", "insurer-c"], "min_partners": 2},
                    protection={"min_cohort_size": 3})
    b = make_policy(identity={"id": "bank-b"}, data_use={"accepted_partners": ["bank-a"]})

    plan = combine([a, b])

    assert "bank-a: data_use.min_partners is 2 but the federation has only 1 other institution(s)" in plan.conflicts
    assert "bank-a: protection.min_cohort_size is 3 but the federation has only 2 institution(s)" in plan.conflicts


def test_no_common_recipient_is_a_conflict(federation: Callable[..., list[Policy]]) -> None:
    policies = federation(
        bank_a={"outputs": {"model_recipients": ["bank-a"]}},
        bank_b={"outputs": {"model_recipients": ["bank-b"]}},
    )

    plan = combine(policies)

    assert plan.model_recipients == ()
    assert any(c.startswith("outputs.model_recipients:") for c in plan.conflicts)


def test_recipients_are_those_every_policy_allows(federation: Callable[..., list[Policy]]) -> None:
    plan = combine(federation(bank_a={"outputs": {"model_recipients": ["bank-a", "bank-b"]}}))

    assert plan.model_recipients == ("bank-a", "bank-b")


def test_policies_in_force_at_different_times_conflict(
    federation: Callable[..., list[Policy]],
) -> None:
    policies = federation(
        bank_a={"identity": {"valid_from": datetime(2026, 1, 1, tzinfo=UTC),
                             "valid_until": datetime(2026, 3, 1, tzinfo=UTC)}},
        bank_b={"identity": {"valid_from": datetime(2026, 4, 1, tzinfo=UTC),
                             "valid_until": datetime(2027, 3, 1, tzinfo=UTC)}},
    )

    plan = combine(policies)

    assert any(c.startswith("identity.valid_until: the policies are never all in force") for c in plan.conflicts)


def test_run_outside_a_policy_window_is_refused(federation: Callable[..., list[Policy]]) -> None:
    plan = combine(federation())

    violations = _conflicts((plan, _request()), datetime(2028, 1, 1, tzinfo=UTC))

    assert len(violations) == 3
    assert all(": identity.valid_until: the policy expired" in v for v in violations)


def test_check_cohort(federation: Callable[..., list[Policy]]) -> None:
    plan = combine(federation(insurer_c={"protection": {"min_cohort_size": 3}}))

    plan.check_cohort(3)
    with pytest.raises(PlanConflict) as caught:
        plan.check_cohort(2)

    assert caught.value.violations == (
        "insurer-c: protection.min_cohort_size is 3 but only 2 institution(s) survived the round",
    )
    assert isinstance(caught.value, PolicyViolation)
    assert dict(caught.value.policy_hashes) == dict(plan.policy_hashes)


def test_check_cohort_of_one_breaks_every_rule(federation: Callable[..., list[Policy]]) -> None:
    plan = combine(federation())

    with pytest.raises(PlanConflict) as caught:
        plan.check_cohort(1)

    assert len(caught.value.violations) == 6
    with pytest.raises(TypeError):
        plan.check_cohort(True)


def test_combine_refuses_empty_and_duplicate_input(make_policy: Callable[..., Policy]) -> None:
    with pytest.raises(ConfigError):
        combine([])
    with pytest.raises(ConfigError) as caught:
        combine([make_policy(), make_policy(identity={"version": 2})])
    assert "bank-a" in str(caught.value)


def test_malformed_request_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        _request(num_rounds="10")
    with pytest.raises(ConfigError):
        _request(features="amount")


def test_instructions_for_derives_partners_and_cohort() -> None:
    request = _request(cohort_size=2)

    instructions = request.instructions_for("bank-b", ("bank-a", "bank-b"), server_round=4)

    assert instructions.partners == ("bank-a",)
    assert instructions.cohort_size == 2
    assert instructions.server_round == 4
    assert instructions.features == request.features


# -- the shipped examples ------------------------------------------------------------


def test_examples_accept_the_demo_run(example_policies: dict[str, Policy], now: datetime) -> None:
    plan = combine([example_policies[n] for n in ("bank-a", "bank-b", "insurer-c")])

    assert plan.conflicts == ()
    assert plan.min_cohort_size == 2
    plan.check_run(_request(num_rounds=10, cohort_size=2, features=plan.allowed_features), now=now)
    # One dropout out of three is tolerated.
    plan.check_cohort(2)


def test_strict_insurer_refuses_the_demo_run(
    example_policies: dict[str, Policy], now: datetime
) -> None:
    plan = combine(
        [example_policies[n] for n in ("bank-a", "bank-b", "insurer-c-strict")]
    )

    violations = _conflicts((plan, _request(cohort_size=2)), now)

    assert violations == (
        "insurer-c: protection.required_aggregation is 'ckks' but the run uses 'secagg+'",
        "insurer-c: protection.min_secagg_threshold is 3 but the run uses threshold 2",
        "insurer-c: protection.min_cohort_size is 3 but the run sums only 2 institutions per round",
    )
    # The run insurer-c accepts (CKKS, threshold and cohort of 3) is one this
    # version performs: no conflict.
    plan.check_run(_request(aggregation="ckks", secagg_threshold=3, cohort_size=3), now=now)
    with pytest.raises(PlanConflict):
        plan.check_cohort(2)
