"""What a run sends to the SuperNodes: the project's tracked files, nothing else.

``flwr run`` builds the app bundle from a folder; :func:`release_folder` makes
that folder hold only what git tracks, so notes, logs or a stray module in a
working checkout can never reach an institution. ``fedfraud code`` hashes the
same folder for the institutions' approval.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _git(project: Path, *args: str) -> bytes | None:
    try:
        result = subprocess.run(  # noqa: S603, S607 - fixed argv, no shell
            ["git", *args], cwd=project, capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def tracked_files(project: Path) -> list[str] | None:
    """The files git tracks in ``project`` (relative paths), or None unless it is a checkout's top.

    A folder inside another checkout (an export under ``.flwr/``, a test's
    scratch folder) is not a checkout of its own: None, and it is used as it is.
    """
    top = _git(project, "rev-parse", "--show-toplevel")
    if top is None or Path(top.decode("utf-8").strip()).resolve() != project.resolve():
        return None
    listed = _git(project, "ls-files", "-z", "--cached")
    if listed is None:
        return None
    return [name for name in listed.decode("utf-8").split("\0") if name]


def release_folder(project: Path, dest: Path) -> Path:
    """The folder to send with ``flwr run``: the project's tracked files only.

    In a git checkout, the tracked files (as they are in the working tree) are
    copied into a fresh ``dest``, so nothing untracked in the working folder
    (notes, logs, a stray module) can reach a SuperNode. Outside a checkout
    (an unpacked release) the folder is used as it is.
    """
    names = tracked_files(project)
    if names is None:
        return project
    if dest.exists():
        shutil.rmtree(dest)
    for name in names:
        source = project / name
        if not source.is_file() or source.is_symlink():
            continue  # deleted in the working tree, or a link: never followed
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return dest
