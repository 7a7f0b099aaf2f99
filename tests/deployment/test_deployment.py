"""The production path: real ``flower-superlink`` and ``flower-supernode`` on 127.0.0.1.

Every federation here runs with TLS (a CA and certificate from
``fedfraud.provision``), SuperNode authentication (registered EC P-384 keys)
and SecAgg+. Nothing is mocked; every process is stopped by a finalizer, also
when a test fails.
"""

from __future__ import annotations

import json
import shlex
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_ssh_private_key,
    load_ssh_public_key,
)

from client import warm_start
from client.approval import approve, fab_digest
from fedfraud.code import bundle_bytes
from fedfraud.deployment import (
    CONNECTION_NAME,
    Deployment,
    ManagedProcess,
    RunFailed,
    deployment_run_config,
    supernode_args,
    verify_command,
)
from fedfraud.simulation import free_port
from core.errors import ConfigError
from core.layout import Layout
from core.layout import SiteLayout as InstitutionFiles
from fedfraud.federation_file import Federation, load_federation
from fedfraud.pki import PRIVATE_MODE, make_supernode_auth_key, write_file
from fedfraud.provisioning import provision, provision_institution
from fraud.generator_files import ensure_federation_data
from server.rundir import read_rounds

INSTITUTIONS = ("bank-a", "bank-b", "insurer-c")
VICTIM = "insurer-c"
SURVIVORS = ("bank-a", "bank-b")
RUN_NAME = "deployment-run"
ROWS = 2000
REPO = Path(__file__).resolve().parents[2]
# How long each SecAgg+ stage (and each witnessing request) may wait for an
# institution. Measured on 2 busy cores: a stage takes the server 6-9 s
# (SuperNode poll 3 s, one ClientApp process, server poll 3 s), the training
# stage up to ~18 s (its ClientApp imports torch and trains); 35 s was about
# twice that, and still dropped institutions when the suite's other worker
# ran a Ray simulation beside them, hence 60 s. A killed SuperNode costs at
# most this once per stage that still waits for it, until the SuperLink marks
# it offline (no heartbeat for 2 intervals: 2 x 10 s with
# SUPERNODE_HEARTBEAT, 2 x 30 s with Flower's default), after which nothing
# waits for it.
STAGE_TIMEOUT = 60.0
RUN_TIMEOUT = 720.0
# Each message a SuperNode receives waits for one SuperExec poll (Flower's
# default: 1 s) before its ClientApp starts; a short poll saves seconds per stage.
TASK_POLL_INTERVAL = 0.2
# Flower 1.42's SecAgg+ round, as a SuperNode receives it: setup, share keys,
# collect masked vectors (where the ClientApp trains), unmask. The third
# message is the one an institution gets after it has shared its key shares.
TRAINING_STAGE = 3
#: Above every institution's training rows (ROWS each): no statistics round.
FIXED_MAX_WEIGHT = 5000.0
#: Seconds between SuperNode heartbeats (``fedfraud supernode --heartbeat``):
#: the SuperLink marks a dead SuperNode offline 2 x 10 s after its last one,
#: not Flower's 2 x 30 s, and then stops holding the stage for it.
SUPERNODE_HEARTBEAT = 10.0
#: Not the default seed (42) of the other runs on the same site folders.
KILLED_RUN_SEED = 7


def _federation_file(root: Path) -> Path:
    lines = [
        "schema_version = 1",
        "[federation]",
        'id = "fedfraud-test"',
        'superlink = "127.0.0.1:9093"',
    ]
    for name in INSTITUTIONS:
        lines += [
            "[[institutions]]",
            f'id = "{name}"',
            f'data_dir = "data/{name}"',
            f'policy = "{REPO / "policies" / f"{name}.toml"}"',
        ]
    path = root / "federation.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Federation, Layout]:
    """Three institutions' data, and a provisioned federation for them."""
    root = tmp_path_factory.mktemp("federation")
    ensure_federation_data(root / "data", list(INSTITUTIONS), ROWS, 7)
    federation = load_federation(_federation_file(root))
    two_sided_provisioning(federation, root / "keys")
    return federation, Layout((root / "keys").resolve())


