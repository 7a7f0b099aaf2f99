"""``fedfraud score`` without Flower: a run directory written by the server's own writer, real CSV files.

The run directories here hold a model that was never trained (scores are
whatever its initial weights give): what is checked is that new rows are
encoded and scored exactly as the federation does, that the output is
complete or absent, and that every problem is refused with its file named.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraud.datasets import spec_to_text
from core.layout import server_schema_file
from core.errors import InputError
from server.model_card import AuditFacts, PolicyFacts, build_model_card, render_markdown
from fraud.scoring import SCORING_FILE, load_scoring, score_csv
from federation.settings import RunSettings
from fedfraud.simulation import default_run_config
from core.wire import update_digest
from fraud.byo_encode import FeatureSpec, encode
from fraud.byo_read import load_institution_csv
from fraud.byo_schema import load_schema
from fraud.byo_stats import local_numeric_stats
from fraud.features import FEATURE_COLUMNS, load_arrays
from fraud.generator import default_profiles, generate_institution
from fraud.metrics import exact_metrics
from fraud.model import build_model, get_weights, set_weights
from fraud.train import predict_scores
from server.artifacts import scoring_file
from server.rundir import RunDirectory

VECTORS = Path(__file__).parent / "fraud" / "byo_vectors"
BYO_ROWS = VECTORS / "valid" / "with_missing_values.csv"
INSTITUTIONS = ("bank-a", "bank-b", "insurer-c")
THRESHOLD = 0.5


@dataclass(frozen=True)
class Run:
    """A run directory as the server writes it, and what it was made from."""

    run_dir: Path
    weights: list[Any]
    settings: RunSettings


def _settings(root: Path, data_format: str, aggregation: str = "secagg+") -> RunSettings:
    config = default_run_config()
    config.update(
        {
            "institutions": ",".join(INSTITUTIONS),
            "data-format": data_format,
            "data-dir": str(root / "data"),
            "sites-dir": str(root / "sites"),
            "server-dir": str(root / "server"),
            "run-dir": str(root / "run"),
            "run-name": "scoring-test",
            "aggregation": aggregation,
        }
    )
    return RunSettings.from_run_config(config)


def _write_run(root: Path, data_format: str, aggregation: str = "secagg+", spec_text: str = "") -> Run:
    """Write model.npz and scoring.json with the server's own writers (server.rundir, server.artifacts)."""
    settings = _settings(root, data_format, aggregation)
    n_features = len(json.loads(spec_text)["feature_names"]) if spec_text else len(FEATURE_COLUMNS)
    model = build_model(n_features, seed=5)
    weights = get_weights(model)
    run_dir = RunDirectory(settings.run_dir)
    if aggregation != "ckks":
        run_dir.write_model(weights, list(model.state_dict()))
    rounds = [
        {"server_round": 1, "threshold": 0.9, "threshold_source": "round one", "accepted": True, "cohort": ["bank-a"]},
        {"server_round": 2, "threshold": THRESHOLD, "threshold_source": "cost rule", "accepted": True,
         "cohort": list(INSTITUTIONS)},
    ]
    scoring = scoring_file(settings, model, update_digest(weights), spec_text, rounds, 77)
    assert scoring is not None
    run_dir.write_json(SCORING_FILE, scoring.model_dump(mode="json"))
    return Run(settings.run_dir, weights, settings)


def _model(run: Run) -> Any:
    model = build_model(len(run.weights[0][0]), seed=0)
    set_weights(model, run.weights)
    return model


