"""A dishonest operator's ServerApp in the real simulation engine: attacks fail, loudly.

``dishonest_server.py`` is fedfraud's own round loop with a SecAgg+ workflow
that attacks (overlap at unmask, key substitution, differencing; see its
docstring). It is packed into a Flower app of its own and run with
``flwr run`` against the institutions' real ClientApps. Each attack must end
in named refusals in the server's signed audit log and in the institutions'
own logs, with nothing aggregated, while the server keeps running and the
honest round after the attacks succeeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.rundir import read_rounds

from .attacker_app import attacker_app

from tests.integration.federation import (
    INSTITUTIONS,
    final_weights,
    make_data,
    run_federation,
    verify_with_cli,
)

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def attacked_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dishonest")
    data = make_data(root / "data", rows=2000)
    run_dir, _ = run_federation(root, data, rounds=3, project=attacker_app(root / "app", "serverapp", HERE / "dishonest_server.py", "dishonest"))
    records = [json.loads(line) for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    refusals = [r["record"]["body"] for r in records if r["record"]["kind"] == "policy_refusal"]
    return {"root": root, "run_dir": run_dir, "rounds": read_rounds(run_dir), "refusals": refusals}


def refusals_in(run: dict[str, Any], server_round: int, text: str) -> set[str]:
    """Institutions whose audited refusal in ``server_round`` names ``text``."""
    return {
        r["institution"]
        for r in run["refusals"]
        if r["round"] == server_round and any(text in rule for rule in r["rules"])
    }


def own_refusals(run: dict[str, Any], institution: str, text: str) -> list[dict[str, Any]]:
    path = run["root"] / "parties" / "sites" / institution / "audit" / "refusals.jsonl"
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in entries if any(text in rule for rule in e["rules"])]


def test_overlap_at_unmask_by_a_dishonest_serverapp(attacked_run: dict[str, Any]) -> None:
    first = attacked_run["rounds"][0]
    assert first["accepted"] is False
    # Every institution refused to unmask, in the server's own audit log.
    assert refusals_in(attacked_run, 1, "secagg.overlap") == set(INSTITUTIONS)
    assert all(own_refusals(attacked_run, name, "secagg.overlap") for name in INSTITUTIONS)


def test_key_substitution_by_a_dishonest_serverapp(attacked_run: dict[str, Any]) -> None:
    second = attacked_run["rounds"][1]
    assert second["accepted"] is False
    # The institutions whose peer's keys were swapped refuse at share-keys.
    assert len(refusals_in(attacked_run, 2, "does not verify against its pinned key")) >= 2


def test_differencing_by_a_dishonest_serverapp(attacked_run: dict[str, Any]) -> None:
    # Round 1 evaluated the initial model with all three; round 2 (nothing
    # aggregated in between) asks two of them to evaluate it again.
    assert refusals_in(attacked_run, 2, "secagg.differencing") and not attacked_run["rounds"][1][
        "metrics"
    ].get("false_negatives")
    assert attacked_run["rounds"][0]["evaluated_by"] == sorted(INSTITUTIONS)


def test_after_the_attacks_an_honest_round_goes_through(attacked_run: dict[str, Any]) -> None:
    third = attacked_run["rounds"][2]
    assert third["accepted"] is True
    assert third["cohort"] == sorted(INSTITUTIONS)
    weights = final_weights(attacked_run["run_dir"])
    assert all(np.all(np.isfinite(w)) for w in weights.values())
    # The attacked run's audit trail is whole and says what happened.
    result = verify_with_cli(attacked_run["run_dir"], attacked_run["root"] / "parties")
    assert result.returncode == 0, result.stdout + result.stderr
