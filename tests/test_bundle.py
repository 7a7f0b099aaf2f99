"""The app bundle Flower ships to every SuperNode holds the product's code and nothing else."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

from fedfraud.code import bundle_bytes

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("audit/", "client/", "core/", "federation/", "fedfraud/", "fraud/", "policy/", "secagg/", "server/")


def bundle_names(folder: Path) -> list[str]:
    """The files in the bundle fedfraud sends for ``folder`` (Flower's build of its tracked files)."""
    return zipfile.ZipFile(io.BytesIO(bundle_bytes(folder))).namelist()


def test_bundle_carries_no_stray_files(tmp_path: Path) -> None:
    # A working folder as an operator has it: the tracked files, plus an
    # institution's policy, an audit log, a key listing and notes lying about.
    copy = tmp_path / "project"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, copy / name)
    strays = {
        "bank-a-policy.toml": "[identity]\n",
        "runs/x/audit.jsonl": "{}\n",
        "trusted_keys.json": "{}\n",
        "NOTES.md": "# notes\n",
        "client/site-notes.json": "{}\n",
        "client/scratch.py": "print('an untracked module')\n",
    }
    for name, text in strays.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(text)

    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "add", *tracked], cwd=copy, check=True)

    names = bundle_names(copy)

    assert not set(strays) & set(names)
    extra = [n for n in names if n not in (".info/CONTENT", "pyproject.toml") and not n.startswith(PRODUCT)]
    assert extra == []
    assert not [n for n in names if n.startswith("tests/") or n.endswith((".json", ".jsonl", ".md"))]
    # Every file in the bundle is a tracked file of the project.
    assert set(names) - {".info/CONTENT"} <= set(tracked)
    # ...and the code the institutions run is all there.
    for module in ("client/app.py", "client/secagg_mod.py", "server/app.py", "secagg/hardened.py"):
        assert module in names
