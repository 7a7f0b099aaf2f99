"""Bring-your-own data in production, each party with its own command.

Three insurers bring their own claim files (the public insurance claims, split
by policy state, rows as they are in the file). The federation file names the
shared schema; provisioning puts a copy in every site folder and the
server's, and renders every policy once with the schema's model columns.
Then each party runs one command, as in the runbook: the operator
``fedfraud superlink`` (a real SuperLink with TLS, node authentication and a
database, and the fleet gateway), each insurer ``fedfraud supernode SITE
--superlink ...``, and the operator ``fedfraud run``, which checks every
institution's files against the schema before anything is sent, follows the
run round by round and prints the compliance officer's command.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fraud.datasets import model_columns
from core.layout import server_schema_file
from fedfraud.deployment import TASK_POLL_ENV
from fedfraud.party import READY_MARK
from core.layout import Layout
from fedfraud.federation_file import load_federation
from fedfraud.provisioning import provision
from fedfraud.simulation import descendants, free_port
from fedfraud.sites import render_policy, split_byo_demo
from fraud.byo_schema import load_schema
from policy import load_policy
from server.rundir import read_rounds
from tests.shared_data import INSURANCE_CSV

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "docs" / "production.md"
SCHEMA = REPO / "fraud" / "schemas" / "insurance_claims.toml"
CLAIMS = INSURANCE_CSV
INSURERS = ("il", "in", "oh")
# The module's federation serves three runs (one interrupted by a SuperLink restart) before its first test.
pytestmark = pytest.mark.timeout(1800)


def _federation(root: Path) -> Path:
    """The insurers' own files and policies, and the federation file that names the schema."""
    split_byo_demo(CLAIMS, "policy_state", "fraud_reported", root / "data", seed=7)
    lines = ["schema_version = 1", "[federation]", 'id = "insurers"', f'superlink = "127.0.0.1:{free_port()}"',
             f'schema = "{SCHEMA}"']
    for name in INSURERS:
        # Each insurer's approved policy (the example's rules under its own id; provisioning sets the key).
        policy = root / "policies" / f"{name}.toml"
        policy.parent.mkdir(exist_ok=True)
        policy.write_text(render_policy(REPO / "policies" / "bank-a.toml", name, "A" * 43 + "=", INSURERS),
                          encoding="utf-8")
        lines += ["[[institutions]]", f'id = "{name}"', f'data_dir = "data/{name}"', f'policy = "{policy}"']
    path = root / "federation.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("byo-deployment")
    federation = load_federation(_federation(root))
    provision(federation, root / "keys")
    # Every party's Flower asks for new work every 0.2 s instead of 1 s (Flower's own setting).
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "250", TASK_POLL_ENV: "0.2"}
    runbook = _runbook_commands()
    for name in INSURERS:  # each insurer approves the bundle of the code it reviewed
        approved = subprocess.run(_as_party(runbook["code"], name), capture_output=True, text=True, timeout=120,
                                  check=False, cwd=root, env=env)
        assert approved.returncode == 0, approved.stdout + approved.stderr
    keys, state = root / "keys", root / ".flwr" / "operator"  # the runbook's default state folder
    fedfraud = [sys.executable, "-m", "fedfraud"]
    operator_cmd = _as_party(runbook["superlink"])
    # The operator: SuperLink + gateway, in the foreground of its own terminal.
    operator = subprocess.Popen(operator_cmd, stdout=(root / "operator-1.out").open("wb"),
                                stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)
    parties: list[subprocess.Popen[bytes]] = [operator]
    flower_pids: list[int] = []
    result: dict[str, object] = {"root": root, "federation": federation, "layout": Layout(keys.resolve()),
                                 "state": state}
    try:
        fleet = _wait_for_ready(operator, root / "operator-1.out")
        result["fleet"] = fleet
        # Each insurer: its SuperNode from its site folder and the address the operator gave.
        for name in INSURERS:
            parties.append(subprocess.Popen(
                _as_party(runbook["supernode"], name),
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True,
            ))
        # A fixed max-weight skips the statistics round; one local epoch.
        run = [*_as_party(runbook["run"]), "--wait-nodes", "300", "--set", "max-weight=5000.0",
               "--set", "local-epochs=1"]
        # 1. A 3-round run; the operator's host goes down once round 1 is aggregated.
        first = subprocess.Popen([*run, "--rounds", "3", "--runs-dir", str(root / "runs-1")], cwd=root, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        result["stopped_run"] = _stop_operator_after_round_1(operator, first, root / "runs-1")
        result["first"] = first.communicate(timeout=300)[0], first.returncode
        # 2. The operator starts again on the same state folder; the SuperNodes come back by themselves.
        operator = subprocess.Popen(operator_cmd, stdout=(root / "operator-2.out").open("wb"),
                                    stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)
        parties[0] = operator
        assert _wait_for_ready(operator, root / "operator-2.out") == fleet
        result["restart_output"] = (root / "operator-2.out").read_text(errors="replace")
        stopped_run = result["stopped_run"]
        assert isinstance(stopped_run, Path)
        result["stopped_status"] = subprocess.run(
            [*fedfraud, "status", str(stopped_run)], capture_output=True, text=True, timeout=120, check=False,
            cwd=root, env=env,
        )
        # 3. A new run from the stopped run's last accepted model.
        result["done"] = subprocess.run(
            [*run, "--rounds", "1", "--runs-dir", str(root / "runs"),
             "--set", f"initial-model='{stopped_run / 'model.npz'}'"],
            capture_output=True, text=True, timeout=900, check=False, cwd=root, env=env,
        )
        # The operator's status while everything still runs, through the connection `superlink` wrote.
        status_env, status_argv = runbook["status"]
        result["status"] = subprocess.run(
            [*_as_party(status_argv), "--runs-dir", str(root / "runs"), "--json"],
            capture_output=True, text=True, timeout=120, check=False, cwd=root, env={**env, **status_env},
        )
        for party in parties:
            flower_pids += descendants(party.pid)
    finally:
        # Ctrl-C's equivalent for a service manager: SIGTERM to each party's command.
        for party in parties:
            if party.poll() is None:
                party.send_signal(signal.SIGTERM)
        result["stop_codes"] = [party.wait(timeout=60) for party in parties]
    result["flower_pids"] = flower_pids
    return result


def _runbook_commands() -> dict[str, Any]:
    """The runbook's one-command-per-party block (docs/production.md, section 2), by sub-command.

    The test runs these commands as written, from a folder laid out as the
    runbook's (``federation.toml``, ``keys/``), with the institution's id in
    place of ``bank-a`` and this checkout in place of ``.``; ``status`` comes
    with the environment the runbook sets for it.
    """
    text = RUNBOOK.read_text(encoding="utf-8")
    section = text[text.index("## 2. Starting a federation: one command per party"):text.index("## 2b.")]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands: dict[str, Any] = {}
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        env: dict[str, str] = {}
        while argv and "=" in argv[0] and not argv[0].startswith("-"):
            key, _, value = argv.pop(0).partition("=")
            env[key] = value
        if not argv:
            continue
        assert argv[0] == "fedfraud", line
        commands[argv[1]] = (env, argv[1:]) if env else argv[1:]
    assert set(commands) == {"superlink", "code", "supernode", "run", "status"}, sorted(commands)
    return commands


def _as_party(argv: list[str], institution: str | None = None) -> list[str]:
    """A runbook command for this checkout's fedfraud, for ``institution`` where it names bank-a."""
    args = [str(REPO) if arg == "." else arg.replace("bank-a", institution) if institution else arg for arg in argv]
    return [sys.executable, "-m", "fedfraud", *args]


def _stop_operator_after_round_1(operator: subprocess.Popen[bytes], run: subprocess.Popen[str], runs: Path) -> Path:
    """SIGTERM the operator's ``fedfraud superlink`` once a run under ``runs`` has aggregated round 1."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and run.poll() is None:
        for run_dir in sorted(runs.glob("*")) if runs.is_dir() else []:
            if (run_dir / "rounds.jsonl").is_file() and any(r.get("accepted") for r in read_rounds(run_dir)):
                operator.send_signal(signal.SIGTERM)
                assert operator.wait(timeout=60) == 130
                return run_dir
        time.sleep(0.5)
    raise AssertionError("round 1 was never aggregated: " + (run.communicate()[0] if run.poll() is not None else ""))


def _wait_for_ready(operator: subprocess.Popen[bytes], output: Path) -> str:
    """The fleet address ``fedfraud superlink`` prints once the SuperLink and gateway are up."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = output.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            if line.startswith(READY_MARK):
                return line.removeprefix(READY_MARK).strip()
        if operator.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError("fedfraud superlink did not get ready:\n" + output.read_text(errors="replace")[-3000:])



def test_provisioning_renders_each_policy_once_with_the_schemas_columns(byo_run: dict[str, object]) -> None:
    federation, layout = byo_run["federation"], byo_run["layout"]
    assert federation.schema == SCHEMA  # type: ignore[union-attr]
    columns = sorted(model_columns(load_schema(SCHEMA)))
    for name in INSURERS:
        site = layout.institution(name)  # type: ignore[union-attr]
        # The schema at the site and the server's copy are the federation's.
        assert site.schema.read_bytes() == SCHEMA.read_bytes()
        assert server_schema_file(layout.server_dir, name).read_bytes() == SCHEMA.read_bytes()  # type: ignore[union-attr]
        # One rendering: the institution's policy and the server's copy are the same text and hash.
        policy = load_policy(site.policy)
        assert sorted(policy.data_use.allowed_features) == columns
        assert layout.server_policy(name).read_bytes() == site.policy.read_bytes()  # type: ignore[union-attr]
        assert tomllib.loads(site.policy.read_text())["identity"]["id"] == name


def test_own_data_runs_through_the_deployment_engine_with_one_command_per_party(
    byo_run: dict[str, object],
) -> None:
    done = byo_run["done"]
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Every institution's files were checked against the schema before Flower started.
    assert "own data fits the schema: il: " in done.stdout
    assert "3 SuperNodes online" in done.stdout
    assert "round   1/1  cohort 3" in done.stdout  # progress per round, as it happens
    run_dir = Path(next(line for line in done.stdout.splitlines() if line.startswith("run directory: "))
                   .removeprefix("run directory: "))
    (record,) = read_rounds(run_dir)
    assert record["accepted"] is True
    assert record["cohort"] == sorted(INSURERS)
    assert record["metrics"]["num_examples"] == sum(
        len((byo_run["root"] / "data" / n / "test.csv").read_text().splitlines()) - 1 for n in INSURERS  # type: ignore[operator]
    )
    # The run kept what scoring new rows needs: the federation's schema.
    scoring = json.loads((run_dir / "scoring.json").read_text(encoding="utf-8"))
    assert scoring["byo_schema"]["fingerprint"] == load_schema(SCHEMA).fingerprint()
    # The compliance officer's command, as printed, says VALID.
    verify = next(line for line in done.stdout.splitlines() if line.startswith("verify it: "))
    argv = shlex.split(verify.removeprefix("verify it: "))
    verdict = subprocess.run([sys.executable, "-m", "fedfraud", *argv[1:]], capture_output=True, text=True,
                             timeout=120, check=False)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "VALID" in verdict.stdout


def test_own_data_that_breaks_the_schema_stops_the_run_before_flower_starts(
    byo_run: dict[str, object], tmp_path: Path
) -> None:
    root = byo_run["root"]
    assert isinstance(root, Path)
    bad = root / "data" / "oh" / "test.csv"
    good = bad.read_text(encoding="utf-8")
    header, first, *rest = good.splitlines()
    age = header.split(",").index("age")
    cells = first.split(",")
    cells[age] = "forty"
    try:
        bad.write_text("\n".join([header, ",".join(cells), *rest]) + "\n", encoding="utf-8")
        done = subprocess.run(
            [sys.executable, "-m", "fedfraud.deployment", "local", str(root / "federation.toml"), "--keys",
             str(root / "keys"), "--rounds", "1", "--runs-dir", str(tmp_path / "runs")],
            capture_output=True, text=True, timeout=300, check=False, cwd=root,
            env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "250"},
        )
    finally:
        bad.write_text(good, encoding="utf-8")
    assert done.returncode == 3, done.stdout + done.stderr
    message = " ".join((done.stdout + done.stderr).split())
    assert "oh" in message and "test.csv" in message and "age" in message
    assert "SuperLink" not in done.stdout  # nothing started
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_superlink_restart_stops_the_run_visibly_and_a_new_run_resumes_from_its_last_model(
    byo_run: dict[str, object],
) -> None:
    # The run that lost its SuperLink fails, naming the cause and the log (never exit 0).
    output, code = byo_run["first"]  # type: ignore[misc]
    assert code == 8, output
    assert "did not finish" in output and "flower.log" in output
    assert "round   1/3  cohort 3" in output
    # The restarted SuperLink kept every registration in its database.
    restart = byo_run["restart_output"]
    assert isinstance(restart, str)
    assert all(f"{name}: SuperNode key registered before" in restart for name in INSURERS), restart
    # `fedfraud status` says the run stopped and how to start from its last accepted model.
    stopped_run, status = byo_run["stopped_run"], byo_run["stopped_status"]
    assert isinstance(stopped_run, Path) and isinstance(status, subprocess.CompletedProcess)
    assert status.returncode == 8, status.stdout + status.stderr
    text = " ".join(status.stdout.split())
    assert "stopped" in text and f"--set initial-model={(stopped_run / 'model.npz').resolve()}" in text
    # The new run started from exactly that model.
    done = byo_run["done"]
    assert isinstance(done, subprocess.CompletedProcess)
    run_dir = Path(next(line for line in done.stdout.splitlines() if line.startswith("run directory: "))
                   .removeprefix("run directory: "))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    last = [r for r in read_rounds(stopped_run) if r["accepted"]][-1]
    assert summary["initial_model"]["model_hash"] == last["model_hash"]


