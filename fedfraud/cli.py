"""The ``fedfraud`` command: the product's one front door.

``fedfraud demo`` generates the demo institutions' data if absent and trains
them together on Flower's simulation engine with SecAgg+. Later subcommands
(``policy``, ``audit``) hang off the same app.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.errors import ConfigError, FedFraudError
from fedfraud.progress import METRIC_COLUMNS, RoundProgress, final_table, fmt, parse_overrides
from core.layout import TRAIN_FILE, DataLayout, RunLayout

app = typer.Typer(
    name="fedfraud",
    help="Federated fraud detection with secure aggregation, on Flower.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Help read through a pipe (or a file) is laid out 120 columns wide: at
# Typer's default of 80 its option table cuts long words with an ellipsis.
if not sys.stdout.isatty():
    import typer.rich_utils

    if typer.rich_utils.MAX_WIDTH is None:
        typer.rich_utils.MAX_WIDTH = 120

# soft_wrap: a printed command or path is never broken across lines (it must
# survive copy-paste, also in a pipe or a narrow terminal).
console = Console(highlight=False, soft_wrap=True, emoji=False, markup=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False, markup=False)

@app.command()
def demo(
    rounds: Annotated[int, typer.Option(help="Federated rounds (num-server-rounds).", min=1)] = 10,
    institutions: Annotated[
        str, typer.Option(help="Comma-separated institution names; one simulated SuperNode each.")
    ] = "bank-a,bank-b,insurer-c",
    rows: Annotated[int, typer.Option(help="Transactions generated per institution.", min=500)] = 20000,
    seed: Annotated[int, typer.Option(help="Seed for data generation and training.")] = 42,
    heterogeneity: Annotated[
        str,
        typer.Option(
            help="Built-in data: standard (fraud rates 0.8-2.8 %, overlapping typologies) or high "
            "(rates 0.5-10 %, disjoint typologies, shifted features; try with --set fedprox-mu=0.1)."
        ),
    ] = "standard",
    data_dir: Annotated[
        Path, typer.Option(help="Where institution data is generated (reused if it matches).")
    ] = Path("data/demo"),
    runs_dir: Annotated[Path, typer.Option(help="Parent folder of run directories.")] = Path("runs"),
    parties_dir: Annotated[
        Path,
        typer.Option(
            help="Where the demo keeps each party's own files: sites/<institution>/ "
            "(policy, signing key, local audit logs) and server/ (audit key, policy copies)."
        ),
    ] = Path("demo"),
    validation_rows: Annotated[
        int,
        typer.Option(
            help="Synthetic rows each institution releases (SDV) for the server's "
            "validation set; 0 to skip (the threshold then defaults to 0.5).",
            min=0,
        ),
    ] = 1000,
    compare: Annotated[
        bool,
        typer.Option(
            help="After the run, train local-only, pooled and GBT models the same way "
            "and write <run-dir>/report/report.md with plots, and report.html (one self-contained file to send on)."
        ),
    ] = True,
    byo_csv: Annotated[
        Path | None,
        typer.Option(
            help="Bring your own data: one CSV to split into institutions (by --split-by), "
            "read with --schema instead of the built-in generator."
        ),
    ] = None,
    split_by: Annotated[
        str, typer.Option(help="With --byo-csv: the column whose values are the institutions.")
    ] = "policy_state",
    schema: Annotated[
        Path | None,
        typer.Option(
            help="With --byo-csv or --site: the federation's schema (TOML, see fraud/schemas/; "
            "'fedfraud schema draft' writes one)."
        ),
    ] = None,
    site: Annotated[
        list[str],
        typer.Option(
            "--site",
            help="Bring your own data, one institution per option: NAME=PATH, PATH a folder with "
            "train.csv and test.csv (used as they are) or one CSV (split 70/30 by label). "
            "Read with --schema.",
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="Override any run-config key, e.g. --set local-epochs=3 --set timeout=60.0; "
            "the keys and their defaults are in pyproject.toml (its app config table).",
        ),
    ] = [],  # noqa: B006 - typer needs a literal default
) -> None:
    """Generate demo data if absent and train the institutions together with SecAgg+."""
    from federation.settings import RunSettings
    from server.planning import checked_plan
    from fedfraud.simulation import (
        SimulationRequest,
        default_run_config,
        project_dir,
        require_every_round,
        require_measurements,
        run_simulation,
        simulation_cpus,
    )
    from fraud.generator import Heterogeneity
    from fraud.generator_files import ensure_federation_data

    from core.layout import DemoSites
    from fedfraud.sites import prepare_demo_sites, release_validation_data

    data_root = data_dir.resolve()
    byo_schema = None
    checked_rows: dict[str, int] = {}
    simulation_cpus()  # a bad FEDFRAUD_SIMULATION_CPUS stops here, before any file is written
    if byo_csv is not None and site:
        raise ConfigError("give either --byo-csv (one file split by a column) or --site NAME=PATH, not both")
    if heterogeneity not in {h.value for h in Heterogeneity}:
        known = ", ".join(h.value for h in Heterogeneity)
        raise ConfigError(f"--heterogeneity must be one of {known}, got {heterogeneity!r}")
    if heterogeneity != Heterogeneity.STANDARD and (byo_csv is not None or site):
        raise ConfigError("--heterogeneity shapes the built-in data; it does not apply to --byo-csv or --site")
    if byo_csv is not None or site:
        from fedfraud.sites import place_own_sites, split_byo_demo
        from fraud.byo_schema import load_schema

        if schema is None:
            raise ConfigError(
                f"{'--byo-csv' if byo_csv is not None else '--site'} needs --schema "
                "(e.g. fraud/schemas/insurance_claims.toml, or draft one: fedfraud schema draft CSV)"
            )
        byo_schema = schema.resolve()
        label = load_schema(byo_schema).label
        mapping: dict[str, str] = {}
        started = time.monotonic()
        if byo_csv is not None:
            data_root = (data_dir.parent / f"byo-{byo_csv.stem}").resolve()
            with console.status(f"splitting {byo_csv.name} by {split_by} into institutions..."):
                names = split_byo_demo(byo_csv.resolve(), split_by, label, data_root, seed, mapping=mapping)
        else:
            data_root = (data_dir.parent / "byo-sites").resolve()
            with console.status("placing each institution's own files..."):
                names = place_own_sites(site, label, data_root, seed)
        # Every institution's files, read as the federation will, before any
        # round: a problem stops the demo here, naming file, column and line.
        from fraud.byo_read import check_institution_data

        with console.status(f"checking the files of {', '.join(names)} against the schema..."):
            checked_rows = check_institution_data(
                load_schema(byo_schema),
                {name: list(DataLayout(data_root / name).splits) for name in names},
            )
        console.print(
            f"data of {len(names)} institutions split and checked in {time.monotonic() - started:.1f}s"
        )
        renamed = {value: name for value, name in sorted(mapping.items()) if value != name}
        if renamed:
            console.print(
                f"institution ids for the values of {split_by}: "
                + ", ".join(f"{value!r} -> {name}" for value, name in renamed.items())
            )
    else:
        names = [name.strip() for name in institutions.split(",") if name.strip()]
    sites = DemoSites(parties_dir.resolve())
    run_name = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)
    run_dir = (runs_dir / run_name).resolve()
    config = default_run_config()
    config.update(
        {
            "num-server-rounds": rounds,
            "institutions": ",".join(names),
            "seed": seed,
            "data-dir": str(data_root),
            "sites-dir": str(sites.sites_dir),
            "server-dir": str(sites.server_dir),
            "run-dir": str(run_dir),
            "run-name": run_name,
            "data-format": "byo" if byo_schema is not None else "builtin",
        }
    )
    overrides = parse_overrides(set_)
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise ConfigError(
            f"unknown run-config key(s) {', '.join(unknown)}; the keys are those of "
            "[tool.flwr.app.config] in pyproject.toml"
        )
    config.update(overrides)
    settings = RunSettings.from_run_config(config)  # fail before writing anything
    if not settings.secagg.auto_weight:
        # A fixed max-weight below an institution's training rows would make
        # that institution refuse every round inside Flower: say it here.
        too_large = {
            key.split(": ", 1)[0]: n
            for key, n in checked_rows.items()
            if key.endswith(TRAIN_FILE) and n > settings.secagg.max_weight
        }
        if too_large:
            raise ConfigError(
                f"max-weight {settings.secagg.max_weight:g} is below the training rows of "
                + ", ".join(f"{name} ({n})" for name, n in too_large.items())
                + "; use the default --set max-weight=0 (auto: the federation's row total)"
            )
    prepare_demo_sites(sites.root, names, project_dir() / "policies", byo_schema)
    checked_plan(settings)  # the server checks again; this says it before Flower starts

    mode = {
        "secagg+": "SecAgg+",
        "ckks": "SecAgg+ masks under TenSEAL CKKS (the server never sees the model)",
    }.get(settings.aggregation.value, "UNSAFE plain FedAvg")
    if settings.model.value == "gbdt":
        mode += ", boosted trees from securely summed histograms"
    console.print(f"[bold]fedfraud[/bold] demo: {len(names)} institutions, {rounds} rounds, {escape(mode)}", markup=True)
    if byo_schema is None:
        with console.status("preparing institution data..."):
            manifest = ensure_federation_data(data_root, names, rows, seed, heterogeneity=heterogeneity)
        for name in names:
            info = manifest["institutions"][name]
            console.print(
                f"  {name}: {info['train_rows']} train / {info['test_rows']} test rows, "
                f"fraud rate {100 * info['fraud_rate']:.2f} %"
            )
    else:
        source = (
            f"{byo_csv} split by {split_by} into {', '.join(names)}"
            if byo_csv is not None
            else "each institution's own files: " + ", ".join(site)
        )
        console.print(
            f"  bring-your-own data: {source} (in {data_root}); schema {byo_schema}; numeric "
            "scaling agreed by a secure statistics round"
        )
    if validation_rows:
        with console.status("institutions release SDV synthetic validation samples..."):
            releases = release_validation_data(
                sites, data_root, names, validation_rows, seed,
                schema=load_schema(byo_schema) if byo_schema is not None else None,
            )
        for name, release in releases.items():
            if release.get("released"):
                report = release["report"]
                console.print(
                    f"  {name}: released {report['n_rows']} synthetic rows, quality "
                    f"{report['quality_score']:.2f}, privacy check passed"
                )
            else:
                console.print(f"  {name}: no synthetic release ({release['reason']})")
    console.print(f"run directory: {run_dir}")
    progress = RoundProgress(run_dir, settings.num_rounds)
    run_simulation(
        SimulationRequest(
            project_dir=project_dir(),
            run_dir=run_dir,
            run_config=config,
            num_institutions=len(names),
        ),
        on_poll=progress,
    )
    console.print(final_table(run_dir))
    require_measurements(run_dir)
    summary = json.loads(RunLayout(run_dir).summary.read_text(encoding="utf-8"))
    console.print(
        f"done in {summary['seconds']:.1f}s: {summary['rounds_completed']}/"
        f"{summary['rounds_requested']} rounds aggregated; model at "
        + (
            f"{run_dir / 'model.json'} (boosted trees; {run_dir / 'score_gbdt.py'} scores them with numpy alone)"
            if settings.model.value == "gbdt"
            else f"{run_dir / 'model.pt'}"
            if settings.aggregation.value != "ckks"
            else f"each institution's site folder only ({sites.site(names[0]) / 'state'}/ckks-model-*.npz)"
        )
    )
    if RunLayout(run_dir).model_card_md.exists():
        console.print(
            f"model card: {RunLayout(run_dir).model_card_md}\n"
            f"score new rows: fedfraud score {run_dir} --csv NEW.csv --out scores.csv"
            + (
                # The demo plays every party: the first institution's own copy.
                " --model "
                + str(sites.site_layout(names[0]).newest_ckks_model() or "<site>/state/ckks-model-<run>.npz")
                if settings.aggregation.value == "ckks"
                else ""
            )
        )
    if compare:
        from fedfraud.comparison import write_comparison

        with console.status("training local-only, pooled and GBT reference models..."):
            # In ckks mode the server holds no model: the comparison uses the
            # copy the first institution decrypted (the demo plays every party).
            model = (
                sites.site_layout(names[0]).newest_ckks_model()
                if settings.aggregation.value == "ckks"
                else None
            )
            report = write_comparison(run_dir, model)
        console.print(f"comparison report: {report}")
    console.print(
        f"signed audit log: {RunLayout(run_dir).audit_log} (final checkpoint witnessed by "
        f"{', '.join(summary['final_checkpoint_witnessed_by']) or 'nobody'})\n"
        f"verify it: fedfraud audit verify {RunLayout(run_dir).audit_log} "
        f"--server-key {sites.server.audit_pub} "
        + " ".join(f"--policy {sites.site_layout(n).policy}" for n in names)
        + " "
        + " ".join(
            f"--institution-log {log}"
            for log in (sites.site_layout(n).audit_dir / f"{run_name}.jsonl" for n in names)
            # An institution that never witnessed a checkpoint has no log; the
            # verifier would report the missing file (INCOMPLETE).
            if log.exists()
        )
    )
    # Last: a run that left a round unaggregated or unmeasured is not a success.
    require_every_round(run_dir)


@app.command("status")
def status_command(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="A run directory (default: the newest under --runs-dir)."),
    ] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Parent folder of run directories.")] = Path("runs"),
    server_dir: Annotated[
        Path | None,
        typer.Option("--server-dir", help="The server folder (default: the one the run was started with)."),
    ] = None,
    superlink: Annotated[
        str | None,
        typer.Option(
            "--superlink",
            help="A connection of your flwr configuration: also list the SuperNodes it knows, "
            "named by the institution that proved each node id in the run's audit log.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show a run's state: running, finished or stopped; rounds; last audit checkpoint; SuperNodes.

    Reads only: the run directory, the server folder's run lock and, with
    --superlink, `flwr supernode list`. Exits 0 for a finished or running
    run, 8 for a stopped one (a ServerApp that ended without finishing).
    """
    from fedfraud.status import newest_run, render, run_status

    try:
        target = run_dir if run_dir is not None else newest_run(runs_dir)
        status = run_status(target, server_dir, superlink)
    except FedFraudError as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        console.print(json.dumps(status.to_dict(), indent=2, sort_keys=True))
    else:
        for line in render(status):
            console.print(line)
    if status.state.startswith("stopped"):
        raise typer.Exit(8)


