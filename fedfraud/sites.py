"""Provision the demo federation's institution sites and server folder.

The demo plays every party on one machine, so it creates, once, what each
party would create for itself in production (``fedfraud provision`` does the
production version with TLS and node-authentication keys):

* ``<root>/sites/<institution>/``: ``signing.key`` (Ed25519, mode 0600),
  ``policy.toml`` (rendered from ``policies/<institution>.toml``, or from the
  bank-a example for institutions without one, with this site's own public
  key and the demo's partner list), ``server-audit.pub`` and ``audit/``;
* ``<root>/server/``: ``audit.key`` (0600), ``audit.pub`` and ``policies/``,
  the copies of the institutions' policies the server is given.

Existing keys are reused, never overwritten; policies are re-rendered on every
call so that they always carry the current keys and partners.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from audit.keys import (
    generate_signing_key,
    load_private_key,
    public_key_b64,
    save_private_key,
    save_public_key,
)
from fedfraud.errors import ConfigError, InputError

TEMPLATE_INSTITUTION = "bank-a"


@dataclass(frozen=True)
class DemoSites:
    """Where the demo's parties keep their files."""

    root: Path

    @property
    def sites_dir(self) -> Path:
        """Parent of every institution's site folder."""
        return self.root / "sites"

    @property
    def server_dir(self) -> Path:
        """The server's folder (its audit key and the policies it knows)."""
        return self.root / "server"

    def site(self, institution: str) -> Path:
        """One institution's site folder."""
        return self.sites_dir / institution


def _ensure_key(path: Path) -> Any:
    if path.exists():
        return load_private_key(path)
    key = generate_signing_key()
    save_private_key(key, path)
    return key


def _write_public(key: Any, path: Path) -> None:
    if path.exists():
        path.unlink()
    save_public_key(key.public_key(), path)


def render_policy(
    source: Path, institution: str, public_key_b64: str, partners: Sequence[str]
) -> str:
    """A policy for ``institution`` from an example file, with key and partners set."""
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"example policy {source} cannot be read: {exc}") from exc
    identity = data.get("identity")
    data_use = data.get("data_use")
    if not isinstance(identity, dict) or not isinstance(data_use, dict):
        raise InputError(f"example policy {source} has no [identity] or [data_use] table")
    if identity.get("id") != institution:
        identity["id"] = institution
        identity["name"] = f"{institution} (demo institution)"
    identity["public_key"] = public_key_b64
    data_use["accepted_partners"] = [p for p in partners if p != institution]
    return tomli_w.dumps(data)


def prepare_demo_sites(
    root: Path, institutions: Sequence[str], policy_dir: Path
) -> DemoSites:
    """Create (or refresh) the demo's sites and server folder under ``root``."""
    sites = DemoSites(root)
    template = policy_dir / f"{TEMPLATE_INSTITUTION}.toml"
    if not template.is_file():
        raise ConfigError(f"example policy {template} is missing")
    server_policies = sites.server_dir / "policies"
    sites.server_dir.mkdir(parents=True, exist_ok=True)
    if server_policies.exists():
        shutil.rmtree(server_policies)
    server_policies.mkdir()
    server_key = _ensure_key(sites.server_dir / "audit.key")
    _write_public(server_key, sites.server_dir / "audit.pub")
    for institution in institutions:
        site = sites.site(institution)
        (site / "audit").mkdir(parents=True, exist_ok=True)
        os.chmod(site, 0o700)
        key = _ensure_key(site / "signing.key")
        _write_public(server_key, site / "server-audit.pub")
        source = policy_dir / f"{institution}.toml"
        text = render_policy(
            source if source.is_file() else template,
            institution,
            public_key_b64(key),
            institutions,
        )
        (site / "policy.toml").write_text(text, encoding="utf-8")
        (server_policies / f"{institution}.toml").write_text(text, encoding="utf-8")
    return sites
