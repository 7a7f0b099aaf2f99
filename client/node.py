"""Which institution this ClientApp is, and where its data lives.

In the Deployment Engine every SuperNode is started with its own node config
(``institution-id``, ``data-dir``). In the simulation engine Flower gives each
virtual SuperNode a ``partition-id`` only; it indexes the run's institution list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedfraud.errors import ConfigError, InputError
from fedfraud.settings import RunSettings


@dataclass(frozen=True)
class InstitutionNode:
    """One institution's identity and private files."""

    institution_id: str
    data_dir: Path

    @property
    def train_path(self) -> Path:
        """The institution's training split (never leaves the site)."""
        return self.data_dir / "train.csv"

    @property
    def test_path(self) -> Path:
        """The institution's test split (never leaves the site)."""
        return self.data_dir / "test.csv"


def resolve_node(node_config: Mapping[str, object], settings: RunSettings) -> InstitutionNode:
    """Work out this node's institution from its node config.

    Raises
    ------
    ConfigError
        If the node config names no institution, or one the run does not include.
    """
    institution = node_config.get("institution-id")
    if institution is None:
        partition = node_config.get("partition-id")
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise ConfigError("node config has neither 'institution-id' nor 'partition-id'")
        if not 0 <= partition < len(settings.institutions):
            raise ConfigError(
                f"simulated node partition-id {partition} has no institution: the run "
                f"lists {len(settings.institutions)} (set num-supernodes to match)"
            )
        institution = settings.institutions[partition]
    if not isinstance(institution, str) or institution not in settings.institutions:
        raise ConfigError(
            f"node config institution-id {institution!r} is not one of the run's "
            f"institutions {', '.join(settings.institutions)}"
        )
    data_dir = node_config.get("data-dir")
    if data_dir is None:
        base = settings.data_dir
        if not str(base):
            raise ConfigError("neither node config 'data-dir' nor run config 'data-dir' is set")
        path = base / institution
    elif isinstance(data_dir, str):
        path = Path(data_dir)
    else:
        raise ConfigError(f"node config 'data-dir' must be a path string, found {data_dir!r}")
    return InstitutionNode(institution_id=institution, data_dir=path)


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a readable file, else raise InputError naming it."""
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    return path
