"""Render both reports of real runs in headless Chromium, as their readers get them, and check what they show.

For two real simulated federations (the built-in data with the MLP, and the
public insurance claims as bring-your-own data with boosted trees) this

1. runs ``fedfraud demo`` and then ``fedfraud compare RUN --pdf``,
2. runs ``fedfraud audit report`` with the command the demo printed, as HTML
   and as PDF,
3. takes a screenshot of each HTML page in Chromium (for a person to review),
4. reads the text of each PDF, the page as printed, and checks what a reader
   sees: the verdict in words, no Markdown syntax, metrics rounded to 4
   significant digits, the federated model's full hash tying the comparison to
   the audit log, every model of the comparison.

Everything lands in ``--out`` (default ``browser-check/``): ``<run kind>/``
with ``compliance.html``, ``compliance.pdf``, ``compliance.png``,
``comparison.html``, ``comparison.pdf``, ``comparison.png``, and
``summary.txt``. Exit 0 when every check passed, 1 otherwise (each failure is
named), 2 when Chromium or pypdf is missing.

Needs Chromium (Debian/Ubuntu: ``apt-get install chromium``; or
``FEDFRAUD_CHROMIUM=/path``) and ``pypdf`` (``pip install -e '.[browser-check]'``).
Takes about 5 minutes on 2 cores. Usage::

    .venv/bin/python scripts/browser_check.py [--out browser-check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSURANCE = ROOT.parent / "shared" / "data" / "insurance_claims" / "insurance_claims.csv"


@dataclass
class Kind:
    """One run kind whose two reports are rendered and checked."""

    name: str
    demo_args: list[str]
    models: list[str]
    failures: list[str] = field(default_factory=list)


def _kinds() -> list[Kind]:
    return [
        Kind(
            "builtin-mlp",
            ["--rounds", "2", "--rows", "2000", "--validation-rows", "300"],
            ["local:bank-a", "pooled", "pooled-hgb", "federated (secagg+)"],
        ),
        Kind(
            "byo-gbdt",
            ["--byo-csv", str(INSURANCE), "--schema", str(ROOT / "fraud" / "schemas" / "insurance_claims.toml"),
             "--split-by", "policy_state", "--rounds", "1", "--validation-rows", "300",
             "--set", "model=gbdt", "--set", "gbdt-trees-per-round=3", "--set", "gbdt-max-depth=3"],
            ["local:il", "pooled-hgb", "federated gbdt (secagg+)", "pooled gbdt (same algorithm)"],
        ),
    ]


def _fedfraud() -> list[str]:
    return [sys.executable, "-m", "fedfraud"]


def _run(cmd: list[str], cwd: Path, log: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "250"}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n{done.stdout}{done.stderr}\n[exit {done.returncode}]\n\n")
    return done


def _pdf_text(path: Path) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    return len(reader.pages), unicodedata.normalize("NFKC", text)  # the printed "fi" ligature reads as "fi"


def _not_blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    return colours is None or len(colours) > 16


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _check_kind(kind: Kind, out: Path) -> None:
    from audit.report_render import format_number
    from audit.pdf import screenshot

    here = out / kind.name
    shutil.rmtree(here, ignore_errors=True)
    work = here / "work"
    work.mkdir(parents=True)
    log = here / "commands.log"
    fail = kind.failures.append

    demo = _run([*_fedfraud(), "demo", *kind.demo_args, "--no-compare", "--data-dir", str(work / "data"),
                 "--runs-dir", str(work / "runs"), "--parties-dir", str(work / "parties")], work, log)
    if demo.returncode != 0:
        fail(f"fedfraud demo exited {demo.returncode} (see {log})")
        return
    verify = next((line for line in demo.stdout.splitlines() if line.startswith("verify it: ")), None)
    if verify is None:
        fail("the demo printed no 'verify it:' command")
        return
    audit_args = shlex.split(verify.removeprefix("verify it: "))[3:]  # after 'fedfraud audit verify'
    run_dir = Path(audit_args[0]).parent

    compare = _run([*_fedfraud(), "compare", str(run_dir), "--pdf"], work, log)
    if compare.returncode != 0:
        fail(f"fedfraud compare --pdf exited {compare.returncode} (see {log})")
        return
    for fmt in ("html", "pdf"):
        done = _run([*_fedfraud(), "audit", "report", *audit_args, "--format", fmt,
                     "--out", str(here / f"compliance.{fmt}")], work, log)
        if done.returncode != 0:
            fail(f"fedfraud audit report --format {fmt} exited {done.returncode} (see {log})")
            return
    for name in ("report.html", "report.pdf"):
        shutil.copy2(run_dir / "report" / name, here / name.replace("report", "comparison"))

    for page in ("compliance", "comparison"):
        png = screenshot(here / f"{page}.html", here / f"{page}.png")
        if not _not_blank(png):
            fail(f"{png.name}: the page rendered blank")

    rounds = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()]
    card = json.loads((run_dir / "model_card.json").read_text())
    model_hash = str(card["model"]["hash"])

    pages, text = _pdf_text(here / "compliance.pdf")
    if pages < 1:
        fail("compliance.pdf has no page")
    for needle in ("Verification verdict: VALID", "Run identity", "What the institutions witnessed",
                   "GDPR Art. 30", "EU AI Act Art. 12", "Policies given to the verifier", "Verification checks",
                   "Where the evidence lives"):
        if needle not in text:
            fail(f"compliance.pdf: {needle!r} is not on the page")
    for mark in ("**", "`", "|---"):
        if mark in text:
            fail(f"compliance.pdf: Markdown syntax {mark!r} shows on the page")
    last = rounds[-1].get("metrics", {}) if rounds else {}
    if "auc_pr" in last and format_number(float(last["auc_pr"])) not in text:
        fail(f"compliance.pdf: the last round's AUC-PR is not shown rounded ({format_number(float(last['auc_pr']))})")
    if re.search(r"\d\.\d{9,}", text):
        fail("compliance.pdf: a number is printed with more than 8 decimals")
    if model_hash not in _squeeze(text):
        fail("compliance.pdf: the final model hash is not printed in full")

    pages, text = _pdf_text(here / "comparison.pdf")
    if pages < 1:
        fail("comparison.pdf has no page")
    for needle in ("Combined test set", "Provenance", "Threshold", *kind.models):
        if needle not in text:
            fail(f"comparison.pdf: {needle!r} is not on the page")
    for mark in ("**", "`", "|---", "]("):
        if mark in text:
            fail(f"comparison.pdf: Markdown syntax {mark!r} shows on the page")
    if model_hash not in _squeeze(text):
        fail("comparison.pdf: the federated model's hash (from the model card) is not printed")
    if _squeeze("run_closed record states this same final model hash") not in _squeeze(text):
        fail("comparison.pdf: the report does not tie its model to the audit log's run_closed record")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", type=Path, default=ROOT / "browser-check",
                        help="Where the pages, PDFs, screenshots and summary go (default: %(default)s).")
    parser.add_argument("--kinds", default=",".join(k.name for k in _kinds()),
                        help="Comma-separated run kinds to check (default: %(default)s).")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()  # the runs work in a folder of their own; every path must hold there
    from core.errors import ConfigError
    from audit.pdf import find_chromium

    try:
        browser = find_chromium()
        import pypdf  # noqa: F401
    except (ConfigError, ImportError) as exc:
        print(f"browser check: cannot start: {exc}", file=sys.stderr)
        return 2
    wanted = {k.strip() for k in args.kinds.split(",") if k.strip()}
    kinds = [k for k in _kinds() if k.name in wanted]
    if not kinds or len(kinds) != len(wanted):
        print(f"browser check: unknown kind in {args.kinds!r}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"browser: {browser} ({subprocess.run([browser, '--version'], capture_output=True, text=True).stdout.strip()})"]
    for kind in kinds:
        start = time.monotonic()
        print(f"[{kind.name}] running the federation and rendering its reports...", flush=True)
        _check_kind(kind, args.out)
        verdict = "PASS" if not kind.failures else "FAIL"
        lines.append(f"{kind.name}: {verdict} ({time.monotonic() - start:.0f} s)")
        lines += [f"  - {f}" for f in kind.failures]
        print(lines[-1 - len(kind.failures)], *[f"  - {f}" for f in kind.failures], sep="\n", flush=True)
    (args.out / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"screenshots and PDFs for review: {args.out}/<kind>/compliance.png, comparison.png, *.pdf")
    return 0 if all(not k.failures for k in kinds) else 1


if __name__ == "__main__":
    sys.exit(main())
