"""The import direction of the design card, checked on the real source files.

``policy/``, ``audit/``, ``secagg/`` and ``fraud/`` never import ``client/`` or
``server/``; ``client/`` and ``server/`` never import each other; and Flower's
internal SecAgg+ state is read in one adapter module per side only.
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


def test_flower_secagg_internals_are_touched_in_one_adapter_per_side() -> None:
    users = sorted(
        path
        for package in ("client", "server", "fedfraud", "secagg", "policy", "audit", "fraud")
        for path, names in imported_packages(package).items()
        if any(n.startswith(("flwr.common.secure_aggregation", "flwr.server.workflow.constant")) for n in names)
    )
    assert users == ["client/secagg_adapter.py", "server/secagg_workflow.py"]
