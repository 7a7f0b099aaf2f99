"""``fedfraud audit``: verify, show and report on audit logs.

Mount with ``root_app.add_typer(audit.cli.app, name="audit")``.

Exit codes of ``verify`` and ``report`` (the verdict's code)::

    0   VALID            authentic, complete, policies kept
    10  TAMPERED         modified, deleted, inserted, reordered, forged, spliced, torn, truncated
    11  INCOMPLETE       truncation cannot be ruled out (no late enough institution witness)
    12  POLICY_VIOLATED  authentic, but an institution's policy was broken
    13  EQUIVOCATION     the server signed two conflicting checkpoints
    3   unreadable input (log, key or policy file)
    2   usage error (bad options)

``verify`` and ``report`` check every record's signature by default, in one
worker process per CPU for large logs; ``--fast`` authenticates the log through
its hash chain, anchored by the last record's signature, and falls back to
checking every record's signature when anything looks wrong (see
:mod:`audit.verify`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.errors import InputError

from .canonical import CanonicalEncodingError, strict_loads
from .errors import AuditInputError, AuditUsageError, KeyFileError
from .keys import load_public_key, public_key_bytes, public_key_from_b64
from .report import build_compliance_report, render_html, render_markdown
from .report_render import format_number, visible
from .summary import summarize_log, summarize_log_data
from .verify import (
    VerificationReport,
    Verdict,
    read_regular_file,
    verify_log,
    verify_log_data,
)

__all__ = ["app", "load_trusted_keys", "load_policy_file"]

_EXIT_HELP = (
    "Exit codes: 0 VALID; 10 TAMPERED; 11 INCOMPLETE (truncation cannot be ruled out); "
    "12 POLICY_VIOLATED; 13 EQUIVOCATION; 3 unreadable input; 2 usage error."
)

_FULL_HELP = (
    "--full (default) checks every record's own signature; on a log of 2,000 lines or more the Ed25519 "
    "checks run in one worker process per CPU while the main process does the rest (the report is the same). "
    "--fast lets the last record's signature anchor the hash chain and so authenticate every record (every "
    "receipt and countersignature is still verified, and any problem triggers the full check to pinpoint it), "
    "but is blind to a damaged signature on an otherwise intact record. Measured on a 100,000-record log on "
    "2 cores shared with another job (bench/bench_audit.py and this command, medians): full about 10,000-10,500 "
    "records/s while it has both cores, about 6,500 while the other job holds one (in one process: 6,500-6,900); "
    "--fast about 14,000 records/s, 1.4x to 2x faster than full."
)

app = typer.Typer(
    name="audit",
    help="Verify, inspect and report on signed audit logs of federated runs. " + _EXIT_HELP,
    no_args_is_help=True,
    add_completion=False,
)


def load_trusted_keys(path: Path) -> dict[str, bytes]:
    """Read ``{institution_id: base64 Ed25519 public key}`` from a JSON file.

    Raises
    ------
    AuditInputError
        If the file cannot be read or a key is malformed.
    """
    try:
        data = strict_loads(path.read_bytes())
    except OSError as exc:
        raise AuditInputError(f"{path}: cannot read key file ({exc.strerror})") from exc
    except CanonicalEncodingError as exc:
        raise AuditInputError(f"{path}: not a JSON object: {exc}") from exc
    keys: dict[str, bytes] = {}
    for inst, value in data.items():
        if not isinstance(value, str):
            raise AuditInputError(f"{path}: key of {inst!r} must be a base64 string")
        try:
            keys[inst] = public_key_bytes(public_key_from_b64(value))
        except KeyFileError as exc:
            raise AuditInputError(f"{path}: key of {inst!r}: {exc}") from exc
    return keys


def load_policy_file(path: Path) -> tuple[str, bytes, dict[str, Any]]:
    """Load a policy with the product's one strict loader; return what the verifier needs.

    The file goes through :func:`policy.load_policy` (the loader the
    institutions and the server use): a policy that ``fedfraud policy check``
    rejects is refused here too (exit 3), never half-read.

    Returns
    -------
    (institution id, raw public key, {"protection", "outputs", "audit", "policy_hash"})

    Raises
    ------
    AuditInputError
        If the file is not a regular file, cannot be read or is not a valid policy.
    """
    from core.errors import FedFraudError
    from policy import load_policy

    read_regular_file(path, "policy file", limit=1 << 20)
    try:
        loaded = load_policy(path)
    except FedFraudError as exc:
        raise AuditInputError(f"{path}: not a valid policy: {exc}") from exc
    try:
        raw = public_key_bytes(public_key_from_b64(loaded.identity.public_key))
    except KeyFileError as exc:
        raise AuditInputError(f"{path}: identity.public_key: {exc}") from exc
    protection = loaded.protection
    tables: dict[str, Any] = {
        "protection": {
            "required_aggregation": protection.required_aggregation.value,
            "min_cohort_size": protection.min_cohort_size,
            "max_rounds": protection.max_rounds,
        },
        "outputs": {
            "allowed_metrics": [str(m) for m in loaded.outputs.allowed_metrics],
            "model_recipients": [str(r) for r in loaded.outputs.model_recipients],
        },
        "audit": loaded.audit.model_dump(mode="json"),
        "policy_hash": loaded.policy_hash,
        "version": loaded.identity.version,
    }
    return loaded.institution_id, raw, tables


def _load_inputs(
    server_key: Path, keys: Optional[Path], policy: Optional[list[Path]]
) -> tuple[bytes, dict[str, bytes], dict[str, dict[str, Any]] | None]:
    if keys is None and not policy:
        raise typer.BadParameter("give --keys FILE or at least one --policy FILE (trusted institution keys)")
    try:
        server = public_key_bytes(load_public_key(server_key))
    except KeyFileError as exc:
        raise AuditInputError(str(exc)) from exc
    trusted: dict[str, bytes] = load_trusted_keys(keys) if keys else {}
    policies: dict[str, dict[str, Any]] | None = None
    for file in policy or []:
        inst, raw, tables = load_policy_file(file)
        if inst in trusted and trusted[inst] != raw:
            raise AuditInputError(f"{file}: key of {inst!r} differs from the one in --keys")
        trusted[inst] = raw
        policies = policies or {}
        policies[inst] = tables
    return server, trusted, policies


def _safe(value: object) -> str:
    """Text from a log, a policy or an error for a rich markup string.

    Such text can hold rich markup (``[/x]`` would even abort printing),
    terminal escape sequences and bidirectional overrides: all are shown as
    the characters they are made of.
    """
    return escape(visible(str(value)))


def _print_report(console: Console, report: VerificationReport) -> None:
    for check in report.checks:
        mark = "[green]ok  [/green]" if check.ok else "[red]FAIL[/red]"
        where = check.location()
        loc = f" ({where})" if where and not check.ok else ""
        console.print(f"{mark} {_safe(check.step):<6} {_safe(check.name)}: {_safe(check.message)}{loc}",
                      highlight=False, markup=True)
        if not check.ok and (check.expected or check.found):
            console.print(f"       expected: {_safe(check.expected)}\n       found:    {_safe(check.found)}", highlight=False)
    for item in report.evidence:
        console.print("[bold]Evidence of equivocation[/bold]:", escape(json.dumps(item, indent=2)), highlight=False)
    color = "green" if report.verdict is Verdict.VALID else "red"
    console.print(
        f"[bold {color}]Verdict: {report.verdict.value}[/bold {color}] (exit {report.exit_code}) - "
        f"{report.verdict.description}"
    )


def _console(stderr: bool = False) -> Console:
    """A console that never wraps (paths and commands stay whole for copy-paste)."""
    return Console(stderr=stderr, emoji=False, soft_wrap=True)


def _exit_for_usage_error(exc: AuditUsageError) -> typer.Exit:
    _console(stderr=True).print(f"[red]usage error:[/red] {_safe(exc)}", highlight=False)
    return typer.Exit(AuditUsageError.exit_code)


def _exit_for_input_error(exc: InputError) -> typer.Exit:
    _console(stderr=True).print(f"[red]error:[/red] {_safe(exc)}", highlight=False)
    return typer.Exit(exc.exit_code)


@app.command("verify", help="Verify LOG against trusted keys; print every check and one verdict. " + _EXIT_HELP)
def verify_command(
    log: Annotated[Path, typer.Argument(help="The server's JSONL audit log.")],
    server_key: Annotated[Path, typer.Option("--server-key", help="Trusted server public key (PEM or base64).")],
    keys: Annotated[Optional[Path], typer.Option("--keys", help="JSON file {institution_id: base64 public key}.")] = None,
    policy: Annotated[Optional[list[Path]], typer.Option("--policy", help="Institution policy TOML (repeatable); gives trusted key and limits.")] = None,
    institution_log: Annotated[Optional[list[Path]], typer.Option("--institution-log", help="An institution's local witness log (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    full: Annotated[bool, typer.Option("--full/--fast", help=_FULL_HELP)] = True,
) -> None:
    try:
        server, trusted, policies = _load_inputs(server_key, keys, policy)
        report = verify_log(log, trusted, server, institution_log or [], policies, full=full)
    except InputError as exc:
        raise _exit_for_input_error(exc) from None
    except AuditUsageError as exc:
        raise _exit_for_usage_error(exc) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        _print_report(_console(), report)
    raise typer.Exit(report.exit_code)


@app.command("show", help="Show LOG round by round (not a verification; use 'verify').")
def show_command(log: Annotated[Path, typer.Argument(help="The server's JSONL audit log.")]) -> None:
    try:
        summary = summarize_log(log)
    except InputError as exc:
        raise _exit_for_input_error(exc) from None
    console = _console()
    if summary.genesis:
        g = summary.genesis
        agg = g.get("aggregation")
        console.print(
            f"run [bold]{_safe(g.get('run_id'))}[/bold] of federation {_safe(g.get('federation_id'))}, "
            f"aggregation {_safe(agg.get('mode') if isinstance(agg, dict) else None)}, "
            f"code {_safe(g.get('code_version'))}",
            highlight=False,
        )
    table = Table(title=f"{_safe(log)} (unverified view)")
    for column in ("round", "cohort", "refusals", "dropouts", "survivors", "model hash", "metrics"):
        table.add_column(column)
    for r in summary.rounds:
        table.add_row(*(_safe(cell) for cell in (
            r.round, ", ".join(r.cohort), "; ".join(r.refusals) or "-", "; ".join(r.dropouts) or "-",
            ", ".join(r.survivors), (r.model_hash[:16] + "…") if r.model_hash else "-",
            ", ".join(f"{k}={format_number(v)}" for k, v in sorted(r.metrics.items())) or "-",
        )))
    console.print(table)
    if summary.undecodable_lines:
        console.print(f"[red]{len(summary.undecodable_lines)} line(s) do not decode: {summary.undecodable_lines}[/red]")
    state = "closed" if summary.run_closed else "NOT closed"
    console.print(f"{len(summary.records)} records, {summary.checkpoints} checkpoints, {summary.witnesses} witnesses; run {state}.")


_REPORT_HELP = (
    "Verify LOG and write a compliance report a compliance officer or model-risk reviewer can hand on: "
    "the verdict in words, the run's identity (federation, run, signer and institution key fingerprints), "
    "which records the institutions witnessed and which they did not, the GDPR Art. 30 and EU AI Act "
    "Art. 12 entries, every round with its released metrics (4 significant digits) and every check with "
    "its result. Text taken from the log or the policies is escaped (control and bidirectional characters "
    "shown as \\uXXXX). The report exits with the verdict's code. "
)


@app.command("report", help=_REPORT_HELP + _EXIT_HELP)
def report_command(
    log: Annotated[Path, typer.Argument(help="The server's JSONL audit log.")],
    server_key: Annotated[Path, typer.Option("--server-key", help="Trusted server public key (PEM or base64).")],
    keys: Annotated[Optional[Path], typer.Option("--keys", help="JSON file {institution_id: base64 public key}.")] = None,
    policy: Annotated[Optional[list[Path]], typer.Option("--policy", help="Institution policy TOML (repeatable).")] = None,
    institution_log: Annotated[Optional[list[Path]], typer.Option("--institution-log", help="An institution's witness log (repeatable).")] = None,
    fmt: Annotated[str, typer.Option("--format", help=(
        "md: Markdown (GFM tables); html: one self-contained, printable page with no scripts or outside "
        "resources; pdf: that page printed by headless Chromium (needs --out, and Chromium installed: "
        "Debian/Ubuntu 'apt-get install chromium', or FEDFRAUD_CHROMIUM=/path/to/chromium); shortened "
        "hashes print in full."))] = "md",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write here instead of stdout (written whole or not at all).")] = None,
    full: Annotated[bool, typer.Option("--full/--fast", help=_FULL_HELP)] = True,
) -> None:
    if fmt not in ("md", "html", "pdf"):
        raise typer.BadParameter("--format must be md, html or pdf")
    if fmt == "pdf":
        if out is None:
            raise typer.BadParameter("--format pdf needs --out FILE.pdf")
        from core.errors import ConfigError
        from audit.pdf import find_chromium

        try:
            find_chromium()  # before the verification, so a missing browser costs nothing
        except ConfigError as exc:
            raise _exit_for_usage_error(AuditUsageError(str(exc))) from None
    try:
        server, trusted, policies = _load_inputs(server_key, keys, policy)
        # The log is read once: the verification and the report see the same bytes.
        data = read_regular_file(log, "log")
        report = verify_log_data(log, data, trusted, server, institution_log or [], policies, full=full)
        summary = summarize_log_data(log, data)
    except InputError as exc:
        raise _exit_for_input_error(exc) from None
    except AuditUsageError as exc:
        raise _exit_for_usage_error(exc) from None
    inputs = [("trusted server key", str(server_key))]
    inputs += [("trusted institution keys", str(keys))] if keys else []
    inputs += [("policy file", str(p)) for p in policy or []]
    inputs += [("institution witness log", str(p)) for p in institution_log or []]
    facts = build_compliance_report(summary, report, policies, inputs)
    text = render_markdown(facts) if fmt == "md" else render_html(facts)
    if out is None:
        typer.echo(text, nl=False)
    else:
        try:
            _write_report(out, text, pdf=fmt == "pdf")
        except OSError as exc:
            raise _exit_for_input_error(InputError(f"{out}: cannot write ({exc.strerror})")) from None
        typer.echo(f"report written to {out}; verdict {report.verdict.value}")
    raise typer.Exit(report.exit_code)


def _write_report(out: Path, text: str, pdf: bool) -> None:
    """Write the report to ``out`` whole or not at all; ``pdf``: ``text`` is HTML to print."""
    import os
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".html")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if pdf:
            from core.errors import ConfigError
            from audit.pdf import html_to_pdf

            try:
                html_to_pdf(tmp, out)
            except ConfigError as exc:
                raise _exit_for_usage_error(AuditUsageError(str(exc))) from None
        else:
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
