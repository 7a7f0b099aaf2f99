"""Key files: mode 0600, no overwrite, refusal of readable files, encodings, fingerprints."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from audit.errors import KeyFileError
from audit.keys import (
    fingerprint,
    generate_signing_key,
    load_private_key,
    load_public_key,
    public_key_b64,
    public_key_bytes,
    public_key_from_b64,
    save_private_key,
    save_public_key,
)


def test_private_key_file_is_0600_and_roundtrips(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "server.key"
    old = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        save_private_key(key, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(key)


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    first, second = generate_signing_key(), generate_signing_key()
    save_private_key(first, path)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_private_key(second, path)
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(first)
    save_private_key(second, path, overwrite=True)
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_refuses_group_or_world_readable_private_key(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "server.key"
    save_private_key(generate_signing_key(), path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="group or others"):
        load_private_key(path)


def test_refuses_symlinked_private_key(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    save_private_key(generate_signing_key(), path)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(KeyFileError):
        load_private_key(link)


def test_error_messages_hold_no_key_material(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nTUlJQ0FOT1RBS0VZ\n-----END PRIVATE KEY-----\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        load_private_key(path)
    assert "TUlJ" not in str(info.value)


def test_public_key_files_and_encodings(tmp_path: Path) -> None:
    key = generate_signing_key()
    pem = tmp_path / "server.pub"
    save_public_key(key.public_key(), pem)
    assert public_key_bytes(load_public_key(pem)) == public_key_bytes(key)
    b64 = tmp_path / "server.b64"
    b64.write_text(public_key_b64(key) + "\n")
    assert public_key_bytes(load_public_key(b64)) == public_key_bytes(key)
    assert public_key_bytes(public_key_from_b64(public_key_b64(key))) == public_key_bytes(key)
    for bad in ("", "AAAA", public_key_b64(key)[:-1], "!" * 44):
        with pytest.raises(KeyFileError):
            public_key_from_b64(bad)


def test_fingerprint_has_algorithm_prefix() -> None:
    key = generate_signing_key()
    fp = fingerprint(key.public_key())
    assert fp.startswith("ed25519:") and len(fp) == len("ed25519:") + 64
    assert fp == fingerprint(key) == fingerprint(public_key_bytes(key))
