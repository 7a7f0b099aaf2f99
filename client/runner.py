"""The institution's ClientApp process: Flower's, behind an approved-code check.

Flower 1.42 starts every ClientApp task of a SuperNode as a separate process,
``flwr-clientapp``, looked up on the ``PATH`` of the SuperNode's SuperExec.
That process pulls the message, the run and the app bundle from the
SuperNode, installs the bundle under ``$FLWR_HOME/apps`` and runs its
ClientApp. Flower's own ``--trusted-entities`` check covers only bundles that
carry publisher verification records (apps delivered by the Flower hub), and a
bundle sent with ``flwr run .`` to an open-source SuperLink carries none.

So an institution starts its SuperNode with ``fedfraud supernode``, which puts
a ``flwr-clientapp`` of ours first on the ``PATH``: this module. It runs
Flower's own process code, but the bundle goes through
:func:`client.approval.check_approved` (the institution's site folder, named
by its own node config) *before* Flower unpacks it. A refused bundle is never
installed or imported; the task fails with the refusal as its reason, and the
refusal is written to the institution's own log.

With :mod:`client.supernode_process` (the SuperNode's idle poll), this is
one of the two client-side modules that reach into Flower's internals
(``flwr.supernode.runtime.run_clientapp``): the two names it wraps are
looked up there at call time.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from client.approval import CodeNotApproved, check_approved, record_code_refusal
from core.errors import ConfigError
from core.layout import SiteLayout

_SHIM_NAME = "flwr-clientapp"


class _Pulled:
    """What the last ``pull_task_input`` returned (one task per process)."""

    context: Any = None
    run: Any = None
    fab: Any = None


def _install_guard() -> None:
    """Wrap Flower's task-input pull and bundle install with the approval check."""
    from flwr.supernode.runtime import run_clientapp as flower_runner

    pulled = _Pulled()
    original_pull = flower_runner.pull_task_input
    original_install = flower_runner.install_from_fab

    def pull_task_input(client: Any) -> Any:
        message, context, run, fab = original_pull(client)
        pulled.context, pulled.run, pulled.fab = context, run, fab
        return message, context, run, fab

    def install_from_fab(content: Any, *args: Any, **kwargs: Any) -> Any:
        # Runs before anything of the bundle is unpacked or imported.
        if pulled.context is None or pulled.fab is None or not isinstance(content, bytes):
            raise ConfigError("no task input to check the app bundle against")
        site_dir, institution = _site_of(pulled.context.node_config)
        try:
            check_approved(site_dir, institution, content, pulled.fab.hash_str)
        except CodeNotApproved as refused:
            record_code_refusal(site_dir, institution, refused.digest, getattr(pulled.run, "run_id", None))
            raise
        _forget_bundled_packages(content)
        return original_install(content, *args, **kwargs)

    flower_runner.pull_task_input = pull_task_input  # type: ignore[assignment]
    flower_runner.install_from_fab = install_from_fab  # type: ignore[assignment]


def _forget_bundled_packages(content: bytes) -> None:
    """Unload this process's own copies of the packages the bundle brings.

    The check above ran with the institution's installed ``client`` and
    ``fedfraud`` packages; Flower then imports the ClientApp by name. Without
    this, ``client.app`` would resolve to the already imported installed
    package instead of the approved bundle's code.
    """
    with zipfile.ZipFile(io.BytesIO(content)) as bundle:
        tops = {name.split("/", 1)[0] for name in bundle.namelist() if "/" in name}
    for name in list(sys.modules):
        if name.split(".", 1)[0] in tops:
            del sys.modules[name]


def _site_of(node_config: Mapping[str, Any]) -> tuple[Path, str]:
    """The site folder and institution named by the SuperNode's own node config."""
    site = node_config.get("site-dir")
    institution = node_config.get("institution-id")
    if not isinstance(site, str) or not site or not isinstance(institution, str) or not institution:
        raise ConfigError("the SuperNode's node config names no site-dir or institution-id")
    return Path(site), institution


def main(argv: list[str] | None = None, warm: bool = False) -> None:
    """Entry point of the shim: Flower's ``flwr-clientapp``, guarded.

    ``warm``: this process is a fork of the SuperNode's warm server
    (:mod:`client.warm_start`), which says so in the log.

    It takes the arguments Flower's SuperExec gives ``flwr-clientapp``
    (Flower's own argument set) and calls Flower's ClientApp process code.
    It does not import Flower's ``flwr.supernode.cli`` package, whose
    ``__init__`` loads the whole SuperNode (SQL object store, migrations,
    web server): every message starts this process, and that import was
    about half of its start-up (0.65 s of 1.3 s of CPU on this machine).
    """
    _install_guard()
    import argparse
    from logging import INFO

    from flwr.common.args import add_args_flwr_app_common, try_obtain_flwr_app_token
    from flwr.supercore import log
    from flwr.supercore.constant import SUPERNODE_DEFAULT_CLIENT_ADDRESS
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    parser = argparse.ArgumentParser(
        prog=_SHIM_NAME,
        description="Flower's ClientApp process, behind this institution's approved-code check (fedfraud).",
    )
    parser.add_argument("--runtime-api-address", default=SUPERNODE_DEFAULT_CLIENT_ADDRESS,
                        help="Address of the SuperNode's Runtime API.")
    add_args_flwr_app_common(parser=parser)
    args = parser.parse_args(argv)
    log(INFO, "Start `flwr-clientapp` process (fedfraud's approved-code check%s)", ", forked warm" if warm else "")
    run_clientapp(
        runtime_api_address=args.runtime_api_address,
        token=try_obtain_flwr_app_token(args),
        insecure=args.insecure,
        certificates=validate_and_resolve_root_certificates(args.root_certificates, args.insecure),
        parent_pid=args.parent_pid,
        runtime_dependency_install=args.runtime_dependency_install,
    )


def write_shim(site_dir: Path, python: str | None = None) -> Path:
    """Write ``<site>/bin/flwr-clientapp`` (this module, under ``python``); return the folder."""
    interpreter = python or sys.executable
    folder = SiteLayout(site_dir).shim_dir
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    shim = folder / _SHIM_NAME
    text = (
        f"#!{interpreter}\n"
        "# fedfraud: Flower's ClientApp process behind this institution's approved-code check.\n"
        "# A fork of the SuperNode's warm server if it runs (client/warm_start.py), else cold.\n"
        "import sys\n"
        "from client.warm_start import forward\n"
        "code = forward(sys.argv[1:])\n"
        "if code is not None:\n"
        "    sys.exit(code)\n"
        "from client.runner import main\n"
        "main()\n"
    )
    tmp = shim.with_name(shim.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(stat.S_IRWXU)
    os.replace(tmp, shim)
    return folder


def supernode_env(site_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of an institution's ``flower-supernode``: shim first, Flower home in the site.

    The folder of the running interpreter comes right after the shim, so
    ``flower-superexec`` is the one of the institution's own installation.
    """
    env = dict(os.environ if base is None else base)
    shim_dir = write_shim(site_dir)
    tools = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(shim_dir), tools, env.get("PATH", "")])
    # Nothing is written under ``~/.flwr``: Flower's home is inside the site folder.
    home = SiteLayout(site_dir).flower_home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env["FLWR_HOME"] = str(home)
    return env


def flower_clientapp_on_path(env: Mapping[str, str]) -> str | None:
    """Which ``flwr-clientapp`` a process with ``env`` would start (for checks and tests)."""
    return shutil.which(_SHIM_NAME, path=env.get("PATH"))
