"""A run is reported done only if every round was aggregated and measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedfraud.simulation import RunFailed, require_every_round, round_problems


def _run_dir(tmp_path: Path, rounds: list[dict[str, object]], requested: int) -> Path:
    (tmp_path / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    (tmp_path / "summary.json").write_text(json.dumps({"rounds_requested": requested}))
    return tmp_path


def _round(n: int, accepted: bool = True, metrics: bool = True, refusal: str = "") -> dict[str, object]:
    return {"server_round": n, "accepted": accepted, "refusal": refusal,
            "metrics": {"auc_pr": 0.5} if metrics else {}}


def test_a_complete_run_passes(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, [_round(1), _round(2)], 2)
    assert round_problems(run) == []
    require_every_round(run)


def test_rounds_not_aggregated_or_not_measured_fail_the_run_by_name(tmp_path: Path) -> None:
    rounds = [
        _round(1),
        _round(2, accepted=False, refusal="the surviving cohort of 1 is too small"),
        _round(3, metrics=False),
    ]
    run = _run_dir(tmp_path, rounds, 4)
    problems = round_problems(run)
    assert problems == [
        "only 3 of 4 rounds were recorded",
        "round 2: not aggregated (the surviving cohort of 1 is too small)",
        "round 3: no metrics released (no institution's evaluation was summed)",
    ]
    with pytest.raises(RunFailed) as info:
        require_every_round(run)
    assert info.value.exit_code == 8
    assert str(run / "flower.log") in str(info.value) and "round 2: not aggregated" in str(info.value)


def test_boosting_that_stopped_early_is_finished_not_failed(tmp_path: Path) -> None:
    stopped = _round(3, accepted=False, refusal="early stopping: the validation loss has not improved for 10 trees")
    run = _run_dir(tmp_path, [_round(1), _round(2), stopped], 3)
    assert round_problems(run) == []
