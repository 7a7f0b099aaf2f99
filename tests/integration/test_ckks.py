"""The ``ckks`` aggregation mode in real simulated federations.

Institutions encrypt their masked updates with TenSEAL CKKS under a key only
they hold; the server adds ciphertexts; each survivor decrypts the model and
keeps it. These runs check the result against plain FedAvg, a dropout, the
server's run directory (no model) and the compliance officer's verifier.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fraud.features import load_arrays
from fedfraud.simulation import project_dir
from fraud.features import FEATURE_COLUMNS
from fraud.metrics import SCORE_GRID_BINS, metrics_from_histograms, score_histograms
from fraud.model import build_model, set_weights
from fraud.train import predict_scores
from secagg.params import aggregation_error_bound
from server.rundir import read_rounds

from .federation import (
    INSTITUTIONS,
    check_model_card,
    check_scoring_reproduces_the_run,
    make_data,
    plain_fedavg_round_one,
    run_federation,
    verify_with_cli,
)

SURVIVORS = ("bank-a", "bank-b")


@pytest.fixture(scope="module")
def dropout_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # insurer-c takes part in key setup and sharing, then fails when asked to
    # train: its masks must be removed and the sum decrypted without it.
    data_dir = make_data(tmp_path_factory.mktemp("ckks") / "data")
    (data_dir / "insurer-c" / "train.csv").unlink()
    return data_dir


@pytest.fixture(scope="module")
def ckks_run(tmp_path_factory: pytest.TempPathFactory, dropout_data: Path) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("ckks-run")
    # max-weight near the institutions' example counts keeps the weighted
    # values large against the quantization step (the masks' arithmetic, not
    # CKKS, bounds the error: CKKS decrypts the masked words exactly).
    run_dir, settings = run_federation(
        root, dropout_data, rounds=1, aggregation="ckks", **{"max-weight": 5000.0}
    )
    return run_dir, settings


def _stored_models(parties: Path) -> dict[str, dict[str, np.ndarray]]:
    models = {}
    for name in INSTITUTIONS:
        found = sorted((parties / "sites" / name / "state").glob("ckks-model-*.npz"))
        if found:
            with np.load(found[0]) as archive:
                models[name] = {k: np.asarray(archive[k], dtype=np.float64) for k in archive.files}
    return models


def test_ckks_round_with_a_dropout_decrypts_plain_fedavg_at_the_institutions_only(
    ckks_run: tuple[Path, object], dropout_data: Path
) -> None:
    run_dir, settings = ckks_run
    parties = run_dir.parent / "parties"
    # The round was aggregated without the dropout.
    (record,) = read_rounds(run_dir)
    assert record["accepted"] is True
    assert record["cohort"] == list(SURVIVORS)
    assert record["dropouts"] == ["insurer-c"]
    # The server's run directory holds no model at all ...
    assert not (run_dir / "model.npz").exists() and not (run_dir / "model.pt").exists()
    # ... the survivors hold the same decrypted model, the dropout none ...
    models = _stored_models(parties)
    assert sorted(models) == list(SURVIVORS)
    a, b = (models[n] for n in SURVIVORS)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # ... and it is plain FedAvg of the survivors' updates, within the
    # quantization bound and 1e-5 relative error.
    expected, counts = plain_fedavg_round_one(settings, dropout_data, SURVIVORS)  # type: ignore[arg-type]
    actual = list(a.values())
    assert len(actual) == len(expected)
    bound = aggregation_error_bound(counts, settings.secagg)  # type: ignore[attr-defined]
    for got, want in zip(actual, expected.values(), strict=True):
        assert float(np.max(np.abs(got - want))) <= bound
    flat_got = np.concatenate([g.ravel() for g in actual])
    flat_want = np.concatenate([w.ravel() for w in expected.values()])
    assert np.linalg.norm(flat_got - flat_want) / np.linalg.norm(flat_want) < 1e-5


def test_ckks_audit_log_records_ciphertext_hashes_and_verifies(ckks_run: tuple[Path, object]) -> None:
    run_dir, _ = ckks_run
    records = [json.loads(line)["record"] for line in (run_dir / "audit.jsonl").read_text().splitlines()]
    genesis = records[0]["body"]
    assert genesis["aggregation"]["mode"] == "ckks"
    (ciphertexts,) = [r["body"] for r in records if r["kind"] == "ciphertexts"]
    assert ciphertexts["params"] == "ckks-n4096-q109/v1"
    assert sorted(ciphertexts["ciphertexts"]) == list(SURVIVORS)
    assert all(len(h) == 64 for hashes in ciphertexts["ciphertexts"].values() for h in hashes)
    summary = json.loads((run_dir / "summary.json").read_text())
    from core.wire import update_digest

    stored = sorted((run_dir.parent / "parties" / "sites" / "bank-a" / "state").glob("ckks-model-*.npz"))[0]
    with np.load(stored) as archive:
        arrays = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    assert summary["final_model_hash"] == update_digest(arrays)
    verdict = verify_with_cli(run_dir, run_dir.parent / "parties")
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "VALID" in verdict.stdout


def test_ckks_run_keeps_a_scoring_file_and_an_institution_scores_with_its_own_copy(
    ckks_run: tuple[Path, object], dropout_data: Path, tmp_path: Path
) -> None:
    run_dir, _ = ckks_run
    site = run_dir.parent / "parties" / "sites"
    scoring = json.loads((run_dir / "scoring.json").read_text())
    (own,) = sorted((site / "bank-a" / "state").glob("ckks-model-*.npz"))
    # The server holds no model; the file says where the institutions keep it.
    assert scoring["model"]["file"] is None
    assert own.name in scoring["model"]["held_by"]
    (record,) = read_rounds(run_dir)
    check_scoring_reproduces_the_run(
        run_dir, [dropout_data / name / "test.csv" for name in record["evaluated_by"]], tmp_path, model=own
    )
    card = check_model_card(run_dir)
    assert card["aggregation"]["mode"] == "ckks" and card["model"]["file"] is None
    assert "--model" in card["scoring"]["command"]


def test_ckks_run_reaches_plain_fedavgs_auc_roc(
    ckks_run: tuple[Path, object], dropout_data: Path
) -> None:
    # The AUC-ROC the ckks round released (securely summed score histograms of
    # the decrypted model) is the one plain FedAvg of the same survivors'
    # updates reaches on the same test rows, on the same score grid.
    run_dir, settings = ckks_run
    (ckks_round,) = read_rounds(run_dir)
    expected, _ = plain_fedavg_round_one(settings, dropout_data, SURVIVORS)  # type: ignore[arg-type]
    model = build_model(len(FEATURE_COLUMNS), seed=0)
    set_weights(model, [np.asarray(w, dtype=np.float32) for w in expected.values()])
    pos = neg = np.zeros(SCORE_GRID_BINS, dtype=np.int64)
    for name in ckks_round["evaluated_by"]:
        features, labels = load_arrays(dropout_data / name / "test.csv", "test data")
        p, n = score_histograms(predict_scores(model, features), labels)
        pos, neg = pos + p, neg + n
    plain = metrics_from_histograms(pos, neg, ckks_round["threshold"])
    assert int(pos.sum() + neg.sum()) == ckks_round["metrics"]["num_examples"]
    assert abs(ckks_round["metrics"]["auc_roc"] - plain.auc_roc) <= 0.001


def test_strict_ckks_only_insurer_takes_part_in_a_ckks_run(tmp_path: Path) -> None:
    # insurer-c's compliance office signs policies/strict/insurer-c-ckks-only.toml:
    # ckks only, every sum over all three institutions, no synthetic release.
    # A ckks run set to its terms goes through with all three; the verifier,
    # given the institutions' own policies, finds it VALID.
    policies = tmp_path / "policies"
    shutil.copytree(project_dir() / "policies", policies, ignore=shutil.ignore_patterns("strict"))
    shutil.copyfile(project_dir() / "policies" / "strict" / "insurer-c-ckks-only.toml", policies / "insurer-c.toml")
    data = make_data(tmp_path / "data")
    run_dir, _ = run_federation(
        tmp_path, data, rounds=1, policy_dir=policies, aggregation="ckks",
        **{"min-cohort": 3, "reconstruction-threshold": 3, "max-weight": 5000.0},
    )
    (record,) = read_rounds(run_dir)
    assert record["accepted"] is True and record["refusals"] == []
    assert record["cohort"] == list(INSTITUTIONS) and record["evaluated_by"] == list(INSTITUTIONS)
    assert "summed training counts" in record["threshold_source"]  # nothing was released
    parties = run_dir.parent / "parties"
    own = (parties / "sites" / "insurer-c" / "policy.toml").read_text(encoding="utf-8")
    assert 'required_aggregation = "ckks"' in own and "min_cohort_size = 3" in own
    assert list((parties / "sites" / "insurer-c" / "state").glob("ckks-model-*.npz"))
    verdict = verify_with_cli(run_dir, parties)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "VALID" in verdict.stdout
