"""``fedfraud audit report``: what a person sees in the HTML page (and the Markdown), on real signed logs.

The HTML is parsed with the standard library's :class:`html.parser.HTMLParser`
into a small element tree, and the tests read the text a browser would show,
the verdict banner, the tables and the hash elements.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

import audit_support
from audit.cli import app
from audit.keys import public_key_b64
from audit.report_render import format_number, visible
from audit_support import BuiltRun, build_run, h, policy_hash

runner = CliRunner()

_VOID = frozenset({"meta", "link", "img", "br", "hr", "input", "source", "base"})
# Every element the report itself writes; anything else came from the log.
_REPORT_TAGS = frozenset({
    "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "section", "p", "strong",
    "code", "table", "caption", "thead", "tbody", "tr", "th", "td",
})


@dataclass
class El:
    """One parsed element: tag, attributes, the text inside it (all descendants) and its children."""

    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list["El"] = field(default_factory=list)

    def iter(self) -> list["El"]:
        out = [self]
        for child in self.children:
            out += child.iter()
        return out

    def find_all(self, tag: str, cls: str | None = None) -> list["El"]:
        return [e for e in self.iter() if e.tag == tag and (cls is None or cls in e.attrs.get("class", "").split())]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = El("#document", {})
        self.stack = [self.root]
        self.decls: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.decls.append(decl)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = El(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in _VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(El(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for el in self.stack:
            el.text += data


@dataclass
class Page:
    """The parsed page and the views the tests read."""

    raw: str
    decls: list[str]
    root: El

    @property
    def body_text(self) -> str:
        """The text a person sees (the body; not the stylesheet or the title)."""
        (body,) = self.root.find_all("body")
        return body.text

    @property
    def banner(self) -> El:
        (section,) = self.root.find_all("section", "verdict")
        return section

    def table(self, caption_starts: str) -> tuple[list[str], list[list[str]]]:
        """(header cells, body rows of cell texts) of the table whose caption starts so."""
        for table in self.root.find_all("table"):
            captions = table.find_all("caption")
            if captions and captions[0].text.startswith(caption_starts):
                header = [th.text for th in table.find_all("thead")[0].find_all("th")]
                rows = [[c.text for c in tr.children if c.tag in ("td", "th")]
                        for tr in table.find_all("tbody")[0].find_all("tr")]
                return header, rows
        raise AssertionError(f"no table captioned {caption_starts!r}")


def parse(text: str) -> Page:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return Page(text, builder.decls, builder.root)


def report(run: BuiltRun, tmp_path: Path, fmt: str = "html", log: Path | None = None) -> tuple[int, str]:
    """Run ``fedfraud audit report`` on a built run with its own keys and every institution log."""
    server_key = tmp_path / "server.pub.b64"
    server_key.write_text(public_key_b64(run.server_key))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({i: public_key_b64(k) for i, k in run.inst_keys.items()}))
    out = tmp_path / f"report.{fmt}"
    args = ["report", str(log or run.log), "--server-key", str(server_key), "--keys", str(keys),
            "--format", fmt, "--out", str(out)]
    for path in run.inst_logs.values():
        if path.exists():
            args += ["--institution-log", str(path)]
    result = runner.invoke(app, args)
    assert out.exists(), result.output
    return result.exit_code, out.read_text(encoding="utf-8")


def _kinds(run: BuiltRun) -> list[str]:
    from audit.record import decode_record

    return [decode_record(line.rstrip(b"\n")).kind.value for line in run.lines()]


METRICS = {"auc_pr": 0.578207380778315, "auc_roc": 0.9564218830227661, "n_scored": 1234}


# ---------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------


def test_page_is_complete_self_contained_and_styled(pristine_run: BuiltRun, tmp_path: Path) -> None:
    code, text = report(pristine_run, tmp_path)
    page = parse(text)

    assert code == 0
    assert [d.lower() for d in page.decls] == ["doctype html"]
    assert any(m.attrs.get("charset", "").lower() == "utf-8" for m in page.root.find_all("meta"))
    (title,) = page.root.find_all("title")
    assert "run-1" in title.text and "fed-eu-fraud" in title.text
    (style,) = page.root.find_all("style")
    assert "@media print" in style.text and ".verdict-valid" in style.text
    tags = {e.tag for e in page.root.iter()} - {"#document"}
    assert not tags & {"script", "link", "img", "iframe", "object", "a"}
    assert not [e for e in page.root.iter() if {"src", "href"} & set(e.attrs)]


def test_no_markdown_syntax_reaches_the_page(pristine_run: BuiltRun, tmp_path: Path) -> None:
    _, text = report(pristine_run, tmp_path)
    seen = parse(text).body_text

    assert "**" not in seen
    assert "`" not in seen
    assert "•" not in seen and "&bull;" not in text
    assert "| round |" not in seen and "|---" not in seen


@pytest.mark.parametrize(
    ("case", "verdict", "css"),
    [("valid", "VALID", "verdict-valid"), ("unwitnessed_end", "INCOMPLETE", "verdict-incomplete"),
     ("record_deleted", "TAMPERED", "verdict-failed")],
)
def test_banner_states_the_verdict_in_words_and_colour(tmp_path: Path, case: str, verdict: str, css: str) -> None:
    run = build_run(tmp_path / "run", witness_final=case != "unwitnessed_end")
    log = None
    if case == "record_deleted":
        lines = run.lines()
        del lines[7]
        log = run.write_lines(lines, tmp_path / "cut.jsonl")

    code, text = report(run, tmp_path, log=log)
    banner = parse(text).banner

    assert code == {"VALID": 0, "INCOMPLETE": 11, "TAMPERED": 10}[verdict]
    assert css in banner.attrs["class"].split()
    (headline,) = [p for p in banner.find_all("p", "headline")]
    assert headline.text.startswith(f"Verification verdict: {verdict}")
    words = {"VALID": "authentic, complete", "INCOMPLETE": "truncation cannot be ruled out",
             "TAMPERED": "The log was altered"}[verdict]
    assert words in banner.text


def test_metrics_are_one_column_each_and_rounded(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run", metrics=METRICS)

    _, text = report(run, tmp_path)
    page = parse(text)
    header, rows = page.table("Released metrics per round")

    assert header == ["round", "auc_pr", "auc_roc", "n_scored"]
    assert rows == [[str(r), "0.5782", "0.9564", "1234"] for r in (1, 2, 3)]
    assert "0.578207380778315" not in text and "0.9564218830227661" not in text
    rounds_header, round_rows = page.table("Rounds")
    assert "metrics" not in rounds_header and len(round_rows) == 3


def test_markdown_is_rounded_and_tabulated_too(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run", metrics=METRICS)

    _, text = report(run, tmp_path, fmt="md")

    assert "| round | auc\\_pr | auc\\_roc | n\\_scored |" in text or "| round | auc_pr | auc_roc | n_scored |" in text
    assert "| 1 | 0.5782 | 0.9564 | 1234 |" in text
    assert "0.578207380778315" not in text
    assert "> **Verification verdict: VALID (exit 0)**" in text


def test_hashes_are_monospace_shortened_with_the_full_value_in_the_title(pristine_run: BuiltRun, tmp_path: Path) -> None:
    _, text = report(pristine_run, tmp_path)
    page = parse(text)
    model_hash = h("model:1")

    titled = {e.attrs["title"]: e.text for e in page.root.find_all("code", "hash") if "title" in e.attrs}
    assert titled[model_hash] == model_hash[:12] + "…"
    _, rows = page.table("Rounds")
    assert rows[0][-1] == model_hash[:12] + "…"
    assert model_hash not in page.body_text
    for full, shown in titled.items():
        assert full.startswith(shown[:-1]) and shown.endswith("…")


@pytest.mark.parametrize("case", ["valid", "record_deleted"])
def test_every_check_is_shown_with_its_result(tmp_path: Path, case: str) -> None:
    from audit.verify import verify_log

    run = build_run(tmp_path / "run")
    log = run.log
    if case == "record_deleted":
        lines = run.lines()
        del lines[7]
        log = run.write_lines(lines, tmp_path / "cut.jsonl")
    expected = verify_log(log, run.trusted, run.server_pub, list(run.inst_logs.values()))

    _, text = report(run, tmp_path, log=log)
    page = parse(text)
    header, rows = page.table("Every check")

    assert header[:4] == ["step", "check", "result", "message"]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (c.step, c.name, "PASS" if c.ok else "FAIL", c.message) for c in expected.checks
    ]
    failed_rows = [tr for tr in page.root.find_all("tr", "fail")]
    assert len(failed_rows) == len(expected.failures)
    assert (case == "record_deleted") == bool(expected.failures)


# ---------------------------------------------------------------------------
# What was witnessed
# ---------------------------------------------------------------------------


def test_unwitnessed_tail_is_named_record_by_record(tmp_path: Path) -> None:
    # The run closes after the last witnessing: the run_closed record (and the
    # last checkpoint and its witnesses) come after the witnessed part.
    run = build_run(tmp_path / "run", witness_final=False)
    kinds = _kinds(run)
    k = max(i for i, kind in enumerate(kinds) if kind == "checkpoint")
    n = len(kinds)

    _, text = report(run, tmp_path)
    page = parse(text)
    banner = " ".join(page.banner.text.split())

    assert f"Witnessed: records 0–{k - 1} ({k} of {n})." in banner
    assert f"Not witnessed: records {k}–{n - 1} (checkpoint, witness ×3, run_closed)" in banner
    assert "not witnessed by any institution" in banner and "events of the run (run_closed)" in banner
    _, rows = page.table("Records after the witnessed checkpoint")
    assert rows[-1] == [f"record {n - 1}", "run_closed", "1"]


def test_witnessed_log_says_only_the_witnessing_follows(pristine_run: BuiltRun, tmp_path: Path) -> None:
    kinds = _kinds(pristine_run)
    k = max(i for i, kind in enumerate(kinds) if kind == "checkpoint")

    _, text = report(pristine_run, tmp_path)
    banner = " ".join(parse(text).banner.text.split())

    assert f"records {k}–{len(kinds) - 1} (checkpoint, witness ×3)" in banner
    assert "every event of the run lies in the witnessed part" in banner
    assert "nothing vouches for" not in banner


def test_log_never_witnessed_says_so(tmp_path: Path) -> None:
    run = build_run(tmp_path / "run", witness=False, witness_final=False)

    _, text = report(run, tmp_path)
    banner = " ".join(parse(text).banner.text.split())

    assert "No institution witnessed this log." in banner
    assert f"None of its {len(run.lines())} records" in banner


# ---------------------------------------------------------------------------
# Hostile strings
# ---------------------------------------------------------------------------

# No "/" in the institution id: it is part of the witness log's file name.
HOSTILE_INSTITUTION = "<script>alert(1)<script>**bold**[a](javascript:alert(1))\u202eexe.txt"
HOSTILE_RULES = ["<script>alert(1)</script>", "**bold**", "[a](javascript:alert(1))", "rule\u202eexe.txt",
                 "line\nbreak\x1b[31m", "<img src=x onerror=alert(1)>"]
HOSTILE_METRIC = "<b onmouseover=alert(1)>auc</b>"


@pytest.fixture
def hostile_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BuiltRun:
    monkeypatch.setattr(audit_support, "INSTITUTIONS", ("bank-a", "bank-b", HOSTILE_INSTITUTION))

    def refuse(auditor, rnd: int) -> None:  # type: ignore[no-untyped-def]
        if rnd == 1:
            auditor.policy_refusal(1, HOSTILE_INSTITUTION, HOSTILE_RULES, policy_hash(HOSTILE_INSTITUTION))

    return build_run(tmp_path / "run", run_id="run-**1**\u202e<i>", refuse_in_round=None, hook=refuse,
                     metrics={HOSTILE_METRIC: 0.5, "auprc": 0.8125})


def test_hostile_strings_are_shown_as_text_never_as_markup(hostile_run: BuiltRun, tmp_path: Path) -> None:
    _, text = report(hostile_run, tmp_path)
    page = parse(text)
    seen = page.body_text

    assert {e.tag for e in page.root.iter()} - {"#document"} <= _REPORT_TAGS
    assert not page.root.find_all("script") and not page.root.find_all("a") and not page.root.find_all("img")
    assert not [e for e in page.root.iter() if {"src", "href", "onerror", "onmouseover"} & set(e.attrs)]
    for raw in ("\u202e", "\x1b", "\n" + "break"):
        assert raw not in text
    assert "\\u202e" in seen and "\\u001b" in seen and "line\\u000abreak" in seen
    assert "<script>alert(1)</script>" in seen and "[a](javascript:alert(1))" in seen
    assert HOSTILE_METRIC in parse(text).table("Released metrics per round")[0]
    (title,) = page.root.find_all("title")
    assert "\\u202e" in title.text and "\u202e" not in title.text


def test_hostile_strings_stay_text_in_the_markdown(hostile_run: BuiltRun, tmp_path: Path) -> None:
    from markdown_it import MarkdownIt

    _, text = report(hostile_run, tmp_path, fmt="md")
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    page = parse("<body>" + rendered + "</body>")

    assert "\u202e" not in text and "\x1b" not in text
    assert not page.root.find_all("script") and not page.root.find_all("a") and not page.root.find_all("img")
    assert not page.root.find_all("b") and not page.root.find_all("i")
    assert all("bold" not in e.text for e in page.root.find_all("strong"))
    seen = page.body_text
    assert "<script>alert(1)</script>" in seen and "**bold**" in seen and "[a](javascript:alert(1))" in seen


# ---------------------------------------------------------------------------
# Pieces and help
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.578207380778315, "0.5782"), (0.25, "0.25"), (1234, "1234"), (1234.0, "1234"), (12345.678, "1.235e+04"),
     (float("nan"), "NaN"), (True, "true")],
)
def test_numbers_are_shown_to_four_significant_digits(value: object, shown: str) -> None:
    assert format_number(value) == shown


def test_invisible_and_reordering_characters_become_visible_escapes() -> None:
    assert visible("a\u202eb\u2066c\x00d\ne\u200bf\U000e0001") == "a\\u202eb\\u2066c\\u0000d\\u000ae\\u200bf\\U000e0001"
    assert visible("bank-a — Zürich") == "bank-a — Zürich"


def test_report_help_explains_the_formats_and_exit_codes() -> None:
    result = runner.invoke(app, ["report", "--help"])
    text = " ".join(result.output.split())

    assert result.exit_code == 0
    assert "self-contained" in text and "Markdown" in text and "witnessed" in text
    for needle in ("0 VALID", "10 TAMPERED", "11 INCOMPLETE", "12 POLICY_VIOLATED", "13 EQUIVOCATION"):
        assert needle in text


def test_pdf_report_without_a_browser_is_refused_before_anything_is_written(
    pristine_run: BuiltRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDFRAUD_CHROMIUM", str(tmp_path / "no-such-browser"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = runner.invoke(app, ["report", str(pristine_run.log), "--server-key", str(tmp_path / "unread.pub"),
                                 "--keys", str(tmp_path / "unread.json"), "--format", "pdf",
                                 "--out", str(out_dir / "report.pdf")])

    assert result.exit_code == 2
    assert "FEDFRAUD_CHROMIUM" in result.output and "no-such-browser" in result.output
    assert list(out_dir.iterdir()) == []


def test_pdf_report_needs_an_output_file(pristine_run: BuiltRun, tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(pristine_run.log), "--server-key", str(tmp_path / "k.pub"),
                                 "--format", "pdf"])

    assert result.exit_code == 2
    assert "--out" in " ".join(result.output.split())


def test_shortened_hashes_print_in_full(pristine_run: BuiltRun, tmp_path: Path) -> None:
    _, text = report(pristine_run, tmp_path)
    page = parse(text)
    (style,) = page.root.find_all("style")
    print_rules = style.text.split("@media print", 1)[1]

    # Paper has no hover: the print stylesheet writes each shortened hash's title in its place.
    assert "code.hash[title]::after" in print_rules and "content: attr(title)" in print_rules
    assert all(e.attrs["title"].startswith(e.text[:-1]) for e in page.root.find_all("code", "hash") if "title" in e.attrs)


def test_report_says_where_the_evidence_lives(pristine_run: BuiltRun, tmp_path: Path) -> None:
    _, text = report(pristine_run, tmp_path)
    _, rows = parse(text).table("The files this report was made from")

    files = {what: path for what, path in rows if what != "institution witness log"}
    assert files["server audit log"] == str(pristine_run.log)
    assert files["trusted server key"] == str(tmp_path / "server.pub.b64")
    assert files["trusted institution keys"] == str(tmp_path / "keys.json")
    witness_logs = sorted(path for what, path in rows if what == "institution witness log")
    assert witness_logs == sorted(str(p) for p in pristine_run.inst_logs.values() if p.exists())
