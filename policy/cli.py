"""``fedfraud policy``: check, show and combine institution policy files.

The product's ``fedfraud`` command mounts :data:`app` as ``fedfraud policy``.
Readable text by default; ``--json`` prints one JSON document for machines.

Exit codes (the table in :mod:`core.errors`): 0 success; 2 a command-line
usage error; 3 a file cannot be read or parsed
(:class:`~core.errors.InputError`); 4 the policies conflict with each other
or with the requested run (:class:`~core.errors.PolicyViolation`); 9 a file is
not a valid policy (:class:`~core.errors.ConfigError`), or two files name the
same institution.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from core.errors import ConfigError, FedFraudError, InputError
from policy.errors import PlanConflict, PolicyFileError
from policy.load import load_policy
from policy.model import AggregationMode, Policy
from policy.plan import RunPlan, RunRequest, combine

__all__ = ["app"]

_EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 2 usage error; 3 unreadable or malformed file; "
    "4 policies conflict with each other or with the run; 9 invalid policy (or duplicate institution)."
)

app = typer.Typer(
    name="policy",
    help=(
        "Check, show and combine institution policy files (TOML, schema version 1).\n\n"
        + _EXIT_CODES_HELP
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FilesArgument = Annotated[
    list[Path],
    typer.Argument(help="Policy files (TOML).", show_default=False, metavar="FILE..."),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead of text.")
]


def _console() -> Console:
    # soft_wrap keeps every message on one line whatever the terminal width;
    # markup and highlighting are off because messages contain "[3]" paths.
    return Console(soft_wrap=True, markup=False, highlight=False, emoji=False)


def _exit(code: int) -> NoReturn:
    # SystemExit, not typer.Exit: the product's entry point runs the app with
    # standalone_mode=False, where click returns an Exit's code instead of
    # exiting with it.
    raise SystemExit(code)


def _error_lines(exc: FedFraudError) -> list[str]:
    if isinstance(exc, PolicyFileError):
        return [f"error: {problem}" for problem in exc.problems]
    return [f"error: {line}" for line in str(exc).splitlines()]


def _load_all(files: list[Path]) -> tuple[list[tuple[Path, Policy]], list[tuple[Path, FedFraudError]]]:
    loaded: list[tuple[Path, Policy]] = []
    failed: list[tuple[Path, FedFraudError]] = []
    for file in files:
        try:
            loaded.append((file, load_policy(file)))
        except (PolicyFileError, InputError) as exc:
            failed.append((file, exc))
    return loaded, failed


def _failure_json(file: Path, exc: FedFraudError) -> dict[str, Any]:
    if isinstance(exc, PolicyFileError):
        problems = [{"field": p.field, "reason": p.reason} for p in exc.problems]
    else:
        problems = [{"field": "<file>", "reason": str(exc)}]
    return {
        "file": str(file),
        "valid": False,
        "exit_code": exc.exit_code,
        "error": type(exc).__name__,
        "problems": problems,
    }


@app.command("check")
def check(files: FilesArgument, as_json: JsonOption = False) -> None:
    """Validate each policy FILE and print every problem found.

    Each problem is printed on its own line as FILE: FIELD: REASON, where FIELD
    is a dotted path such as protection.min_cohort_size. Exits 0 if every file
    is valid, otherwise with the exit code of the first failing file
    (2 invalid policy, 3 unreadable or malformed file).
    """
    console = _console()
    loaded, failed = _load_all(files)
    valid = {file: policy for file, policy in loaded}
    failures = dict(failed)
    if as_json:
        report: list[dict[str, Any]] = []
        for file in files:
            if file in valid:
                policy = valid[file]
                report.append(
                    {
                        "file": str(file),
                        "valid": True,
                        "institution": policy.institution_id,
                        "version": policy.identity.version,
                        "policy_hash": policy.policy_hash,
                    }
                )
            else:
                report.append(_failure_json(file, failures[file]))
        console.print(json.dumps(report, indent=2))
    else:
        for file in files:
            if file in valid:
                policy = valid[file]
                console.print(
                    f"ok: {file}: {policy.institution_id} version {policy.identity.version}, "
                    f"policy hash {policy.policy_hash}"
                )
            else:
                for line in _error_lines(failures[file]):
                    console.print(line)
    if failed:
        _exit(failed[0][1].exit_code)


@app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="Policy file (TOML).", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Print the normalised policy in FILE and its SHA-256 policy hash.

    Lists are shown sorted and datetimes in UTC: this is exactly the content
    the hash covers, so two files with the same hash say the same thing.
    """
    console = _console()
    loaded, failed = _load_all([file])
    if failed:
        for line in _error_lines(failed[0][1]):
            console.print(line)
        _exit(failed[0][1].exit_code)
    policy = loaded[0][1]
    if as_json:
        document = {"policy": policy.canonical_document(), "policy_hash": policy.policy_hash}
        console.print(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False))
        return
    table = Table(title=f"{policy.institution_id} policy (version {policy.identity.version})")
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for section, values in policy.canonical_document().items():
        if not isinstance(values, dict):
            table.add_row(section, _cell(values))
            continue
        for name, value in values.items():
            table.add_row(f"{section}.{name}", _cell(value))
    console.print(table)
    console.print(f"policy hash: {policy.policy_hash}")


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"expected an ISO 8601 date-time, found {value!r}") from None
    if moment.tzinfo is None:
        raise typer.BadParameter("the date-time needs a timezone offset, e.g. 2026-06-01T00:00:00Z")
    return moment


