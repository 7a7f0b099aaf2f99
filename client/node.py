"""Which institution this ClientApp is, and where its own files live.

An institution keeps everything it controls in its **site folder**
(:class:`core.layout.SiteLayout` names every file):

* ``policy.toml``: its own policy, enforced on its side (never taken from the
  server);
* ``signing.key``: its Ed25519 key for receipts and countersignatures (0600);
* ``server-audit.pub``: the server audit key it trusts for checkpoints;
* ``audit/``: its own local audit logs, one per run, and ``refusals.jsonl``,
  every round it refused and why;
* ``partners/<institution>.pub``: the Ed25519 keys of the partners it approved
  (the roster its SecAgg+ checks every peer against, never the server's word);
* ``state/``: its round ledger (:mod:`client.ledger`);
* ``UNSAFE-ALLOW-PLAIN`` (optional): its bounded consent to an unprotected
  benchmark run.

Its data lives in a data folder (``train.csv``, ``test.csv``), which may be
elsewhere. In the Deployment Engine each SuperNode is started with its own node
config (``institution-id``, ``site-dir``, ``data-dir``). In the simulation
engine Flower gives each virtual SuperNode only a ``partition-id``, which
indexes the run's institution list; the folders are then
``<sites-dir>/<institution>`` and ``<data-dir>/<institution>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError, InputError
from core.layout import DataLayout, SiteLayout
from federation.settings import RunSettings


@dataclass(frozen=True)
class InstitutionNode:
    """One institution's identity and private files (named by :mod:`core.layout`)."""

    institution_id: str
    data_dir: Path
    site_dir: Path

    @property
    def site(self) -> SiteLayout:
        """The institution's site folder."""
        return SiteLayout(self.site_dir)

    @property
    def data(self) -> DataLayout:
        """The institution's data folder."""
        return DataLayout(self.data_dir)

    @property
    def train_path(self) -> Path:
        """The institution's training split (never leaves the site)."""
        return self.data.train

    @property
    def test_path(self) -> Path:
        """The institution's test split (never leaves the site)."""
        return self.data.test

    @property
    def policy_path(self) -> Path:
        """The institution's own policy file."""
        return self.site.policy

    @property
    def signing_key_path(self) -> Path:
        """The institution's Ed25519 signing key (private, 0600)."""
        return self.site.audit_key

    @property
    def server_key_path(self) -> Path:
        """The server audit public key this institution trusts."""
        return self.site.server_audit_pub

    @property
    def audit_dir(self) -> Path:
        """Where this institution keeps its own audit logs."""
        return self.site.audit_dir

    @property
    def refusal_log(self) -> Path:
        """This institution's own record of every round it refused (JSON lines)."""
        return self.site.refusal_log

    @property
    def partners_dir(self) -> Path:
        """The partner keys this institution pinned (its approved roster)."""
        return self.site.partners_dir

    def partner_key_path(self, institution_id: str) -> Path:
        """The pinned Ed25519 public key of one partner."""
        return self.site.partner_key(institution_id)

    @property
    def ledger_path(self) -> Path:
        """The round ledger (one-time rounds, differencing, max_rounds)."""
        return self.site.ledger


def _path(node_config: Mapping[str, object], key: str) -> Path | None:
    value = node_config.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"node config {key!r} must be a path string, found {value!r}")
    return Path(value)


def resolve_node(node_config: Mapping[str, object], settings: RunSettings) -> InstitutionNode:
    """Work out this node's institution and folders from its node config.

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
    data_dir = _path(node_config, "data-dir") or _under(settings.data_dir, "data-dir", institution)
    site_dir = _path(node_config, "site-dir") or _under(settings.sites_dir, "sites-dir", institution)
    return InstitutionNode(institution_id=institution, data_dir=data_dir, site_dir=site_dir)


def _under(base: Path, key: str, institution: str) -> Path:
    if not str(base) or str(base) == ".":
        raise ConfigError(f"neither node config nor run config {key!r} is set")
    return base / institution


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a readable file, else raise InputError naming it."""
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    return path
