"""Real federations on Flower's simulation engine, with SecAgg+ on every update."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fraud.features import load_arrays
from fedfraud.comparison import write_comparison
from fedfraud.simulation import RunFailed, require_measurements
from federation.settings import RunSettings
from fraud.features import FEATURE_COLUMNS
from fraud.metrics import exact_metrics
from fraud.model import build_model, set_weights
from fraud.train import predict_scores
from policy import load_policy
from secagg.params import aggregation_error_bound
from server.rundir import read_rounds

from .federation import (
    INSTITUTIONS,
    check_model_card,
    check_scoring_reproduces_the_run,
    final_weights,
    make_data,
    plain_fedavg_round_one,
    run_federation,
    verify_with_cli,
)

def check_pooled_metrics(run_dir: Path, data_dir: Path, record: dict[str, object]) -> None:
    """The round's pooled metrics equal scikit-learn's on the concatenated predictions."""
    model = build_model(len(FEATURE_COLUMNS), seed=0)
    weights = final_weights(run_dir)
    set_weights(model, [weights[name] for name in model.state_dict()])
    scores, labels = [], []
    for name in INSTITUTIONS:
        x, y = load_arrays(data_dir / name / "test.csv", "test data")
        scores.append(predict_scores(model, x))
        labels.append(y)
    threshold = float(record["threshold"])  # type: ignore[arg-type]
    exact = exact_metrics(np.concatenate(scores), np.concatenate(labels), threshold)
    metrics = record["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["false_negatives"] == exact.fn
    assert metrics["false_positives"] == exact.fp
    assert metrics["true_positives"] == exact.tp
    assert metrics["recall"] == pytest.approx(exact.recall, abs=1e-12)
    # AUCs are exact up to the 1000-bin score grid.
    assert metrics["auc_roc"] == pytest.approx(exact.auc_roc, abs=0.005)
    assert metrics["auc_pr"] == pytest.approx(exact.auc_pr, abs=0.02)


METRIC_KEYS = ("loss", "precision", "recall", "f1", "auc_roc", "auc_pr", "false_negatives")


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("data"))


def test_two_rounds_three_institutions_write_the_run_directory(
    tmp_path: Path, shared_data: Path
) -> None:
    run_dir, _ = run_federation(tmp_path, shared_data, rounds=2, validation_rows=600)

    config = json.loads((run_dir / "config.json").read_text())
    assert config["run_config"]["num-server-rounds"] == 2
    assert config["secagg"]["reconstruction_threshold"] == 2
    rounds = read_rounds(run_dir)
    assert [r["server_round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert record["accepted"] is True
        assert record["cohort"] == sorted(INSTITUTIONS)
        assert record["dropouts"] == []
        assert record["evaluated_by"] == sorted(INSTITUTIONS)
        assert record["witnessed_by"] == sorted(INSTITUTIONS)
        assert record["refusals"] == []
        for key in METRIC_KEYS:
            assert record["metrics"][key] is not None, key
        assert 0.0 <= record["metrics"]["auc_pr"] <= 1.0
    # Pooled over all three test splits: 30 % of 3 x 4000 rows.
    assert rounds[-1]["metrics"]["num_examples"] == sum(
        json.loads((shared_data / "manifest.json").read_text())["institutions"][n]["test_rows"]
        for n in INSTITUTIONS
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_completed"] == 2
    assert (run_dir / "model.pt").stat().st_size > 0
    assert summary["final_checkpoint_witnessed_by"] == sorted(INSTITUTIONS)
    # The threshold came from the institutions' synthetic releases.
    assert "synthetic releases of bank-a, bank-b, insurer-c" in rounds[-1]["threshold_source"]
    # The securely summed metrics are exactly those of the final model on the
    # concatenated test splits (recomputed here, where all data is at hand).
    check_pooled_metrics(run_dir, shared_data, rounds[-1])
    # The comparison report covers every model, the federated one included.
    report = write_comparison(run_dir)
    text = report.read_text()
    for model in ("local:bank-a", "pooled", "pooled-hgb", "federated (secagg+)"):
        assert model in text
    assert (report.parent / "pr_curves.png").stat().st_size > 0
    # It names the federated model by the hash the signed log closed the run with.
    card = json.loads((run_dir / "model_card.json").read_text())
    assert f"Federated model hash: `{card['model']['hash']}`" in text
    assert "`run_closed` record states this same final model hash" in text
    # The compliance officer's verifier, run as a person would, says VALID.
    verdict = verify_with_cli(run_dir, tmp_path / "parties")
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "VALID" in verdict.stdout
    # Its compliance report lists the policies in force: each file's version and
    # hash, the same hash as the genesis record names.
    compliance = verify_with_cli(run_dir, tmp_path / "parties", action="report")
    assert compliance.returncode == 0, compliance.stderr
    for institution in INSTITUTIONS:
        policy = load_policy(tmp_path / "parties" / "sites" / institution / "policy.toml")
        row = next(line for line in compliance.stdout.splitlines() if line.startswith(f"| {institution} | 1 |"))
        assert f"`{policy.policy_hash[:12]}…` | yes |" in row
    # The model learned something: better than the base rate on the pooled test set.
    assert rounds[-1]["metrics"]["auc_roc"] > 0.7
    # A bank can use the model: `fedfraud score` on the institutions' own
    # test files (their union, as the federation evaluates) reproduces the
    # run's final metrics, and the model card states the run's facts.
    scoring = json.loads((run_dir / "scoring.json").read_text())
    assert scoring["data_format"] == "builtin" and scoring["byo_schema"] is None
    assert scoring["features"] == list(FEATURE_COLUMNS)
    assert scoring["model"]["file"] == "model.npz"
    check_scoring_reproduces_the_run(
        run_dir, [shared_data / name / "test.csv" for name in INSTITUTIONS], tmp_path
    )
    card = check_model_card(run_dir)
    assert card["data"]["format"] == "builtin" and card["aggregation"]["mode"] == "secagg+"


def test_secagg_aggregate_equals_plain_fedavg_within_the_quantization_bound(
    tmp_path: Path, shared_data: Path
) -> None:
    run_dir, settings = run_federation(tmp_path, shared_data, rounds=1)

    expected, counts = plain_fedavg_round_one(settings, shared_data, INSTITUTIONS)
    actual = final_weights(run_dir)
    bound = aggregation_error_bound(counts, settings.secagg)
    worst = max(float(np.max(np.abs(actual[k] - expected[k]))) for k in expected)
    assert worst <= bound
    # The bound is tight enough to mean something for this model.
    assert bound < 1e-4


@pytest.fixture(scope="module")
def broken_sites_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, RunSettings]:
    """One run, two faults: insurer-c loses its training data, everyone their test data.

    insurer-c takes part in SecAgg+ key setup and sharing, then fails when
    asked to train (after its masks were agreed), so the server must recover
    its pairwise masks; with every test split gone no round is ever scored.
    """
    root = tmp_path_factory.mktemp("broken-sites")
    data_dir = make_data(root / "data")
    (data_dir / "insurer-c" / "train.csv").unlink()
    for name in INSTITUTIONS:
        (data_dir / name / "test.csv").unlink()
    run_dir, settings = run_federation(root, data_dir, rounds=1)
    return run_dir, data_dir, settings


def test_institution_dropping_out_mid_round_is_survived(
    broken_sites_run: tuple[Path, Path, RunSettings],
) -> None:
    run_dir, data_dir, settings = broken_sites_run

    (record,) = read_rounds(run_dir)
    assert record["accepted"] is True
    assert record["cohort"] == ["bank-a", "bank-b"]
    assert record["dropouts"] == ["insurer-c"]
    expected, counts = plain_fedavg_round_one(settings, data_dir, ("bank-a", "bank-b"))
    actual = final_weights(run_dir)
    bound = aggregation_error_bound(counts, settings.secagg)
    assert max(float(np.max(np.abs(actual[k] - expected[k]))) for k in expected) <= bound


def test_run_that_no_institution_could_evaluate_is_not_reported_as_a_success(
    broken_sites_run: tuple[Path, Path, RunSettings],
) -> None:
    # Training rounds run, but no round is ever scored. Before, such a run
    # ended "done ... rounds aggregated" with exit 0 and "n/a" for every metric.
    run_dir, _, _ = broken_sites_run

    (record,) = read_rounds(run_dir)
    assert record["accepted"] is True and record["evaluated_by"] == []
    with pytest.raises(RunFailed, match="the run measured nothing"):
        require_measurements(run_dir)