def two_sided_provisioning(federation: Federation, keys: Path) -> None:
    """Each institution makes its own keys; the operator imports the public halves.

    On one machine the institution's site folder is its folder in the
    operator's layout (``keys/institutions/<id>``), as in
    ``scripts/run-local-federation.sh``; the operator's step only ever reads
    the registration files.
    """
    registrations = keys.parent / "registrations"
    registrations.mkdir(exist_ok=True)
    layout = Layout(keys.resolve())
    for name in federation.names:
        site = layout.institution(name).root
        provision_institution(federation, name, site)
        (registrations / f"{name}.json").write_bytes((site / "registration.json").read_bytes())
    provision(federation, keys, registrations=registrations)
    # Each institution reviews this project's code and approves its bundle.
    digest = fab_digest(bundle_bytes(REPO))
    for name in federation.names:
        approve(layout.institution(name).root, digest, "the reviewed project")


@pytest.fixture
def deployment(
    provisioned: tuple[Federation, Layout], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Deployment]:
    """A deployment whose processes are always stopped (finalizer)."""
    federation, layout = provisioned
    work = tmp_path / "work"
    work.mkdir()
    # SuperNodes reach the SuperLink through the fleet gateway, as in production.
    running = Deployment(
        layout, federation, work, task_poll_interval=TASK_POLL_INTERVAL, gateway=True,
        supernode_heartbeat=SUPERNODE_HEARTBEAT,
    )
    request.addfinalizer(running.close)
    yield running
    # Nothing we started may outlive the test (the finalizer stays as a safety net).
    started = list(running.processes)
    running.close()
    assert all(not p.alive() for p in started), "processes left running"


