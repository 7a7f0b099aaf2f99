"""Approved client code: an institution runs only app bundles it approved.

In Flower's Deployment Engine the operator sends the app (a FAB: a zip of the
project) with ``flwr run``; every SuperNode installs it and runs the ClientApp
inside it. Every institution-side rule (the policy gate, SecAgg+ itself) is
code in that bundle, so an operator who could change the bundle could change
the rules. An institution therefore approves bundles *by their SHA-256*, after
reviewing the code (or rebuilding it from a reviewed commit: Flower builds
FABs deterministically, every entry with the same fixed timestamp), and its
SuperNode runs only those.

The check lives in code installed at the institution (this module, called by
:mod:`client.runner`, which replaces Flower's ``flwr-clientapp`` process), and
runs *before* the bundle is unpacked: nothing from an unapproved bundle is
installed, imported or run. A refusal is written to the institution's own
``audit/refusals.jsonl``.

The approvals live in the site folder, ``approved-code.json``::

    {"version": 1,
     "approved": [{"sha256": "<64 hex>", "label": "v1.4 (commit 1a2b3c)",
                   "approved_at": "2026-12-01T09:00:00+00:00"}]}

A missing file approves nothing (fail closed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError, PolicyViolation
from core.layout import APPROVALS_FILE, SiteLayout

APPROVALS_VERSION = 1
#: Largest approvals file read (a list of hashes; anything bigger is hostile).
MAX_APPROVALS_BYTES = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


class CodeNotApproved(PolicyViolation):
    """A bundle whose hash this institution has not approved; nothing of it ran."""

    def __init__(self, institution: str, digest: str) -> None:
        super().__init__(
            f"{institution} refuses app bundle sha256:{digest}: not in its approved code "
            f"({APPROVALS_FILE}); approve it with 'fedfraud code approve' after review",
            ("code-not-approved",),
        )
        self.digest = digest


@dataclass(frozen=True)
class Approval:
    """One approved bundle."""

    sha256: str
    label: str
    approved_at: str


def fab_digest(content: bytes) -> str:
    """SHA-256 (hex) of a bundle's bytes, as Flower names installed FABs."""
    return hashlib.sha256(content).hexdigest()


def approvals_path(site_dir: Path) -> Path:
    """Where an institution keeps its approvals."""
    return SiteLayout(site_dir).approvals


def load_approvals(site_dir: Path) -> tuple[Approval, ...]:
    """Read the approvals of a site folder; a missing file approves nothing.

    Raises
    ------
    InputError
        If the file exists but is not a regular file, too large, or malformed
        (naming the file and the field).
    """
    path = approvals_path(site_dir)
    if not path.exists() and not path.is_symlink():
        return ()
    if path.is_symlink() or not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_APPROVALS_BYTES:
        raise InputError(f"{path}: larger than {MAX_APPROVALS_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict) or set(data) != {"version", "approved"}:
        raise InputError(f"{path}: expected exactly the fields 'version' and 'approved'")
    if data["version"] != APPROVALS_VERSION:
        raise InputError(f"{path}: version {data['version']!r}, expected {APPROVALS_VERSION}")
    entries = data["approved"]
    if not isinstance(entries, list):
        raise InputError(f"{path}: 'approved' must be a list")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"sha256", "label", "approved_at"}:
            raise InputError(f"{path}: approved[{i}] must have exactly sha256, label, approved_at")
        digest, label, when = entry["sha256"], entry["label"], entry["approved_at"]
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise InputError(f"{path}: approved[{i}].sha256 is not 64 lowercase hex digits")
        if not isinstance(label, str) or not isinstance(when, str):
            raise InputError(f"{path}: approved[{i}].label and .approved_at must be strings")
        out.append(Approval(digest, label, when))
    return tuple(out)


def check_approved(site_dir: Path, institution: str, content: bytes, claimed: str) -> str:
    """The bundle's digest, if this institution approved it; else raise.

    ``claimed`` is the hash the SuperLink announced for the bundle; it must be
    the bundle's own (Flower installs under that name).

    Raises
    ------
    CodeNotApproved
        If the bundle's SHA-256 is not approved, or differs from ``claimed``.
    """
    # 1. Hash what was received, never trust the announced name alone.
    digest = fab_digest(content)
    # 2. The announced name must be that hash (else Flower would install and
    #    load a different folder than the one checked).
    if not hmac.compare_digest(digest.encode(), str(claimed).encode()):
        raise CodeNotApproved(institution, digest)
    # 3. The hash must be one this institution approved.
    approved = [a.sha256 for a in load_approvals(site_dir)]
    if not any(hmac.compare_digest(digest.encode(), a.encode()) for a in approved):
        raise CodeNotApproved(institution, digest)
    return digest


def approve(site_dir: Path, digest: str, label: str) -> Approval:
    """Add a digest to the site's approvals (idempotent); write atomically.

    Raises
    ------
    InputError
        If ``digest`` is not a SHA-256 hex string or the file is malformed.
    """
    digest = digest.lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(digest):
        raise InputError(f"{digest!r} is not a SHA-256 digest (64 hex digits)")
    existing = load_approvals(site_dir)
    for approval in existing:
        if approval.sha256 == digest:
            return approval
    approval = Approval(digest, label, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    entries = [a.__dict__ for a in (*existing, approval)]
    text = json.dumps({"version": APPROVALS_VERSION, "approved": entries}, indent=2) + "\n"
    path = approvals_path(site_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return approval


def record_code_refusal(site_dir: Path, institution: str, digest: str, run_id: int | None) -> None:
    """Write a refused bundle to the institution's own refusal log."""
    refusals = SiteLayout(site_dir).refusal_log
    refusals.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(),
        "institution": institution,
        "run_id": run_id,
        "rules": ["code-not-approved"],
        "fab_sha256": digest,
    }
    with refusals.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
