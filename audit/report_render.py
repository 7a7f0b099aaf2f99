"""Lay out a :class:`audit.report.ComplianceReport` once, then write it as Markdown or HTML.

:func:`_document` turns the report's facts into a short list of blocks
(headings, paragraphs, fact lists, tables) made of typed pieces of text
(plain text, strong text, code, hashes, numbers).  The wording lives there
only; the two writers below differ in syntax, never in content.

Every string that comes from a log or a policy is untrusted: an institution
id, a refusal rule or a metric name can hold HTML, Markdown or control and
bidirectional-override characters.  Each writer escapes every such string in
one place (:func:`_md_text`, :func:`_html_text`) after :func:`visible` has
replaced invisible and reordering characters by a visible ``\\uXXXX``, so a
hostile id shows as the characters it is made of, never as a tag, a link,
emphasis or reversed text.  The HTML page also forbids scripts and every
outside resource in its Content-Security-Policy, in case a future change
forgets to escape.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from .verify import Check, Verdict

if TYPE_CHECKING:
    from .report import ComplianceReport, Coverage

__all__ = ["format_number", "render_html", "render_markdown", "visible"]

#: How many hexadecimal digits of a hash a table shows (the full value is in the HTML ``title``).
HASH_DIGITS = 12
#: Significant digits of a released metric.
SIGNIFICANT_DIGITS = 4
#: How many runs of record kinds the coverage sentence names before "and N more".
_KINDS_NAMED = 8

# Unicode categories that are invisible or change how text around them is
# shown: controls (Cc), format characters (Cf, which hold the bidirectional
# overrides U+202A..U+202E and isolates U+2066..U+2069, zero-width
# characters and the BOM), line and paragraph separators, and lone surrogates.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def visible(text: str) -> str:
    """Replace every invisible or reordering character by a visible escape (``\\u202e``, ``\\u000a``).

    Parameters
    ----------
    text : str
        Untrusted text from a log or a policy.
    """
    out = []
    for ch in text:
        if unicodedata.category(ch) in _INVISIBLE_CATEGORIES:
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def format_number(value: object) -> str:
    """A released number for people: integers whole, other numbers to 4 significant digits.

    ``0.578207380778315`` becomes ``0.5782``, ``1234.0`` becomes ``1234``;
    anything that is not a number is shown as text.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{SIGNIFICANT_DIGITS}g}"
    return str(value)


_TS = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z\Z")


def _short(value: str) -> str:
    """A hash's first 12 hex digits and "…" (an algorithm prefix such as ``ed25519:`` is kept)."""
    prefix = value[: value.find(":") + 1]
    if len(value) <= len(prefix) + HASH_DIGITS + 1:
        return value
    return value[: len(prefix) + HASH_DIGITS] + "…"


def _when(ts: str) -> str:
    """``2026-01-05T09:00:02.000000Z`` as ``2026-01-05 09:00:02 UTC`` (fractions kept when not zero)."""
    match = _TS.match(ts)
    if not match:
        return ts or "-"
    day, time, frac = match.groups()
    frac = (frac or "").rstrip("0")
    return f"{day} {time}{'.' + frac if frac else ''} UTC"


# ---------------------------------------------------------------------------
# The document: typed pieces of text and blocks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """Plain text."""

    text: str


@dataclass(frozen=True)
class Strong:
    """Emphasised text."""

    text: str


@dataclass(frozen=True)
class Code:
    """Monospace text: a path, a parameter, a record kind."""

    text: str


@dataclass(frozen=True)
class Hash:
    """A hash or key fingerprint: monospace, shortened unless ``full``."""

    value: str
    full: bool = False


@dataclass(frozen=True)
class Num:
    """A number or count (see :func:`format_number`)."""

    value: object


Inline = Union[Text, Strong, Code, Hash, Num]
Spans = list[Inline]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    spans: Spans


@dataclass(frozen=True)
class Banner:
    """The verdict, first thing on the page."""

    verdict: Verdict
    headline: Spans
    paragraphs: list[Spans]


@dataclass(frozen=True)
class Facts:
    """Labelled facts (a two-column table in HTML, a list in Markdown)."""

    items: list[tuple[str, Spans]]


@dataclass(frozen=True)
class Table:
    caption: str
    columns: list[str]
    rows: list[list[Spans]]
    numeric: frozenset[int] = frozenset()
    failed_rows: frozenset[int] = frozenset()
    result_column: int | None = None


Block = Union[Heading, Paragraph, Banner, Facts, Table]


# ``outputs.model_recipients`` names institutions, or "federation" for every member.
_RECIPIENT_NAMES = {"federation": "every member of the federation (the aggregated model)"}


