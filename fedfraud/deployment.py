"""Run a federation on Flower's Deployment Engine: SuperLink, SuperNodes, ``flwr run``.

This is the production path, runnable on one machine over loopback for tests
and rehearsals. It uses only the files written by ``fedfraud provision``
(:mod:`fedfraud.provisioning`, placed as :class:`core.layout.Layout` says)
and Flower's own commands:

1. the SuperLink starts with TLS (``--ssl-ca-certfile/--ssl-certfile/
   --ssl-keyfile``), SuperNode authentication (``--enable-supernode-auth``)
   and runtime dependency installation disabled. In Flower 1.42 one HTTPS
   port serves the Fleet API (SuperNodes), the Control API (``flwr``) and the
   Runtime API (the ServerApp);
2. each institution's SuperNode public key is registered with
   ``flwr supernode register`` (with authentication on, a SuperNode can no
   longer register itself; an unknown key is refused);
3. each SuperNode starts with its private auth key, the CA certificate and
   its own node config file (``institution-id``, ``site-dir``, ``data-dir``;
   the ClientApp finds the policy and keys in the site folder);
4. ``flwr run`` submits the project's app with the run config, through a
   connection file in a ``FLWR_HOME`` of its own that names the CA
   certificate as ``root-certificates``.

Every process starts in a session of its own; :class:`Deployment` stops each
one with its process group *and* its descendants (Flower detaches its
SuperExec into another session), also on errors and Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fedfraud.release import release_folder
from core.errors import ConfigError, InputError
from fedfraud.gateway import Endpoint, GatewayProcess, GatewaySettings
from fedfraud.exits import run_app
from core.layout import DataLayout, Layout, RunLayout, SiteLayout
from fedfraud.federation_file import Federation, load_federation
from fedfraud.simulation import (
    RunFailed,
    descendants,
    terminate_raises,
    flower_tool,
    log_tail,
    default_run_config,
    flower_env,
    free_port,
    project_dir,
    require_every_round,
    require_measurements,
    spawn_logged,
    ManagedProcess,
    write_run_config,
)

#: Name of the SuperLink connection in the ``flwr`` CLI's config.toml.
CONNECTION_NAME = "fedfraud"
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
ONLINE_TIMEOUT = 90.0
#: Flower 1.42's SuperExec (the SuperLink's, for the ServerApp, and each
#: SuperNode's, for its ClientApp processes) asks for new work this often,
#: in seconds (default 1.0), read from this environment variable.
TASK_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
#: What a SuperNode logs once the SuperLink has activated it (Flower 1.42).
ACTIVATED_MARK = "SuperNode ID: "

__all__ = [
    "CONNECTION_NAME",
    "Deployment",
    "RunFailed",
    "deployment_run_config",
    "superlink_command",
    "supernode_args",
    "write_connection",
]


# ---------------------------------------------------------------------------
# Commands (kept as plain argv builders so the runbook can show them)
# ---------------------------------------------------------------------------


def superlink_command(
    layout: Layout, host: str, port: int, database: Path | None = None
) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode auth and no runtime installs.

    ``database`` keeps the SuperLink's state (registered SuperNodes, runs) in
    an SQLite file across restarts; without it the state is in memory.
    """
    command = [
        flower_tool("flower-superlink"),
        "--ssl-ca-certfile",
        str(layout.superlink_ca),
        "--ssl-certfile",
        str(layout.server_cert),
        "--ssl-keyfile",
        str(layout.server_key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]
    if database is not None:
        command += ["--database", str(database)]
    return command


def supernode_args(
    files: SiteLayout,
    superlink: str,
    runtime_port: int,
    auth_key: Path | None = None,
) -> list[str]:
    """``flower-supernode``'s arguments for one institution (TLS, auth key, node config).

    The SuperNode's own Runtime API (for its ClientApp processes) listens on
    ``127.0.0.1:runtime_port``; it never leaves the institution's machine.
    Run them with ``fedfraud supernode SITE -- ARGS`` (or
    :func:`fedfraud.code.supernode_process`).
    """
    return [
        "--superlink",
        superlink,
        "--root-certificates",
        str(files.ca_cert),
        "--auth-supernode-private-key",
        str(auth_key or files.auth_key),
        "--node-config",
        str(files.node_config),
        "--host",
        LOOPBACK,
        "--port",
        str(runtime_port),
    ]


def write_connection(flwr_home: Path, address: str, ca_cert: Path) -> Path:
    """Write ``$FLWR_HOME/config.toml`` naming the SuperLink and the CA to trust."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    text = (
        "[superlink]\n"
        f'default = "{CONNECTION_NAME}"\n\n'
        f"[superlink.{CONNECTION_NAME}]\n"
        f'address = "{address}"\n'
        f"root-certificates = {json.dumps(str(ca_cert))}\n"
    )
    path = flwr_home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def deployment_run_config(
    layout: Layout,
    federation: Federation,
    run_dir: Path,
    run_name: str,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The app's run config for a deployment run (absolute ``run-dir``).

    ``data-dir`` and ``sites-dir`` stay empty: every SuperNode carries its own
    folders in its node config.
    """
    config = default_run_config()
    config.update(
        {
            "institutions": ",".join(federation.names),
            "run-dir": str(run_dir.resolve()),
            "run-name": run_name,
            "data-dir": "",
        }
    )
    # Keys the app may or may not define (policy and audit are being added).
    optional = {
        "federation-id": federation.id,
        "sites-dir": "",
        "server-dir": str(layout.server_dir),
    }
    config.update({key: value for key, value in optional.items() if key in config})
    config.update(overrides or {})
    return config


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


@dataclass
class Deployment:
    """A SuperLink and SuperNodes on this machine; a context manager that stops them.

    Parameters
    ----------
    layout : Layout
        The folder written by ``fedfraud provision init``.
    federation : Federation
        The federation file it was written from.
    work_dir : Path
        Where logs and each process's ``FLWR_HOME`` go.
    task_poll_interval : float, optional
        How often (seconds) every SuperExec asks for new work; ``None`` keeps
        Flower's default (1 s). Every message a SuperNode receives waits for
        one such poll before its ClientApp process starts, so a shorter one
        makes each SecAgg+ stage faster, for a little more idle CPU.
    """

    layout: Layout
    federation: Federation
    work_dir: Path
    task_poll_interval: float | None = None
    host: str = LOOPBACK
    #: Put the fleet gateway (:mod:`fedfraud.gateway`) in front of the
    #: SuperLink: SuperNodes dial the gateway, which forwards the Fleet API
    #: only, while ``flwr`` keeps using the SuperLink's loopback address.
    gateway: bool = False
    #: Where the gateway listens (``0.0.0.0`` on a real operator host).
    gateway_host: str = LOOPBACK
    #: Its port (``None``: a free one).
    gateway_port: int | None = None
    #: Seconds between each SuperNode's heartbeats (``None``: Flower's 30 s);
    #: the SuperLink stops waiting for a dead one after two intervals.
    supernode_heartbeat: float | None = None
    processes: list[ManagedProcess] = field(default_factory=list)
    supernodes: dict[str, ManagedProcess] = field(default_factory=dict)
    address: str = ""
    #: What SuperNodes dial: the gateway's address, or the SuperLink's.
    fleet_address: str = ""

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the SuperLink --------------------------------------------------------

    @property
    def cli_home(self) -> Path:
        """``FLWR_HOME`` of the ``flwr`` CLI (holds the connection file)."""
        return self.work_dir / "cli-home"

    def _env(self, home: Path) -> dict[str, str]:
        env = flower_env(home)
        if self.task_poll_interval is not None:
            env[TASK_POLL_ENV] = repr(float(self.task_poll_interval))
        return env

    def _spawn(self, name: str, command: list[str], home: Path, log_path: Path) -> ManagedProcess:
        home.mkdir(parents=True, exist_ok=True)
        process = spawn_logged(command, self._env(home), log_path, cwd=self.work_dir)
        managed = ManagedProcess(name, process, log_path)
        self.processes.append(managed)
        return managed

    def start_superlink(self, port: int | None = None, database: Path | None = None) -> str:
        """Start the SuperLink; wait until it answers over TLS; write the connection."""
        port = port or free_port()
        managed = self._spawn(
            "superlink",
            superlink_command(self.layout, self.host, port, database),
            self.work_dir / "superlink-home",
            self.work_dir / "logs" / "superlink.log",
        )
        context = ssl.create_default_context(cafile=str(self.layout.ca_cert))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _healthy_tls(self.host, port, context):
            if not managed.alive():
                raise RunFailed(
                    f"the SuperLink exited during start-up; see {managed.log_path}:\n"
                    + log_tail(managed.log_path)
                )
            if time.monotonic() > deadline:
                raise RunFailed(f"the SuperLink did not start within {STARTUP_TIMEOUT:g}s")
            time.sleep(0.2)
        self.address = f"{self.host}:{port}"
        write_connection(self.cli_home, self.address, self.layout.ca_cert)
        self.fleet_address = self.start_gateway(self.gateway_port) if self.gateway else self.address
        return self.address

    def start_gateway(self, port: int | None = None) -> str:
        """Start the fleet gateway in front of the SuperLink; return its address.

        The gateway refuses an upstream that is not a loopback address, so
        ``host`` must stay 127.0.0.1 (or ::1) when ``gateway`` is set.
        """
        settings = GatewaySettings(
            listen=Endpoint(self.gateway_host, port or free_port()),
            upstream=Endpoint.parse(self.address, "--upstream"),
            ca_cert=self.layout.ca_cert,
            ssl_certfile=self.layout.server_cert,
            ssl_keyfile=self.layout.server_key,
        )
        gateway = GatewayProcess(
            settings,
            self.work_dir / "logs" / "gateway.log",
            spawn=lambda name, argv, log: self._spawn(name, argv, self.work_dir / "gateway-home", log),
        )
        return gateway.start(timeout=STARTUP_TIMEOUT)

    def flwr(self, *args: str, timeout: float = 60.0) -> str:
        """Run a ``flwr`` CLI command against this SuperLink; return its stdout."""
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [flower_tool("flwr"), *args],
            env=self._env(self.cli_home),
            capture_output=True,
            timeout=timeout,
            cwd=self.work_dir,
        )
        if result.returncode != 0:
            raise RunFailed(
                f"`flwr {' '.join(args)}` failed ({result.returncode}):\n"
                + (result.stdout + result.stderr).decode("utf-8", "replace")[-2000:]
            )
        return result.stdout.decode("utf-8", "replace")

    def register(self, institution_id: str) -> int:
        """Register an institution's SuperNode public key; return its node id."""
        files = self.layout.institution(institution_id)
        output = self.flwr(
            "supernode", "register", str(files.auth_pub), CONNECTION_NAME,
            "--name", institution_id, "--format", "json",
        )
        answer = _json_tail(output)
        if "node-id" not in answer:
            # Flower 1.42 exits 0 with {"success": false, "error-message": ...},
            # e.g. "Public key already in use" for a key its database holds.
            raise RunFailed(
                f"registering {institution_id}'s SuperNode key failed: "
                f"{answer.get('error-message') or output.strip()[-500:]}"
            )
        return int(answer["node-id"])

    def register_all(self, institution_ids: Sequence[str]) -> dict[str, int]:
        """Register several SuperNode keys at once (one ``flwr`` process each, in parallel)."""
        with ThreadPoolExecutor(max_workers=max(len(institution_ids), 1)) as pool:
            node_ids = list(pool.map(self.register, institution_ids))
        return dict(zip(institution_ids, node_ids, strict=True))

    def nodes(self) -> list[dict[str, Any]]:
        """The SuperLink's SuperNodes as ``flwr supernode list --format json`` gives them."""
        output = self.flwr("supernode", "list", CONNECTION_NAME, "--format", "json")
        nodes = _json_tail(output).get("nodes", [])
        return list(nodes) if isinstance(nodes, list) else []

    # -- SuperNodes -----------------------------------------------------------

    def start_supernode(self, institution_id: str, auth_key: Path | None = None) -> ManagedProcess:
        """Start one institution's SuperNode (its key must be registered first)."""
        if not self.address:
            raise ConfigError("start the SuperLink before any SuperNode")
        files = self.layout.institution(institution_id)
        # Started the way an institution starts it: `fedfraud supernode SITE`,
        # which runs only the app bundles its site folder approved.
        flower_args = supernode_args(files, self.fleet_address or self.address, free_port(), auth_key)
        heartbeat = [] if self.supernode_heartbeat is None else ["--heartbeat", repr(float(self.supernode_heartbeat))]
        managed = self._spawn(
            f"supernode-{institution_id}",
            [sys.executable, "-m", "fedfraud", "supernode", str(files.root), *heartbeat, "--", *flower_args],
            self.work_dir / f"supernode-home-{institution_id}",
            self.work_dir / "logs" / f"supernode-{institution_id}.log",
        )
        self.supernodes[institution_id] = managed
        return managed

    def wait_online(self, count: int, timeout: float = ONLINE_TIMEOUT) -> None:
        """Wait until ``count`` SuperNodes are online (or a SuperNode has died).

        Each ``flwr supernode list`` is a process of its own (about 2 s on a
        small machine), so the SuperNodes' logs are watched first: a SuperNode
        logs its node id once the SuperLink has activated it. The SuperLink's
        list then has the last word.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._check_supernodes_alive()
            activated = [m for m in self.supernodes.values() if _activated(m.log_path)]
            if len(activated) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        while True:
            online = [n for n in self.nodes() if n.get("status") == "online"]
            if len(online) >= count:
                return
            self._check_supernodes_alive()
            if time.monotonic() > deadline:
                raise RunFailed(f"only {len(online)} of {count} SuperNodes online after {timeout:g}s")
            time.sleep(1.0)

    def _check_supernodes_alive(self) -> None:
        for name, managed in self.supernodes.items():
            if not managed.alive():
                raise RunFailed(
                    f"SuperNode {name} exited ({managed.process.returncode}); "
                    f"see {managed.log_path}:\n{log_tail(managed.log_path)}"
                )

    def start_all(self, port: int | None = None, database: Path | None = None) -> None:
        """SuperLink, registration of every institution, every SuperNode, all online."""
        self.start_superlink(port, database)
        self.register_all(self.federation.names)
        for name in self.federation.names:
            self.start_supernode(name)
        self.wait_online(len(self.federation.names))

    # -- runs -----------------------------------------------------------------

    def submit(
        self,
        run_dir: Path,
        run_config: Mapping[str, Any],
        on_poll: Callable[[], None] | None = None,
        poll_seconds: float = 0.5,
        timeout: float | None = None,
        project: Path | None = None,
    ) -> None:
        """Submit the project's app with ``flwr run --stream``; wait for the run to end.

        ``project`` is the app folder to send (default: this project).

        Raises
        ------
        RunFailed
            If the run did not write ``summary.json``.
        """
        run_dir.mkdir(parents=True, exist_ok=True)
        overrides = write_run_config(run_dir / "run-config.toml", run_config)
        # Only the project's tracked files go to the SuperNodes (and the
        # institutions approved the hash of exactly that bundle).
        app = release_folder(project or project_dir(), self.work_dir / f"app-{run_dir.name}")
        flower_log = RunLayout(run_dir).flower_log
        managed = self._spawn(
            "flwr-run",
            [
                flower_tool("flwr"), "run", str(app), CONNECTION_NAME,
                "--stream", "--run-config", str(overrides),
            ],
            self.cli_home,
            flower_log,
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while managed.alive():
                if on_poll is not None:
                    on_poll()
                if deadline is not None and time.monotonic() > deadline:
                    raise RunFailed(f"the run did not end within {timeout:g}s; see {flower_log}")
                time.sleep(poll_seconds)
        finally:
            managed.stop()
            shutil.rmtree(app, ignore_errors=True)
        if on_poll is not None:
            on_poll()
        if not RunLayout(run_dir).summary.exists():
            raise RunFailed(
                f"the run did not finish (no summary.json in {run_dir}); "
                f"last lines of {flower_log}:\n{log_tail(flower_log)}"
            )

    def close(self) -> None:
        """Stop every process we started, newest first."""
        errors: list[BaseException] = []
        for managed in reversed(self.processes):
            try:
                managed.stop()
            except (OSError, subprocess.SubprocessError) as exc:  # keep stopping the rest
                errors.append(exc)
        self.processes.clear()
        self.supernodes.clear()
        if errors:
            raise RunFailed(f"could not stop every Flower process: {errors[0]}") from errors[0]


def _healthy_tls(host: str, port: int, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(  # noqa: S310 - fixed https URL on loopback
            f"https://{host}:{port}/health", timeout=1.0, context=context
        ) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def _activated(log_path: Path) -> bool:
    try:
        return ACTIVATED_MARK in log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _json_tail(output: str) -> dict[str, Any]:
    """The JSON object ``flwr ... --format json`` prints (after any banner lines)."""
    start = output.find("{")
    if start < 0:
        raise RunFailed(f"expected JSON from flwr, found: {output[-500:]!r}")
    value = json.loads(output[start:])
    if not isinstance(value, dict):
        raise RunFailed("expected a JSON object from flwr")
    return value


# ---------------------------------------------------------------------------
# Command line (``python -m fedfraud.deployment local ...``)
# ---------------------------------------------------------------------------

app = typer.Typer(
    help="Run a federation on Flower's Deployment Engine (SuperLink + SuperNodes).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True, emoji=False, markup=False)


@app.callback()
def _group() -> None:
    """Run a federation on Flower's Deployment Engine (SuperLink + SuperNodes)."""


