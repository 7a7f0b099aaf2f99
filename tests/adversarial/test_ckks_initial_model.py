"""The public initial model in ``ckks`` mode: when it may be trained, and when not.

The server never holds a ckks run's model; it names the model the
institutions decrypted by an id, except for the run's public initial model,
which it sends itself. A training round that fails leaves the institutions
with no model, so the next training round must start from the initial model
again; evaluating the initial model, or rolling a run back to it once the
institutions hold a model, is refused. The victims are the product's real
ClientApps (``client.app:app``), played by hand at the message level.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.server import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key

from client import ckks_mode
from client.gate import RoundRefused
from client.node import resolve_node
from federation.settings import RunSettings
from core.wire import CKKS_INITIAL_MODEL
from secagg.protocol import Field
from server.evaluation import EvaluationSums, SecureEvaluation

from .hardened_driver import Party, global_model, make_federation, parties, play_ckks_until_collected


def _collect_initial(victims: list[Party], server_round: int, task: str) -> dict[str, object]:
    """One honest ckks round up to the collect stage, naming the initial model."""
    return play_ckks_until_collected(victims, server_round, task, CKKS_INITIAL_MODEL)


@pytest.fixture()
def ckks_parties(tmp_path: Path) -> list[Party]:
    config = make_federation(tmp_path)
    config["aggregation"] = "ckks"
    return parties(config)


def test_training_restarts_from_the_initial_model_after_a_failed_first_round(
    ckks_parties: list[Party],
) -> None:
    # Round 1 failed (no institution decrypted a model): round 2 names the
    # public initial model again, and every institution contributes.
    outcomes = _collect_initial(ckks_parties, server_round=2, task="train")
    for name, outcome in outcomes.items():
        assert isinstance(outcome, dict), f"{name} refused: {outcome}"
        assert outcome[Field.CKKS_BLOBS] and Field.MASKED not in outcome


def test_rollback_to_the_initial_model_is_refused(ckks_parties: list[Party]) -> None:
    # bank-a decrypted round 1's model; a server that asks it to train the
    # initial model in round 2 (to have a run restart where it pleases) is refused.
    bank_a = ckks_parties[0]
    settings = RunSettings.from_run_config(bank_a.context.run_config)
    node = resolve_node(bank_a.context.node_config, settings)
    ckks_mode.save_model(node, bank_a.context.run_id, 1, "round-1-model", global_model())
    outcomes = _collect_initial(ckks_parties, server_round=2, task="train")
    refusal = outcomes[bank_a.name]
    assert isinstance(refusal, RoundRefused)
    assert "already holds a model of this run" in str(refusal)
    assert all(isinstance(outcomes[p.name], dict) for p in ckks_parties[1:])


def test_evaluating_the_initial_model_is_refused(ckks_parties: list[Party]) -> None:
    outcomes = _collect_initial(ckks_parties, server_round=1, task="evaluate")
    for name, outcome in outcomes.items():
        assert isinstance(outcome, RoundRefused), f"{name} evaluated the initial model"
        assert "the initial model is for training only" in str(outcome)


def test_the_server_skips_evaluation_while_there_is_no_model(tmp_path: Path) -> None:
    # The ServerApp's evaluate workflow asks nobody when the strategy says
    # there is nothing to evaluate, and closes the round without sums.
    closed: list[tuple[int, EvaluationSums | None]] = []
    settings = RunSettings.from_run_config(make_federation(tmp_path) | {"aggregation": "ckks"})
    evaluation = SecureEvaluation(
        settings,
        lambda rnd, sums: closed.append((rnd, sums)),
        dict,
        lambda: "ckks: no training round has produced a model the institutions hold",
    )
    server_context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    context = LegacyContext(server_context)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 2})
    # No Grid: a workflow that asked any institution anything would fail here.
    evaluation(None, context)  # type: ignore[arg-type]
    assert closed == [(2, None)]
