"""What ``fedfraud provision`` writes: a federation's keys, certificates, policies and node configs.

:func:`provision` (``provision init``) writes, under the output folder
(:class:`core.layout.Layout` names every path)::

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
        partners/<id>.pub                    the partner keys it pins
        node-config.toml                     for `flower-supernode --node-config`
        audit/                               its own audit logs (one per run)
    trusted_keys.json                        {institution: base64 Ed25519 public key}
    federation.json                          what was provisioned (public data only)

:func:`provision_institution` (``provision institution``) is the
institution's side: its own keys and a registration file of their public
halves, which ``provision init --registrations`` imports. The keys and
certificates themselves come from :mod:`fedfraud.pki`; an existing key is
never replaced unless ``force`` is given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import ConfigError, FedFraudError, InputError
from core.layout import Layout, SiteLayout
from fedfraud.federation_file import Federation, Institution
from fedfraud.pki import (
    PRIVATE_MODE,
    PUBLIC_MODE,
    SUPERNODE_AUTH_CURVE,
    cert_fingerprint,
    ed25519_b64,
    ed25519_fingerprint,
    make_ca,
    make_server_cert,
    make_supernode_auth_key,
    private_pem,
    public_pem,
    ssh_fingerprint,
    write_file,
)

#: Version of the output layout, recorded in ``federation.json``.
LAYOUT_VERSION = 1


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


def node_config_toml(institution: Institution, files: SiteLayout) -> bytes:
    """The SuperNode's node config (absolute paths), read by ``client/node.py``."""
    entries = {
        "institution-id": institution.id,
        "site-dir": str(files.root),
        "data-dir": str(institution.data_dir),
    }
    lines = ["# Node config of this institution's SuperNode; written by fedfraud provision.\n"]
    for key, value in entries.items():
        lines.append(f"{key} = {json.dumps(value)}\n")
    return "".join(lines).encode("utf-8")


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
            paths += [files.schema, layout.server.schema(inst.id)]
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
        write_file(layout.ca_key, private_pem(ca_key), PRIVATE_MODE, force)
        write_file(layout.ca_cert, ca_pem, PUBLIC_MODE, force)
        written.append(Written(layout.ca_cert, "CA certificate", cert_fingerprint(ca_cert)))
        written.append(Written(layout.ca_key, "CA private key (keep offline)"))
        server_key, server_cert = make_server_cert(
            federation.superlink_host, federation.id, ca_key, ca_cert
        )
        del ca_key
        write_file(layout.server_key, private_pem(server_key), PRIVATE_MODE, force)
        write_file(layout.server_cert, server_cert.public_bytes(pem), PUBLIC_MODE, force)
        write_file(layout.superlink_ca, ca_pem, PUBLIC_MODE, force)
        written.append(
            Written(layout.server_cert, "SuperLink TLS certificate", cert_fingerprint(server_cert))
        )
        written.append(Written(layout.server_key, "SuperLink TLS private key"))
        # 3. The server's audit key.
        audit = Ed25519PrivateKey.generate()
        write_file(layout.server_audit_key, private_pem(audit), PRIVATE_MODE, force)
        write_file(layout.server_audit_pub, public_pem(audit), PUBLIC_MODE, force)
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
            if public_pem(signing_public) != _read_if(files.audit_pub):
                write_file(files.audit_pub, public_pem(signing_public), PUBLIC_MODE, True)
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
            write_file(files.audit_key, private_pem(signing_key), PRIVATE_MODE, force)
            write_file(files.audit_pub, public_pem(signing_key), PUBLIC_MODE, force)
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
            schema_bytes = federation.schema.read_bytes()
            write_file(files.schema, schema_bytes, PUBLIC_MODE, force)
            write_file(layout.server.schema(inst.id), schema_bytes, PUBLIC_MODE, force)
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
    files = SiteLayout(out.resolve())
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
    write_file(files.audit_key, private_pem(signing), PRIVATE_MODE, force)
    write_file(files.audit_pub, public_pem(signing), PUBLIC_MODE, force)
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
