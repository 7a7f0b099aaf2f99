"""Boosted trees from securely summed histograms, in real simulated federations.

Every level of every tree is one exact SecAgg+ sum over the institutions;
the server chooses the splits from the totals. The federated ensemble must be
the pooled one: the same algorithm on the concatenated training rows, with
the same bins and hyper-parameters, tree by tree (the fixed-point rounding of
the sums is the same on both sides, so the two are equal, not just close).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fraud.features import load_arrays
from core.errors import ConfigError
from federation.settings import RunSettings
from fedfraud.simulation import SimulationRequest, default_run_config, project_dir, run_simulation
from fraud.gbdt import Ensemble, GbdtParams, train_pooled
from policy import load_policy
from server.planning import checked_plan
from server.rundir import read_rounds

from .federation import (
    INSTITUTIONS,
    check_model_card,
    check_scoring_reproduces_the_run,
    make_data,
    run_federation,
    verify_with_cli,
)
from .test_byo_federation import byo_config

GBDT = {"model": "gbdt", "gbdt-trees-per-round": 2, "gbdt-max-depth": 3, "gbdt-max-bins": 32}


@pytest.fixture(scope="module")
def gbdt_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, RunSettings]:
    root = tmp_path_factory.mktemp("gbdt")
    data = make_data(root / "data")
    run_dir, settings = run_federation(root, data, rounds=2, **GBDT)
    return run_dir, data, settings


def _ensemble(run_dir: Path) -> Ensemble:
    return Ensemble.from_json((run_dir / "model.json").read_bytes())


def test_federated_trees_equal_the_pooled_reference_tree_by_tree(
    gbdt_run: tuple[Path, Path, RunSettings],
) -> None:
    run_dir, data, settings = gbdt_run
    rounds = read_rounds(run_dir)
    assert [r["accepted"] for r in rounds] == [True, True]
    assert rounds[-1]["cohort"] == list(INSTITUTIONS)
    federated = _ensemble(run_dir)
    assert len(federated.trees) == 4
    assert federated.params == GbdtParams(max_depth=3, max_bins=32, min_child_rows=20)
    parts = [load_arrays(data / name / "train.csv", "training data") for name in INSTITUTIONS]
    pooled = train_pooled(parts, 4, federated.params, federated.features)
    for mine, reference in zip(federated.trees, pooled.trees, strict=True):
        assert mine.to_dict() == reference.to_dict()
    assert federated.to_json() == pooled.to_json()
    assert min(min(t.rows) for t in federated.trees) >= 20
    # Evaluated like the MLP: pooled metrics from securely summed counts, improving.
    assert rounds[1]["metrics"]["auc_pr"] > rounds[0]["metrics"]["auc_pr"] > 0.3


def test_gbdt_audit_log_records_every_sum_and_tree_and_verifies(
    gbdt_run: tuple[Path, Path, RunSettings],
) -> None:
    run_dir, _, _ = gbdt_run
    records = [json.loads(line)["record"] for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    trees = [r["body"] for r in records if r["kind"] == "gbdt_tree"]
    sums = [r["body"] for r in records if r["kind"] == "gbdt_sum"]
    assert kinds.count("gbdt_bins") == 1
    federated = _ensemble(run_dir)
    assert [t["tree_hash"] for t in trees] == [t.digest() for t in federated.trees]
    assert all(t["smallest_node_rows"] >= t["min_child_rows"] == 20 for t in trees)
    # One sum per level grown, each with a verified receipt of every institution.
    assert len(sums) == sum(max(t.depth) for t in federated.trees)
    assert all(sorted(r["institution"] for r in s["receipts"]) == list(INSTITUTIONS) for s in sums)
    parties = run_dir.parent / "parties"
    result = verify_with_cli(run_dir, parties)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALID" in result.stdout

    # A tree record edited after the fact (its smallest node made 1 row) is
    # caught: the record no longer matches its hash and signature.
    tampered = run_dir.parent / "tampered"
    tampered.mkdir(exist_ok=True)
    lines = (run_dir / "audit.jsonl").read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if '"gbdt_tree"' in line)
    lines[index] = lines[index].replace('"smallest_node_rows":', '"smallest_node_rows":1', 1)
    (tampered / "audit.jsonl").write_text("\n".join(lines) + "\n")
    bad = verify_with_cli(tampered, parties)
    assert bad.returncode != 0 and "TAMPERED" in bad.stdout, bad.stdout

    # The operator's status of the finished run.
    from fedfraud.status import render, run_status

    status = run_status(run_dir)
    assert status.state == "finished" and status.rounds_aggregated == 2
    assert status.checkpoint_witnessed_by == list(INSTITUTIONS)
    assert status.audit_records == len(records)
    assert "run test: finished" in render(status)[0]


def test_gbdt_model_is_usable_without_fedfraud_and_scores_reproduce_the_run(
    gbdt_run: tuple[Path, Path, RunSettings], tmp_path: Path
) -> None:
    run_dir, data, _ = gbdt_run
    scoring = json.loads((run_dir / "scoring.json").read_text())
    assert scoring["model"]["architecture"] == "fedfraud-gbdt/1"
    import hashlib

    assert scoring["model"]["hash"] == hashlib.sha256((run_dir / "model.json").read_bytes()).hexdigest()
    check_scoring_reproduces_the_run(run_dir, [data / n / "test.csv" for n in INSTITUTIONS], tmp_path)
    card = check_model_card(run_dir)
    assert card["model"]["trees"] == 4
    # The numpy-only scorer saved beside the model gives the product's scores.
    x, _ = load_arrays(data / "bank-a" / "test.csv", "test data")
    module: dict[str, object] = {}
    exec(compile((run_dir / "score_gbdt.py").read_text(), "score_gbdt.py", "exec"), module)
    model = module["load"](str(run_dir / "model.json"))  # type: ignore[operator]
    standalone = module["scores"](model, x)  # type: ignore[operator]
    assert np.array_equal(standalone, _ensemble(run_dir).predict(x))


def test_byo_insurance_claims_grow_the_pooled_trees(tmp_path: Path) -> None:
    from fraud.scoring import load_scoring
    from fraud.byo_encode import encode
    from fraud.byo_read import load_institution_csv

    config, names = byo_config(tmp_path, rounds=1)
    config.update({**GBDT, "gbdt-max-depth": 2})
    run_dir = Path(str(config["run-dir"]))
    run_simulation(SimulationRequest(project_dir(), run_dir, config, num_institutions=3))
    rounds = read_rounds(run_dir)
    assert rounds[-1]["accepted"] and rounds[-1]["cohort"] == names
    federated = _ensemble(run_dir)
    scoring = load_scoring(run_dir)
    data = Path(str(config["data-dir"]))
    parts = [
        encode(load_institution_csv(data / n / "train.csv", scoring.schema), scoring.schema, scoring.spec)
        for n in names
    ]
    pooled = train_pooled(parts, len(federated.trees), federated.params, federated.features)
    assert federated.to_json() == pooled.to_json()
    assert federated.features == list(scoring.file.features)
    # Claims: 24.7 % fraud; two shallow trees already separate them.
    assert rounds[-1]["metrics"]["auc_pr"] > 0.4


def test_the_strictest_policys_small_cell_rule_overrides_the_runs(tmp_path: Path) -> None:
    from fedfraud.sites import prepare_demo_sites
    from server.gbdt import run_params

    sites = prepare_demo_sites(tmp_path / "parties", INSTITUTIONS, project_dir() / "policies")
    copy = sites.server_dir / "policies" / "bank-b.toml"
    copy.write_text(copy.read_text().replace("min_child_rows = 20", "min_child_rows = 75"))
    config = default_run_config()
    config.update({"institutions": ",".join(INSTITUTIONS), "server-dir": str(sites.server_dir),
                   "sites-dir": str(sites.sites_dir), "run-dir": str(tmp_path / "run"), **GBDT})
    settings = RunSettings.from_run_config(config)
    assert run_params(settings, checked_plan(settings)).min_child_rows == 75


def test_server_refuses_gbdt_when_a_policy_allows_no_histograms(tmp_path: Path) -> None:
    from fedfraud.sites import prepare_demo_sites

    sites = prepare_demo_sites(tmp_path / "parties", INSTITUTIONS, project_dir() / "policies")
    copy = sites.server_dir / "policies" / "insurer-c.toml"
    text = copy.read_text(encoding="utf-8")
    copy.write_text(text[: text.index("[histograms]")], encoding="utf-8")
    assert load_policy(copy).histograms is None
    config = default_run_config()
    config.update({"institutions": ",".join(INSTITUTIONS), "server-dir": str(sites.server_dir),
                   "sites-dir": str(sites.sites_dir), "run-dir": str(tmp_path / "run"), **GBDT})
    settings = RunSettings.from_run_config(config)
    with pytest.raises(Exception, match="insurer-c: histograms.allowed"):
        checked_plan(settings)
    # The same policies allow the MLP.
    checked_plan(RunSettings.from_run_config({**config, "model": "mlp"}))
    with pytest.raises(ConfigError, match="needs aggregation 'secagg\\+'"):
        RunSettings.from_run_config({**config, "aggregation": "ckks"})
    with pytest.raises(ConfigError, match="'model' must be one of"):
        RunSettings.from_run_config({**config, "model": "xgboost"})


def test_early_stopping_keeps_the_best_trees_and_the_run_finishes(
    gbdt_run: tuple[Path, Path, RunSettings], tmp_path: Path
) -> None:
    from fedfraud.simulation import round_problems

    _, data, _ = gbdt_run
    # A learning rate of 1 overfits: on these releases the loss rises at the
    # third tree (in round 1), so boosting stops there and keeps two trees.
    run_dir, _ = run_federation(
        tmp_path, data, rounds=2, validation_rows=300,
        **{**GBDT, "gbdt-trees-per-round": 3, "gbdt-max-depth": 2, "gbdt-learning-rate": 1.0,
           "gbdt-early-stopping": 1},
    )
    first, second = read_rounds(run_dir)
    assert first["accepted"] and not first["stopped"]
    assert not second["accepted"] and second["stopped"] and second["dropouts"] == []
    assert second["refusal"].startswith("early stopping: the validation loss has not improved for 1 trees")
    assert second["metrics"] == first["metrics"]  # the same model, evaluated again
    kept = _ensemble(run_dir)
    best = int(second["refusal"].split("after ")[1].split(" trees")[0])
    assert len(kept.trees) == best == 2
    records = [json.loads(line)["record"] for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "gbdt_tree" for r in records) == 3  # the dropped tree stays on the record
    assert round_problems(run_dir) == []  # finished, not failed
    result = verify_with_cli(run_dir, tmp_path / "parties")
    assert result.returncode == 0, result.stdout