def _default_request(
    plan: RunPlan,
    *,
    purpose: str | None,
    rounds: int | None,
    aggregation: AggregationMode | None,
    threshold: int | None,
    cohort: int | None,
    epochs: int | None,
    features: str | None,
    model: str = "mlp",
) -> RunRequest:
    """Fill every option not given with the plan's own strictest acceptable value."""
    if aggregation is not None:
        mode = aggregation.value
    elif AggregationMode.SECAGG_PLUS in plan.aggregation_modes or not plan.aggregation_modes:
        mode = AggregationMode.SECAGG_PLUS.value
    else:
        mode = plan.aggregation_modes[0].value
    if purpose is None:
        purpose = plan.purposes[0].value if plan.purposes else "FraudPreventionAndDetection"
    chosen = (
        tuple(name.strip() for name in features.split(",") if name.strip())
        if features is not None
        else plan.allowed_features
    )
    return RunRequest(
        purpose=purpose,
        institutions=plan.institutions,
        num_rounds=plan.max_rounds if rounds is None else rounds,
        aggregation=mode,
        secagg_threshold=plan.min_secagg_threshold if threshold is None else threshold,
        cohort_size=len(plan.institutions) if cohort is None else cohort,
        local_epochs=plan.max_local_epochs if epochs is None else epochs,
        features=chosen,
        model=model,
    )


def _plan_document(plan: RunPlan) -> dict[str, Any]:
    return {
        "plan_hash": plan.plan_hash,
        "policies": [
            {"institution": r.institution, "version": r.version, "policy_hash": r.policy_hash}
            for r in plan.contributing
        ],
        "purposes": [p.value for p in plan.purposes],
        "aggregation_modes": [m.value for m in plan.aggregation_modes],
        "min_cohort_size": plan.min_cohort_size,
        "min_secagg_threshold": plan.min_secagg_threshold,
        "min_partners": plan.min_partners,
        "max_rounds": plan.max_rounds,
        "max_local_epochs": plan.max_local_epochs,
        "allowed_features": list(plan.allowed_features),
        "forbidden_features": list(plan.forbidden_features),
        "model_recipients": list(plan.model_recipients),
        "allowed_metrics": [m.value for m in plan.allowed_metrics],
        "min_cell_count": plan.min_cell_count,
        "synthetic_release_allowed": plan.synthetic_release_allowed,
        "retention_days": plan.retention_days,
        "require_countersigned_receipts": plan.require_countersigned_receipts,
        "valid_from": plan.valid_from.isoformat().replace("+00:00", "Z"),
        "valid_until": plan.valid_until.isoformat().replace("+00:00", "Z"),
    }


def _request_document(request: RunRequest) -> dict[str, Any]:
    return {
        "purpose": request.purpose,
        "institutions": list(request.institutions),
        "num_rounds": request.num_rounds,
        "aggregation": request.aggregation,
        "secagg_threshold": request.secagg_threshold,
        "cohort_size": request.cohort_size,
        "local_epochs": request.local_epochs,
        "features": list(request.features),
        "model": request.model,
    }


