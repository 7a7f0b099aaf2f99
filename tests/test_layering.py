"""The import direction of the design card, checked on the real source files.

``policy/``, ``audit/``, ``secagg/`` and ``fraud/`` never import ``client/`` or
``server/``; ``client/`` and ``server/`` never import each other; and Flower's
internals are read in one server adapter module only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each file of ``package``: the top-level names of what it imports."""
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


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("policy", {"client", "server"}),
        ("audit", {"client", "server"}),
        ("secagg", {"client", "server"}),
        ("fraud", {"client", "server", "flwr"}),
        ("client", {"server"}),
        ("server", {"client"}),
    ],
)
def test_import_direction(package: str, forbidden: set[str]) -> None:
    broken = [
        f"{path} imports {name}"
        for path, names in imported_packages(package).items()
        for name in names
        if name.split(".")[0] in forbidden
    ]
    assert broken == []


def test_flower_internals_are_touched_in_one_server_adapter_and_no_client_module() -> None:
    # The institution's side runs fedfraud's own SecAgg+ mod: it reads no
    # Flower SecAgg+ internals at all. The server's workflow reads Flower's
    # workflow records in one adapter module.
    users = sorted(
        path
        for package in ("client", "server", "fedfraud", "secagg", "policy", "audit", "fraud")
        for path, names in imported_packages(package).items()
        if any(n.startswith(("flwr.common.secure_aggregation", "flwr.server.workflow.constant")) for n in names)
    )
    assert users == ["server/secagg_workflow.py"]
