"""Approved client code, without Flower processes: the check, the file, the shim."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from client.approval import (
    CodeNotApproved,
    approve,
    check_approved,
    fab_digest,
    load_approvals,
)
from client.runner import flower_clientapp_on_path, supernode_env
from fedfraud.code import bundle_bytes
from core.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def test_a_site_without_approvals_refuses_every_bundle(tmp_path: Path) -> None:
    content = b"any bundle"
    with pytest.raises(CodeNotApproved, match="not in its approved code"):
        check_approved(tmp_path, "bank-a", content, fab_digest(content))


def test_approved_bundle_passes_and_a_one_byte_change_is_refused(tmp_path: Path) -> None:
    content = bundle_bytes(REPO)
    approve(tmp_path, fab_digest(content), "reviewed")
    assert check_approved(tmp_path, "bank-a", content, fab_digest(content)) == fab_digest(content)
    changed = content[:-1] + bytes([content[-1] ^ 1])
    with pytest.raises(CodeNotApproved):
        check_approved(tmp_path, "bank-a", changed, fab_digest(changed))


def test_bundle_announced_under_an_approved_hash_but_with_other_bytes_is_refused(tmp_path: Path) -> None:
    # The SuperLink names the bundle by the approved hash; the bytes differ.
    approved = b"approved bundle"
    approve(tmp_path, fab_digest(approved), "reviewed")
    with pytest.raises(CodeNotApproved):
        check_approved(tmp_path, "bank-a", b"other bundle", fab_digest(approved))


def test_bundle_hash_is_reproducible_from_the_same_files() -> None:
    # An institution rebuilding the bundle from the reviewed files gets the
    # hash the operator's `flwr run` sends (Flower writes fixed timestamps).
    assert fab_digest(bundle_bytes(REPO)) == fab_digest(bundle_bytes(REPO))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[]", "exactly the fields"),
        ('{"version": 2, "approved": []}', "version"),
        ('{"version": 1, "approved": [{"sha256": "zz", "label": "", "approved_at": ""}]}', "sha256"),
        ('{"version": 1, "approved": [{"sha256": "' + "a" * 64 + '"}]}', "approved[0]"),
        ("not json", "not readable JSON"),
    ],
)
def test_malformed_approvals_file_is_refused_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "approved-code.json").write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(field)):
        load_approvals(tmp_path)


def test_approving_twice_keeps_one_entry(tmp_path: Path) -> None:
    approve(tmp_path, "sha256:" + "b" * 64, "first")
    approve(tmp_path, "b" * 64, "again")
    data = json.loads((tmp_path / "approved-code.json").read_text(encoding="utf-8"))
    assert [a["sha256"] for a in data["approved"]] == ["b" * 64]


def test_supernode_environment_starts_the_checking_clientapp_and_keeps_flower_home_in_the_site(
    tmp_path: Path,
) -> None:
    env = supernode_env(tmp_path, {"PATH": os.defpath})
    shim = tmp_path / "bin" / "flwr-clientapp"
    assert flower_clientapp_on_path(env) == str(shim)
    assert "from client.runner import main" in shim.read_text(encoding="utf-8")
    assert shim.stat().st_mode & 0o777 == 0o700
    assert env["FLWR_HOME"] == str(tmp_path / "flower-home")