def _read_scores(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def transactions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled file in the built-in generator's format (600 rows)."""
    path = tmp_path_factory.mktemp("tx") / "new.csv"
    generate_institution(default_profiles(["bank-a"])[0], 600, 3).to_csv(path, index=False)
    return path


@pytest.fixture()
def builtin_run(tmp_path: Path) -> Run:
    return _write_run(tmp_path, "builtin")


@pytest.fixture()
def byo_run(tmp_path: Path) -> Run:
    schema = load_schema(VECTORS / "schema.toml")
    for institution in INSTITUTIONS:
        target = server_schema_file(tmp_path / "server", institution)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(VECTORS / "schema.toml", target)
    frame = load_institution_csv(BYO_ROWS, schema)
    spec = FeatureSpec.from_stats(schema, local_numeric_stats(frame, schema))
    return _write_run(tmp_path, "byo", spec_text=spec_to_text(spec))


# ---------------------------------------------------------------------------
# Valid: rows scored exactly as the federation scores them.
# ---------------------------------------------------------------------------


def test_builtin_rows_are_scored_exactly_as_in_the_federation(
    builtin_run: Run, transactions: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"

    report = score_csv(builtin_run.run_dir, transactions, out)

    x, y = load_arrays(transactions)
    expected = predict_scores(_model(builtin_run), x)
    rows = _read_scores(out)
    assert list(rows[0]) == ["transaction_id", "score", "flagged"]
    ids = [str(v) for v in pd.read_csv(transactions)["transaction_id"]]
    assert [r["transaction_id"] for r in rows] == ids
    np.testing.assert_array_equal(np.array([float(r["score"]) for r in rows]), expected)
    assert [int(r["flagged"]) for r in rows] == (expected >= THRESHOLD).astype(int).tolist()
    # The threshold is the final round's, not the first's.
    assert report.threshold == THRESHOLD and report.rows == 600
    assert report.flagged == int((expected >= THRESHOLD).sum())
    exact = exact_metrics(expected, y, THRESHOLD)
    assert report.metrics == exact
    for count in ("tp", "fp", "fn", "tn"):
        assert getattr(report.grid_metrics, count) == getattr(exact, count)


def test_unlabelled_rows_are_scored_without_metrics(
    builtin_run: Run, transactions: Path, tmp_path: Path
) -> None:
    unlabelled = tmp_path / "unlabelled.csv"
    pd.read_csv(transactions).drop(columns=["is_fraud", "transaction_id"]).to_csv(unlabelled, index=False)
    out = tmp_path / "scores.csv"

    report = score_csv(builtin_run.run_dir, unlabelled, out)

    rows = _read_scores(out)
    assert report.metrics is None and report.grid_metrics is None and not report.labelled
    assert list(rows[0]) == ["row", "score", "flagged"]
    assert [r["row"] for r in rows[:3]] == ["1", "2", "3"]
    expected = predict_scores(_model(builtin_run), load_arrays(transactions)[0])
    np.testing.assert_array_equal(np.array([float(r["score"]) for r in rows]), expected)


def test_byo_rows_are_encoded_with_the_agreed_spec_and_keep_their_id(byo_run: Run, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    progress: list[tuple[int, int]] = []

    report = score_csv(byo_run.run_dir, BYO_ROWS, out, chunk_rows=4, on_progress=lambda d, t: progress.append((d, t)))

    run = load_scoring(byo_run.run_dir)
    frame = load_institution_csv(BYO_ROWS, run.schema)
    x, y = encode(frame, run.schema, run.spec)
    expected = predict_scores(_model(byo_run), x)
    rows = _read_scores(out)
    assert list(rows[0]) == ["customer_id", "score", "flagged"]
    assert [r["customer_id"] for r in rows][:2] == ["c1", "c2"]
    np.testing.assert_array_equal(np.array([float(r["score"]) for r in rows]), expected)
    assert report.metrics == exact_metrics(expected, y, THRESHOLD)
    assert progress == [(4, 6), (6, 6)]


def test_byo_rows_without_the_label_column_are_scored(byo_run: Run, tmp_path: Path) -> None:
    unlabelled = tmp_path / "unlabelled.csv"
    with BYO_ROWS.open(newline="", encoding="utf-8") as handle:
        table = list(csv.reader(handle))
    j = table[0].index("fraud")
    with unlabelled.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([row[:j] + row[j + 1 :] for row in table])
    out = tmp_path / "scores.csv"

    report = score_csv(byo_run.run_dir, unlabelled, out)

    assert not report.labelled and report.rows == 6
    labelled = score_csv(byo_run.run_dir, BYO_ROWS, tmp_path / "labelled.csv")
    assert _read_scores(out) == _read_scores(tmp_path / "labelled.csv")
    assert labelled.labelled


def test_ckks_run_scores_with_the_institutions_positional_copy(tmp_path: Path, transactions: Path) -> None:
    run = _write_run(tmp_path, "builtin", aggregation="ckks")
    assert not (run.run_dir / "model.npz").exists()
    copy = tmp_path / "ckks-model-77.npz"
    np.savez(copy, *run.weights)  # as client/ckks_mode.py keeps it

    with pytest.raises(InputError, match="--model"):
        score_csv(run.run_dir, transactions, tmp_path / "scores.csv")
    report = score_csv(run.run_dir, transactions, tmp_path / "scores.csv", model_path=copy)

    assert report.rows == 600
    held_by = json.loads((run.run_dir / SCORING_FILE).read_text())["model"]["held_by"]
    assert "state/ckks-model-77.npz" in held_by


def test_the_scoring_file_keeps_schema_spec_threshold_and_layout(byo_run: Run) -> None:
    data = json.loads((byo_run.run_dir / SCORING_FILE).read_text())

    assert data["format"] == "fedfraud-scoring/1"
    assert data["data_format"] == "byo"
    assert data["byo_schema"]["toml"] == (VECTORS / "schema.toml").read_text()
    assert data["byo_schema"]["fingerprint"] == load_schema(VECTORS / "schema.toml").fingerprint()
    assert data["feature_spec"]["schema_fingerprint"] == data["byo_schema"]["fingerprint"]
    assert data["features"] == data["feature_spec"]["feature_names"]
    assert data["label_column"] == "fraud" and data["id_column"] == "customer_id"
    assert data["threshold"] == {"value": THRESHOLD, "round": 2, "source": "cost rule"}
    assert data["model"]["layer_names"] == ["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias",
                                            "net.6.weight", "net.6.bias"]
    assert data["model"]["hash"] == update_digest(byo_run.weights)
    assert data["model"]["file"] == "model.npz"


# ---------------------------------------------------------------------------
# Invalid run directories: each named after what was done to it.
# ---------------------------------------------------------------------------


def _edit_scoring(run_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = run_dir / SCORING_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value

    return edit


def _alter_schema_text(data: dict[str, Any]) -> None:
    data["byo_schema"]["toml"] = data["byo_schema"]["toml"].replace('"atm"', '"atm", "phone"')


def _alter_model(run_dir: Path) -> None:
    with np.load(run_dir / "model.npz") as archive:
        arrays = {k: np.array(archive[k]) for k in archive.files}
    arrays["net.6.bias"] = arrays["net.6.bias"] + 1.0
    np.savez(run_dir / "model.npz", **arrays)


INVALID_RUNS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "scoring_file_missing": (lambda d: (d / SCORING_FILE).unlink(), [SCORING_FILE, "no scoring file"]),
    "scoring_file_not_json": (lambda d: (d / SCORING_FILE).write_text("{"), [SCORING_FILE, "JSON"]),
    "format_marker_unknown": (
        lambda d: _edit_scoring(d, _set("format", "fedfraud-scoring/9")), ["fedfraud-scoring/9"]
    ),
    "unknown_key_added": (lambda d: _edit_scoring(d, _set("extra", 1)), ["extra"]),
    "threshold_out_of_range": (lambda d: _edit_scoring(d, _set("threshold.value", 1.5)), ["threshold.value"]),
    "schema_text_altered": (lambda d: _edit_scoring(d, _alter_schema_text), ["fingerprint"]),
    "spec_for_another_schema": (
        lambda d: _edit_scoring(d, _set("feature_spec.schema_fingerprint", "0" * 64)), ["another schema"]
    ),
    "spec_scaling_removed": (lambda d: _edit_scoring(d, _set("feature_spec.numeric_std", [1.0])), ["numeric"]),
    "features_reordered": (
        lambda d: _edit_scoring(d, lambda data: data["features"].reverse()), ["different features"]
    ),
    "layer_renamed": (
        lambda d: _edit_scoring(d, _set("model.layer_names", ["a", "b", "c", "d", "e", "f"])), ["layer_names"]
    ),
    "model_file_missing": (lambda d: (d / "model.npz").unlink(), ["model.npz", "no such model file"]),
    "model_altered": (_alter_model, ["model.npz", "not this run's final model", "altered or replaced"]),
    "model_file_not_npz": (lambda d: (d / "model.npz").write_bytes(b"PK\x03\x04 torn"), ["model.npz", "cannot read"]),
    "model_arrays_renamed": (
        lambda d: np.savez(d / "model.npz", w=np.zeros(1)), ["model.npz", "neither the model's layers", "arr_5"]
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID_RUNS))
def test_invalid_run_directory_is_refused_naming_the_file(byo_run: Run, tmp_path: Path, name: str) -> None:
    damage, fragments = INVALID_RUNS[name]
    damage(byo_run.run_dir)
    out = tmp_path / "scores.csv"

    with pytest.raises(InputError) as info:
        score_csv(byo_run.run_dir, BYO_ROWS, out)

    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert not out.exists()


def test_missing_run_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere: no such run directory"):
        score_csv(tmp_path / "nowhere", BYO_ROWS, tmp_path / "scores.csv")


def test_an_unfinished_run_is_told_from_an_old_one(byo_run: Run, tmp_path: Path) -> None:
    (byo_run.run_dir / SCORING_FILE).unlink()
    with pytest.raises(InputError, match="did not finish"):
        score_csv(byo_run.run_dir, BYO_ROWS, tmp_path / "scores.csv")
    (byo_run.run_dir / "summary.json").write_text("{}")
    with pytest.raises(InputError, match="kept none"):
        score_csv(byo_run.run_dir, BYO_ROWS, tmp_path / "scores.csv")


def test_an_institution_copy_of_an_older_round_is_refused(tmp_path: Path, transactions: Path) -> None:
    run = _write_run(tmp_path, "builtin", aggregation="ckks")
    older = tmp_path / "ckks-model-77.npz"
    np.savez(older, *[w * 0.5 for w in run.weights])

    with pytest.raises(InputError, match="missed the last round"):
        score_csv(run.run_dir, transactions, tmp_path / "scores.csv", model_path=older)


# ---------------------------------------------------------------------------
# Invalid rows: the file, column and line named; nothing written.
# ---------------------------------------------------------------------------

INVALID_ROWS = {
    # The training vectors that also break scoring (a missing label column
    # and a single class are fine for new rows).
    "label_not_binary": ["'fraud'", "not binary", "'maybe'"],
    "label_positive_absent": ["'fraud'", "positive value 'yes' never occurs"],
    "label_value_missing": ["'fraud'", "line 3", "missing label"],
    "non_numeric_value": ["column 'age'", "line 4", "'forty'"],
    "unknown_column_in_csv": ["unknown columns", "'ssn'"],
    "schema_column_absent_from_csv": ["missing from the file", "'age'"],
    "row_with_extra_field": ["CSV parse error", "line 3"],
    "date_not_matching_format": ["column 'opened'", "line 3", "'%m/%d/%Y'"],
    "empty_file": ["empty file"],
    "header_only": ["no data rows"],
}


@pytest.mark.parametrize("name", sorted(INVALID_ROWS))
def test_rows_that_do_not_fit_the_schema_are_refused(byo_run: Run, tmp_path: Path, name: str) -> None:
    path = VECTORS / f"{name}.csv"
    out = tmp_path / "scores.csv"
    out.write_text("earlier output\n")

    with pytest.raises(InputError) as info:
        score_csv(byo_run.run_dir, path, out)

    assert f"{name}.csv" in str(info.value)
    for fragment in INVALID_ROWS[name]:
        assert fragment in str(info.value), (fragment, str(info.value))
    assert out.read_text() == "earlier output\n"  # left as it was
    assert not list(tmp_path.glob(".scores.csv.*"))  # no temporary file left


@pytest.mark.parametrize("name", ["missing_label_column", "single_class"])
def test_new_rows_need_no_label_and_may_hold_one_class(byo_run: Run, tmp_path: Path, name: str) -> None:
    report = score_csv(byo_run.run_dir, VECTORS / f"{name}.csv", tmp_path / "scores.csv")

    assert report.rows > 0


def test_a_bad_value_in_a_later_chunk_leaves_no_output(byo_run: Run, tmp_path: Path) -> None:
    rows = BYO_ROWS.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*rows, "c9,abc,40,web,1/5/2015,,no"]) + "\n")
    out = tmp_path / "out" / "scores.csv"
    out.parent.mkdir()

    with pytest.raises(InputError, match=r"bad.csv: column 'amount', line 8"):
        score_csv(byo_run.run_dir, bad, out, chunk_rows=2)

    assert list(out.parent.iterdir()) == []  # no output, no temporary file


