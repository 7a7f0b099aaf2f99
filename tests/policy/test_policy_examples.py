"""The shipped example policies in ``policies/``."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from policy import Policy

GENERATOR_FEATURES = (
    "amount, log_amount, hour_sin, hour_cos, is_weekend, channel_card_present, "
    "channel_card_not_present, channel_online_banking, merchant_risk, terminal_fraud_rate_28d, "
    "customer_tx_count_1d, customer_tx_count_7d, customer_tx_count_30d, customer_mean_amount_1d, "
    "customer_mean_amount_7d, customer_mean_amount_30d, amount_to_mean_30d, "
    "seconds_since_last_tx, new_device, foreign_country"
).split(", ")


def test_public_keys_are_real_ed25519_keys(example_policies: dict[str, Policy]) -> None:
    keys = set()
    for policy in example_policies.values():
        raw = base64.b64decode(policy.identity.public_key, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
        keys.add(raw)

    assert len(keys) == len(example_policies)


def test_no_private_key_material_is_shipped(examples: dict[str, Path]) -> None:
    folder = next(iter(examples.values())).parent
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            assert "PRIVATE KEY" not in text  # No PEM or OpenSSH private key block.
            assert not re.search(r"(?im)^\s*(private|secret|seed)\w*\s*=", text)


def test_demo_policies_match_the_issue(example_policies: dict[str, Policy]) -> None:
    for name in ("bank-a", "bank-b", "insurer-c"):
        policy = example_policies[name]
        others = {"bank-a", "bank-b", "insurer-c"} - {name}
        assert policy.institution_id == name
        assert set(policy.data_use.accepted_partners) == others
        assert [p.value for p in policy.data_use.purposes] == ["FraudPreventionAndDetection"]
        assert set(policy.data_use.allowed_features) == set(GENERATOR_FEATURES)
        assert set(policy.data_use.forbidden_features) == {
            "customer_name", "national_id", "account_number", "iban", "address", "email", "phone",
        }
        assert policy.protection.min_cohort_size == 2
        assert policy.protection.min_secagg_threshold == 2
        assert policy.protection.max_rounds == 20
        assert policy.protection.max_local_epochs == 5
        assert len(policy.outputs.allowed_metrics) == 11
        assert policy.outputs.min_cell_count == 5
        assert policy.audit.retention_days == 365


def test_strict_insurer_requires_ckks_and_three(example_policies: dict[str, Policy]) -> None:
    strict = example_policies["insurer-c-strict"]

    assert strict.institution_id == "insurer-c"
    assert strict.protection.required_aggregation.value == "ckks"
    assert strict.protection.min_cohort_size == 3
    assert strict.policy_hash != example_policies["insurer-c"].policy_hash
