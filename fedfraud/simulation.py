"""Run a federation on Flower's simulation engine, the way Flower 1.42 runs one.

Flower 1.42 runs simulations through a SuperLink in simulation mode and
``flwr run`` (``run_simulation()`` and ``start_simulation()`` are deprecated),
and keeps connection settings in ``$FLWR_HOME/config.toml`` rather than in
``pyproject.toml``. This module owns that whole arrangement, so the product
depends on nothing outside the project folder and its virtual environment:

1. ``FLWR_HOME`` points at a fresh folder under the project's own ``.flwr/``
   for every run, with a connection file written by us (removed afterwards);
2. a SuperLink is started on a free loopback port, in simulation mode, with
   runtime dependency installation disabled (everything is pre-installed);
3. ``flwr run`` submits the app with the run config and the federation size,
   Ray limited to the machine's cores;
4. progress is read from the run directory while the run goes on, and the
   SuperLink is always stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from core.errors import ConfigError, RunFailed
from core.layout import RunLayout

CONNECTION_NAME = "fedfraud-sim"
STARTUP_TIMEOUT = 60.0


def require_measurements(run_dir: Path) -> None:
    """Refuse a finished run in which no round was evaluated: it measured nothing.

    Raises
    ------
    RunFailed
        If the run has rounds and none was evaluated by any institution.
    """
    from server.rundir import read_rounds

    rounds = read_rounds(run_dir)
    if rounds and not any(record.get("evaluated_by") for record in rounds):
        raise RunFailed(
            f"the run measured nothing: no institution evaluated any of its {len(rounds)} "
            f"round(s), so the model was never scored; see {run_dir / 'flower.log'}"
        )


def round_problems(run_dir: Path) -> list[str]:
    """Why the run did not finish every round with its metrics (empty if it did).

    A round counts as finished when its update (or trees) was aggregated and
    its evaluation released metrics; a boosted-tree round that grew nothing
    because early stopping ended the boosting counts as finished too.
    """
    from core.wire import EARLY_STOPPING
    from server.rundir import read_rounds

    problems: list[str] = []
    rounds = read_rounds(run_dir)
    summary_path = RunLayout(run_dir).summary
    if summary_path.exists():
        import json

        wanted = int(json.loads(summary_path.read_text(encoding="utf-8")).get("rounds_requested", 0))
        if len(rounds) < wanted:
            problems.append(f"only {len(rounds)} of {wanted} rounds were recorded")
    for record in rounds:
        number = record.get("server_round")
        refusal = str(record.get("refusal") or "")
        if not record.get("accepted") and not refusal.startswith(EARLY_STOPPING):
            problems.append(f"round {number}: not aggregated ({refusal or 'no reason recorded'})")
        elif not record.get("metrics"):
            problems.append(f"round {number}: no metrics released (no institution's evaluation was summed)")
    return problems


def require_every_round(run_dir: Path) -> None:
    """Refuse to call a run done unless every round finished with its metrics.

    Raises
    ------
    RunFailed
        Naming each round that was not aggregated or not evaluated, and the log.
    """
    problems = round_problems(run_dir)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise RunFailed(
            f"the run did not finish every round with its metrics: {shown}; see "
            f"{run_dir / 'rounds.jsonl'} and {run_dir / 'flower.log'}"
        )


@dataclass(frozen=True)
class SimulationRequest:
    """One simulated federation run."""

    project_dir: Path
    run_dir: Path
    run_config: Mapping[str, Any]
    num_institutions: int
    #: Cores of the run's Ray cluster; ``None``: ``FEDFRAUD_SIMULATION_CPUS``, else 2.
    num_cpus: int | None = None


#: Cores a simulated run's Ray cluster may use (default 2). Ray starts one
#: ClientApp actor per core, and each actor imports PyTorch and Flower
#: (about 10 CPU-seconds per run for the second one). Set it to 1 where
#: several simulations share the machine, as the test suite does.
SIMULATION_CPUS_ENV = "FEDFRAUD_SIMULATION_CPUS"


def simulation_cpus(env: Mapping[str, str] | None = None) -> int:
    """The Ray cluster's cores from ``FEDFRAUD_SIMULATION_CPUS`` (default 2), or ConfigError naming the value."""
    raw = (os.environ if env is None else env).get(SIMULATION_CPUS_ENV, "").strip()
    if not raw:
        return 2
    if not raw.isdigit() or not 1 <= int(raw) <= 256:
        raise ConfigError(f"{SIMULATION_CPUS_ENV}={raw!r}: give a whole number of cores from 1 to 256")
    return int(raw)