def _spans(*items: Inline) -> Spans:
    return list(items)


def _root(root: str, full: bool) -> Spans:
    return [Text(", root "), Hash(root, full=full)] if root else []


def _metric(metrics: Any, name: str) -> Spans:
    return [Num(metrics[name])] if name in metrics else [Text("-")]


def _join(values: list[str] | tuple[str, ...], empty: str = "-") -> Spans:
    return [Text(", ".join(values) if values else empty)]


def _kinds(cov: "Coverage") -> str:
    named = [f"{k.kind} ×{k.count}" if k.count > 1 else k.kind for k in cov.tail_kinds[:_KINDS_NAMED]]
    more = len(cov.tail_kinds) - _KINDS_NAMED
    return ", ".join(named) + (f" and {more} more runs of records" if more > 0 else "")


def _span(first: int | None, last: int | None) -> str:
    if first is None or last is None:
        return "no record"
    return f"record {first}" if first == last else f"records {first}–{last}"


def _coverage(cov: "Coverage") -> list[Spans]:
    """What the institutions witnessed and what they did not, record by record."""
    n = cov.record_count
    k = cov.witnessed_size
    tail = _span(cov.tail_first, cov.tail_last)
    if k == 0:
        first: Spans = [Strong("No institution witnessed this log."),
                        Text(f" None of its {n} records is covered by a countersigned checkpoint")]
        if cov.tail_kinds:
            first.append(Text(f" ({tail}: {_kinds(cov)})"))
        return [first + [Text(".")]]
    who = ", ".join(cov.witnesses) if cov.witnesses else "institutions (per their own logs)"
    out: list[Spans] = [[
        Strong(f"Witnessed: records 0–{k - 1} ({k} of {n})."),
        Text(f" {who} countersigned the checkpoint of size {k}"),
        *_root(cov.witnessed_root, full=False),
        Text("."),
    ]]
    if cov.tail_first is None:
        out.append([Text("No record follows the witnessed part.")])
    elif cov.tail_events:
        out.append([
            Strong(f"Not witnessed: {tail} ({_kinds(cov)})"),
            Text(" come after that checkpoint and were not witnessed by any institution; "
                 f"they include events of the run ({', '.join(cov.tail_events)}) that nothing vouches for."),
        ])
    else:
        out.append([
            Text(f"Not witnessed: {tail} ({_kinds(cov)}) come after that checkpoint. They are that "
                 "checkpoint and the witness records holding the countersignatures, not events of the "
                 "run: every event of the run lies in the witnessed part."),
        ])
    return out


def _where(c: Check) -> Spans:
    location = c.location()
    spans: Spans = [Text(location)] if location else []
    if not c.ok and c.expected is not None:
        spans.append(Text(("; " if spans else "") + f"expected: {c.expected}"))
    if not c.ok and c.found is not None:
        spans.append(Text(("; " if spans else "") + f"found: {c.found}"))
    return spans


def _params(params: Any) -> Spans:
    if not isinstance(params, dict) or not params:
        return [Text("none recorded")]
    spans: Spans = []
    for i, key in enumerate(sorted(params, key=str)):
        spans += [Text(", " if i else ""), Code(str(key)), Text(" = "), Num(params[key])]
    return spans


