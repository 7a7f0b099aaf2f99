"""Bring-your-own data in production: a federation file with a schema, run with the operator's command.

Three insurers bring their own claim files (the public insurance claims, split
by policy state, rows as they are in the file). The federation file names the
shared schema; provisioning puts a copy in every site folder and the
server's, and renders every policy once with the schema's model columns. The
operator's one command, ``python -m fedfraud.deployment local``, checks every
institution's files against the schema before Flower starts, then runs a real
SuperLink, gateway and three SuperNodes (TLS, node authentication, SecAgg+).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedfraud.datasets import model_columns, server_schema_file
from fedfraud.provision import Layout, load_federation, provision
from fedfraud.sites import render_policy, split_byo_demo
from fraud.byo import load_schema
from policy import load_policy
from server.rundir import read_rounds

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "fraud" / "schemas" / "insurance_claims.toml"
CLAIMS = REPO.parent / "shared" / "data" / "insurance_claims" / "insurance_claims.csv"
INSURERS = ("il", "in", "oh")


def _federation(root: Path) -> Path:
    """The insurers' own files and policies, and the federation file that names the schema."""
    split_byo_demo(CLAIMS, "policy_state", "fraud_reported", root / "data", seed=7)
    lines = ["schema_version = 1", "[federation]", 'id = "insurers"', 'superlink = "127.0.0.1:9093"',
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
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "250"}
    for name in INSURERS:  # each insurer approves the bundle of the code it reviewed
        approved = subprocess.run(
            [sys.executable, "-m", "fedfraud", "code", "approve", "--site", str(root / "keys" / "institutions" / name),
             str(REPO), "--label", "reviewed checkout"],
            capture_output=True, text=True, timeout=120, check=False, env=env,
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
    done = subprocess.run(
        [sys.executable, "-m", "fedfraud.deployment", "local", str(federation.source), "--keys", str(root / "keys"),
         "--rounds", "1", "--runs-dir", str(root / "runs"), "--set", "timeout=60.0"],
        capture_output=True, text=True, timeout=900, check=False, cwd=root, env=env,
    )
    return {"root": root, "federation": federation, "layout": Layout((root / "keys").resolve()), "done": done}


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


def test_own_data_runs_through_the_deployment_engine_with_the_operators_command(
    byo_run: dict[str, object],
) -> None:
    done = byo_run["done"]
    assert isinstance(done, subprocess.CompletedProcess)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Every institution's files were checked against the schema before Flower started.
    assert "own data fits the schema: il: " in done.stdout
    assert "own data read with" in done.stdout
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
