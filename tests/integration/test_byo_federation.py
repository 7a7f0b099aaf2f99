"""Bring your own data: the insurance claims CSV, federated by policy state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.errors import ConfigError
from federation.settings import RunSettings
from fedfraud.simulation import SimulationRequest, default_run_config, project_dir, run_simulation
from fedfraud.sites import prepare_demo_sites, split_byo_demo
from server.planning import checked_plan
from fraud.byo_schema import load_schema
from server.rundir import read_rounds

from tests.shared_data import INSURANCE_CSV

from .federation import check_model_card, check_scoring_reproduces_the_run

CSV = INSURANCE_CSV
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


@pytest.fixture(scope="module")
def insurance_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], list[str], Path]:
    """One three-round federation of the insurance claims, shared by the tests below."""
    tmp_path = tmp_path_factory.mktemp("insurance")
    config, names = byo_config(tmp_path, rounds=3)
    config["recall-target"] = 0.8  # choose the threshold for recall, not cost
    run_dir = Path(str(config["run-dir"]))
    run_simulation(SimulationRequest(project_dir(), run_dir, config, num_institutions=3))
    return config, names, run_dir


def test_insurance_csv_trains_end_to_end_in_a_federation(
    insurance_run: tuple[dict[str, object], list[str], Path], tmp_path: Path
) -> None:
    config, names, run_dir = insurance_run
    assert names == ["il", "in", "oh"]

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


def test_each_institution_brings_its_own_files_to_the_demo(tmp_path: Path) -> None:
    # Three insurers with their own files, as in production: one a folder with
    # its own train/test split, two a single CSV each (split by the demo).
    import subprocess
    import sys

    import numpy as np

    from fraud.byo_split import split_by_column
    from fedfraud.sites import split_train_test

    own = tmp_path / "own"
    files = split_by_column(CSV, "policy_state", own / "raw")
    split_train_test(files["il"], "fraud_reported", own / "il-folder", np.random.default_rng(1))
    train_before = (own / "il-folder" / "train.csv").read_bytes()
    command = [
        sys.executable, "-m", "fedfraud", "demo", "--rounds", "1", "--schema", str(SCHEMA),
        "--site", f"il={own / 'il-folder'}", "--site", f"in={files['in']}",
        "--site", f"oh={files['oh']}",
        "--data-dir", str(tmp_path / "data" / "demo"), "--runs-dir", str(tmp_path / "runs"),
        "--parties-dir", str(tmp_path / "parties"), "--set", "timeout=60.0",
        "--validation-rows", "300",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "each institution's own files" in result.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    (record,) = read_rounds(run_dir)
    assert record["accepted"] and record["cohort"] == ["il", "in", "oh"]
    # il's folder is used as it is (linked, never rewritten): the federation's
    # test set is il's own test file plus 30 % of each single CSV.
    placed = tmp_path / "data" / "byo-sites"
    assert (placed / "il" / "train.csv").resolve() == (own / "il-folder" / "train.csv").resolve()
    assert (own / "il-folder" / "train.csv").read_bytes() == train_before
    rows = sum(len((placed / n / "test.csv").read_text().splitlines()) - 1 for n in ("il", "in", "oh"))
    assert record["metrics"]["num_examples"] == rows
    # Each institution released an SDV sample of its own rows (privacy-checked);
    # the threshold was chosen on them, and the comparison report (every
    # model encoded with the federation's agreed scaling) uses them too.
    assert record["threshold_source"].endswith("(synthetic releases of il, in, oh)")
    assert "released 300 synthetic rows" in result.stdout
    report = (run_dir / "report" / "report.md").read_text()
    for model in ("local:il", "local:in", "local:oh", "pooled", "pooled-hgb", "federated (secagg+)"):
        assert f"| {model} |" in report
    assert "900 rows" in report and "synthetic releases, encoded with the agreed scaling" in report


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["il"], "expected NAME=PATH"),
        (["Illinois Office=X"], "not a valid institution id (try 'illinois-office')"),
        (["il=MISSING", "in=MISSING"], "no such file or folder"),
        (["il=FOLDER", "in=FOLDER"], "has no test.csv"),
        (["il=CSV", "il=CSV"], "given twice"),
        (["il=CSV"], "at least two"),
    ],
)
def test_own_files_that_cannot_make_a_federation_are_refused(
    tmp_path: Path, entries: list[str], message: str
) -> None:
    from core.errors import InputError
    from fedfraud.sites import place_own_sites

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.csv").write_text("x\n1\n")
    paths = {"FOLDER": str(folder), "CSV": str(CSV), "MISSING": str(tmp_path / "nope")}
    resolved = []
    for entry in entries:
        name, _, path = entry.partition("=")
        resolved.append(f"{name}={paths.get(path, path)}" if path else entry)

    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        place_own_sites(resolved, "fraud_reported", tmp_path / "placed", seed=1)


def test_same_seed_gives_the_same_run_through_secagg(
    insurance_run: tuple[dict[str, object], list[str], Path], tmp_path: Path
) -> None:
    # A second run of the same federation and seed: round 1's released metrics
    # and model equal the first run's (masks differ, the unmasked sums do not;
    # the quantization rounds deterministically). Only the round count differs.
    config, _, first_dir = insurance_run
    again, _ = byo_config(tmp_path, rounds=1)
    again["recall-target"] = config["recall-target"]
    run_dir = Path(str(again["run-dir"]))
    run_simulation(SimulationRequest(project_dir(), run_dir, again, num_institutions=3))

    first, second = read_rounds(first_dir)[0], read_rounds(run_dir)[0]
    assert first["accepted"] and second["accepted"]
    assert first["metrics"] == second["metrics"]
    assert first["model_hash"] == second["model_hash"]
