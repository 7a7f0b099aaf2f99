"""The institution's gate decides with ``policy.decide`` and the cohort it counted itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from client.gate import Institution, RoundRefused, RoundView, check_round
from client.node import InstitutionNode
from client.secagg_adapter import ObservedSecAgg
from federation.settings import RunSettings
from fedfraud.simulation import default_run_config, project_dir
from fraud.features import FEATURE_COLUMNS
from policy import load_policy

NOW = datetime(2026, 6, 1, tzinfo=UTC)
FEDERATION = ("bank-a", "bank-b", "insurer-c")


def _bank_a(tmp_path: Path, accepted: list[str]) -> Institution:
    text = (project_dir() / "policies" / "bank-a.toml").read_text(encoding="utf-8")
    text = text.replace('accepted_partners = ["bank-b", "insurer-c"]', f"accepted_partners = {accepted!r}".replace("'", '"'))
    path = tmp_path / "bank-a.toml"
    path.write_text(text, encoding="utf-8")
    return Institution(
        node=InstitutionNode("bank-a", tmp_path, tmp_path),
        policy=load_policy(path),
        signing_key=None,  # type: ignore[arg-type]  # the gate never signs
        server_key=None,  # type: ignore[arg-type]
        features=tuple(FEATURE_COLUMNS),
    )


def _view(cohort: tuple[str, ...], threshold: int = 2) -> RoundView:
    observed = ObservedSecAgg(
        "collect-masked-vectors", len(cohort), 3, threshold, 8.0, 2**24, 2**32, 100000.0, cohort
    )
    return RoundView("bank-a", 1, observed, cohort)


def _settings() -> RunSettings:
    config = default_run_config()
    config.update({"institutions": ",".join(FEDERATION)})
    return RunSettings.from_run_config(config)


def test_gate_decides_with_the_cohort_it_counted(tmp_path: Path) -> None:
    # bank-a accepts only bank-b. Before, the gate named the whole federation
    # as partners, so it refused every round, even one whose verified cohort
    # is {bank-a, bank-b}; now decide's partner rule sees the real cohort.
    bank_a = _bank_a(tmp_path, ["bank-b"])
    check_round(_view(("bank-a", "bank-b")), _settings(), bank_a, now=NOW)
    with pytest.raises(RoundRefused) as info:
        check_round(_view(FEDERATION), _settings(), bank_a, now=NOW)
    assert any("'insurer-c' is in the cohort but is not an accepted partner" in r for r in info.value.refusal.rules)


def test_decides_threshold_rule_fires_on_the_counted_cohort(tmp_path: Path) -> None:
    # A threshold above the cohort it counted: decide's rule, unreachable
    # before (the gate claimed the whole federation as the cohort).
    bank_a = _bank_a(tmp_path, ["bank-b", "insurer-c"])
    with pytest.raises(RoundRefused) as info:
        check_round(_view(("bank-a", "bank-b"), threshold=3), _settings(), bank_a, now=NOW)
    assert any("instructions.secagg_threshold" in r for r in info.value.refusal.rules)


def _site(tmp_path: Path) -> InstitutionNode:
    from audit.keys import generate_signing_key, public_key_b64, save_private_key, save_public_key

    node = InstitutionNode("bank-a", tmp_path, tmp_path)
    key = generate_signing_key()
    save_private_key(key, node.signing_key_path)
    save_public_key(generate_signing_key().public_key(), node.server_key_path)
    text = (project_dir() / "policies" / "bank-a.toml").read_text(encoding="utf-8")
    own = load_policy(project_dir() / "policies" / "bank-a.toml").identity.public_key
    node.policy_path.write_text(text.replace(own, public_key_b64(key)), encoding="utf-8")
    return node


def test_policy_and_keys_are_parsed_once_while_their_bytes_stay_the_same(tmp_path: Path) -> None:
    from client.gate import load_institution

    node = _site(tmp_path)
    first = load_institution(node, _settings(), now=NOW)
    again = load_institution(node, _settings(), now=NOW)
    assert again.policy is first.policy and again.signing_key is first.signing_key


def test_an_edited_policy_takes_effect_at_the_next_load(tmp_path: Path) -> None:
    from client.gate import load_institution
    from core.errors import PolicyViolation

    node = _site(tmp_path)
    before = load_institution(node, _settings(), now=NOW)
    # Same length, same file, written at once: only the bytes tell it changed.
    text = node.policy_path.read_text(encoding="utf-8")
    node.policy_path.write_text(text.replace('id = "bank-a"', 'id = "bank-x"'), encoding="utf-8")
    with pytest.raises(PolicyViolation, match="policy is for 'bank-x'"):
        load_institution(node, _settings(), now=NOW)
    node.policy_path.write_text(text, encoding="utf-8")
    assert load_institution(node, _settings(), now=NOW).policy.policy_hash == before.policy.policy_hash


def test_an_expired_policy_is_refused_even_when_its_parse_is_cached(tmp_path: Path) -> None:
    from client.gate import load_institution
    from core.errors import PolicyViolation

    node = _site(tmp_path)
    load_institution(node, _settings(), now=NOW)  # parsed and cached while in force
    after = datetime(2028, 1, 1, tzinfo=UTC)  # bank-a's policy is valid until 2027-12-31
    with pytest.raises(PolicyViolation):
        load_institution(node, _settings(), now=after)
