"""The warm ClientApp server: the site's real shim, forked from a pre-loaded parent.

Each test runs the ``flwr-clientapp`` shim that ``fedfraud supernode`` writes
into a site folder, as Flower's SuperExec starts it, against a real server
(:func:`client.warm_start.start`, with everything it pre-loads). The
Deployment Engine tests run whole federations through it
(tests/deployment/test_byo_deployment.py counts the warm starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import warm_start
from client.runner import write_shim


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path]]:
    env = dict(os.environ)
    process = warm_start.start(env)
    socket_path = Path(env[warm_start.SERVER_ENV])
    shim = write_shim(tmp_path_factory.mktemp("site")) / "flwr-clientapp"
    try:
        _wait(socket_path.exists)  # it listens once everything is imported
        yield process, env, shim
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_forked_task_gets_the_shims_arguments_streams_and_exit_code(server, tmp_path: Path) -> None:
    process, env, shim = server
    shown = subprocess.run([str(shim), "--help"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert shown.returncode == 0
    assert "behind this institution's approved-code check" in shown.stdout  # the shim's own parser, in the fork
    refused = subprocess.run([str(shim), "--no-such-flag"], env=env, capture_output=True, text=True, timeout=60,
                             cwd=tmp_path)
    assert refused.returncode == 2
    assert "one of the arguments --token --token-file is required" in refused.stderr
    assert process.poll() is None  # the server goes on serving
    socket_path = Path(env[warm_start.SERVER_ENV])
    assert socket_path.stat().st_mode & 0o777 == 0o600
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700


def test_a_task_runs_in_a_child_of_the_server_and_stops_with_its_shim(server, tmp_path: Path) -> None:
    process, env, shim = server
    # A task whose SuperNode does not answer: Flower retries until stopped.
    task = subprocess.Popen([str(shim), "--insecure", "--runtime-api-address", "127.0.0.1:1", "--token", "t"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert task.stderr is not None
        while "Connection attempt failed" not in task.stderr.readline():  # Flower's retry loop, in the fork
            assert task.poll() is None
        (child,) = _children(process.pid)
        assert Path(f"/proc/{child}/cwd").resolve() == tmp_path.resolve()  # the shim's working folder
    finally:
        task.terminate()  # as the SuperExec or a service manager stops it
        _, err = task.communicate(timeout=60)
    assert "Task stopped." in err  # Flower's own handler ran in the fork
    _wait(lambda: not _children(process.pid), timeout=30)


def test_without_a_reachable_server_the_shim_starts_cold(tmp_path: Path) -> None:
    assert warm_start.forward(["--help"], env={}) is None
    gone = {warm_start.SERVER_ENV: str(tmp_path / "no-server.sock")}
    assert warm_start.forward(["--help"], env=gone) is None
    shim = write_shim(tmp_path / "site") / "flwr-clientapp"
    cold = subprocess.run([str(shim), "--help"], env={**os.environ, **gone}, capture_output=True, text=True,
                          timeout=60)
    assert cold.returncode == 0 and "approved-code check" in cold.stdout


def test_the_server_can_be_switched_off() -> None:
    env = {**os.environ, warm_start.ENABLE_ENV: "0", warm_start.SERVER_ENV: "/stale.sock"}
    assert warm_start.start(env) is None
    assert warm_start.SERVER_ENV not in env


def test_the_socket_is_private_and_the_server_ends_with_its_supernode(tmp_path: Path) -> None:
    # A stand-in SuperNode process starts the server, reports its socket and ends without stopping it.
    # (Its output goes to a file: the server inherits the stand-in's streams, as a SuperNode's log.)
    report = tmp_path / "started.txt"
    script = (
        "import os, sys; from pathlib import Path; from client import warm_start; env = dict(os.environ); "
        f"p = warm_start.start(env); Path({str(report)!r}).write_text(f'{{p.pid}} {{env[warm_start.SERVER_ENV]}}')"
    )
    subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60, check=True, cwd=Path(__file__).parents[2])
    pid_text, path_text = report.read_text().split()
    pid, socket_path = int(pid_text), Path(path_text)
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700
    # The server notices its parent is gone (after its imports) and removes its socket and folder.
    _wait(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(),
          timeout=120)
    assert not socket_path.parent.exists()


def test_a_server_that_cannot_load_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "server"
    folder.mkdir(mode=0o700)
    with pytest.raises(ModuleNotFoundError):
        warm_start.serve(folder / "server.sock", os.getppid(), preload=("no_such_module_for_fedfraud",))
    assert not folder.exists()  # no socket: the shims start cold
