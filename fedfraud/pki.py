"""The federation's PKI: its CA, the SuperLink's TLS certificate, and key files.

How Flower 1.42 authenticates SuperNodes (read from its source): the SuperLink
is started with ``--enable-supernode-auth`` (TLS required); SuperNodes cannot
register themselves any more, an operator registers each SuperNode's *public*
key through the Control API with ``flwr supernode register <key.pub>``; the
SuperNode is started with ``--auth-supernode-private-key`` and signs a
timestamp on every Fleet request with it. The key must be an elliptic-curve
key on a NIST curve, private half in OpenSSH format, public half in OpenSSH
format (``ecdsa-sha2-nistp384 ...``); that is what this module makes.

Private keys are created with ``os.open(O_CREAT | O_EXCL, 0o600)``
(:func:`write_file`) and never printed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.errors import ConfigError, InputError

#: Flower 1.42 accepts any NIST curve for SuperNode auth; P-384 is what its docs use.
SUPERNODE_AUTH_CURVE = ec.SECP384R1()
#: The CA and the SuperLink certificate use ECDSA P-384 with SHA-384 (NSA CNSA suite).
TLS_CURVE = ec.SECP384R1()
CA_DAYS = 5 * 365
SERVER_CERT_DAYS = 397  # CA/Browser Forum maximum for a leaf certificate
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_file(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Create ``path`` with ``mode`` in one ``os.open`` call; replace only if ``force``.

    The file is created with ``O_CREAT | O_EXCL`` so that a private key is
    never readable by anyone else, not even for a moment, and never written
    through a symbolic link.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if force and (path.exists() or path.is_symlink()):
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise ConfigError(f"{path} exists; pass --force to replace it") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot create ({exc.strerror})") from exc
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widen beyond mode
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def private_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


PublicOrPrivate = ec.EllipticCurvePrivateKey | Ed25519PrivateKey | Ed25519PublicKey


def _public_half(key: PublicOrPrivate) -> Any:
    return key if isinstance(key, Ed25519PublicKey) else key.public_key()


def public_pem(key: PublicOrPrivate) -> bytes:
    return _public_half(key).public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def ssh_fingerprint(public_openssh: bytes) -> str:
    """``SHA256:<base64>`` of an OpenSSH public key (as ``ssh-keygen -l`` prints)."""
    blob = base64.b64decode(public_openssh.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def _raw_ed25519(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = _public_half(key)
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)  # type: ignore[no-any-return]


def ed25519_fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """``ed25519:<sha256 hex of the raw public key>`` (the audit log's key id form)."""
    return "ed25519:" + hashlib.sha256(_raw_ed25519(key)).hexdigest()


def ed25519_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Base64 of the raw 32-byte public key (the policy files' ``public_key`` form)."""
    return base64.b64encode(_raw_ed25519(key)).decode("ascii")


def cert_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate, colon-separated hex."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _name(common_name: str, federation_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"fedfraud federation {federation_id}"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(federation_id: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA allowed to sign leaf certificates only (pathLen 0)."""
    key = ec.generate_private_key(TLS_CURVE)
    now = dt.datetime.now(dt.timezone.utc)
    name = _name(f"fedfraud {federation_id} CA", federation_id)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA384())
    )
    return key, cert


def server_alt_names(host: str) -> list[x509.GeneralName]:
    """SANs of the SuperLink certificate: ``host``, 127.0.0.1 and localhost."""
    names: list[x509.GeneralName] = []
    for candidate in (host, "127.0.0.1", "localhost"):
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(candidate))
        except ValueError:
            entry = x509.DNSName(candidate)
        if entry not in names:
            names.append(entry)
    return names


def make_server_cert(
    host: str,
    federation_id: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's TLS server certificate, signed by the CA."""
    key = ec.generate_private_key(TLS_CURVE)
    now = dt.datetime.now(dt.timezone.utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"fedfraud {federation_id} SuperLink", federation_id))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(server_alt_names(host)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def make_supernode_auth_key() -> tuple[bytes, bytes]:
    """A SuperNode auth key pair as Flower 1.42 reads it: (OpenSSH private, OpenSSH public)."""
    key = ec.generate_private_key(SUPERNODE_AUTH_CURVE)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + b"\n"
