"""One run at a time per federation: the server folder's run lock.

Two runs of one federation at once would interleave two audit logs signed
with one key, ask the institutions for two models at a time and double their
exposure, and nobody would have chosen it: Flower's SuperLink accepts a
second ``flwr run`` without a word. The ServerApp therefore holds an
exclusive lock on ``<server-dir>/run.lock`` for as long as it runs; a second
ServerApp on the same server folder stops before it writes anything, naming
the run in progress, unless its run config says ``concurrent-runs = true``.

The lock is an OS file lock (``flock``), not the file's existence: it goes
with the process that holds it, so a ServerApp that was killed leaves no
stale lock behind. The file itself only says who holds it.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import ConfigError
from core.layout import ServerLayout
from federation.settings import RunSettings


@contextmanager
def exclusive_run(settings: RunSettings, flower_run_id: int) -> Iterator[None]:
    """Hold the federation's run lock while the body runs.

    Raises
    ------
    ConfigError
        If another run holds it (and ``concurrent-runs`` is false), naming
        that run and what to do; or if the server folder cannot hold the lock.
    """
    if settings.concurrent_runs or not settings.server_dir.is_dir():
        # (A missing server folder is reported by the run itself, by file.)
        yield
        return
    path = ServerLayout(settings.server_dir).run_lock
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the run lock: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"{path}: cannot take the run lock: {exc.strerror or exc}") from exc
            raise ConfigError(_busy_message(path, settings)) from None
        holder = {
            "run_name": settings.run_name,
            "flower_run": str(flower_run_id),
            "pid": os.getpid(),
            "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        yield
    finally:
        # Closing the descriptor releases the lock (as the process's end would).
        os.close(fd)


def _busy_message(path: Path, settings: RunSettings) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        who = (
            f"run {str(holder.get('run_name'))[:100]!r} (Flower run {str(holder.get('flower_run'))[:30]}, "
            f"started {str(holder.get('started'))[:30]})"
        )
    except (OSError, ValueError, AttributeError):
        who = "another run"
    return (
        f"federation {settings.federation_id!r} is busy: {who} is in progress on the server "
        f"folder {settings.server_dir} (lock {path}); run {settings.run_name!r} was not started. "
        "Wait for it to finish (flwr ls), stop it (flwr stop <run id>), or, to run both at "
        "once, submit with run config concurrent-runs=true"
    )