@app.command("plan")
def plan_command(
    files: FilesArgument,
    rounds: Annotated[
        int | None, typer.Option("--rounds", help="Rounds in the run (default: the plan's max).")
    ] = None,
    aggregation: Annotated[
        AggregationMode | None,
        typer.Option("--aggregation", help="secagg+ or ckks (default: secagg+ if allowed)."),
    ] = None,
    threshold: Annotated[
        int | None,
        typer.Option("--threshold", help="SecAgg+ reconstruction threshold (default: the plan's min)."),
    ] = None,
    cohort: Annotated[
        int | None,
        typer.Option("--cohort", help="Institutions summed per round (default: all of them)."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Local epochs per round (default: the plan's max).")
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option("--purpose", help="DPV purpose of the run (default: the first common one)."),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", help="Comma-separated columns (default: all allowed by the plan)."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="When the run starts, ISO 8601 with offset (default: now)."),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="mlp, or gbdt (boosted trees: every policy's [histograms] must allow summed histograms).",
        ),
    ] = "mlp",
    as_json: JsonOption = False,
) -> None:
    """Combine the policy FILEs into the strictest plan and check a run against it.

    The plan takes the intersection of purposes, aggregation modes, features
    and metrics, the largest of every minimum and the smallest of every
    maximum. The run given by the options (each defaulting to the plan's own
    strictest value) is then checked; every conflict is printed, each naming
    the institution and the rule, and the command exits 4.
    """
    console = _console()
    moment = _parse_at(at)
    loaded, failed = _load_all(files)
    if failed:
        for _, exc in failed:
            for line in _error_lines(exc):
                console.print(line)
        _exit(failed[0][1].exit_code)
    try:
        plan = combine(policy for _, policy in loaded)
    except ConfigError as exc:
        console.print(f"error: {exc}")
        _exit(exc.exit_code)
    request = _default_request(
        plan,
        purpose=purpose,
        rounds=rounds,
        aggregation=aggregation,
        threshold=threshold,
        cohort=cohort,
        epochs=epochs,
        features=features,
        model=model,
    )
    refusal: PlanConflict | None = None
    try:
        plan.check_run(request, now=moment)
    except PlanConflict as exc:
        refusal = exc

    if as_json:
        document = {
            "plan": _plan_document(plan),
            "run": _request_document(request),
            "accepted": refusal is None,
            "conflicts": list(refusal.violations) if refusal is not None else [],
        }
        console.print(json.dumps(document, indent=2))
    else:
        _print_plan(console, plan, request)
        if refusal is None:
            console.print("run accepted by every policy")
        else:
            console.print(f"run refused: {len(refusal.violations)} conflict(s)")
            for violation in refusal.violations:
                console.print(f"conflict: {violation}")
    if refusal is not None:
        _exit(refusal.exit_code)


def _print_plan(console: Console, plan: RunPlan, request: RunRequest) -> None:
    document = _plan_document(plan)
    run = _request_document(request)
    rows = [
        ("data_use.purposes", "purposes", "purpose"),
        ("protection.required_aggregation", "aggregation_modes", "aggregation"),
        ("protection.min_cohort_size", "min_cohort_size", "cohort_size"),
        ("protection.min_secagg_threshold", "min_secagg_threshold", "secagg_threshold"),
        ("data_use.min_partners", "min_partners", None),
        ("protection.max_rounds", "max_rounds", "num_rounds"),
        ("protection.max_local_epochs", "max_local_epochs", "local_epochs"),
        ("data_use.allowed_features", "allowed_features", "features"),
        ("data_use.forbidden_features", "forbidden_features", None),
        ("outputs.model_recipients", "model_recipients", None),
        ("outputs.allowed_metrics", "allowed_metrics", None),
        ("outputs.min_cell_count", "min_cell_count", None),
        ("outputs.synthetic_release_allowed", "synthetic_release_allowed", None),
        ("audit.retention_days", "retention_days", None),
        ("audit.require_countersigned_receipts", "require_countersigned_receipts", None),
        ("identity.valid_from", "valid_from", None),
        ("identity.valid_until", "valid_until", None),
    ]
    width = max(len(rule) for rule, _, _ in rows)
    console.print("combined plan (strictest terms of every policy):")
    for rule, plan_key, run_key in rows:
        line = f"  {rule:<{width}}  plan: {_cell(document[plan_key])}"
        if run_key is not None:
            line += f"  |  run: {_cell(run[run_key])}"
        console.print(line)
    for ref in plan.contributing:
        console.print(f"policy: {ref.institution} version {ref.version} hash {ref.policy_hash}")
    console.print(f"plan hash: {plan.plan_hash}")


def _cell(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "(none)"
    return str(value).lower() if isinstance(value, bool) else str(value)