def _document(r: "ComplianceReport") -> list[Block]:
    cov = r.coverage
    total = len(r.checks)
    failed = r.failed_checks
    first_fail = next((c for c in r.checks if not c.ok and c.verdict is r.verdict), None)
    banner_paras: list[Spans] = [[Text(r.verdict.description)]]
    if failed:
        banner_paras.append([Text(f"{failed} of {total} checks failed"
                                  + (f"; the first: {first_fail.message}." if first_fail else "."))])
    else:
        banner_paras.append([Text(f"All {total} checks passed.")])
    banner_paras += _coverage(cov)

    blocks: list[Block] = [
        Heading(1, f"Compliance report: run {r.run_id} (federation {r.federation_id})"),
        Banner(r.verdict, [Text(f"Verification verdict: {r.verdict.value}"), Text(f" (exit {r.exit_code})")],
               banner_paras),
        Heading(2, "Run identity"),
        Facts([
            ("Federation", [Text(r.federation_id)]),
            ("Run", [Text(r.run_id)]),
            ("Log file", [Code(r.log_path)]),
            ("Records", _spans(Num(cov.record_count), Text(f" lines, {_when(r.first_ts)} to {_when(r.last_ts)}"))
             + ([Text(f"; lines that do not decode: {', '.join(map(str, r.undecodable_lines))}")]
                if r.undecodable_lines else [])),
            ("Log signer (server key)", [Hash(r.signer_fingerprint, full=True)] if r.signer_fingerprint else [Text("-")]),
            ("Witnessed checkpoint", _spans(Text(f"size {cov.witnessed_size}"), *_root(cov.witnessed_root, full=True))),
            ("Code version", [Text(r.code_version)]),
            ("Run configuration hash", [Hash(r.run_config_hash, full=True)] if r.run_config_hash else [Text("-")]),
        ]),
        Table("Institutions in the genesis record", ["institution", "key fingerprint", "policy hash",
                                                     "countersigned the witnessed checkpoint"],
              [[[Text(i.id)], [Hash(i.key_fingerprint)] if i.key_fingerprint else [Text("unreadable key")],
                [Hash(i.policy_hash)], [Text("yes" if i.id in cov.witnesses else "no")]]
               for i in r.institutions]),
        *_policies(r),
        Heading(2, "What the institutions witnessed"),
        Paragraph([Text("Records are numbered from 0 in log order, as in the verification checks. "
                        "The institutions' countersignatures cover the records before the witnessed "
                        "checkpoint; the verdict above states what follows it.")]),
    ]
    if cov.tail_kinds:
        rows: list[list[Spans]] = []
        seq = cov.tail_first or 0
        for run in cov.tail_kinds:
            rows.append([[Text(_span(seq, seq + run.count - 1))], [Code(run.kind)], [Num(run.count)]])
            seq += run.count
        blocks.append(Table("Records after the witnessed checkpoint", ["records", "kind", "count"], rows,
                            numeric=frozenset({2})))

    purposes = ", ".join(r.purposes) if r.purposes else "not stated in the log"
    blocks += [
        Heading(2, "GDPR Art. 30: record of processing activities"),
        Facts([
            ("Purposes of the processing", [Text(purposes)]),
            ("Categories of participants (controllers)",
             _join([i.id for i in r.institutions], "none listed")
             + [Text("; categories of data subjects: customers whose transactions each institution holds "
                     "locally (no personal data leaves an institution or enters this log)")]),
            ("Categories of personal data in this log",
             [Text("none; only institution ids, hashes, protocol parameters and the aggregate metrics the "
                   "policies allow")]),
            ("Recipients", _join([_RECIPIENT_NAMES.get(x, x) for x in r.recipients],
                                 "members of the federation (the aggregated model)")),
            ("Retention", _join([d + " days" for d in r.retention_days], "per institution policy (not supplied)")),
            ("Security measures (Art. 32)",
             _spans(Text("aggregation "), Code(r.aggregation_mode), Text(" with parameters "))
             + _params(r.aggregation_params)
             + [Text("; Ed25519-signed, SHA-256 hash-chained records; RFC 9162 Merkle checkpoints countersigned "
                     "by each institution; institution-signed receipts")]),
        ]),
        Heading(2, "EU AI Act Art. 12: record-keeping (logging of events)"),
        Facts([
            ("Period of use", [Text(f"{_when(r.first_ts)} to {_when(r.last_ts)}")]),
            ("Run", [Text(f"closed: {r.run_closed_reason}" if r.run_closed else "not closed")]),
            ("Code version", [Text(r.code_version)]),
        ]),
        Table("Rounds", ["round", "opened", "closed", "cohort", "refusals", "dropouts", "survivors", "receipts",
                         "model hash"],
              [[[Num(x.round)], [Text(_when(x.opened_at))], [Text(_when(x.closed_at))], _join(x.cohort),
                [Text("; ".join(x.refusals) or "-")], [Text("; ".join(x.dropouts) or "-")], _join(x.survivors),
                [Num(x.receipts)], [Hash(x.model_hash)] if x.model_hash else [Text("-")]]
               for x in r.rounds],
              numeric=frozenset({0, 7})),
    ]
    if r.metric_names:
        blocks.append(Table(
            "Released metrics per round (4 significant digits)", ["round", *r.metric_names],
            [[_spans(Num(x.round)), *[_metric(x.metrics, m) for m in r.metric_names]] for x in r.rounds],
            numeric=frozenset(range(len(r.metric_names) + 1)),
        ))
    else:
        blocks.append(Paragraph([Text("No round released metrics.")]))

    blocks += [
        Heading(2, "Verification checks"),
        Table("Every check, in the order of the verification procedure", ["step", "check", "result", "message", "where"],
              [[[Text(c.step)], [Text(c.name)], [Strong("PASS" if c.ok else "FAIL")], [Text(c.message)], _where(c)]
               for c in r.checks],
              failed_rows=frozenset(i for i, c in enumerate(r.checks) if not c.ok), result_column=2),
        Paragraph([Text(f"{failed} of {total} checks failed." if failed else f"All {total} checks passed.")]),
    ]
    if r.evidence_count:
        blocks.append(Paragraph([Text(f"The verification gathered {r.evidence_count} piece(s) of evidence of "
                                      "equivocation; "), Code("fedfraud audit verify --json"),
                                 Text(" prints them.")]))
    blocks += [
        Heading(2, "Where the evidence lives"),
        Table("The files this report was made from (keep them with it)", ["what", "file"],
              [[[Text(what)], [Code(path)]] for what, path in (("server audit log", r.log_path), *r.inputs)]),
        Paragraph([Text("Anyone holding these files can repeat the verification with "), Code("fedfraud audit verify"),
                   Text("; each institution keeps its own witness log and policy at its own site.")]),
    ]
    return blocks


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

