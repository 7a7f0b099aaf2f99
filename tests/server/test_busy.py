"""One run at a time per federation: the ServerApp's run lock (server/busy.py).

The holder is a real second process that holds the lock exactly as a running
ServerApp does; the refused run is the product's ServerApp entry point.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from core.errors import ConfigError
from federation.settings import RunSettings
from fedfraud.simulation import default_run_config
from server import app as server_app
from core.layout import LOCK_FILE
from server.busy import exclusive_run

HOLDER = """
import json, sys
from federation.settings import RunSettings
from server.busy import exclusive_run
settings = RunSettings.from_run_config(json.loads(sys.argv[1]))
with exclusive_run(settings, 4242):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
print("released", flush=True)
"""


def _config(root: Path, run_name: str, **extra: object) -> dict[str, object]:
    server_dir = root / "server"
    server_dir.mkdir(exist_ok=True)
    config = default_run_config()
    config.update(
        {
            "server-dir": str(server_dir),
            "sites-dir": str(root / "sites"),
            "data-dir": str(root / "data"),
            "run-dir": str(root / "runs" / run_name),
            "run-name": run_name,
            **extra,
        }
    )
    return config


@pytest.fixture()
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding the federation's run lock for run 'first-run'."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, json.dumps(_config(tmp_path, "first-run"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def _server_context(config: dict[str, object]) -> Context:
    return Context(run_id=7, node_id=0, node_config={}, state=RecordDict(), run_config=config)  # type: ignore[arg-type]


def test_second_run_on_a_busy_federation_is_refused_before_it_writes_anything(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    config = _config(tmp_path, "second-run")
    with pytest.raises(ConfigError) as refused:
        # The ServerApp's own entry point; it never reaches the Grid.
        server_app.main(None, _server_context(config))  # type: ignore[arg-type]
    message = str(refused.value)
    assert "is busy" in message and "'first-run'" in message and "Flower run 4242" in message
    assert "concurrent-runs=true" in message
    assert not (tmp_path / "runs" / "second-run").exists()
    assert oct((tmp_path / "server" / LOCK_FILE).stat().st_mode & 0o777) == oct(0o600)


def test_a_killed_serverapp_leaves_no_stale_lock(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    settings = RunSettings.from_run_config(_config(tmp_path, "after-the-crash"))
    with exclusive_run(settings, 8):
        holding = json.loads((tmp_path / "server" / LOCK_FILE).read_text())
    assert holding["run_name"] == "after-the-crash" and holding["flower_run"] == "8"


def test_the_lock_is_released_when_the_run_ends(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.close()
    assert holder.stdout.readline().strip() == "released"
    settings = RunSettings.from_run_config(_config(tmp_path, "next-run"))
    with exclusive_run(settings, 9):
        pass


def test_the_operator_may_ask_for_concurrent_runs(tmp_path: Path, holder: subprocess.Popen[str]) -> None:
    settings = RunSettings.from_run_config(_config(tmp_path, "parallel-run", **{"concurrent-runs": True}))
    entered = False
    with exclusive_run(settings, 10):
        entered = True
    assert entered


def test_concurrent_runs_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'concurrent-runs' must be true or false, found 'yes'"):
        RunSettings.from_run_config(_config(tmp_path, "x", **{"concurrent-runs": "yes"}))
