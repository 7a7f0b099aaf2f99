"""A run that stops mid-way: it says so, and a new run starts from its last accepted model.

Real processes: ``fedfraud demo`` runs as the operator would start it and is
stopped (SIGTERM, as ``kill`` or a service manager sends it) once round 1 has
been aggregated, so its ServerApp dies with the run unfinished. ``fedfraud status`` then reports the run stopped and
names the model its last accepted round left; a second ``fedfraud demo``
started with ``--set initial-model=<that file>`` begins from exactly that
model and finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fedfraud.simulation import project_dir
from core.wire import update_digest
from fraud.features import FEATURE_COLUMNS
from fraud.model import build_model
from server.rundir import read_rounds

ENV = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "250"}


def _demo(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "fedfraud", "demo", "--rows", "2000", "--validation-rows", "0", "--no-compare",
            "--data-dir", str(root / "data"), "--runs-dir", str(root / "runs"), "--parties-dir", str(root / "parties"),
            "--set", "local-epochs=1", *extra]


def _first_round_done(runs: Path) -> Path | None:
    for run_dir in sorted(runs.glob("*")) if runs.is_dir() else []:
        rounds = read_rounds(run_dir) if (run_dir / "rounds.jsonl").is_file() else []
        if any(r.get("accepted") for r in rounds):
            return run_dir
    return None


def test_a_stopped_run_says_so_and_a_new_run_starts_from_its_last_accepted_model(tmp_path: Path) -> None:
    # Arrange and act: a 20-round run (the policies' most), stopped once round 1 is aggregated.
    first = subprocess.Popen(_demo(tmp_path, "--rounds", "20"), cwd=project_dir(), env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        run_dir = None
        while run_dir is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            run_dir = _first_round_done(tmp_path / "runs")
        assert run_dir is not None, "round 1 was never aggregated: " + (first.stdout.read() if first.poll() is not None and first.stdout else "")
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
    assert first.returncode != 0, output

    # Assert: the run is reported stopped, with the model to start again from.
    accepted = [r for r in read_rounds(run_dir) if r["accepted"]]
    assert 1 <= len(accepted) < 20
    assert not (run_dir / "summary.json").exists()
    status = subprocess.run([sys.executable, "-m", "fedfraud", "status", str(run_dir)], capture_output=True,
                            text=True, timeout=60, check=False, env=ENV)
    assert status.returncode == 8, status.stdout + status.stderr
    text = " ".join(status.stdout.split())
    model = run_dir / "model.npz"
    assert "stopped" in text
    assert f"last accepted model (round {accepted[-1]['server_round']})" in text
    assert f"--set initial-model={model.resolve()}" in text
    # The file is that round's model: the hash the round recorded.
    names = list(build_model(len(FEATURE_COLUMNS), seed=0).state_dict().keys())
    with np.load(model) as archive:
        weights = [np.asarray(archive[name]) for name in names]
    assert update_digest(weights) == accepted[-1]["model_hash"]

    # A new run from it finishes, and says where it started.
    second = subprocess.run(_demo(tmp_path, "--rounds", "1", "--set", f"initial-model={model.resolve()}"),
                            cwd=project_dir(), env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    new_runs = [d for d in (tmp_path / "runs").iterdir() if d != run_dir]
    (new_run,) = new_runs
    summary = json.loads((new_run / "summary.json").read_text(encoding="utf-8"))
    assert summary["initial_model"] == {"file": str(model.resolve()), "model_hash": accepted[-1]["model_hash"]}
    assert summary["rounds_completed"] == 1
