"""Provision a production federation: CA, TLS, SuperNode auth keys, audit keys.

``fedfraud provision init federation.toml --out keys`` reads one federation
file (see ``federation.example.toml``) and writes, under the output folder::

    ca/ca.pem, ca/ca.key                     private CA (keep ca.key offline)
    superlink/server.pem, server.key         the SuperLink's TLS certificate
    superlink/ca.pem                         copy of the CA certificate
    server/audit.key, server/audit.pub       the server's Ed25519 audit key
    server/policies/<id>.toml                the server's copies of the policies
    server/schemas/<id>.toml                 the server's copies of the schema (own data)
    institutions/<id>/                       the institution's site folder:
        supernode-auth.key, .pub             SuperNode auth key (EC P-384, OpenSSH)
        signing.key, signing.pub             Ed25519 receipt/countersignature key
        server-audit.pub                     the server audit key it trusts
        ca.pem                               the CA certificate (to check the SuperLink)
        policy.toml                          its policy, with its own public key
                                             (and, with a schema, the schema's columns)
        schema.toml                          the federation's schema (bring-your-own data)
        node-config.toml                     for `flower-supernode --node-config`
        audit/                               its own audit logs (one per run)
    trusted_keys.json                        {institution: base64 Ed25519 public key}
    federation.json                          what was provisioned (public data only)

How Flower 1.42 authenticates SuperNodes (read from its source): the SuperLink
is started with ``--enable-supernode-auth`` (TLS required); SuperNodes cannot
register themselves any more, an operator registers each SuperNode's *public*
key through the Control API with ``flwr supernode register <key.pub>``; the
SuperNode is started with ``--auth-supernode-private-key`` and signs a
timestamp on every Fleet request with it. The key must be an elliptic-curve
key on a NIST curve, private half in OpenSSH format, public half in OpenSSH
format (``ecdsa-sha2-nistp384 ...``); that is what this module writes.

Private keys are created with ``os.open(O_CREAT | O_EXCL, 0o600)`` and never
printed; an existing key is never replaced unless ``--force`` is given.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rich.console import Console
from rich.markup import escape

from core.errors import ConfigError, FedFraudError, InputError

#: Version of the output layout, recorded in ``federation.json``.
LAYOUT_VERSION = 1
#: Flower 1.42 accepts any NIST curve for SuperNode auth; P-384 is what its docs use.
SUPERNODE_AUTH_CURVE = ec.SECP384R1()
#: The CA and the SuperLink certificate use ECDSA P-384 with SHA-384 (NSA CNSA suite).
TLS_CURVE = ec.SECP384R1()
CA_DAYS = 5 * 365
SERVER_CERT_DAYS = 397  # CA/Browser Forum maximum for a leaf certificate
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
_ID_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")

app = typer.Typer(
    help="Create the CA, TLS certificate and keys of a production federation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True, emoji=False, markup=False)


# ---------------------------------------------------------------------------
# The federation file
# ---------------------------------------------------------------------------


class InstitutionSpec(BaseModel):
    """One institution of the federation file."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str
    data_dir: str = Field(min_length=1)
    policy: str | None = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_PATTERN.fullmatch(value):
            raise ValueError(
                "must be 1-63 characters of lower-case letters, digits and '-', "
                f"starting with a letter or digit; found {value!r}"
            )
        return value


class FederationSection(BaseModel):
    """The ``[federation]`` table.

    ``schema``: the federation's schema for bring-your-own data (a path,
    relative to the federation file). Without it the institutions train on
    the built-in generator's transactions.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str
    superlink: str
    schema_file: str | None = Field(default=None, alias="schema", min_length=1)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_PATTERN.fullmatch(value):
            raise ValueError(f"must match {_ID_PATTERN.pattern}; found {value!r}")
        return value

    @field_validator("superlink")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_address(value)
        return value


class FederationFile(BaseModel):
    """The whole federation file (``schema_version = 1``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_version: int
    federation: FederationSection
    institutions: list[InstitutionSpec] = Field(min_length=2)

    @field_validator("schema_version")
    @classmethod
    def _check_version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"only schema_version 1 exists; found {value}")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> FederationFile:
        seen: set[str] = set()
        for spec in self.institutions:
            if spec.id in seen:
                raise ValueError(f"institution id {spec.id!r} appears more than once")
            seen.add(spec.id)
        return self