# Characters with a meaning in CommonMark inline text or GFM tables.  "_" is
# escaped only where it could open or close emphasis (not inside a word, so
# "max_rounds" stays readable).
_MD_SPECIAL = frozenset("\\`*[]<>|~&#!")


def _md_text(text: str) -> str:
    """Escape untrusted text for Markdown inline content (after :func:`visible`)."""
    s = visible(text)
    out = []
    for i, ch in enumerate(s):
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == "_":
            before = s[i - 1] if i else " "
            after = s[i + 1] if i + 1 < len(s) else " "
            out.append("_" if before.isalnum() and after.isalnum() else "\\_")
        else:
            out.append(ch)
    return "".join(out)


def _md_code(text: str) -> str:
    # A code span shows its content literally, except that a backtick would
    # end it and a pipe would end a table cell: both are shown as escapes.
    content = visible(text).replace("`", "\\u0060").replace("|", "\\u007c")
    return f"`{content}`" if content else ""


def _md_inline(spans: Spans, in_table: bool = False) -> str:
    out = []
    for s in spans:
        if isinstance(s, Text):
            out.append(_md_text(s.text))
        elif isinstance(s, Strong):
            out.append(f"**{_md_text(s.text)}**" if s.text else "")
        elif isinstance(s, Code):
            out.append(_md_code(s.text))
        elif isinstance(s, Hash):
            out.append(_md_code(s.value if s.full and not in_table else _short(s.value)))
        else:
            out.append(_md_text(format_number(s.value)))
    return "".join(out)


def _policies(r: "ComplianceReport") -> list[Block]:
    """The policies in force: the files given to the verifier, each against the genesis record."""
    if not r.policies:
        return [Paragraph([Text("No policy file was given to the verifier: the policy hashes above are the "
                                "log's own, and the policy check could not compare them with any file.")])]
    return [Table("Policies given to the verifier", ["institution", "version", "policy hash",
                                                     "same as in the genesis record", "required aggregation",
                                                     "minimum cohort", "maximum rounds"],
                  [[[Text(p.id)], [Text(p.version)], [Hash(p.policy_hash)],
                    [Text("yes" if p.in_genesis else "no")], [Code(p.required_aggregation)],
                    [Text(p.min_cohort_size)], [Text(p.max_rounds)]]
                   for p in r.policies],
                  numeric=frozenset({1, 5, 6}))]


