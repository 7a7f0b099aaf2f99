"""One command per party of a production federation, on Flower's own processes.

* The operator: ``fedfraud superlink FEDERATION`` starts Flower's SuperLink
  (TLS, SuperNode authentication, state kept in an SQLite database) and the
  fleet gateway in front of it, registers every institution's SuperNode key,
  and stays in the foreground until Ctrl-C or SIGTERM; then
  ``fedfraud run FEDERATION`` submits a run to it with ``flwr run``, prints
  one line per round, and exits non-zero unless every round finished with
  its metrics.
* An institution: ``fedfraud supernode SITE --superlink HOST:PORT`` (in
  :mod:`fedfraud.code`) starts its SuperNode from its site folder.

Every process logs to a file in the operator's state folder (default
``.flwr/operator``): ``logs/superlink.log``, ``logs/gateway.log``, and each
run's ``flower.log`` in its run directory. ``operator.json`` in the state
folder tells ``fedfraud run`` where the SuperLink is.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from fedfraud.deployment import Deployment, check_own_data, load_provisioned, plan_run, report_run
from core.errors import ConfigError, InputError
from fedfraud.simulation import RunFailed, pid_alive, terminate_raises

#: The operator's state folder (relative to the working folder) by default.
DEFAULT_STATE = Path(".flwr") / "operator"
#: The file in the state folder that names the running SuperLink.
STATE_FILE = "operator.json"
#: What ``fedfraud superlink`` prints once everything is up (tests and scripts wait for it).
READY_MARK = "ready: "
#: Where the fleet gateway listens unless told otherwise (the runbook's port).
DEFAULT_FLEET_PORT = 9443

console = Console(highlight=False, soft_wrap=True, emoji=False, markup=False)


def _registered(deployment: Deployment) -> dict[str, int]:
    """Register every institution's SuperNode key; keys the SuperLink's database already holds stay."""
    node_ids: dict[str, int] = {}
    for name in deployment.federation.names:
        try:
            node_ids[name] = deployment.register(name)
        except RunFailed as exc:
            # A SuperLink restarted on its database still knows the key.
            if "already" not in str(exc).lower():
                raise
            node_ids[name] = -1
    return node_ids


def superlink_command(
    federation_file: Annotated[Path, typer.Argument(help="The federation TOML file.")],
    keys: Annotated[Path, typer.Option("--keys", help="Folder written by 'provision init'.")] = Path("keys"),
    state: Annotated[
        Path,
        typer.Option("--state", help="The operator's state folder: SuperLink database, logs, flwr connection."),
    ] = DEFAULT_STATE,
    fleet: Annotated[
        str,
        typer.Option(
            "--fleet",
            help="host:port where the fleet gateway listens for SuperNodes (default: the federation "
            f"file's SuperLink host, port {DEFAULT_FLEET_PORT}); 'none' lets SuperNodes dial the "
            "SuperLink itself.",
        ),
    ] = "",
) -> None:
    """Operator: start the SuperLink and the fleet gateway, register every SuperNode key, keep them running.

    The SuperLink listens on 127.0.0.1 at the federation file's port (TLS,
    SuperNode authentication, no runtime installs) and keeps its state in
    STATE/superlink.db, so a restart keeps registrations. SuperNodes dial the
    fleet gateway. Logs: STATE/logs/. Stop with Ctrl-C or SIGTERM: every
    Flower process stops with it. Exits non-zero if a process dies.
    """
    from fedfraud.federation_file import split_address

    federation, layout = load_provisioned(federation_file, keys)
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    gateway = fleet.strip().lower() != "none"
    fleet_host, fleet_port = federation.superlink_host, DEFAULT_FLEET_PORT
    if gateway and fleet.strip():
        try:
            fleet_host, fleet_port = split_address(fleet.strip())
        except ValueError as exc:
            raise ConfigError(f"--fleet {fleet!r}: {exc}") from None
    with terminate_raises(), Deployment(
        layout, federation, state, gateway=gateway, gateway_host=fleet_host, gateway_port=fleet_port
    ) as deployment:
        deployment.start_superlink(port=federation.superlink_port, database=state / "superlink.db")
        node_ids = _registered(deployment)
        info = {
            "federation": federation.id,
            "superlink": deployment.address,
            "fleet": deployment.fleet_address,
            "pid": os.getpid(),
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "connection": str(deployment.cli_home),
        }
        _write_state(state, info)
        console.print(f"SuperLink https://{deployment.address} (log: {state / 'logs' / 'superlink.log'})")
        if gateway:
            console.print(f"fleet gateway https://{deployment.fleet_address} (log: {state / 'logs' / 'gateway.log'})")
        for name, node_id in node_ids.items():
            known = "registered before (kept in the database)" if node_id < 0 else f"node id {node_id}"
            console.print(f"  {name}: SuperNode key {known}")
        console.print(
            "each institution starts its SuperNode with: fedfraud supernode <its site folder> "
            f"--superlink {deployment.fleet_address}"
        )
        console.print(f"submit a run with: fedfraud run {federation.source} --keys {layout.root} --state {state}")
        console.print(f"watch runs with: FLWR_HOME={deployment.cli_home} fedfraud status --superlink fedfraud")
        console.print(READY_MARK + deployment.fleet_address)
        try:
            while True:
                for managed in deployment.processes:
                    if not managed.alive():
                        raise RunFailed(
                            f"{managed.name} exited ({managed.process.returncode}); see {managed.log_path}"
                        )
                time.sleep(1.0)
        finally:
            (state / STATE_FILE).unlink(missing_ok=True)


def run_command(
    federation_file: Annotated[Path, typer.Argument(help="The federation TOML file.")],
    keys: Annotated[Path, typer.Option("--keys", help="Folder written by 'provision init'.")] = Path("keys"),
    state: Annotated[
        Path, typer.Option("--state", help="The state folder of the running `fedfraud superlink`.")
    ] = DEFAULT_STATE,
    rounds: Annotated[int, typer.Option(help="Federated rounds.", min=1)] = 3,
    runs_dir: Annotated[Path, typer.Option(help="Parent folder of run directories.")] = Path("runs"),
    wait_nodes: Annotated[
        float, typer.Option(help="Seconds to wait for every institution's SuperNode to be online.", min=0)
    ] = 120.0,
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a run-config key, e.g. --set timeout=60.0")
    ] = [],  # noqa: B006 - typer needs a literal default
) -> None:
    """Operator: submit a run to the running SuperLink and follow it round by round.

    Waits until every institution's SuperNode is online, sends only the
    project's tracked files (the bundle the institutions approved), prints
    one line per round, then the final metrics and the compliance officer's
    `fedfraud audit verify` command. Exits 0 only if every round finished
    with its metrics; otherwise non-zero, naming the cause and the log.
    """
    from fedfraud.progress import RoundProgress, parse_overrides

    federation, layout = load_provisioned(federation_file, keys)
    state = state.resolve()
    info = _read_state(state)
    run_dir, run_name, config, settings = plan_run(
        federation, layout, runs_dir, {"num-server-rounds": rounds, **parse_overrides(set_)}
    )
    if federation.schema is not None:
        check_own_data(federation, layout)
    with terminate_raises(), Deployment(layout, federation, state) as deployment:
        deployment.address = str(info["superlink"])
        deployment.fleet_address = str(info["fleet"])
        console.print(f"waiting for {len(federation.names)} SuperNodes at https://{deployment.fleet_address}")
        _wait_online(deployment, wait_nodes)
        console.print(f"run directory: {run_dir}")
        deployment.submit(run_dir, config, on_poll=RoundProgress(run_dir, settings.num_rounds))
    report_run(layout, federation, run_dir, run_name)


def _wait_online(deployment: Deployment, timeout: float) -> None:
    """Wait until the SuperLink lists as many online SuperNodes as the federation has institutions."""
    want = len(deployment.federation.names)
    deadline = time.monotonic() + timeout
    while True:
        online = sum(1 for node in deployment.nodes() if node.get("status") == "online")
        if online >= want:
            console.print(f"{online} SuperNodes online")
            return
        if time.monotonic() > deadline:
            raise RunFailed(
                f"only {online} of {want} SuperNodes online after {timeout:g}s; each institution starts "
                f"its own with: fedfraud supernode <site folder> --superlink {deployment.fleet_address}"
            )
        time.sleep(2.0)


def _write_state(state: Path, info: dict[str, Any]) -> None:
    path = state / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_state(state: Path) -> dict[str, Any]:
    """What the running ``fedfraud superlink`` wrote; refuse a stale file."""
    path = state / STATE_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path}: no running SuperLink; start one with `fedfraud superlink FEDERATION --state {state}`"
        ) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None
    if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("superlink", "fleet")):
        raise InputError(f"{path}: not written by `fedfraud superlink`")
    pid = info.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        raise InputError(f"{path}: the SuperLink it names (pid {pid}) is not running; start it again")
    return info


__all__ = ["READY_MARK", "run_command", "superlink_command"]
