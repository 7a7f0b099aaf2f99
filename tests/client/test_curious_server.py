"""A curious or malicious server against the real ClientApp (Flower's own objects).

Each test hands the institution's real ClientApp a message a dishonest
server could send, and checks that nothing about the institution's data or
update comes back.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity

from client.app import app
from federation.settings import UNSAFE_OPT_IN, write_unsafe_opt_in
from fedfraud.simulation import default_run_config, project_dir
from fedfraud.sites import prepare_demo_sites
from fraud.features import FEATURE_COLUMNS
from fraud.generator_files import ensure_federation_data
from fraud.model import build_model, get_weights

NAMES = ("bank-a", "bank-b", "insurer-c")


@pytest.fixture(scope="module")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("parties")
    ensure_federation_data(root / "data", list(NAMES), 600, 3)
    sites = prepare_demo_sites(root / "demo", NAMES, project_dir() / "policies")
    config = default_run_config()
    config.update(
        {
            "data-dir": str(root / "data"),
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(root / "run"),
            "run-name": "curious",
        }
    )
    return config


def plain_fit(run_config: dict[str, Any]) -> tuple[Message, Context]:
    # Flower's runtime sets the task identity before any message is created;
    # this test plays the (dishonest) server's runtime.
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = 0
    weights = get_weights(build_model(len(FEATURE_COLUMNS), seed=42))
    fitins = FitIns(ndarrays_to_parameters(weights), {"server-round": 1})
    message = Message(
        content=compat.fitins_to_recorddict(fitins, keep_input=True),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
        group_id="1",
    )
    context = Context(
        run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config=run_config
    )
    return message, context


def test_plain_fit_request_in_a_secagg_run_is_refused(run_config: dict[str, Any]) -> None:
    # A curious server skips SecAgg+ and asks bank-a to train in the clear.
    message, context = plain_fit(run_config)
    with pytest.raises(Exception) as info:
        app(message, context)
    assert "secaggplus" in str(info.value).lower() or "SecAgg+" in str(info.value)


def test_server_claiming_a_plain_run_gets_nothing_without_the_institutions_opt_in(
    run_config: dict[str, Any],
) -> None:
    # The server rewrites the run config to the unsafe baseline; bank-a never
    # opted in (no file in its own site folder), so its gate refuses.
    config = {**run_config, "aggregation": "unsafe-plain"}
    message, context = plain_fit(config)
    site = Path(str(run_config["sites-dir"])) / "bank-a"
    assert not (site / UNSAFE_OPT_IN).exists()
    with pytest.raises(Exception) as info:
        app(message, context)
    assert "run.aggregation" in str(info.value)
    assert "fedfraud-refusal/1:" in str(info.value)


def soon() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)


def test_the_opted_in_baseline_does_train(run_config: dict[str, Any]) -> None:
    # With bank-a's own opt-in the plain baseline runs (benchmarks only):
    # this shows the refusals above are the gate's doing, not a broken client.
    config = {**run_config, "aggregation": "unsafe-plain"}
    site = Path(str(run_config["sites-dir"])) / "bank-a"
    write_unsafe_opt_in(site, "fedfraud-demo", soon(), "curious")
    try:
        message, context = plain_fit(config)
        with pytest.warns(UserWarning, match="UNSAFE"):
            reply = app(message, context)
    finally:
        (site / UNSAFE_OPT_IN).unlink()
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    assert fitres.num_examples > 0
    assert len(fitres.parameters.tensors) == len(get_weights(build_model(len(FEATURE_COLUMNS), seed=42)))
    assert not np.isnan(fitres.num_examples)


@pytest.mark.parametrize(
    ("federation", "expires", "run", "rule"),
    [
        ("other-federation", None, None, "names federation 'other-federation'"),
        ("fedfraud-demo", dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), None, "expired"),
        ("fedfraud-demo", None, "another-run", "names run 'another-run'"),
    ],
    ids=["foreign-federation", "expired", "another-run"],
)
def test_plain_run_with_an_opt_in_for_something_else_is_refused(
    run_config: dict[str, Any], federation: str, expires: dt.datetime | None, run: str | None, rule: str
) -> None:
    # The opt-in is bounded: it names a federation (or run) and an expiry.
    site = Path(str(run_config["sites-dir"])) / "bank-a"
    write_unsafe_opt_in(site, federation, expires or soon(), run)
    try:
        message, context = plain_fit({**run_config, "aggregation": "unsafe-plain"})
        with pytest.raises(Exception) as info:
            app(message, context)
    finally:
        (site / UNSAFE_OPT_IN).unlink()
    assert rule in str(info.value)


def test_plain_bypass_with_opt_in_under_a_policy_requiring_secagg(run_config: dict[str, Any]) -> None:
    # Attack 5 of issue 9: bank-a's policy requires SecAgg+; a valid opt-in
    # file is present (left from a benchmark); the server asks for a plain fit.
    site = Path(str(run_config["sites-dir"])) / "bank-a"
    policy = site / "policy.toml"
    original = policy.read_text(encoding="utf-8")
    policy.write_text(
        original.replace('required_aggregation = "any"', 'required_aggregation = "secagg+"'),
        encoding="utf-8",
    )
    write_unsafe_opt_in(site, "fedfraud-demo", soon())
    try:
        message, context = plain_fit({**run_config, "aggregation": "unsafe-plain"})
        with pytest.raises(Exception) as info:
            app(message, context)
    finally:
        (site / UNSAFE_OPT_IN).unlink()
        policy.write_text(original, encoding="utf-8")
    assert "protection.required_aggregation" in str(info.value)
    assert "fedfraud-refusal/1:" in str(info.value)