def _data_root(federation: Federation) -> Path:
    """The common parent of the institutions' data folders, named by institution id."""
    parents = {inst.data_dir.parent for inst in federation.institutions}
    if len(parents) != 1 or any(i.data_dir.name != i.id for i in federation.institutions):
        raise ConfigError(
            f"{federation.source}: to generate demo data, every data_dir must be "
            "<one folder>/<institution id>; bring your own data otherwise (--no-generate)"
        )
    return parents.pop()


@app.command("local")
def local_command(
    federation_file: Annotated[Path, typer.Argument(help="The federation TOML file.")],
    keys: Annotated[Path, typer.Option("--keys", help="Folder written by 'provision init'.")] = Path("keys"),
    rounds: Annotated[int, typer.Option(help="Federated rounds.", min=1)] = 3,
    rows: Annotated[int, typer.Option(help="Demo transactions per institution.", min=500)] = 20000,
    seed: Annotated[int, typer.Option(help="Seed for data generation and training.")] = 42,
    generate: Annotated[
        bool | None,
        typer.Option(help="Generate demo data into the data_dirs (default: yes, unless the federation "
                     "file names a schema: then each data_dir holds the institution's own train.csv "
                     "and test.csv, checked against the schema before Flower starts)."),
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Parent folder of run directories.")] = Path("runs"),
    port: Annotated[int, typer.Option(help="SuperLink port; 0 picks a free one.", min=0)] = 0,
    gateway: Annotated[
        bool,
        typer.Option(help="SuperNodes reach the SuperLink only through the fleet gateway (Control API unreachable)."),
    ] = True,
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a run-config key, e.g. --set timeout=60.0")
    ] = [],  # noqa: B006 - typer needs a literal default
) -> None:
    """Run a whole production federation on this machine over 127.0.0.1, then stop it."""
    from fedfraud.progress import RoundProgress, parse_overrides
    from fraud.generator_files import ensure_federation_data

    federation, layout = load_provisioned(federation_file, keys)
    run_dir, run_name, config, settings = plan_run(
        federation, layout, runs_dir, {"num-server-rounds": rounds, "seed": seed, **parse_overrides(set_)}
    )
    if federation.schema is not None:
        if generate:
            raise ConfigError(f"{federation.source}: names a schema (own data); --generate makes demo data only")
        check_own_data(federation, layout)
    elif generate is not False:
        ensure_federation_data(_data_root(federation), federation.names, rows, seed)
    work = Path(tempfile.mkdtemp(prefix="deploy-", dir=_ensure(project_dir() / ".flwr")))
    console.print(
        f"fedfraud production federation {federation.id!r}: "
        f"{len(federation.names)} SuperNodes, {rounds} rounds, TLS + SuperNode auth, SecAgg+, "
        + (f"own data read with {federation.schema}" if federation.schema else "built-in demo data")
    )
    try:
        with terminate_raises(), Deployment(layout, federation, work, gateway=gateway) as deployment:
            deployment.start_all(port=port or None)
            console.print(f"SuperLink https://{deployment.address}; SuperNodes online "
                          f"via https://{deployment.fleet_address}: " + ", ".join(federation.names))
            console.print(f"run directory: {run_dir}")
            deployment.submit(run_dir, config, on_poll=RoundProgress(run_dir, settings.num_rounds))
        report_run(layout, federation, run_dir, run_name)
    finally:
        logs = run_dir / "logs"
        if (work / "logs").is_dir():
            shutil.copytree(work / "logs", logs, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


def load_provisioned(federation_file: Path, keys: Path) -> tuple[Federation, Layout]:
    """The federation file and the folder ``provision init`` wrote from it.

    Raises
    ------
    ConfigError
        If the folder holds no provisioning manifest.
    """
    federation = load_federation(federation_file)
    layout = Layout(keys.resolve())
    if not layout.manifest.is_file():
        raise ConfigError(f"{layout.manifest} not found; run `fedfraud provision init` first")
    return federation, layout


def plan_run(
    federation: Federation, layout: Layout, runs_dir: Path, overrides: Mapping[str, Any]
) -> tuple[Path, str, dict[str, Any], Any]:
    """A new run's directory, name, run config and settings, checked before anything starts.

    Own data (the federation file names a schema) sets ``data-format = "byo"``.
    """
    import datetime as dt
    import secrets

    from federation.settings import RunSettings

    run_name = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    run_dir = (runs_dir / run_name).resolve()
    base = {"data-format": "byo"} if federation.schema is not None else {}
    config = deployment_run_config(layout, federation, run_dir, run_name, {**base, **overrides})
    return run_dir, run_name, config, RunSettings.from_run_config(config)


def report_run(layout: Layout, federation: Federation, run_dir: Path, run_name: str) -> None:
    """After a run: the metrics table, the Flower log and the verify command; raise unless every round finished.

    Raises
    ------
    RunFailed
        If a round released no metrics or was not aggregated (exit 8).
    """
    from fedfraud.progress import final_table

    console.print(final_table(run_dir))
    require_measurements(run_dir)
    console.print(f"Flower log: {run_dir / 'flower.log'}")
    console.print("verify it: " + verify_command(layout, federation.names, run_dir, run_name))
    require_every_round(run_dir)


def check_own_data(federation: Federation, layout: Layout) -> None:
    """Every institution's own files against the schema it was provisioned with, before Flower starts.

    Each SuperNode reads ``<data_dir>/train.csv`` and ``test.csv`` with the
    ``schema.toml`` of its site folder; every problem (file, line, column) is
    listed at once. In production each institution runs the same check at its
    own site with ``fedfraud data check``.

    Raises
    ------
    InputError
        Listing every problem, or naming a site whose schema differs from the federation's.
    """
    from fraud.byo_read import check_institution_data
    from fraud.byo_schema import load_schema

    if federation.schema is None:
        raise ConfigError(f"{federation.source}: names no schema; there is no own data to check")
    schema = load_schema(federation.schema)
    for name in federation.names:
        site_schema = layout.institution(name).schema
        if not site_schema.is_file() or site_schema.read_bytes() != federation.schema.read_bytes():
            raise InputError(f"{site_schema}: not the federation's schema {federation.schema}; provision again")
    files = {inst.id: list(DataLayout(inst.data_dir).splits) for inst in federation.institutions}
    rows = check_institution_data(schema, files)
    console.print("own data fits the schema: " + ", ".join(f"{where} {count} rows" for where, count in rows.items()))


def verify_command(layout: Layout, names: Sequence[str], run_dir: Path, run_name: str) -> str:
    """The compliance officer's ``fedfraud audit verify`` command for a run, ready to paste.

    Each institution's own policy and own log (an institution that witnessed
    no checkpoint has no log; the verifier would report it missing).
    """
    parts = ["fedfraud", "audit", "verify", str(RunLayout(run_dir).audit_log),
             "--server-key", str(layout.server_audit_pub)]
    for name in names:
        site = layout.institution(name)
        parts += ["--policy", str(site.policy)]
        own_log = site.audit_dir / f"{run_name}.jsonl"
        if own_log.exists():
            parts += ["--institution-log", str(own_log)]
    return shlex.join(parts)


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    """Entry point for ``python -m fedfraud.deployment``."""
    run_app(app, interrupted="stopped; every Flower process was shut down")


if __name__ == "__main__":
    main()
