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
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.server import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key

from client import ckks_mode
from client.gate import RoundRefused
from client.node import resolve_node
from fedfraud.settings import RunSettings
from fedfraud.wire import CKKS_INITIAL_MODEL
from secagg.protocol import Field, Stage
from server.evaluation import EvaluationSums, SecureEvaluation

from .hardened_driver import (
    Party,
    advert_of,
    global_model,
    listing,
    make_federation,
    parties,
    send,
    setup_fields,
)


def _collect_initial(victims: list[Party], server_round: int, task: str) -> dict[str, object]:
    """One honest ckks round up to the collect stage, naming the initial model.

    Returns each victim's reply fields, or the error it raised, by institution.
    """
    setup = setup_fields(task, len(victims))
    adverts = [advert_of(p, send(p, Stage.SETUP, setup, server_round)) for p in victims]
    boxes: dict[int, list[tuple[int, bytes]]] = {p.node_id: [] for p in victims}
    dealt: dict[str, object] = {}
    for party in victims:
        reply = send(party, Stage.SHARE_KEYS, listing(adverts), server_round)
        for dst, box in zip(reply[Field.DESTINATIONS], reply[Field.BOXES], strict=True):
            boxes[dst].append((party.node_id, box))
        if Field.CKKS_CONTEXT in reply:
            dealt = {"node": party.node_id, **reply}
    # A training round deals the CKKS key; an evaluation sums counts only.
    envelopes = (
        dict(zip(dealt[Field.CKKS_RECIPIENTS], dealt[Field.CKKS_ENVELOPES], strict=True))  # type: ignore[call-overload]
        if dealt
        else {}
    )
    outcomes: dict[str, object] = {}
    for party in victims:
        fields = {
            Field.SOURCES: [s for s, _ in boxes[party.node_id]],
            Field.BOXES: [b for _, b in boxes[party.node_id]],
        }
        if dealt:
            fields[Field.CKKS_CONTEXT] = dealt[Field.CKKS_CONTEXT]
            fields[Field.CKKS_DEALER] = dealt["node"]
        if party.node_id in envelopes:
            fields[Field.CKKS_ENVELOPE] = envelopes[party.node_id]
        config = {"server-round": server_round, "task": task, "ckks-model-id": CKKS_INITIAL_MODEL}
        fitins = FitIns(ndarrays_to_parameters(global_model()), config)  # type: ignore[arg-type]
        try:
            outcomes[party.name] = send(party, Stage.COLLECT, fields, server_round, fitins=fitins)
        except (RoundRefused, RuntimeError) as exc:
            outcomes[party.name] = exc
    return outcomes


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