@app.command("compare")
def compare_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished simulated run directory.")],
    pdf: Annotated[
        bool,
        typer.Option(
            "--pdf",
            help="Also print report.html to report/report.pdf with headless Chromium (Debian/Ubuntu: "
            "apt-get install chromium, or FEDFRAUD_CHROMIUM=/path/to/chromium); checked before any training.",
        ),
    ] = False,
) -> None:
    """(Re)write a run's comparison report: federated vs local-only vs pooled vs GBT.

    Writes <run-dir>/report/: report.md with its PNG plots, report.html (one
    self-contained page with the plots embedded, to send on) and, with --pdf,
    report.pdf.
    """
    from fedfraud.comparison import write_comparison

    try:
        if pdf:
            from audit.pdf import find_chromium

            find_chromium()
        with console.status("training local-only, pooled and GBT reference models..."):
            report = write_comparison(run_dir.resolve())
        console.print(f"comparison report: {report}")
        console.print(f"one page to send on: {report.parent / 'report.html'}")
        if pdf:
            from audit.pdf import html_to_pdf

            console.print(f"PDF: {html_to_pdf(report.parent / 'report.html', report.parent / 'report.pdf')}")
    except FedFraudError as exc:
        err_console.print(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None


@app.command("score")
def score_command(
    run_dir: Annotated[
        Path, typer.Argument(help="A finished run directory (runs/<run-id>/, with scoring.json).")
    ],
    csv_path: Annotated[
        Path,
        typer.Option(
            "--csv",
            help="Rows to score, in the run's format (the schema's columns, or the built-in "
            "transaction columns); the label column is optional.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output CSV: identifier (or row), score, flagged (score >= the run's threshold)."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="The model to use instead of the run directory's: required for a ckks run, "
            "where only the institutions hold it (<site>/state/ckks-model-<run>.npz). Its hash "
            "must be the run's final model's.",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Score new rows with a run's final model, encoded exactly as in training.

    Example: fedfraud score runs/<run-id> --csv new.csv --out scores.csv.
    With labels in the file, prints precision, recall, F1, AUC-ROC, AUC-PR and
    false negatives at the run's threshold. Exit 3 names the file (and column,
    and line) of any problem; the output is then not written.
    """
    from fraud.scoring import CHUNK_ROWS, score_csv

    def progress(done: int, total: int) -> None:
        if total > CHUNK_ROWS:
            err_console.print(f"scored {done}/{total} rows")

    report = score_csv(run_dir, csv_path, out, model, on_progress=progress)
    if json_output:
        console.print_json(json.dumps(report.to_dict(), allow_nan=False))
        return
    console.print(
        f"scored {report.rows} rows of {csv_path} with the final model of run {report.run_name} "
        f"({report.model_hash[:16]}...): {report.flagged} flagged at threshold "
        f"{report.threshold:g}\nscores: {report.out}"
    )
    if report.metrics is None:
        console.print("no label column: no metrics")
        return
    table = Table(title=f"At threshold {report.threshold:g} ({report.rows} labelled rows)")
    table.add_column("")
    for _, title, _ in METRIC_COLUMNS:
        table.add_column(title, justify="right")
    # The grid row is how the federation measures (rounds.jsonl, the model
    # card); counts at the threshold are the same, AUCs differ within a bin.
    for name, metrics in (("these scores", report.metrics), ("on the run's score grid", report.grid_metrics)):
        values = {**metrics.to_dict(), "false_negatives": metrics.fn}
        table.add_row(name, *(fmt(_finite_or_none(values[key]), pattern) for key, _, pattern in METRIC_COLUMNS))
    console.print(table)


def _finite_or_none(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("data/demo"),
    institutions: Annotated[str, typer.Option(help="Comma-separated names.")] = "bank-a,bank-b,insurer-c",
    rows: Annotated[int, typer.Option(help="Transactions per institution.", min=500)] = 20000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 42,
    heterogeneity: Annotated[
        str,
        typer.Option(
            help="standard: fraud rates 0.8-2.8 %, overlapping typologies; high: rates 0.5-10 %, "
            "disjoint typologies and shifted features (bench/bench_heterogeneous.py)."
        ),
    ] = "standard",
) -> None:
    """Generate (or reuse) the built-in synthetic institutions' transactions."""
    from fraud.generator_files import ensure_federation_data

    names = [name.strip() for name in institutions.split(",") if name.strip()]
    manifest = ensure_federation_data(out.resolve(), names, rows, seed, heterogeneity=heterogeneity)
    console.print(json.dumps(manifest["institutions"], indent=2))


def _mount_subcommands() -> None:
    """Attach the policy and audit command groups."""
    from audit.cli import app as audit_app
    from fedfraud.code import app as code_app
    from fedfraud.data_check import app as data_app
    from fedfraud.code import supernode_command
    from fedfraud.provision import app as provision_app
    from fedfraud.schema_draft import app as schema_app
    from policy.cli import app as policy_app

    app.add_typer(policy_app, name="policy", help="Check, show and combine policy files.")
    app.add_typer(audit_app, name="audit", help="Verify, show and report audit logs.")
    app.add_typer(
        provision_app,
        name="provision",
        help="Create a production federation's CA, TLS, node-authentication and audit keys.",
    )
    app.add_typer(code_app, name="code", help="Hash and approve the app bundles a SuperNode may run.")
    app.add_typer(data_app, name="data", help="Check data files against a schema before any round.")
    app.add_typer(schema_app, name="schema", help="Draft a commented schema from a CSV file.")
    from fedfraud.party import run_command, superlink_command

    app.command("superlink")(superlink_command)
    app.command("run")(run_command)
    app.command(
        "supernode",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(supernode_command)


_mount_subcommands()


def main() -> None:
    """Entry point: run the app, turning product errors into clean exits (:mod:`fedfraud.exits`)."""
    from fedfraud.exits import run_app

    run_app(app)