@pytest.fixture(scope="module")
def running_federation(
    provisioned: tuple[Federation, Layout], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """One federation, all three SuperNodes online, shared by the attacks that kill nothing.

    The operator's tampered bundle and then the rogue SuperNode run on it in
    file order (one xdist group); each run has its own run directory.
    """
    federation, layout = provisioned
    work = tmp_path_factory.mktemp("shared-work")
    running = Deployment(layout, federation, work, task_poll_interval=TASK_POLL_INTERVAL, gateway=True)
    try:
        running.start_all()
        yield running
    finally:
        started = list(running.processes)
        running.close()
    assert all(not p.alive() for p in started), "processes left running"


def _run_config(
    deployment: Deployment, run_dir: Path, rounds: int, **extra: object
) -> dict[str, object]:
    return deployment_run_config(
        deployment.layout,
        deployment.federation,
        run_dir,
        run_dir.name,
        {"num-server-rounds": rounds, "local-epochs": 1, "timeout": STAGE_TIMEOUT, **extra},
    )


# -- provisioning (no Flower processes) ----------------------------------------


def test_provisioned_keys_are_in_flower_form_and_private(
    provisioned: tuple[Federation, Layout],
) -> None:
    federation, layout = provisioned
    for name in federation.names:
        files = layout.institution(name)
        # Flower 1.42 reads the SuperNode key with load_ssh_private_key and
        # wants an EC key; `flwr supernode register` wants the OpenSSH public key.
        private = load_ssh_private_key(files.auth_key.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert isinstance(private.curve, ec.SECP384R1)
        public = load_ssh_public_key(files.auth_pub.read_bytes())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        for secret in (files.auth_key, files.audit_key):
            assert stat.S_IMODE(secret.stat().st_mode) == PRIVATE_MODE
        node_config = files.node_config.read_text(encoding="utf-8")
        assert f'institution-id = "{name}"' in node_config
        written = tomllib.loads(node_config)
        # Only the keys client/node.py reads: it finds the policy and keys in site-dir.
        assert written == {
            "institution-id": name,
            "site-dir": str(files.root),
            "data-dir": str(federation.institutions[federation.names.index(name)].data_dir),
        }
    for secret in (layout.ca_key, layout.server_key, layout.server_audit_key):
        assert stat.S_IMODE(secret.stat().st_mode) == PRIVATE_MODE
    cert = x509.load_pem_x509_certificate(layout.server_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    trusted = json.loads(layout.trusted_keys.read_text(encoding="utf-8"))
    assert sorted(trusted) == sorted(INSTITUTIONS)


def test_provisioning_never_overwrites_keys_without_force(
    provisioned: tuple[Federation, Layout],
) -> None:
    federation, layout = provisioned
    before = layout.institution("bank-a").auth_key.read_bytes()
    with pytest.raises(ConfigError, match="supernode-auth.key") as info:
        provision(federation, layout.root)
    assert "--force" in str(info.value)
    assert layout.institution("bank-a").auth_key.read_bytes() == before


def test_bad_federation_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "federation.toml"
    path.write_text(
        'schema_version = 1\n[federation]\nid = "x"\nsuperlink = "no-port"\n'
        '[[institutions]]\nid = "Bank A"\ndata_dir = "d"\n'
        '[[institutions]]\nid = "b"\ndata_dir = "d"\ncolour = "red"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_federation(path)
    message = str(info.value)
    assert str(path) in message
    assert "federation.superlink" in message
    assert "institutions[0] (id 'Bank A').id" in message
    assert "institutions[1] (id 'b').colour" in message


# -- real federations ------------------------------------------------------------


@pytest.mark.timeout(RUN_TIMEOUT + 180)
def test_federation_over_tls_with_node_auth_survives_a_supernode_killed_mid_round(
    deployment: Deployment, tmp_path: Path
) -> None:
    """One real federation covers the issue's run, dropout and audit checks.

    One SecAgg+ round over TLS with SuperNode authentication, begun by all
    three institutions. Once insurer-c has shared its SecAgg+ keys and
    received the model to train, its SuperNode is killed (process group,
    SIGKILL: the machine dies); bank-a and bank-b finish the round without it
    (its masks are rebuilt from their key shares), the run finishes, and the
    compliance officer's verifier accepts the audit log with all three
    institutions' own logs. (Rounds with all three institutions are run by
    the attacks below on the shared federation.)
    """
    # Arrange: SuperLink (TLS, node auth), three registered keys, three SuperNodes online.
    deployment.start_all()
    run_dir = tmp_path / RUN_NAME
    kill = _KillAtStage(deployment, VICTIM, round_=1, stage=TRAINING_STAGE)
    # Act
    deployment.submit(
        run_dir,
        # A fixed max-weight skips the statistics round (the rogue test below
        # runs the default, auto, through the Deployment Engine). A seed of its
        # own: its initial model, summed here by bank-a and bank-b only, must
        # not be the one the later runs on these sites sum with all three,
        # which every institution's round ledger rightly refuses
        # (secagg.differencing).
        _run_config(deployment, run_dir, 1, seed=KILLED_RUN_SEED, **{"max-weight": FIXED_MAX_WEIGHT}),
        on_poll=kill,
        poll_seconds=0.2,
        timeout=RUN_TIMEOUT,
    )
    # Assert: the run finished, its round without the victim, every SuperNode
    # talking through the fleet gateway.
    assert deployment.fleet_address != deployment.address
    assert kill.done, f"{VICTIM} never received round 1's training message"
    assert not deployment.supernodes[VICTIM].alive()
    assert all(deployment.supernodes[name].alive() for name in SURVIVORS)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds_completed"] == 1
    assert summary["final_checkpoint_witnessed_by"] == list(SURVIVORS)
    (only,) = read_rounds(run_dir)
    assert only["accepted"] is True
    assert only["cohort"] == list(SURVIVORS)
    assert only["dropouts"] == [VICTIM]
    assert only["evaluated_by"] == list(SURVIVORS)
    assert only["witnessed_by"] == list(SURVIVORS)
    # The SuperLink marked the dead SuperNode offline at most 2 x 10 s after
    # its last heartbeat (its own record of when it expired), not 2 x 30 s:
    # with Flower's interval the expiry lies 37.5 to 60 s after the kill.
    offline = [node for node in deployment.nodes() if node["status"] == "offline"]
    assert len(offline) == 1, deployment.nodes()
    expired = datetime.fromisoformat(offline[0]["offline-at"])
    assert expired - kill.at <= timedelta(seconds=2 * SUPERNODE_HEARTBEAT + 5), (expired, kill.at)
    # The signed audit log records the dropout, after aggregation began.
    audit_lines = (run_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line)["record"] for line in audit_lines]
    dropouts = [r["body"] for r in records if r["kind"] == "dropout"]
    assert dropouts == [{"round": 1, "institutions": [VICTIM], "stage": "secagg+"}]
    receipts = [r["body"]["institution"] for r in records if r["kind"] == "receipt"]
    assert sorted(receipts) == sorted(SURVIVORS)
    # Each institution's own log: the victim countersigned nothing.
    witnessed = {name: _witness_records(deployment, name, RUN_NAME) for name in SURVIVORS}
    assert witnessed == {"bank-a": 2, "bank-b": 2}
    # The compliance officer's verifier, run as a person would, says VALID.
    verdict = _verify_with_cli(deployment, run_dir, RUN_NAME)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert "VALID" in verdict.stdout


def test_supernode_with_unregistered_key_is_refused(
    deployment: Deployment, tmp_path: Path
) -> None:
    # Arrange: a SuperLink, and a well-formed key the SuperLink never saw.
    deployment.start_superlink()
    rogue = tmp_path / "rogue.key"
    private, _ = make_supernode_auth_key()
    write_file(rogue, private, PRIVATE_MODE, force=False)
    # Act
    node = deployment.start_supernode("bank-a", auth_key=rogue)
    _wait_exit(node, 60.0)
    # Assert: Flower 1.42 refuses ActivateNode with HTTP 412 / ApiError 2004;
    # the SuperNode exits with its "connection error" (305, process exit 1)
    # at once instead of retrying, and the SuperLink never lists it.
    assert node.process.returncode == 1
    log = node.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Exit Code: 305" in log
    assert "[code: 2004] Failed to activate SuperNode." in log
    superlink_log = (deployment.work_dir / "logs" / "superlink.log").read_text(
        encoding="utf-8", errors="replace"
    )
    assert "No SuperNode found with the given public key" in superlink_log
    assert '"POST /v1/fleet/activate-node HTTP/1.1" 412' in superlink_log
    assert deployment.nodes() == []


def _tampered_project(root: Path, marker: Path, victim_key: Path) -> Path:
    """This project's bundle files with a client/app.py that steals a signing key."""
    project = root / "tampered-app"
    for source in [REPO / "pyproject.toml", *REPO.glob("*/**/*.py"), *REPO.glob("fraud/schemas/*.toml")]:
        relative = source.relative_to(REPO)
        # Dot folders hold tools' state, e.g. .flwr/home-*/ copies a
        # simulation on another test worker makes and removes meanwhile.
        if relative.parts[0] in {"tests", "bench", "scripts", "docs"} or relative.parts[0].startswith("."):
            continue
        target = project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    app = project / "client" / "app.py"
    app.write_text(
        app.read_text(encoding="utf-8")
        + "\n# The operator's addition: copy the institution's signing key out.\n"
        + f"open({str(marker)!r}, 'wb').write(open({str(victim_key)!r}, 'rb').read())\n",
        encoding="utf-8",
    )
    return project


@pytest.mark.timeout(2 * RUN_TIMEOUT + 180)
def test_operator_shipped_modified_client_code_is_refused_by_every_institution(
    running_federation: Deployment, tmp_path: Path
) -> None:
    # Arrange: the federation is up; the operator changes client/app.py so that
    # it copies bank-a's signing key to a file, and sends that bundle.
    deployment = running_federation
    marker = tmp_path / "stolen-signing.key"
    victim_key = deployment.layout.institution("bank-a").audit_key
    project = _tampered_project(tmp_path, marker, victim_key)
    tampered = fab_digest(bundle_bytes(project))
    run_dir = tmp_path / "tampered-run"
    # Every SuperNode's warm ClientApp server is up, so the bundle reaches the
    # approval check in a fork of it (client/warm_start.py), not a cold process.
    for name in INSTITUTIONS:
        _wait_for_line(deployment.supernodes[name].log_path, warm_start.READY_LINE)
    # Act
    try:
        deployment.submit(
            run_dir, _run_config(deployment, run_dir, 1, **{"max-weight": FIXED_MAX_WEIGHT}),
            timeout=RUN_TIMEOUT, project=project,
        )
    except RunFailed:
        pass  # a run that no institution served may end either way
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        assert summary["rounds_completed"] == 0
    # Assert: nothing of the bundle ran; every institution logged the refusal
    # with the bundle's hash in its own log; the approved bundle still runs.
    assert not marker.exists(), "the tampered ClientApp ran at an institution"
    for name in INSTITUTIONS:
        log = deployment.layout.institution(name).root / "audit" / "refusals.jsonl"
        entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        refused = [e for e in entries if e["rules"] == ["code-not-approved"]]
        assert refused, f"{name} logged no code refusal"
        assert {e["fab_sha256"] for e in refused} == {tampered}
        installed = deployment.layout.institution(name).root / "flower-home" / "apps"
        assert not [p for p in installed.rglob("*") if tampered in p.name]
        # Each refusal happened in a task forked from the warm server.
        starts = refusals = 0
        last_start = ""
        for line in deployment.supernodes[name].log_path.read_text(errors="replace").splitlines():
            if "Start `flwr-clientapp` process" in line:
                last_start, starts = line, starts + 1
            elif "CodeNotApproved:" in line:
                refusals += 1
                assert "forked warm" in last_start, line
        assert refusals >= 1 and starts >= refusals, name
    # The approved bundle still runs on the same federation: boosted trees
    # (the Deployment Engine path of model = "gbdt").
    _boosted_trees_through_the_deployment_engine(deployment, tmp_path)


def _wait_for_line(log: Path, text: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{log} never said {text!r}"
        time.sleep(0.2)


def _boosted_trees_through_the_deployment_engine(deployment: Deployment, tmp_path: Path) -> None:
    """A gbdt run over TLS with node authentication, on a running deployment.

    The bin agreement and one level of one tree, each an exact SecAgg+ sum
    through the SuperNodes; the tree equals the pooled reference; the log
    verifies; ``fedfraud status`` names every SuperNode.
    """
    run_dir = tmp_path / "gbdt-run"
    deployment.submit(
        run_dir,
        _run_config(deployment, run_dir, 1, model="gbdt", **{"gbdt-trees-per-round": 1, "gbdt-max-depth": 1}),
        timeout=RUN_TIMEOUT,
    )
    (only,) = read_rounds(run_dir)
    assert only["accepted"] is True and only["cohort"] == sorted(INSTITUTIONS)
    assert only["metrics"]["auc_pr"] > 0.05
    # The tree equals the pooled reference on the institutions' own rows.
    from fraud.features import load_arrays
    from fraud.gbdt import Ensemble, train_pooled

    federated = Ensemble.from_json((run_dir / "model.json").read_bytes())
    kinds = [r["kind"] for r in records_of(run_dir)]
    assert kinds.count("gbdt_bins") == 1 and kinds.count("gbdt_sum") == 1 and kinds.count("gbdt_tree") == 1
    parts = [load_arrays(inst.data_dir / "train.csv", "training data") for inst in deployment.federation.institutions]
    pooled = train_pooled(parts, 1, federated.params, federated.features)
    assert federated.to_json() == pooled.to_json()
    verdict = _verify_with_cli(deployment, run_dir, "gbdt-run")
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    # The operator's status: finished, and each online SuperNode named by the
    # institution that proved its node id in the audit log.
    status = subprocess.run(
        [sys.executable, "-m", "fedfraud", "status", str(run_dir), "--superlink", CONNECTION_NAME, "--json"],
        env=deployment._env(deployment.cli_home), cwd=deployment.work_dir,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["state"] == "finished" and report["rounds_aggregated"] == 1
    online = sorted(n["institution"] for n in report["nodes"] if n["status"] == "online")
    assert online == sorted(INSTITUTIONS)


def records_of(run_dir: Path) -> list[dict[str, object]]:
    """The records of a run's server audit log."""
    lines = (run_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["record"] for line in lines]


def _rogue_site(deployment: Deployment, root: Path) -> InstitutionFiles:
    """An outsider's SuperNode folder: bank-a's public files, keys of its own.

    It claims to be bank-a (node config, policy, pinned partner keys copied),
    but its signing key is its own: it never held bank-a's.
    """
    real = deployment.layout.institution("bank-a")
    rogue = InstitutionFiles(root / "rogue-site")
    rogue.root.mkdir(parents=True)
    for name in ("policy.toml", "ca.pem", "server-audit.pub", "approved-code.json"):
        (rogue.root / name).write_bytes((real.root / name).read_bytes())
    shutil.copytree(real.root / "partners", rogue.root / "partners")
    private, public = make_supernode_auth_key()
    write_file(rogue.auth_key, private, PRIVATE_MODE, force=False)
    write_file(rogue.auth_pub, public, 0o644, force=False)
    signing = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    write_file(rogue.audit_key, signing, PRIVATE_MODE, force=False)
    config = real.node_config.read_text(encoding="utf-8")
    config = config.replace(json.dumps(str(real.root)), json.dumps(str(rogue.root)))
    config = config.replace(json.dumps(str(real.audit_key)), json.dumps(str(rogue.audit_key)))
    rogue.node_config.write_text(config, encoding="utf-8")
    return rogue


@pytest.mark.timeout(RUN_TIMEOUT + 180)
def test_rogue_supernode_registered_through_the_control_api_is_left_out_and_flagged(
    running_federation: Deployment, tmp_path: Path
) -> None:
    # Arrange: the federation is up; an outsider who reached the SuperLink's
    # Control API registers a key of its own and runs a SuperNode that claims
    # to be bank-a. Flower activates it and samples it with the others.
    deployment = running_federation
    rogue = _rogue_site(deployment, tmp_path)
    deployment.flwr(
        "supernode", "register", str(rogue.auth_pub), CONNECTION_NAME, "--name", "rogue", "--format", "json"
    )
    flower_args = supernode_args(rogue, deployment.address, free_port())
    deployment.supernodes["rogue"] = deployment._spawn(
        "supernode-rogue",
        [sys.executable, "-m", "fedfraud", "supernode", str(rogue.root), "--", *flower_args],
        tmp_path / "rogue-home",
        deployment.work_dir / "logs" / "supernode-rogue.log",
    )
    deployment.wait_online(len(INSTITUTIONS) + 1)
    run_dir = tmp_path / "rogue-run"
    # Act: a ckks run (the Deployment Engine path of that mode as well).
    deployment.submit(
        run_dir, _run_config(deployment, run_dir, 1, aggregation="ckks"), timeout=RUN_TIMEOUT
    )
    # Assert: the round ran with the three real institutions only ...
    (only,) = read_rounds(run_dir)
    assert only["accepted"] is True
    assert only["cohort"] == sorted(INSTITUTIONS)
    # ... in ckks mode: the server holds no model, each institution its own copy ...
    assert not (run_dir / "model.npz").exists()
    for name in INSTITUTIONS:
        state = deployment.layout.institution(name).root / "state"
        assert list(state.glob("ckks-model-*.npz")), f"{name} holds no decrypted model"
    assert any(r["kind"] == "ciphertexts" for r in records_of(run_dir))
    # ... the audit log names the rogue node in every secure round it answered ...
    records = [json.loads(line)["record"] for line in (run_dir / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    rounds = [r["body"] for r in records if r["kind"] == "participants"]
    assert rounds, "no participants record"
    for body in rounds:
        verified = sorted(n["institution"] for n in body["nodes"] if n["verified"])
        unproven = [n for n in body["nodes"] if not n["verified"]]
        assert verified == sorted(INSTITUTIONS)
        assert [n["institution"] for n in unproven] == ["bank-a"]
    # ... and the compliance officer's verifier flags the run.
    verdict = _verify_with_cli(deployment, run_dir, "rogue-run")
    assert verdict.returncode == 12, verdict.stdout + verdict.stderr
    assert "POLICY_VIOLATED" in verdict.stdout
    assert "without proving an identity on the roster" in verdict.stdout


def _wait_exit(process: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while process.alive():
        if time.monotonic() > deadline:
            pytest.fail(f"{process.name} still running after {timeout:g}s")
        time.sleep(0.2)


class _KillAtStage:
    """``on_poll`` hook: SIGKILL a SuperNode once it has received a given SecAgg+ message.

    It reads the SuperNode's own log, where Flower 1.42 writes
    ``[RUN <id>, ROUND <n>]`` followed by ``Receiving: train message`` for each
    message it pulls. The SuperNode's poll is every 3 s and the ClientApp that
    handles the message needs seconds to train, so the kill (within one
    0.2 s poll) lands while the institution holds the round's work and has
    not answered: a dropout in the middle of SecAgg+, after key sharing.
    """

    def __init__(self, deployment: Deployment, institution: str, round_: int, stage: int) -> None:
        self.deployment = deployment
        self.institution = institution
        self.round = round_
        self.stage = stage
        self.done = False
        #: When the machine died (UTC).
        self.at = datetime.min.replace(tzinfo=UTC)

    def __call__(self) -> None:
        if self.done:
            return
        node = self.deployment.supernodes[self.institution]
        if self._received(node.log_path) >= self.stage:
            # The whole machine goes: the SuperNode's process group and every
            # ClientApp process it started, without a chance to say goodbye.
            self.at = datetime.now(UTC)
            node.kill()
            self.done = True

    def _received(self, log_path: Path) -> int:
        header = f", ROUND {self.round}]"
        current = False
        count = 0
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if "[RUN " in line and ", ROUND " in line:
                current = header in line
            elif current and "Receiving: train message" in line:
                count += 1
        return count


def _witness_records(deployment: Deployment, institution: str, run_name: str) -> int:
    """How many checkpoints an institution countersigned in its own log of a run."""
    path = deployment.layout.institution(institution).audit_dir / f"{run_name}.jsonl"
    records = [json.loads(line)["record"] for line in path.read_text(encoding="utf-8").splitlines()]
    return sum(1 for r in records if r["kind"] == "witness")


def _verify_with_cli(
    deployment: Deployment, run_dir: Path, run_name: str
) -> subprocess.CompletedProcess[str]:
    """The ``fedfraud audit verify`` command a local federation prints, run as printed.

    Each institution's own policy and own local log, from its site folder
    (docs/production.md 3).
    """
    printed = verify_command(deployment.layout, INSTITUTIONS, run_dir, run_name)
    program, *args = shlex.split(printed)
    assert program == "fedfraud"
    command = [sys.executable, "-m", "fedfraud", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


# -- institution-held keys ----------------------------------------------------


def test_operator_folder_holds_no_institution_private_key(tmp_path: Path) -> None:
    # Before, `provision init` generated every institution's private keys in
    # the operator's folder. Now each institution makes its own elsewhere and
    # the operator imports registration files with public keys only.
    federation = load_federation(_federation_file(tmp_path))
    registrations = tmp_path / "registrations"
    registrations.mkdir()
    for name in federation.names:
        site = tmp_path / "sites" / name
        provision_institution(federation, name, site)
        (registrations / f"{name}.json").write_bytes((site / "registration.json").read_bytes())
    operator = tmp_path / "operator"
    provision(federation, operator, registrations=registrations)
    layout = Layout(operator.resolve())
    private = sorted(
        str(p.relative_to(operator))
        for p in operator.rglob("*")
        if p.is_file() and b"PRIVATE KEY" in p.read_bytes()
    )
    # Only the operator's own: the CA, the SuperLink's TLS key, the server's audit key.
    assert private == ["ca/ca.key", "server/audit.key", "superlink/server.key"]
    for name in federation.names:
        files = layout.institution(name)
        assert files.auth_pub.read_bytes() == (tmp_path / "sites" / name / "supernode-auth.pub").read_bytes()
        assert not files.auth_key.exists() and not files.audit_key.exists()


def test_receipt_signed_with_a_key_the_operator_could_make_is_rejected(tmp_path: Path) -> None:
    # Whatever Ed25519 key the operator makes, it is not the one bank-a
    # registered, so a receipt or countersignature it forges does not verify.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit.errors import AuditError
    from audit.keys import public_key_from_b64
    from audit.receipt import make_receipt, verify_receipt
    from audit.record import LogId

    federation = load_federation(_federation_file(tmp_path))
    site = tmp_path / "sites" / "bank-a"
    provision_institution(federation, "bank-a", site)
    registered = json.loads((site / "registration.json").read_text())["signing_public_key"]
    log_id = LogId("fedfraud-test", "run-1", "ed25519:" + "0" * 64)
    forged = make_receipt(Ed25519PrivateKey.generate(), "bank-a", log_id, 1, "a" * 64, "b" * 64)
    with pytest.raises(AuditError):
        verify_receipt(forged, public_key_from_b64(registered), log_id=log_id, server_round=1,
                       institution_id="bank-a")


def test_registration_with_anything_private_is_refused(tmp_path: Path) -> None:
    from core.errors import InputError

    federation = load_federation(_federation_file(tmp_path))
    site = tmp_path / "sites" / "bank-a"
    provision_institution(federation, "bank-a", site)
    registration = json.loads((site / "registration.json").read_text())
    registration["supernode_auth_public_key"] = (site / "supernode-auth.key").read_text()
    bad = tmp_path / "registrations" / "bank-a.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps(registration))
    from fedfraud.provisioning import load_registration

    with pytest.raises(InputError, match="public keys only"):
        load_registration(bad, federation, "bank-a")
