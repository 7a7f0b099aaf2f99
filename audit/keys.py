"""Ed25519 signing keys for the audit trail: generation, files, fingerprints.

Private keys are written as PEM PKCS#8 to files created with mode 0600 in one
``os.open`` call (no window in which another user could read them), and are
refused on read if the file is readable by group or others.  Key material is
never put into an exception message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import KeyFileError

__all__ = [
    "FINGERPRINT_PREFIX",
    "generate_signing_key",
    "save_private_key",
    "load_private_key",
    "save_public_key",
    "load_public_key",
    "public_key_bytes",
    "public_key_b64",
    "public_key_from_b64",
    "public_key_from_bytes",
    "fingerprint",
]

#: Algorithm marker of a key fingerprint: ``ed25519:<sha256 hex of raw key>``.
FINGERPRINT_PREFIX = "ed25519:"

_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644


def generate_signing_key() -> Ed25519PrivateKey:
    """Generate a fresh Ed25519 signing key from the OS CSPRNG.

    Returns
    -------
    Ed25519PrivateKey
        A new private key (RFC 8032).
    """
    return Ed25519PrivateKey.generate()


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0)
    if overwrite:
        if path.is_symlink():
            raise KeyFileError(f"{path}: refusing to write a key through a symbolic link")
        # Remove first so the new file is created with ``mode`` rather than
        # inheriting the permissions of the old one.
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    else:
        flags |= os.O_EXCL
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise KeyFileError(
            f"{path}: file exists; refusing to overwrite a key (pass overwrite=True)"
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create key file ({exc.strerror})") from exc
    try:
        # The umask may have cleared bits of ``mode``; never widen, only make sure.
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def save_private_key(key: Ed25519PrivateKey, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write ``key`` as unencrypted PEM PKCS#8 to a new file with mode 0600.

    Parameters
    ----------
    key : Ed25519PrivateKey
        The key to store.
    path : path-like
        Destination file.
    overwrite : bool, default False
        Replace an existing file.  Without it an existing file is an error.

    Raises
    ------
    KeyFileError
        If the file exists (and ``overwrite`` is false) or cannot be created.
    """
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError("only Ed25519 private keys can be saved")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(Path(path), pem, _PRIVATE_MODE, overwrite)


def _read_file(path: Path, *, private: bool) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key file ({exc.strerror})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if private and info.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: private key file is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}, expected 0600); refusing to use it"
            )
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM PKCS#8 file with mode 0600 (or stricter).

    Raises
    ------
    KeyFileError
        If the file is missing, group/world-accessible, a symlink, or does not
        hold an unencrypted Ed25519 private key.
    """
    path = Path(path)
    data = _read_file(path, private=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # Do not chain the parser's message: it could echo key bytes.
        raise KeyFileError(f"{path}: not an unencrypted PEM PKCS#8 private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: key is not an Ed25519 key")
    return key


def save_public_key(key: Ed25519PublicKey, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write a public key as PEM SubjectPublicKeyInfo (mode 0644).

    Raises
    ------
    KeyFileError
        If the file exists (and ``overwrite`` is false) or cannot be created.
    """
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError("only Ed25519 public keys can be saved")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(Path(path), pem, _PUBLIC_MODE, overwrite)


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM file, or a file holding its base64 raw form.

    Raises
    ------
    KeyFileError
        If the file cannot be read or does not hold an Ed25519 public key.
    """
    path = Path(path)
    data = _read_file(path, private=False)
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise KeyFileError(f"{path}: not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path}: key is not an Ed25519 key")
        return key
    try:
        return public_key_from_b64(data.decode("ascii").strip())
    except (UnicodeDecodeError, KeyFileError):
        raise KeyFileError(f"{path}: neither PEM nor base64 Ed25519 public key") from None


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """Return the 32 raw bytes of a public key (RFC 8032 §5.1.5)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Return the standard base64 of the raw 32-byte public key."""
    return base64.b64encode(public_key_bytes(key)).decode("ascii")


def public_key_from_bytes(raw: bytes) -> Ed25519PublicKey:
    """Build a public key from its 32 raw bytes.

    Raises
    ------
    KeyFileError
        If ``raw`` is not 32 bytes or not a valid encoding.
    """
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != 32:
        raise KeyFileError("an Ed25519 public key is exactly 32 raw bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(raw))
    except ValueError:
        raise KeyFileError("invalid Ed25519 public key bytes") from None


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Decode a base64 raw Ed25519 public key (strictly: 32 bytes, canonical padding).

    Raises
    ------
    KeyFileError
        If ``text`` is not valid base64 of 32 bytes.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError):
        raise KeyFileError("public key is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise KeyFileError("public key base64 is not in canonical form")
    return public_key_from_bytes(raw)


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey | bytes) -> str:
    """Return ``"ed25519:" + sha256_hex(raw public key)``.

    Parameters
    ----------
    key : Ed25519PublicKey, Ed25519PrivateKey or bytes
        A key, or the 32 raw public key bytes.
    """
    raw = key if isinstance(key, (bytes, bytearray)) else public_key_bytes(key)
    if len(raw) != 32:
        raise KeyFileError("an Ed25519 public key is exactly 32 raw bytes")
    return FINGERPRINT_PREFIX + hashlib.sha256(bytes(raw)).hexdigest()
