"""The comparison report: markdown tables, PNG plots, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InputError
from fraud.compare import ComparisonResult, add_model
from fraud.features import N_FEATURES
from fraud.model import build_model
from fraud.report import write_report
from fraud.synth import PrivacyCheck, SyntheticReport

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def comparison(small_comparison: ComparisonResult) -> ComparisonResult:
    return add_model(small_comparison, "federated", build_model(N_FEATURES, 1))


def _synthetic_report() -> SyntheticReport:
    privacy = PrivacyCheck(400, 1000, 500, 0, 0.0081, 0.004, 0.1, 0.031, 0.017)
    return SyntheticReport("gaussian_copula", 3, 400, 0.2, 0.2, 0.02, 0.84, 0.87, 0.80, privacy, "2.0.0")


ROUNDS = [
    {"server_round": 2, "metrics": {"auc_pr": 0.41}},
    {"server_round": 1, "metrics": {"auc_pr": 0.30}},
    {"server_round": 3, "metrics": {"auc_pr": 0.47}},
]


def test_report_has_tables_threshold_releases_and_plots(comparison: ComparisonResult, tmp_path: Path) -> None:
    path = write_report(tmp_path / "out", comparison, ROUNDS, {"bank-a": _synthetic_report()})

    text = path.read_text()
    assert path.name == "report.md"
    assert "minimising 10 x FN + 1 x FP on the validation set" in text
    for name in ("local:bank-a", "pooled", "pooled-hgb", "federated"):
        assert f"| {name} |" in text
    assert "### insurer-c" in text
    assert "| 1 | 0.300 |\n| 2 | 0.410 |\n| 3 | 0.470 |" in text
    assert "| bank-a | gaussian_copula | 400 | 0.200 | 0.840 |" in text
    for png in ("pr_curves.png", "roc_curves.png", "federated_auc_pr.png", "false_negatives.png"):
        assert (path.parent / png).read_bytes()[:8] == PNG_MAGIC
        assert f"]({png})" in text
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_report_without_rounds_or_releases_says_so(comparison: ComparisonResult, tmp_path: Path) -> None:
    write_report(tmp_path, comparison, ROUNDS, None)

    path = write_report(tmp_path, comparison, None, None)

    text = path.read_text()
    assert "No federated rounds were given." in text
    assert "No synthetic release reports were given." in text
    assert not (tmp_path / "federated_auc_pr.png").exists()


def test_malformed_round_records_are_refused_before_writing(comparison: ComparisonResult, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="federated round 0: needs 'server_round' and 'metrics.auc_pr'"):
        write_report(tmp_path / "out", comparison, [{"round": 1}], None)

    assert not (tmp_path / "out").exists()