def test_operators_status_names_each_supernode_by_its_institution(byo_run: dict[str, object]) -> None:
    status = byo_run["status"]
    assert isinstance(status, subprocess.CompletedProcess)
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["state"] == "finished" and report["rounds_aggregated"] == 1
    online = sorted(n["institution"] for n in report["nodes"] if n["status"] == "online")
    assert online == sorted(INSURERS)


def test_each_partys_command_stops_every_flower_process_and_keeps_its_logs(byo_run: dict[str, object]) -> None:
    # SIGTERM, as a service manager stops a unit: each command ends and takes its Flower processes with it.
    assert byo_run["stop_codes"] == [130] * (1 + len(INSURERS))
    flower_pids = byo_run["flower_pids"]
    assert isinstance(flower_pids, list) and flower_pids  # the SuperLink, gateway and SuperNodes were children
    alive = [pid for pid in flower_pids if os.path.exists(f"/proc/{pid}") and
             "zombie" not in Path(f"/proc/{pid}/status").read_text(errors="replace").lower()]
    assert alive == []
    state, layout = byo_run["state"], byo_run["layout"]
    assert isinstance(state, Path) and isinstance(layout, Layout)
    # Logs in files: the operator's processes, and each SuperNode in its own site folder.
    assert "SuperLink" in (state / "logs" / "superlink.log").read_text(errors="replace")
    assert (state / "logs" / "gateway.log").stat().st_size > 0
    assert (state / "superlink.db").is_file()  # restarts keep the registrations
    assert not (state / "operator.json").exists()  # a stopped operator leaves no stale address
    for name in INSURERS:
        log = (layout.institution(name).root / "logs" / "supernode.log").read_text(errors="replace")
        assert "SuperNode ID: " in log
        # Its ClientApp processes were forks of its warm server (client/warm_start.py), not cold starts.
        assert log.count("(fedfraud's approved-code check, forked warm)") >= 10, name


def test_the_runbooks_commands_ran_as_written(byo_run: dict[str, object]) -> None:
    # The supernode line's address is the one `fedfraud superlink` printed with its defaults.
    assert f"--superlink {byo_run['fleet']}" in RUNBOOK.read_text(encoding="utf-8")
    done = byo_run["done"]
    assert isinstance(done, subprocess.CompletedProcess) and done.returncode == 0


def test_run_without_a_running_superlink_says_how_to_start_one(tmp_path: Path,
                                                                 byo_run: dict[str, object]) -> None:
    root = byo_run["root"]
    assert isinstance(root, Path)
    done = subprocess.run(
        [sys.executable, "-m", "fedfraud", "run", str(root / "federation.toml"), "--keys", str(root / "keys"),
         "--state", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, check=False, cwd=root,
        env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "250"},
    )
    assert done.returncode == 3, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert "no running SuperLink" in message and "fedfraud superlink" in message
    assert not (tmp_path / "runs").exists()
