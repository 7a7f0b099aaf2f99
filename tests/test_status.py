"""``fedfraud status``: running, finished or stopped, read from the files a run leaves."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedfraud.cli import app
from federation.settings import RunSettings
from fedfraud.simulation import default_run_config
from server.busy import exclusive_run


def _run(tmp_path: Path, name: str, rounds: int = 3) -> tuple[Path, Path]:
    server = tmp_path / "server"
    server.mkdir(exist_ok=True)
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True)
    config = {"run_name": name, "run_config": {"num-server-rounds": rounds, "server-dir": str(server)}}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "rounds.jsonl").write_text(
        json.dumps({"server_round": 1, "accepted": True, "metrics": {"auc_pr": 0.61, "false_negatives": 12}}) + "\n"
    )
    return run_dir, server


def test_a_run_whose_serverapp_holds_the_lock_is_running(tmp_path: Path) -> None:
    run_dir, server = _run(tmp_path, "r1")
    config = default_run_config()
    config.update({"institutions": "a,b,c", "server-dir": str(server), "run-name": "r1"})
    with exclusive_run(RunSettings.from_run_config(config), flower_run_id=77):
        result = CliRunner().invoke(app, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "run r1: running" in result.output
    assert "busy with run 'r1' (Flower run 77" in result.output
    assert "rounds: 1 of 3 recorded, 1 aggregated" in result.output
    assert "last round 1: aggregated; auc_pr 0.61, false_negatives 12" in result.output


def test_a_run_that_ended_without_finishing_is_stopped_and_exits_8(tmp_path: Path) -> None:
    _run(tmp_path, "old")
    run_dir, _ = _run(tmp_path, "new")
    # The newest run under --runs-dir is the default.
    result = CliRunner().invoke(app, ["status", "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 8
    status = json.loads(result.output)
    assert status["run_name"] == "new" and status["state"].startswith("stopped")
    assert status["lock_holder"] is None and status["audit_records"] == 0


def test_status_of_something_that_is_not_a_run_names_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 3
    assert "not a run directory" in result.output
