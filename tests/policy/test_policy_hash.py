"""The policy hash: stable across formatting, sensitive to every value."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from policy import HASH_DOMAIN_TAG, load_policy, parse_policy

VALID = Path(__file__).resolve().parent / "vectors" / "valid"


def test_hash_is_sha256_over_tag_and_canonical_json() -> None:
    policy = load_policy(VALID / "minimal_bank.toml")

    expected = hashlib.sha256(HASH_DOMAIN_TAG + policy.canonical_json()).hexdigest()

    assert policy.policy_hash == expected
    assert HASH_DOMAIN_TAG == b"fedfraud/policy/v1\x00"


def test_canonical_json_is_sorted_compact_and_utc() -> None:
    policy = load_policy(VALID / "offset_datetimes.toml")

    text = policy.canonical_json().decode("utf-8")
    document = json.loads(text)

    assert text == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert document["identity"]["valid_from"] == "2026-01-01T00:00:00Z"
    assert document["identity"]["valid_until"] == "2027-12-31T00:00:00Z"
    assert document["data_use"]["purposes"] == sorted(document["data_use"]["purposes"])
    assert document["schema_version"] == 1


def test_same_content_in_other_layouts_has_the_same_hash() -> None:
    # dotted_keys.toml uses dotted keys and inline tables, a different key and
    # list order; offset_datetimes.toml writes the same instants with offsets.
    reference = load_policy(VALID / "minimal_bank.toml").policy_hash

    assert load_policy(VALID / "dotted_keys.toml").policy_hash == reference
    assert load_policy(VALID / "offset_datetimes.toml").policy_hash == reference


def test_reordered_reformatted_and_commented_file_has_the_same_hash() -> None:
    original = (VALID / "minimal_bank.toml").read_text(encoding="utf-8")
    sections = original.split("\n[")
    head, tables = sections[0], ["[" + part for part in sections[1:]]
    # Reverse the order of the tables, reverse the keys inside each, add
    # comments and blank lines, and use a literal string for the name.
    rewritten = [f"# rewritten\n{head}\n"]
    for table in reversed(tables):
        header, *keys = [line for line in table.splitlines() if line.strip()]
        rewritten.append(f"\n\n{header}   # a comment\n")
        rewritten.extend(f"  {key}\n" for key in reversed(keys))
    text = "".join(rewritten).replace('name = "Bank A"', "name = 'Bank A'")
    text = text.replace('"bank-b", "insurer-c"', '"insurer-c",\n   "bank-b",\n')

    assert text != original
    assert parse_policy(text.encode("utf-8")).policy_hash == load_policy(
        VALID / "minimal_bank.toml"
    ).policy_hash


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("max_rounds = 20", "max_rounds = 19"),
        ("version = 3", "version = 4"),
        ("min_cell_count = 5", "min_cell_count = 6"),
        ("synthetic_release_allowed = false", "synthetic_release_allowed = true"),
        ('name = "Bank A"', 'name = "Bank A."'),
        ("valid_from = 2026-01-01T00:00:00Z", "valid_from = 2026-01-01T00:00:01Z"),
        ('"merchant_risk"]', '"merchant_risk", "new_device"]'),
        ('required_aggregation = "any"', 'required_aggregation = "ckks"'),
        (
            'public_key = "EnB51ei38SsMn8UYtgGz3whFu3vqgOv414u76gf3FgE="',
            'public_key = "e9v6adyx+xyz7FPejBHK6kO2FBkAyFNFL8wlLgtYEQc="',
        ),
    ],
)
def test_any_changed_value_changes_the_hash(old: str, new: str) -> None:
    original = (VALID / "minimal_bank.toml").read_text(encoding="utf-8")
    assert old in original

    changed = parse_policy(original.replace(old, new, 1).encode("utf-8"))

    assert changed.policy_hash != load_policy(VALID / "minimal_bank.toml").policy_hash


def test_hash_of_the_example_is_stable_across_loads(examples: dict[str, Path]) -> None:
    first = load_policy(examples["bank-a"]).policy_hash
    second = load_policy(examples["bank-a"]).policy_hash

    assert first == second
