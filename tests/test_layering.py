"""The import direction of the design card, checked on the real source files.

The layers live in ``pyproject.toml`` as import-linter contracts: the
operations layer (``fedfraud/``) over the two apps (``server/``, ``client/``,
which never import each other) over the run settings (``federation/``) over the
domain packages (``audit/``, ``fraud/``, ``policy/``, ``secagg/``) over
``core/``; and no package below the apps imports Flower. Flower's internals are
read in one server adapter module only, which import-linter cannot see (it
folds an outside package to its top name), so that rule is checked here.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


def _linter_config() -> dict[str, object]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert isinstance(config, dict)
    return config


def _packages() -> set[str]:
    """Every top-level package of the product, as the installer finds them."""
    return {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in {"tests", "bench", "scripts"}}


def test_every_package_stands_on_a_layer() -> None:
    # A new package outside the contracts would escape every rule below.
    config = _linter_config()
    assert set(config["root_packages"]) == _packages()  # type: ignore[call-overload]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]  # type: ignore[attr-defined]
    placed = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    assert placed == _packages()


def test_import_contracts_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0


def _imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_flower_internals_are_touched_in_one_server_adapter_and_no_client_module() -> None:
    # The institution's side runs fedfraud's own SecAgg+ mod: it reads no
    # Flower SecAgg+ internals at all. The server's workflow reads Flower's
    # workflow records in one adapter module.
    users = sorted(
        path
        for package in sorted(_packages())
        for path, names in _imported_modules(package).items()
        if any(n.startswith(("flwr.common.secure_aggregation", "flwr.server.workflow.constant")) for n in names)
    )
    assert users == ["server/secagg_workflow.py"]