def project_dir() -> Path:
    """The folder holding the Flower app's ``pyproject.toml``."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise ConfigError(
            f"no pyproject.toml beside the fedfraud package ({root}); install the "
            "project in editable mode (pip install -e .) from its folder"
        )
    return root


def default_run_config() -> dict[str, Any]:
    """The ``[tool.flwr.app.config]`` table of the project."""
    with (project_dir() / "pyproject.toml").open("rb") as handle:
        data = tomllib.load(handle)
    config: dict[str, Any] = data["tool"]["flwr"]["app"]["config"]
    return dict(config)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_run_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write run-config overrides as a flat TOML file for ``flwr run -c`` (scalars only)."""
    import tomli_w

    for key, value in config.items():
        if not isinstance(value, (str, bool, int, float)):
            raise ConfigError(f"run config {key!r}: {value!r} is not a TOML scalar")
    path.write_text(tomli_w.dumps(dict(sorted(config.items()))), encoding="utf-8")
    return path


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Environment for Flower's processes: project-local home, no telemetry."""
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    # Flower's processes start further Flower commands by name (the SuperLink
    # starts ``flower-superexec``), so this interpreter's folder comes first.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def flower_tool(name: str) -> str:
    # Prefer the tool installed beside this interpreter (the project's venv).
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"Flower's '{name}' command was not found; is flwr installed?")
    return found


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as resp:
            return bool(200 <= resp.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: parse after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux ``/proc``), children first."""
    tree = _children_map()
    found: list[int] = []
    stack = list(tree.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(tree.get(child, []))
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a Flower process, its process group and every descendant.

    Flower's SuperExec starts the ServerApp in a session of its own: stopping
    only the SuperLink's process group would leave that ServerApp running the
    round on (and holding the run lock) after the demo was interrupted.
    """
    if process.poll() is not None:
        return
    others = descendants(process.pid)
    try:
        os.killpg(process.pid, signal.SIGTERM)
        _signal_all(others, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=15)
    _signal_all([pid for pid in others if pid_alive(pid)], signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def simulation_superlink(flwr_home: Path, log_path: Path) -> Iterator[int]:
    """Start a SuperLink in simulation mode on a free port; stop it on exit."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        flower_tool("flower-superlink"),
        "--insecure",  # loopback only, inside one machine; see docs for TLS
        "--simulation",
        "--disable-runtime-dependency-installation",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = spawn_logged(command, flower_env(flwr_home), log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _healthy(port):
            if process.poll() is not None:
                raise RunFailed(f"the SuperLink exited during start-up; see {log_path}")
            if time.monotonic() > deadline:
                raise RunFailed(f"the SuperLink did not start within {STARTUP_TIMEOUT:g}s")
            time.sleep(0.2)
        config = (
            "[superlink]\n"
            f'default = "{CONNECTION_NAME}"\n\n'
            f"[superlink.{CONNECTION_NAME}]\n"
            f'address = "127.0.0.1:{port}"\n'
            "insecure = true\n"
        )
        (flwr_home / "config.toml").write_text(config, encoding="utf-8")
        yield port
    finally:
        _stop(process)


@contextmanager
def terminate_raises() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so ``finally`` blocks stop every Flower process.

    Without it a ``kill <pid>`` of the launcher ends it at once and leaves its
    SuperLink and ServerApp running. Only the main thread can set handlers;
    elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_simulation(
    request: SimulationRequest,
    on_poll: Callable[[], None] | None = None,
    poll_seconds: float = 0.5,
) -> None:
    """Run one simulated federation to completion (or raise RunFailed).

    ``on_poll`` is called periodically while the run goes on, so a caller can
    show progress from the run directory.
    """
    # A Flower home of its own per run: concurrent runs never share the
    # connection file, and nothing is left behind once the run ends.
    flwr_home = Path(
        tempfile.mkdtemp(prefix="home-", dir=_ensure_dir(request.project_dir / ".flwr"))
    )
    request.run_dir.mkdir(parents=True, exist_ok=True)
    flower_log = RunLayout(request.run_dir).flower_log
    overrides = write_run_config(request.run_dir / "run-config.toml", request.run_config)
    num_cpus = simulation_cpus() if request.num_cpus is None else request.num_cpus
    federation = (
        f"num-supernodes={request.num_institutions} "
        f"init-args-num-cpus={num_cpus} client-resources-num-cpus=1"
    )
    try:
        with terminate_raises():
            _submit(request, flwr_home, flower_log, overrides, federation, on_poll, poll_seconds)
    finally:
        shutil.rmtree(flwr_home, ignore_errors=True)
    if not RunLayout(request.run_dir).summary.exists():
        raise RunFailed(
            f"the run did not finish (no summary.json in {request.run_dir}); "
            f"last lines of {flower_log}:\n{log_tail(flower_log)}"
        )


def _submit(
    request: SimulationRequest,
    flwr_home: Path,
    flower_log: Path,
    overrides: Path,
    federation: str,
    on_poll: Callable[[], None] | None,
    poll_seconds: float,
) -> None:
    """Start the SuperLink, submit the run with ``flwr run`` and wait for it."""
    from fedfraud.release import release_folder

    # Only the project's tracked files go into the app bundle.
    app = release_folder(request.project_dir, flwr_home / "app")
    with simulation_superlink(flwr_home, flower_log):
        command = [
            flower_tool("flwr"),
            "run",
            str(app),
            CONNECTION_NAME,
            "--stream",
            "--run-config",
            str(overrides),
            "--federation-config",
            federation,
        ]
        process = spawn_logged(command, flower_env(flwr_home), flower_log)
        try:
            while process.poll() is None:
                if on_poll is not None:
                    on_poll()
                time.sleep(poll_seconds)
        finally:
            _stop(process)
        if on_poll is not None:
            on_poll()


#: Seconds a stopped Flower process gets to exit before it is killed.
STOP_GRACE = 10.0


@dataclass
class ManagedProcess:
    """A Flower process started by us, in a session of its own."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole tree at once: a machine dying, not a shutdown."""
        self._signal_tree(signal.SIGKILL)
        self.process.wait(timeout=STOP_GRACE)

    def stop(self) -> None:
        """SIGTERM the process group and descendants; SIGKILL what remains."""
        if not self.alive():
            self._signal_tree(signal.SIGKILL)  # orphans of a dead parent
            return
        self._signal_tree(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass
        self._signal_tree(signal.SIGKILL)
        self.process.wait(timeout=STOP_GRACE)

    def _signal_tree(self, sig: signal.Signals) -> None:
        targets = descendants(self.pid) if self.alive() else []
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def spawn_logged(
    command: list[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session, appending its output to ``log_path``.

    Its own session (process group) lets a launcher stop it and every process
    it starts; the log folder is created if needed.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as handle:
        return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            command, env=dict(env), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
        )


def _ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, for error messages ("(no log)" if unreadable)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
