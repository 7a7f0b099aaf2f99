"""``fedfraud provision``: create the CA, TLS certificate and keys of a production federation.

``fedfraud provision init federation.toml --out keys`` reads one federation
file (:mod:`fedfraud.federation_file`) and writes the federation's CA, the
SuperLink's TLS certificate, the server's audit key and every institution's
site folder (:mod:`fedfraud.provisioning` lists them; the keys and
certificates are :mod:`fedfraud.pki`'s). ``provision institution`` is run at
an institution to make its own keys; ``provision show`` prints the public
fingerprints of a provisioned folder.

Private keys are created mode 0600 and never printed; an existing key is never
replaced unless ``--force`` is given.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from rich.console import Console
from rich.markup import escape

from core.errors import InputError
from core.layout import Layout
from fedfraud.federation_file import load_federation
from fedfraud.pki import cert_fingerprint
from fedfraud.provisioning import Written, provision, provision_institution

app = typer.Typer(
    help="Create the CA, TLS certificate and keys of a production federation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True, emoji=False, markup=False)


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