def test_builtin_rows_missing_a_column_are_refused(builtin_run: Run, tmp_path: Path, transactions: Path) -> None:
    short = tmp_path / "short.csv"
    pd.read_csv(transactions).drop(columns=["merchant_risk"]).to_csv(short, index=False)

    with pytest.raises(InputError, match=r"short.csv: columns missing .*'merchant_risk'"):
        score_csv(builtin_run.run_dir, short, tmp_path / "scores.csv")


def test_output_folder_must_exist_and_input_is_never_overwritten(builtin_run: Run, transactions: Path,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        score_csv(builtin_run.run_dir, transactions, tmp_path / "nowhere" / "scores.csv")
    with pytest.raises(InputError, match="is a folder"):
        score_csv(builtin_run.run_dir, transactions, tmp_path)
    copy = tmp_path / "new.csv"
    shutil.copyfile(transactions, copy)
    with pytest.raises(InputError, match="would replace the input"):
        score_csv(builtin_run.run_dir, copy, copy)
    assert copy.read_bytes() == transactions.read_bytes()


# ---------------------------------------------------------------------------
# The command, as a person runs it.
# ---------------------------------------------------------------------------


def _fedfraud(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfraud", *args], capture_output=True, text=True, timeout=120,
        check=False, cwd=cwd,
    )


def test_command_prints_metrics_and_json(byo_run: Run, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedfraud.cli import app

    runner = CliRunner()
    args = ["score", str(byo_run.run_dir), "--csv", str(BYO_ROWS), "--out", str(tmp_path / "s.csv")]

    result = runner.invoke(app, args)
    as_json = runner.invoke(app, [*args, "--json"])

    assert result.exit_code == 0, result.output
    assert "scored 6 rows" in result.output and "AUC-PR" in result.output
    assert (tmp_path / "s.csv").is_file()
    report = json.loads(as_json.output)
    assert report["rows"] == 6 and report["labelled"] is True
    assert set(report["metrics"]) >= {"precision", "recall", "f1", "auc_roc", "auc_pr", "fn"}


def test_command_exits_3_naming_the_column(byo_run: Run, tmp_path: Path) -> None:
    result = _fedfraud(
        "score", str(byo_run.run_dir), "--csv", str(VECTORS / "unknown_column_in_csv.csv"), "--out", "s.csv",
        cwd=tmp_path,
    )

    assert result.returncode == 3
    assert "unknown_column_in_csv.csv" in result.stderr and "'ssn'" in result.stderr
    assert not (tmp_path / "s.csv").exists()


# ---------------------------------------------------------------------------
# The model card.
# ---------------------------------------------------------------------------


def test_model_card_states_what_the_server_holds_and_released(byo_run: Run) -> None:
    scoring = load_scoring(byo_run.run_dir).file
    rounds = [
        {"server_round": 2, "accepted": True, "evaluated_by": list(INSTITUTIONS),
         "metrics": {"auc_pr": 0.61, "recall": 0.8, "false_negatives": 12, "num_examples": 300},
         "withheld": ["true_negatives"]},
    ]
    audit = AuditFacts("/runs/x/audit.jsonl", {"run_id": "x"}, 42, "a" * 64, "b" * 64, list(INSTITUTIONS))
    policies = [PolicyFacts("bank-a", 3, "c" * 64), PolicyFacts("bank-b", 1, "d" * 64),
                PolicyFacts("insurer-c", 1, "f" * 64)]

    card = build_model_card(byo_run.settings, scoring, rounds, policies, "e" * 64, audit, 12.5,
                            dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc))
    text = render_markdown(card)

    assert card["format"] == "fedfraud-model-card/1"
    assert card["data"]["schema_fingerprint"] == scoring.byo_schema.fingerprint  # type: ignore[union-attr]
    assert card["data"]["test_rows"] == 300
    assert card["evaluation"]["withheld_by_policy"] == ["true_negatives"]
    assert card["threshold"]["value"] == THRESHOLD
    assert card["aggregation"]["secagg"]["reconstruction_threshold"] == 2
    for fact in ("a" * 64, "b" * 64, "c" * 64, "d" * 64, "e" * 64, scoring.model.hash, "0.6100",
                 "| False negatives | 12 |", "true_negatives", "fedfraud score", "2025-01-02T00:00:00Z"):
        assert fact in text, fact
    json.dumps(card, allow_nan=False)
