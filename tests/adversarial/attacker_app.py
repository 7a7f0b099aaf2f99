"""A Flower app with one component replaced by an attacker's module (the rest is the product)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from fedfraud.simulation import project_dir


def attacker_app(folder: Path, component: str, module: Path, name: str) -> Path:
    """The product's app, its ``component`` (``serverapp``/``clientapp``) taken from ``module``.

    The bundle holds the attacker's module only; the product itself is
    installed in the environment, as at an institution or the operator.
    """
    folder.mkdir(parents=True)
    text = (project_dir() / "pyproject.toml").read_text(encoding="utf-8")
    line = re.search(rf'^{component} = "[^"]+"$', text, flags=re.M)
    if line is None:
        raise AssertionError(f"the product's pyproject names no {component}")
    text = text.replace(line.group(0), f'{component} = "{module.stem}:app"')
    text = text.replace('name = "fedfraud"', f'name = "fedfraud-{name}"')
    text = re.sub(r"fab-include = \[[^\]]*\]", f'fab-include = ["{module.name}"]', text)
    (folder / "pyproject.toml").write_text(text, encoding="utf-8")
    shutil.copyfile(module, folder / module.name)
    return folder