def render_markdown(report: "ComplianceReport") -> str:
    """The report as CommonMark with GFM tables; every untrusted string is escaped."""
    lines: list[str] = []
    for block in _document(report):
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + _md_text(block.text), ""]
        elif isinstance(block, Paragraph):
            lines += [_md_inline(block.spans), ""]
        elif isinstance(block, Banner):
            lines.append(f"> **{_md_inline(block.headline)}**")
            for para in block.paragraphs:
                lines += [">", "> " + _md_inline(para)]
            lines.append("")
        elif isinstance(block, Facts):
            lines += [f"- **{_md_text(label)}:** {_md_inline(value)}" for label, value in block.items]
            lines.append("")
        else:
            lines += [f"**{_md_text(block.caption)}**", ""]
            lines.append("| " + " | ".join(_md_text(c) for c in block.columns) + " |")
            lines.append("|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.columns))) + "|")
            for row in block.rows:
                lines.append("| " + " | ".join(_md_inline(cell, in_table=True) or "-" for cell in row) + " |")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------

_STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1a1a1a; background: #fff; max-width: 78rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; padding-bottom: .2rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5rem 0 1.25rem; }
caption { text-align: left; font-weight: 600; padding: .2rem 0; }
th, td { border: 1px solid #bbb; padding: .25rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #eef0f2; }
table.facts th { background: #f6f7f8; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
       font-size: .92em; overflow-wrap: anywhere; }
.verdict { border: 2px solid; border-left-width: .6rem; padding: .6rem 1rem; margin: 1rem 0 1.5rem; }
.verdict p { margin: .35rem 0; }
.verdict .headline { font-size: 1.3rem; font-weight: 700; }
.verdict-valid { border-color: #1b7a3a; background: #e9f6ee; }
.verdict-valid .headline { color: #145c2c; }
.verdict-incomplete { border-color: #b26a00; background: #fff4e0; }
.verdict-incomplete .headline { color: #7a4800; }
.verdict-failed { border-color: #b3261e; background: #fdecea; }
.verdict-failed .headline { color: #8c1d18; }
tr.fail td { background: #fdecea; }
.result-pass { color: #1b7a3a; }
.result-fail { color: #b3261e; }
@media print {
  body { margin: 0; max-width: none; font-size: 9.5pt; }
  .verdict, tr.fail td, thead th, table.facts th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  tr, .verdict { break-inside: avoid; }
  thead { display: table-header-group; }
  h2 { break-after: avoid; }
  /* paper has no hover: a shortened hash prints in full (from its title) */
  code.hash[title] { font-size: 0; }
  code.hash[title]::after { content: attr(title); font-size: 8pt; word-break: break-all; }
}
""".strip()

# No script, frame, form or outside resource may load, whatever the page holds.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _html_text(text: str) -> str:
    """Escape untrusted text for HTML text and attribute values (after :func:`visible`)."""
    return html.escape(visible(text), quote=True)


def _html_inline(spans: Spans) -> str:
    out = []
    for s in spans:
        if isinstance(s, Text):
            out.append(_html_text(s.text))
        elif isinstance(s, Strong):
            out.append(f"<strong>{_html_text(s.text)}</strong>")
        elif isinstance(s, Code):
            out.append(f"<code>{_html_text(s.text)}</code>")
        elif isinstance(s, Hash):
            short = s.value if s.full else _short(s.value)
            title = f' title="{_html_text(s.value)}"' if short != s.value else ""
            out.append(f'<code class="hash"{title}>{_html_text(short)}</code>')
        else:
            out.append(_html_text(format_number(s.value)))
    return "".join(out)


def _verdict_class(verdict: Verdict) -> str:
    if verdict is Verdict.VALID:
        return "verdict-valid"
    return "verdict-incomplete" if verdict is Verdict.INCOMPLETE else "verdict-failed"


def _html_table(t: Table) -> list[str]:
    num = ' class="num"'
    header = "".join(f'<th scope="col"{num if i in t.numeric else ""}>{_html_text(c)}</th>'
                     for i, c in enumerate(t.columns))
    out = ["<table>", f"<caption>{_html_text(t.caption)}</caption>", f"<thead><tr>{header}</tr></thead>", "<tbody>"]
    for n, row in enumerate(t.rows):
        failed = n in t.failed_rows
        cells = []
        for i, cell in enumerate(row):
            if i == t.result_column:
                cls = ' class="result-fail"' if failed else ' class="result-pass"'
            else:
                cls = num if i in t.numeric else ""
            cells.append(f"<td{cls}>{_html_inline(cell) or '-'}</td>")
        row_class = ' class="fail"' if failed else ""
        out.append(f"<tr{row_class}>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return out


def render_html(report: "ComplianceReport") -> str:
    """The report as one self-contained HTML page: no script, no outside resource, print-friendly."""
    blocks = _document(report)
    title = next((b.text for b in blocks if isinstance(b, Heading) and b.level == 1), "Compliance report")
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_html_text(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_html_inline(block.spans)}</p>")
        elif isinstance(block, Banner):
            body.append(f'<section class="verdict {_verdict_class(block.verdict)}" role="status" '
                        f'aria-label="verification verdict">')
            body.append(f'<p class="headline">{_html_inline(block.headline)}</p>')
            body += [f"<p>{_html_inline(p)}</p>" for p in block.paragraphs]
            body.append("</section>")
        elif isinstance(block, Facts):
            body.append('<table class="facts"><tbody>')
            body += [f'<tr><th scope="row">{_html_text(label)}</th><td>{_html_inline(value)}</td></tr>'
                     for label, value in block.items]
            body.append("</tbody></table>")
        else:
            body += _html_table(block)
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="fedfraud audit report">',
        f"<title>{_html_text(title)}</title>",
        f"<style>\n{_STYLE}\n</style>",
        "</head>",
        "<body>",
        "<main>",
    ]
    return "\n".join(head + body + ["</main>", "</body>", "</html>"]) + "\n"