@dataclass(frozen=True)
class Institution:
    """An institution with its paths resolved against the federation file."""

    id: str
    data_dir: Path
    policy: Path | None


@dataclass(frozen=True)
class Federation:
    """A validated federation file."""

    source: Path
    id: str
    superlink_host: str
    superlink_port: int
    institutions: tuple[Institution, ...]
    schema: Path | None = None
    """The shared schema of a bring-your-own-data federation (None: built-in data)."""

    @property
    def names(self) -> list[str]:
        """The institution ids, in file order."""
        return [inst.id for inst in self.institutions]


def split_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv4, ``[IPv6]`` or a DNS name); raise ValueError."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"must be host:port, found {address!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be 1..65535, found {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def load_federation(path: Path) -> Federation:
    """Read and validate a federation file; errors name the file and field.

    Raises
    ------
    InputError
        If the file cannot be read or is not TOML.
    ConfigError
        If a field is missing, unknown or invalid.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read federation file ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from exc
    try:
        parsed = FederationFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(
                _field_name(raw, error["loc"][: i + 1]) for i in range(len(error["loc"]))
            ).replace(".[", "[")
            problems.append(f"  {where or '(top level)'}: {error['msg']}")
        raise ConfigError(f"{path}: invalid federation file\n" + "\n".join(problems)) from None
    base = path.resolve().parent
    host, port = split_address(parsed.federation.superlink)
    schema = (base / parsed.federation.schema_file).resolve() if parsed.federation.schema_file else None
    return Federation(
        source=path.resolve(),
        id=parsed.federation.id,
        superlink_host=host,
        superlink_port=port,
        schema=schema,
        institutions=tuple(
            Institution(
                id=spec.id,
                data_dir=(base / spec.data_dir).resolve(),
                policy=(base / spec.policy).resolve() if spec.policy else None,
            )
            for spec in parsed.institutions
        ),
    )


def _field_name(raw: Any, loc: Sequence[Any]) -> str:
    """Render one step of a pydantic error location; list items by their id."""
    key = loc[-1]
    if isinstance(key, int):
        parent: Any = raw
        for step in loc[:-1]:
            try:
                parent = parent[step]
            except (KeyError, IndexError, TypeError):
                return f"[{key}]"
        try:
            item = parent[key]
        except (KeyError, IndexError, TypeError):
            return f"[{key}]"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            return f"[{key}] (id {item['id']!r})"
        return f"[{key}]"
    return str(key)


# ---------------------------------------------------------------------------
# The output layout
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InstitutionFiles:
    """Where one institution's files are written."""

    root: Path

    @property
    def auth_key(self) -> Path:
        """SuperNode auth private key (OpenSSH, EC P-384), mode 0600."""
        return self.root / "supernode-auth.key"

    @property
    def auth_pub(self) -> Path:
        """SuperNode auth public key (OpenSSH), registered at the SuperLink."""
        return self.root / "supernode-auth.pub"

    @property
    def audit_key(self) -> Path:
        """Ed25519 signing key for receipts and countersignatures (PEM PKCS#8), 0600."""
        return self.root / "signing.key"

    @property
    def audit_pub(self) -> Path:
        """Its public half (PEM)."""
        return self.root / "signing.pub"

    @property
    def server_audit_pub(self) -> Path:
        """The server audit key this institution trusts for checkpoints."""
        return self.root / "server-audit.pub"

    @property
    def audit_dir(self) -> Path:
        """Where the institution's own audit logs are written (one per run)."""
        return self.root / "audit"

    @property
    def ca_cert(self) -> Path:
        """Copy of the federation's CA certificate."""
        return self.root / "ca.pem"

    @property
    def policy(self) -> Path:
        """The institution's policy with its own public key filled in."""
        return self.root / "policy.toml"

    @property
    def schema(self) -> Path:
        """The federation's schema (bring-your-own data), read by the institution's ClientApp."""
        from fraud.datasets import SCHEMA_FILE

        return self.root / SCHEMA_FILE

    @property
    def node_config(self) -> Path:
        """Node config for ``flower-supernode --node-config``."""
        return self.root / "node-config.toml"

    @property
    def registration(self) -> Path:
        """Public keys the institution sends the operator (``provision institution``)."""
        return self.root / "registration.json"


@dataclass(frozen=True)
class Layout:
    """Paths of everything ``provision init`` writes under ``root``."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate (public)."""
        return self.root / "ca" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        """The CA private key: keep it offline once provisioning is done."""
        return self.root / "ca" / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The SuperLink's TLS certificate."""
        return self.root / "superlink" / "server.pem"

    @property
    def server_key(self) -> Path:
        """The SuperLink's TLS private key."""
        return self.root / "superlink" / "server.key"

    @property
    def superlink_ca(self) -> Path:
        """Copy of the CA certificate beside the SuperLink's files."""
        return self.root / "superlink" / "ca.pem"

    @property
    def server_dir(self) -> Path:
        """The server's folder (run config ``server-dir``)."""
        return self.root / "server"

    # The server finds its audit key and policy copies relative to
    # ``server-dir`` (server/loop.py, server/planning.py), so these paths are
    # built from :attr:`server_dir` rather than spelled out again.
    @property
    def server_audit_key(self) -> Path:
        """The server's Ed25519 audit signing key."""
        return self.server_dir / "audit.key"

    @property
    def server_audit_pub(self) -> Path:
        """The server's Ed25519 audit public key."""
        return self.server_dir / "audit.pub"

    def server_policy(self, institution_id: str) -> Path:
        """The server's copy of an institution's policy."""
        return self.server_dir / "policies" / f"{institution_id}.toml"

    @property
    def trusted_keys(self) -> Path:
        """``{institution: base64 raw Ed25519 public key}`` for ``audit verify --keys``."""
        return self.root / "trusted_keys.json"

    @property
    def manifest(self) -> Path:
        """What was provisioned: public data only."""
        return self.root / "federation.json"

    def institution(self, institution_id: str) -> InstitutionFiles:
        """One institution's folder."""
        return InstitutionFiles(self.root / "institutions" / institution_id)


# ---------------------------------------------------------------------------
# Writing files
# ---------------------------------------------------------------------------


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


def _private_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


PublicOrPrivate = ec.EllipticCurvePrivateKey | Ed25519PrivateKey | Ed25519PublicKey


def _public_half(key: PublicOrPrivate) -> Any:
    return key if isinstance(key, Ed25519PublicKey) else key.public_key()


def _public_pem(key: PublicOrPrivate) -> bytes:
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


def policy_with_key(source: Path, institution_id: str, public_key_b64: str) -> bytes:
    """The policy file ``source`` with ``[identity] public_key`` set to this key.

    Only that one line changes (comments and layout stay as approved); the
    result is parsed again to check the identity is the institution's.

    Raises
    ------
    InputError
        If the policy cannot be read, has no ``public_key`` line in its
        ``[identity]`` table, or names another institution.
    """
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{source}: cannot read policy ({exc.strerror})") from exc
    lines = text.splitlines(keepends=True)
    table = ""
    replaced = 0
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            table = stripped.strip("[]").strip()
        elif table == "identity" and re.match(r"public_key\s*=", stripped):
            lines[index] = f'public_key = "{public_key_b64}"\n'
            replaced += 1
    if replaced != 1:
        raise InputError(f"{source}: expected one 'public_key' line in [identity], found {replaced}")
    result = "".join(lines)
    try:
        parsed = tomllib.loads(result)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML ({exc})") from exc
    found = parsed.get("identity", {}).get("id")
    if found != institution_id:
        raise InputError(
            f"{source}: [identity] id is {found!r}, expected {institution_id!r}"
        )
    return result.encode("utf-8")


def _schema_columns(federation: Federation) -> tuple[str, ...] | None:
    """The model columns of the federation's schema, as policies name them (None: built-in data).

    Raises
    ------
    InputError
        If the schema cannot be read or is not a valid fedfraud schema (the message names the file).
    """
    if federation.schema is None:
        return None
    from fraud.datasets import model_columns
    from fraud.byo_schema import load_schema

    if not federation.schema.is_file():
        raise InputError(f"{federation.source}: [federation] schema not found: {federation.schema}")
    try:
        return model_columns(load_schema(federation.schema))
    except FedFraudError as exc:
        raise InputError(f"{federation.schema}: not a valid schema: {exc}") from exc


def policy_with_columns(policy: bytes, source: Path, columns: Sequence[str]) -> bytes:
    """``policy`` with ``[data_use] allowed_features`` set to the schema's model columns.

    The policy is rendered once here, for the institution and the server's
    copy alike, so both hold the same text and hash. A column the policy
    forbids stays forbidden: the run plan will then name the conflict.
    """
    import tomli_w

    data = tomllib.loads(policy.decode("utf-8"))
    data_use = data.get("data_use")
    if not isinstance(data_use, dict):
        raise InputError(f"{source}: no [data_use] table to set the schema's columns in")
    data_use["allowed_features"] = sorted(set(columns))
    header = (
        f"# Rendered by fedfraud provision from {source.name}: [identity] public_key is the\n"
        "# institution's own key, [data_use] allowed_features the federation schema's model columns.\n"
    )
    return (header + tomli_w.dumps(data)).encode("utf-8")


def node_config_toml(institution: Institution, files: InstitutionFiles) -> bytes:
    """The SuperNode's node config (absolute paths), read by ``client/node.py``."""
    entries = {
        "institution-id": institution.id,
        "site-dir": str(files.root),
        "data-dir": str(institution.data_dir),
        "policy-file": str(files.policy) if institution.policy else "",
        "signing-key": str(files.audit_key),
    }
    lines = ["# Node config of this institution's SuperNode; written by fedfraud provision.\n"]
    for key, value in entries.items():
        lines.append(f"{key} = {json.dumps(value)}\n")
    return "".join(lines).encode("utf-8")


# ---------------------------------------------------------------------------
# Provisioning
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """One file written, with the fingerprint of its public key if it holds one."""

    path: Path
    what: str
    fingerprint: str = ""


def planned_files(
    federation: Federation, layout: Layout, only: str | None, registrations: Path | None = None
) -> list[Path]:
    """Every file ``provision`` would write (for the overwrite check)."""
    paths: list[Path] = []
    if only is None:
        paths += [
            layout.ca_cert,
            layout.ca_key,
            layout.server_cert,
            layout.server_key,
            layout.superlink_ca,
            layout.server_audit_key,
            layout.server_audit_pub,
        ]
    for inst in federation.institutions:
        if only is not None and inst.id != only:
            continue
        files = layout.institution(inst.id)
        if registrations is None:
            paths += [files.auth_key, files.auth_pub, files.audit_key, files.audit_pub]
        paths += [files.node_config, files.ca_cert, files.server_audit_pub]
        if inst.policy is not None:
            paths += [files.policy, layout.server_policy(inst.id)]
        if federation.schema is not None:
            from fraud.datasets import server_schema_file

            paths += [files.schema, server_schema_file(layout.server_dir, inst.id)]
    return paths


def provision(
    federation: Federation,
    out: Path,
    force: bool = False,
    only: str | None = None,
    registrations: Path | None = None,
) -> list[Written]:
    """Write the federation's CA, certificates and keys under ``out``.

    With ``only`` set, just that institution's keys (and policy, node config)
    are made again: the key-rotation path. Nothing is written if any target
    exists and ``force`` is false.

    With ``registrations`` (the production path), no institution key is made
    here: each institution made its own keys with ``provision institution``
    and sent ``<registrations>/<id>.json`` (public keys only), which is
    imported. The operator's folder then holds no institution private key.

    Raises
    ------
    ConfigError
        If files exist without ``force``, or ``only`` names no institution.
    """
    layout = Layout(out.resolve())
    if only is not None and only not in federation.names:
        raise ConfigError(f"--only {only!r} is not an institution of {federation.source}")
    # 1. Refuse before generating anything if a key would be replaced.
    existing = [
        p for p in planned_files(federation, layout, only, registrations) if p.exists() or p.is_symlink()
    ]
    if existing and not force:
        listed = "\n".join(f"  {p}" for p in existing)
        raise ConfigError(
            f"refusing to overwrite {len(existing)} existing file(s); pass --force to "
            f"replace them (old keys stop working):\n{listed}"
        )
    for inst in federation.institutions:
        if inst.policy is not None and (only is None or inst.id == only):
            if not inst.policy.is_file():
                raise InputError(f"{federation.source}: policy of {inst.id!r} not found: {inst.policy}")
    schema_columns = _schema_columns(federation)
    written: list[Written] = []
    pem = serialization.Encoding.PEM

    # 2. The CA and the SuperLink's TLS certificate.
    if only is None:
        ca_key, ca_cert = make_ca(federation.id)
        ca_pem = ca_cert.public_bytes(pem)
        write_file(layout.ca_key, _private_pem(ca_key), PRIVATE_MODE, force)
        write_file(layout.ca_cert, ca_pem, PUBLIC_MODE, force)
        written.append(Written(layout.ca_cert, "CA certificate", cert_fingerprint(ca_cert)))
        written.append(Written(layout.ca_key, "CA private key (keep offline)"))
        server_key, server_cert = make_server_cert(
            federation.superlink_host, federation.id, ca_key, ca_cert
        )
        del ca_key
        write_file(layout.server_key, _private_pem(server_key), PRIVATE_MODE, force)
        write_file(layout.server_cert, server_cert.public_bytes(pem), PUBLIC_MODE, force)
        write_file(layout.superlink_ca, ca_pem, PUBLIC_MODE, force)
        written.append(
            Written(layout.server_cert, "SuperLink TLS certificate", cert_fingerprint(server_cert))
        )
        written.append(Written(layout.server_key, "SuperLink TLS private key"))
        # 3. The server's audit key.
        audit = Ed25519PrivateKey.generate()
        write_file(layout.server_audit_key, _private_pem(audit), PRIVATE_MODE, force)
        write_file(layout.server_audit_pub, _public_pem(audit), PUBLIC_MODE, force)
        written.append(Written(layout.server_audit_pub, "server audit key", ed25519_fingerprint(audit)))
    elif not (layout.ca_cert.is_file() and layout.server_audit_pub.is_file()):
        raise InputError(f"{layout.root}: no CA or server audit key to re-key against; run init first")
    ca_pem = layout.ca_cert.read_bytes()
    server_pub = layout.server_audit_pub.read_bytes()

    # 4. Each institution's SuperNode auth key, audit key, policy, node config.
    for inst in federation.institutions:
        if only is not None and inst.id != only:
            continue
        files = layout.institution(inst.id)
        if registrations is not None:
            # The institution's own keys: public halves from its registration.
            registered = load_registration(registrations / f"{inst.id}.json", federation, inst.id)
            auth_public = registered.auth_public
            if registered.auth_public != _read_if(files.auth_pub):
                write_file(files.auth_pub, auth_public, PUBLIC_MODE, True)
            signing_public = registered.signing_public
            if _public_pem(signing_public) != _read_if(files.audit_pub):
                write_file(files.audit_pub, _public_pem(signing_public), PUBLIC_MODE, True)
            written.append(
                Written(files.auth_pub, f"{inst.id} SuperNode auth key (its own)", ssh_fingerprint(auth_public))
            )
            written.append(
                Written(files.audit_pub, f"{inst.id} audit key (its own)", ed25519_fingerprint(signing_public))
            )
        else:
            auth_private, auth_public = make_supernode_auth_key()
            write_file(files.auth_key, auth_private, PRIVATE_MODE, force)
            write_file(files.auth_pub, auth_public, PUBLIC_MODE, force)
            del auth_private
            written.append(
                Written(files.auth_pub, f"{inst.id} SuperNode auth key", ssh_fingerprint(auth_public))
            )
            signing_key = Ed25519PrivateKey.generate()
            write_file(files.audit_key, _private_pem(signing_key), PRIVATE_MODE, force)
            write_file(files.audit_pub, _public_pem(signing_key), PUBLIC_MODE, force)
            signing_public = signing_key.public_key()
            written.append(
                Written(files.audit_pub, f"{inst.id} audit key", ed25519_fingerprint(signing_key))
            )
        write_file(files.ca_cert, ca_pem, PUBLIC_MODE, force)
        write_file(files.server_audit_pub, server_pub, PUBLIC_MODE, force)
        files.audit_dir.mkdir(mode=0o700, exist_ok=True)
        if inst.policy is not None:
            policy = policy_with_key(inst.policy, inst.id, ed25519_b64(signing_public))
            if schema_columns is not None:
                policy = policy_with_columns(policy, inst.policy, schema_columns)
            write_file(files.policy, policy, PUBLIC_MODE, force)
            write_file(layout.server_policy(inst.id), policy, PUBLIC_MODE, force)
            written.append(Written(files.policy, f"{inst.id} policy (with its public key)"))
        if federation.schema is not None:
            from fraud.datasets import server_schema_file

            schema_bytes = federation.schema.read_bytes()
            write_file(files.schema, schema_bytes, PUBLIC_MODE, force)
            write_file(server_schema_file(layout.server_dir, inst.id), schema_bytes, PUBLIC_MODE, force)
            written.append(Written(files.schema, f"{inst.id} schema (and the server's copy)"))
        write_file(files.node_config, node_config_toml(inst, files), PUBLIC_MODE, force)
        written.append(Written(files.node_config, f"{inst.id} node config"))

    # 5. Every institution pins its partners' public keys (from the keys on disk).
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from fedfraud.sites import pin_partner_keys

    pin_partner_keys(
        {inst.id: layout.institution(inst.id).root for inst in federation.institutions},
        {
            inst.id: load_pem_public_key(layout.institution(inst.id).audit_pub.read_bytes())
            for inst in federation.institutions
        },
    )

    # 6. Public summaries (always rewritten from the public keys on disk).
    _write_summaries(federation, layout)
    written.append(Written(layout.trusted_keys, "trusted institution keys"))
    written.append(Written(layout.manifest, "federation manifest"))
    return written


REGISTRATION_VERSION = "fedfraud-registration/1"


@dataclass(frozen=True)
class Registration:
    """An institution's public keys, as it sent them to the operator."""

    institution: str
    auth_public: bytes
    signing_public: Ed25519PublicKey


def provision_institution(
    federation: Federation, institution_id: str, out: Path, force: bool = False
) -> list[Written]:
    """The institution's side: make its own keys in ``out`` and a registration file.

    Run by the institution on its own machine. The SuperNode auth key and the
    Ed25519 signing key are created here (private halves 0600, never sent);
    ``registration.json`` holds the public halves only, for the operator's
    ``provision init --registrations``. Rotation is the same call with ``force``.

    Raises
    ------
    ConfigError
        If ``institution_id`` is not in the federation, or keys exist without ``force``.
    """
    if institution_id not in federation.names:
        raise ConfigError(f"{institution_id!r} is not an institution of {federation.source}")
    files = InstitutionFiles(out.resolve())
    targets = [files.auth_key, files.auth_pub, files.audit_key, files.audit_pub, files.registration]
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing and not force:
        listed = "\n".join(f"  {p}" for p in existing)
        raise ConfigError(f"refusing to overwrite {len(existing)} existing file(s); pass --force:\n{listed}")
    auth_private, auth_public = make_supernode_auth_key()
    write_file(files.auth_key, auth_private, PRIVATE_MODE, force)
    write_file(files.auth_pub, auth_public, PUBLIC_MODE, force)
    del auth_private
    signing = Ed25519PrivateKey.generate()
    write_file(files.audit_key, _private_pem(signing), PRIVATE_MODE, force)
    write_file(files.audit_pub, _public_pem(signing), PUBLIC_MODE, force)
    files.audit_dir.mkdir(mode=0o700, exist_ok=True)
    registration = {
        "version": REGISTRATION_VERSION,
        "federation": federation.id,
        "institution": institution_id,
        "supernode_auth_public_key": auth_public.decode("ascii").strip(),
        "signing_public_key": ed25519_b64(signing),
    }
    write_file(
        files.registration,
        (json.dumps(registration, indent=2, sort_keys=True) + "\n").encode("utf-8"),
        PUBLIC_MODE,
        force,
    )
    return [
        Written(files.auth_pub, f"{institution_id} SuperNode auth key", ssh_fingerprint(auth_public)),
        Written(files.audit_pub, f"{institution_id} audit key", ed25519_fingerprint(signing)),
        Written(files.registration, "registration (public keys: send it to the operator)"),
    ]


def load_registration(path: Path, federation: Federation, institution_id: str) -> Registration:
    """Read and check one institution's registration file (public keys only).

    Raises
    ------
    InputError
        If the file is missing, malformed, of another federation or
        institution, or holds anything private.
    """
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise InputError(f"{path}: cannot read registration of {institution_id!r} ({exc.strerror})") from exc
    except ValueError as exc:
        raise InputError(f"{path}: registration is not valid JSON ({exc})") from exc
    if "PRIVATE" in text:
        raise InputError(f"{path}: a registration must hold public keys only; refusing it")
    expected = {"version", "federation", "institution", "supernode_auth_public_key", "signing_public_key"}
    if not isinstance(data, dict) or set(data) != expected:
        raise InputError(f"{path}: registration must have exactly the fields {sorted(expected)}")
    if data["version"] != REGISTRATION_VERSION:
        raise InputError(f"{path}: unknown registration version {data['version']!r}")
    if data["federation"] != federation.id or data["institution"] != institution_id:
        raise InputError(
            f"{path}: registration of {data['institution']!r} in {data['federation']!r}, "
            f"expected {institution_id!r} in {federation.id!r}"
        )
    auth = str(data["supernode_auth_public_key"]).encode("ascii")
    try:
        loaded = serialization.load_ssh_public_key(auth)
        raw = base64.b64decode(str(data["signing_public_key"]), validate=True)
        signing = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: a public key in the registration is malformed ({exc})") from exc
    if not isinstance(loaded, ec.EllipticCurvePublicKey) or loaded.curve.name != SUPERNODE_AUTH_CURVE.name:
        raise InputError(f"{path}: the SuperNode key must be EC {SUPERNODE_AUTH_CURVE.name} (Flower's form)")
    return Registration(institution_id, auth + b"\n", signing)


def _read_if(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _write_summaries(federation: Federation, layout: Layout) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    trusted: dict[str, str] = {}
    institutions: dict[str, Any] = {}
    for inst in federation.institutions:
        files = layout.institution(inst.id)
        key = serialization.load_pem_public_key(files.audit_pub.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise InputError(f"{files.audit_pub}: not an Ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        trusted[inst.id] = base64.b64encode(raw).decode("ascii")
        institutions[inst.id] = {
            "data_dir": str(inst.data_dir),
            "supernode_auth_public_key": str(files.auth_pub),
            "supernode_auth_fingerprint": ssh_fingerprint(files.auth_pub.read_bytes()),
            "audit_public_key": str(files.audit_pub),
            "audit_fingerprint": "ed25519:" + hashlib.sha256(raw).hexdigest(),
            "policy": str(files.policy) if inst.policy else None,
            "node_config": str(files.node_config),
        }
    manifest = {
        "layout_version": LAYOUT_VERSION,
        "federation": federation.id,
        "source": str(federation.source),
        "superlink": f"{federation.superlink_host}:{federation.superlink_port}",
        "schema": str(federation.schema) if federation.schema else None,
        "institutions": institutions,
    }
    for path, payload in ((layout.trusted_keys, trusted), (layout.manifest, manifest)):
        write_file(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode(), PUBLIC_MODE, True)


def _print_written(written: Iterable[Written]) -> None:
    for item in written:
        tail = f"  {item.fingerprint}" if item.fingerprint else ""
        console.print(f"  {item.what:<38} {item.path}{tail}")


@app.command("init")
def init_command(
    federation_file: Annotated[Path, typer.Argument(help="The federation TOML file.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for keys and certificates.")] = Path("keys"),
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing keys (the old ones stop working).")
    ] = False,
    only: Annotated[
        str | None,
        typer.Option("--only", help="Re-key only this institution (key rotation; needs --force)."),
    ] = None,
    registrations: Annotated[
        Path | None,
        typer.Option(
            "--registrations",
            help="Folder of <institution>.json files from 'provision institution': import each "
            "institution's own public keys instead of making its keys here (production).",
        ),
    ] = None,
) -> None:
    """Create the CA, the SuperLink's TLS certificate and the federation's keys.

    With --registrations no institution key is made here: each institution made
    its own with 'fedfraud provision institution' and sent its public keys.
    """
    federation = load_federation(federation_file)
    written = provision(federation, out, force=force, only=only, registrations=registrations)
    console.print(
        f"fedfraud provision: federation {federation.id!r}, "
        f"{len(federation.institutions)} institutions, SuperLink "
        f"{federation.superlink_host}:{federation.superlink_port}"
    )
    _print_written(written)
    console.print(
        "Private keys are mode 0600 and were not printed. Register each SuperNode's "
        "public key at the SuperLink with `flwr supernode register <supernode-auth.pub>`."
    )


@app.command("institution")
def institution_command(
    federation_file: Annotated[Path, typer.Argument(help="The federation TOML file.")],
    institution_id: Annotated[str, typer.Argument(help="This institution's id in the federation file.")],
    out: Annotated[Path, typer.Option("--out", help="This institution's site folder.")],
    force: Annotated[bool, typer.Option("--force", help="Replace existing keys (rotation).")] = False,
) -> None:
    """Run at the institution: make its own SuperNode and signing keys, and a registration file.

    The private keys stay in --out (mode 0600). Send only registration.json to
    the operator, who imports it with 'provision init --registrations'.
    """
    federation = load_federation(federation_file)
    written = provision_institution(federation, institution_id, out, force=force)
    console.print(
        f"[bold]fedfraud provision institution[/bold]: {escape(institution_id)} in {escape(repr(federation.id))}",
        markup=True,
    )
    _print_written(written)
    console.print("Private keys are mode 0600 and stay here. Send the operator registration.json only.")


@app.command("show")
def show_command(
    out: Annotated[Path, typer.Argument(help="A folder written by 'provision init'.")] = Path("keys"),
) -> None:
    """Print what a provisioned folder holds (public fingerprints only)."""
    layout = Layout(out.resolve())
    if not layout.manifest.is_file():
        raise InputError(f"{layout.manifest} not found; run 'fedfraud provision init' first")
    manifest = json.loads(layout.manifest.read_text(encoding="utf-8"))
    cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    console.print(f"federation {manifest['federation']}  SuperLink {manifest['superlink']}")
    console.print(f"  CA certificate {layout.ca_cert}  {cert_fingerprint(cert)}")
    for name, info in manifest["institutions"].items():
        console.print(
            f"  {name}: SuperNode auth {info['supernode_auth_fingerprint']}  "
            f"audit {info['audit_fingerprint']}"
        )


def main() -> None:
    """Entry point for ``python -m fedfraud.provision`` (the same as ``fedfraud provision``)."""
    from fedfraud.exits import run_app

    run_app(app)


if __name__ == "__main__":
    main()
