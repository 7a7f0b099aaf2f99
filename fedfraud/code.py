"""``fedfraud code``: hash and approve app bundles; ``fedfraud supernode``: run one safely.

An institution reviews the code (a release, a commit), rebuilds the bundle
Flower would send (``fedfraud code hash PROJECT``: Flower builds it
deterministically, so the same files give the same SHA-256 as the operator's
``flwr run``), and approves that hash in its site folder (``fedfraud code
approve --site SITE PROJECT``, or ``--sha256`` with a published hash it
checked). Its SuperNode, started with ``fedfraud supernode SITE ...``, then
runs only approved bundles: see :mod:`client.runner`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from client.approval import approve, fab_digest, load_approvals
from client.runner import flower_clientapp_on_path, supernode_env
import client.supernode_process as supernode_module
from core.errors import ConfigError, InputError
from fedfraud.release import release_folder, tracked_files

app = typer.Typer(
    help="Hash and approve the app bundles an institution's SuperNode may run.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True, emoji=False, markup=False, highlight=False)


def bundle_bytes(project: Path) -> bytes:
    """The bundle fedfraud sends for PROJECT (Flower's own deterministic build of its tracked files).

    Raises
    ------
    InputError
        If ``project`` has no ``pyproject.toml`` or Flower cannot build it.
    """
    from flwr.cli.build import build_fab_from_disk

    if not (project / "pyproject.toml").is_file():
        raise InputError(f"{project}: no pyproject.toml (not a Flower app folder)")
    with tempfile.TemporaryDirectory(prefix="fedfraud-bundle-") as scratch:
        folder = release_folder(project, Path(scratch) / "app")
        try:
            return build_fab_from_disk(folder)
        except Exception as exc:  # Flower raises click/typer errors and ValueErrors
            raise InputError(f"{project}: Flower could not build the app bundle ({exc})") from exc


@app.command("hash")
def hash_command(
    project: Annotated[Path, typer.Argument(help="App folder (with pyproject.toml).")] = Path("."),
) -> None:
    """Print the SHA-256 of the bundle fedfraud sends for PROJECT (its tracked files)."""
    content = bundle_bytes(project.resolve())
    console.print(f"sha256:{fab_digest(content)}  ({len(content)} bytes, {project.resolve()})")


@app.command("export")
def export_command(
    dest: Annotated[Path, typer.Argument(help="New folder to write (replaced if it exists).")],
    project: Annotated[Path, typer.Option(help="App folder (a git checkout).")] = Path("."),
) -> None:
    """Copy the project's tracked files into DEST, for `flwr run DEST` (no stray files)."""
    project = project.resolve()
    dest = dest.resolve()
    if tracked_files(project) is None:
        raise InputError(f"{project}: not the top of a git checkout; send an unpacked release folder as it is")
    if dest == project or dest in project.parents:
        raise ConfigError(f"{dest}: the export would replace the project itself")
    if dest.exists() and any(dest.iterdir()) and not (dest / "pyproject.toml").is_file():
        raise ConfigError(f"{dest}: exists and is not an earlier export; choose a new folder")
    folder = release_folder(project, dest)
    console.print(f"{folder}: sha256:{fab_digest(bundle_bytes(folder))} (flwr run {folder} ...)")


@app.command("approve")
def approve_command(
    site: Annotated[Path, typer.Option("--site", help="The institution's site folder.")],
    project: Annotated[
        Path | None, typer.Argument(help="App folder to build and approve (after review).")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Approve a published hash instead of a folder.")
    ] = None,
    label: Annotated[str, typer.Option(help="What was reviewed (release, commit).")] = "",
) -> None:
    """Approve one app bundle for this institution's SuperNode."""
    if (project is None) == (sha256 is None):
        raise ConfigError("give either an app folder or --sha256, not both or neither")
    if not site.is_dir():
        raise InputError(f"{site}: no such site folder")
    if project is not None:
        digest = fab_digest(bundle_bytes(project.resolve()))
        label = label or str(project.resolve())
    else:
        digest = str(sha256)
    approval = approve(site, digest, label)
    console.print(f"approved sha256:{approval.sha256} for {site} ({approval.label})")


@app.command("list")
def list_command(
    site: Annotated[Path, typer.Option("--site", help="The institution's site folder.")],
) -> None:
    """List the bundles this institution approved."""
    approvals = load_approvals(site)
    if not approvals:
        console.print(f"{site}: no approved bundles (its SuperNode runs none)")
    for approval in approvals:
        console.print(f"sha256:{approval.sha256}  {approval.approved_at}  {approval.label}")


def supernode_command(
    site: Annotated[Path, typer.Argument(help="The institution's site folder.")],
    flower_args: Annotated[
        list[str] | None,
        typer.Argument(help="Arguments for flower-supernode (after --), instead of --superlink."),
    ] = None,
    superlink: Annotated[
        str,
        typer.Option(
            "--superlink",
            help="host:port the operator gave (its fleet gateway). The TLS CA, the SuperNode's auth key "
            "and its node config (data folder, policy, schema) are then taken from SITE, and Flower's "
            "log goes to SITE/logs/supernode.log as well as here.",
        ),
    ] = "",
    runtime_port: Annotated[
        int,
        typer.Option(help="Port of the SuperNode's local Runtime API on 127.0.0.1 (0: a free one).", min=0),
    ] = 0,
    idle_poll: Annotated[
        float | None,
        typer.Option(
            "--idle-poll",
            help="Seconds between asks for work while the SuperNode is idle (0.05-3; default 0.5, or "
            "FEDFRAUD_SUPERNODE_IDLE_POLL). Flower's own SuperNode waits 3 s, and every stage of a "
            "secure round waited for it. After a minute without any message the asks slow down to "
            "Flower's 3 s within half a minute, until the next message.",
        ),
    ] = None,
    heartbeat: Annotated[
        float | None,
        typer.Option(
            "--heartbeat",
            help="Seconds between the SuperNode's heartbeats (10-1800; default Flower's 30, or "
            "FEDFRAUD_SUPERNODE_HEARTBEAT). The SuperLink stops waiting for a SuperNode after two "
            "missed intervals: with 10, a stage held up by a dead machine goes on after about 20 s "
            "instead of 60 s, for one small request every ~4 s.",
        ),
    ] = None,
) -> None:
    """Run flower-supernode so that it runs only the app bundles this site approved.

    Puts fedfraud's checking ``flwr-clientapp`` first on the SuperNode's PATH
    and keeps Flower's files (installed bundles, state) in SITE/flower-home.
    Each ClientApp task is a fork of a warm server that loaded Flower, the
    ClientApp and PyTorch once (FEDFRAUD_WARM_CLIENTAPP=0: a new process each).
    Usual form: fedfraud supernode /srv/fedfraud/site --superlink host:9443.
    Or with Flower's own arguments: fedfraud supernode SITE -- --superlink
    host:9443 --root-certificates ca.pem --auth-supernode-private-key
    supernode-auth.key --node-config node-config.toml. Stop it with Ctrl-C or
    SIGTERM; its ClientApp processes stop with it.
    """
    args = list(flower_args or [])
    if "--isolation" in args and "process" in args:
        raise ConfigError(
            "--isolation process starts ClientApps outside this command's control; "
            "use the default (subprocess) isolation"
        )
    if bool(args) == bool(superlink):
        raise ConfigError("give either --superlink HOST:PORT or flower-supernode's own arguments after --")
    site = site.resolve()
    if not site.is_dir():
        raise InputError(f"{site}: no such site folder")
    env = supernode_env(site)
    if idle_poll is not None:
        env[supernode_module.IDLE_POLL_ENV] = repr(idle_poll)
    if heartbeat is not None:
        env[supernode_module.HEARTBEAT_ENV] = repr(heartbeat)
    # A bad value stops here, before any Flower process starts.
    supernode_module.idle_poll(env)
    supernode_module.heartbeat_interval(env)
    if flower_clientapp_on_path(env) != str(site / "bin" / "flwr-clientapp"):
        raise ConfigError("could not put the checking flwr-clientapp first on the PATH")
    if not load_approvals(site):
        console.print(f"warning: {site} approves no bundle yet; every run will be refused")
    if superlink:
        _run_from_site(site, superlink, runtime_port, env)
        return
    command = supernode_process(args)
    os.execve(command[0], command, env)  # noqa: S606 - the institution's own Flower
    raise subprocess.SubprocessError("unreachable")  # pragma: no cover


def supernode_process(flower_args: list[str]) -> list[str]:
    """The argv of the institution's SuperNode: Flower's, asking for work sooner while idle.

    See :mod:`client.supernode_process` (``FEDFRAUD_SUPERNODE_IDLE_POLL``,
    ``FEDFRAUD_SUPERNODE_HEARTBEAT``).
    ``-P``: the working folder is not put on the module path, so a ``client``
    folder where the SuperNode is started cannot stand in for the installed one.
    """
    return [sys.executable, "-P", "-m", supernode_module.__name__, *flower_args]


def _run_from_site(site: Path, superlink: str, runtime_port: int, env: dict[str, str]) -> None:
    """flower-supernode with the site's own files; its output to the terminal and SITE/logs/supernode.log."""
    from fedfraud.deployment import supernode_args
    from fedfraud.simulation import ManagedProcess
    from core.layout import SiteLayout
    from fedfraud.federation_file import split_address
    from fedfraud.simulation import free_port, terminate_raises

    try:
        split_address(superlink)
    except ValueError as exc:
        raise ConfigError(f"--superlink {superlink!r}: {exc}") from None
    files = SiteLayout(site)
    missing = [p for p in (files.ca_cert, files.auth_key, files.node_config) if not p.is_file()]
    if missing:
        raise InputError(f"{site}: not a provisioned site folder (missing {', '.join(p.name for p in missing)})")
    command = supernode_process(supernode_args(files, superlink, runtime_port or free_port()))
    log_path = files.logs_dir / "supernode.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"SuperNode of {site.name} dialing {superlink}; log: {log_path}")
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    managed = ManagedProcess("supernode", process, log_path)
    try:
        with terminate_raises(), log_path.open("ab") as log:
            for line in process.stdout or ():
                log.write(line)
                log.flush()
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
    finally:
        managed.stop()
    if process.returncode:
        raise typer.Exit(process.returncode)
