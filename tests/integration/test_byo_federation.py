"""Bring your own data: the insurance claims CSV, federated by policy state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedfraud.errors import ConfigError
from fedfraud.settings import RunSettings
from fedfraud.simulation import SimulationRequest, default_run_config, project_dir, run_simulation
from fedfraud.sites import prepare_demo_sites, split_byo_demo
from server.planning import checked_plan
from fraud.byo import load_schema
from server.rundir import read_rounds

from .federation import check_model_card, check_scoring_reproduces_the_run

CSV = project_dir().parent / "shared" / "data" / "insurance_claims" / "insurance_claims.csv"
SCHEMA = project_dir() / "fraud" / "schemas" / "insurance_claims.toml"


def byo_config(tmp_path: Path, rounds: int) -> tuple[dict[str, object], list[str]]:
    data = tmp_path / "data"
    names = split_byo_demo(CSV, "policy_state", "fraud_reported", data, seed=5)
    sites = prepare_demo_sites(tmp_path / "parties", names, project_dir() / "policies", SCHEMA)
    config = default_run_config()
    config.update(
        {
            "num-server-rounds": rounds,
            "institutions": ",".join(names),
            "data-format": "byo",
            "data-dir": str(data),
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(tmp_path / "run"),
            "run-name": "byo-test",
            "local-epochs": 3,
            "timeout": 60.0,
        }
    )
    return config, names


def test_insurance_csv_trains_end_to_end_in_a_federation(tmp_path: Path) -> None:
    config, names = byo_config(tmp_path, rounds=3)
    config["recall-target"] = 0.8  # choose the threshold for recall, not cost
    assert names == ["il", "in", "oh"]

    run_dir = Path(str(config["run-dir"]))
    run_simulation(SimulationRequest(project_dir(), run_dir, config, num_institutions=3))

    rounds = read_rounds(run_dir)
    assert [r["accepted"] for r in rounds] == [True, True, True]
    assert rounds[-1]["cohort"] == names
    assert "recall >= 0.8" in rounds[-1]["threshold_source"]
    assert "summed training counts" in rounds[-1]["threshold_source"]
    # 1000 claims, 30 % held out per state: the pooled test set is ~300 rows.
    assert 280 <= rounds[-1]["metrics"]["num_examples"] <= 320
    # Fraud is 24.7 % of claims; the federated model must do clearly better.
    assert rounds[-1]["metrics"]["auc_pr"] > 0.35
    config_json = json.loads((run_dir / "config.json").read_text())
    assert "capital_gains" in config_json["features"]  # policy names of the schema's columns
    assert "policy_number" not in config_json["features"]
    # The run directory keeps the schema and the agreed scaling: `fedfraud
    # score` on the states' own test files (their union, as the federation
    # evaluates) reproduces the run's final metrics exactly.
    scoring = json.loads((run_dir / "scoring.json").read_text())
    assert scoring["data_format"] == "byo"
    assert scoring["byo_schema"]["toml"] == SCHEMA.read_text()
    assert scoring["byo_schema"]["fingerprint"] == load_schema(SCHEMA).fingerprint()
    assert scoring["feature_spec"]["schema_fingerprint"] == scoring["byo_schema"]["fingerprint"]
    assert scoring["id_column"] == "policy_number"
    data = Path(str(config["data-dir"]))
    report = check_scoring_reproduces_the_run(run_dir, [data / n / "test.csv" for n in names], tmp_path)
    assert report["id_column"] == "policy_number"
    card = check_model_card(run_dir)
    assert card["data"]["schema_fingerprint"] == scoring["byo_schema"]["fingerprint"]


def test_server_refuses_institutions_whose_schemas_differ(tmp_path: Path) -> None:
    config, names = byo_config(tmp_path, rounds=1)
    server_schemas = Path(str(config["server-dir"])) / "schemas"
    text = (server_schemas / "oh.toml").read_text()
    (server_schemas / "oh.toml").write_text(text.replace('"witnesses",\n', ""))

    with pytest.raises(ConfigError, match="witnesses"):
        checked_plan(RunSettings.from_run_config(config))
    shutil.rmtree(tmp_path / "data")
