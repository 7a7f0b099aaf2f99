"""Fixtures for the policy tests: real policy objects, real files, a fixed clock."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from policy import Policy, load_policy

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# A document in the shape tomllib returns, for building variants in tests.
_DOCUMENT: dict[str, Any] = {
    "schema_version": 1,
    "identity": {
        "id": "bank-a",
        "name": "Bank A",
        "public_key": "EnB51ei38SsMn8UYtgGz3whFu3vqgOv414u76gf3FgE=",
        "version": 1,
        "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
        "valid_until": datetime(2027, 12, 31, tzinfo=UTC),
    },
    "data_use": {
        "purposes": ["FraudPreventionAndDetection"],
        "allowed_features": ["amount", "log_amount", "merchant_risk", "new_device"],
        "forbidden_features": ["customer_name", "iban"],
        "accepted_partners": ["bank-b", "insurer-c"],
        "min_partners": 1,
    },
    "protection": {
        "required_aggregation": "any",
        "min_cohort_size": 2,
        "min_secagg_threshold": 2,
        "max_rounds": 20,
        "max_local_epochs": 5,
    },
    "outputs": {
        "model_recipients": ["federation"],
        "allowed_metrics": [
            "loss",
            "precision",
            "recall",
            "f1",
            "true_positives",
            "false_positives",
            "true_negatives",
            "false_negatives",
            "num_examples",
        ],
        "min_cell_count": 5,
        "synthetic_release_allowed": False,
    },
    "audit": {"require_countersigned_receipts": True, "retention_days": 365},
}


@pytest.fixture
def vectors() -> Path:
    """The folder of valid and invalid policy vectors."""
    return HERE / "vectors"


@pytest.fixture
def examples() -> dict[str, Path]:
    """The shipped example policies, by name."""
    folder = REPO / "policies"
    return {
        "bank-a": folder / "bank-a.toml",
        "bank-b": folder / "bank-b.toml",
        "insurer-c": folder / "insurer-c.toml",
        "insurer-c-strict": folder / "strict" / "insurer-c-ckks-only.toml",
    }


@pytest.fixture
def example_policies(examples: dict[str, Path]) -> dict[str, Policy]:
    """The shipped example policies, loaded."""
    return {name: load_policy(path) for name, path in examples.items()}


@pytest.fixture
def now() -> datetime:
    """A fixed instant inside every example policy's validity window."""
    return datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def make_document() -> Callable[..., dict[str, Any]]:
    """Return a builder of policy documents: ``make_document(protection={"max_rounds": 3})``.

    Each keyword names a section whose given keys replace the defaults; the
    result is a fresh deep copy.
    """

    def build(**sections: dict[str, Any]) -> dict[str, Any]:
        document = copy.deepcopy(_DOCUMENT)
        for section, values in sections.items():
            document[section].update(values)
        return document

    return build


@pytest.fixture
def make_policy(make_document: Callable[..., dict[str, Any]]) -> Callable[..., Policy]:
    """Return a builder of validated policies (same keywords as ``make_document``)."""

    def build(**sections: dict[str, Any]) -> Policy:
        return Policy.model_validate(make_document(**sections))

    return build
