"""The server releases pooled metrics by the policies' own rule, and never per-institution sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedfraud.simulation import project_dir
from policy import combine, load_policy
from server.planning import release, withhold_counts_of_another_cohort

POOLED = {
    "loss": 0.1,
    "recall": 0.75,
    "precision": 0.8,
    "false_negatives": 3,
    "true_positives": 9,
    "false_positives": 40,
    "true_negatives": 1000,
    "num_examples": 1052,
}


@pytest.fixture()
def plan() -> Any:
    policies = [
        load_policy(project_dir() / "policies" / f"{name}.toml") for name in ("bank-a", "bank-b")
    ]
    return combine(policies)


def test_withheld_fn_cannot_be_recomputed_from_num_examples(plan: Any) -> None:
    # min_cell_count 5: fn = 3 is withheld. Before, tp, fp, tn and num_examples
    # were released and fn = num_examples - tp - fp - tn gave it back.
    assert plan.min_cell_count == 5
    released, withheld = release(plan, dict(POOLED))
    assert "false_negatives" in withheld
    assert not {"true_positives", "false_positives", "true_negatives"} & released.keys()
    assert released["recall"] == 0.75 and released["loss"] == 0.1


def test_pooled_release_is_the_policies_rule(plan: Any) -> None:
    # The same decision as policy.decide for the plan's allowlist and cell count.
    released, withheld = release(plan, {**POOLED, "false_negatives": 30, "auc_pr": float("nan")})
    assert released["false_negatives"] == 30 and released["num_examples"] == 1052
    assert withheld == ["auc_pr"]  # not finite: withheld, never written as NaN


def test_count_metrics_of_a_changed_cohort_are_withheld() -> None:
    # Round 1 evaluated by {A, B, C}; round 2 by {A, B}: the difference of the
    # two num_examples (and of tp + fn) would be C's own test size and frauds.
    first = dict(POOLED)
    withheld: list[str] = []
    cohort = withhold_counts_of_another_cohort(first, withheld, ("a", "b", "c"), None)
    assert cohort == ("a", "b", "c") and withheld == [] and first["num_examples"] == 1052
    second = dict(POOLED)
    withheld = []
    kept = withhold_counts_of_another_cohort(second, withheld, ("a", "b"), cohort)
    assert kept == ("a", "b", "c")
    assert "num_examples" in withheld and "false_negatives" in withheld
    assert "num_examples" not in second and second["recall"] == 0.75
    # The same cohort again releases them.
    third = dict(POOLED)
    assert withhold_counts_of_another_cohort(third, [], ("a", "b", "c"), kept) == kept
    assert third["num_examples"] == 1052


def test_refusal_without_a_policy_hash_reaches_the_audit_log(tmp_path: Path) -> None:
    # A refusal token without a 64-character policy hash was dropped silently.
    import json

    from audit.keys import load_private_key
    from federation.settings import RunSettings
    from fedfraud.simulation import default_run_config
    from fedfraud.sites import prepare_demo_sites
    from core.wire import Refusal
    from flwr.common import ndarrays_to_parameters
    from server.auditing import ServerAudit
    from server.planning import checked_plan, load_server_policies, plan_record
    from server.strategy import FraudFedAvg

    names = ("bank-a", "bank-b", "insurer-c")
    sites = prepare_demo_sites(tmp_path / "parties", names, project_dir() / "policies")
    config = default_run_config()
    config.update(
        {
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(tmp_path),
            "run-name": "t",
        }
    )
    settings = RunSettings.from_run_config(config)
    plan = checked_plan(settings)
    audit = ServerAudit.start(
        settings, settings.run_dir, load_private_key(sites.server_dir / "audit.key"), config,
        load_server_policies(settings), plan_record(plan),
    )
    refusal = Refusal("insurer-c", 1, ("secagg.setup: refused by a client without a policy",), "")
    strategy = FraudFedAvg(
        settings, plan, audit, ndarrays_to_parameters([]), lambda _: None,
        lambda r: [refusal] if r == 1 else [], None,
    )
    audit.round_opened(1, {"server-round": 1}, names, settings.secagg.as_record())
    strategy.close_round(1, None)
    audit.close_file()
    records = [json.loads(line)["record"] for line in (settings.run_dir / "audit.jsonl").read_text().splitlines()]
    dropouts = [r["body"] for r in records if r["kind"] == "dropout"]
    assert any(
        "insurer-c" in d["institutions"] and "refused by a client without a policy" in d["stage"]
        for d in dropouts
    )
