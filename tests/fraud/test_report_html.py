"""The comparison report's self-contained ``report.html``, read through the standard library's HTML parser."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fraud.compare import ComparisonResult, add_model
from fraud.features import N_FEATURES
from fraud.model import build_model
from fraud.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROUNDS = [{"server_round": 1, "metrics": {"auc_pr": 0.30}}, {"server_round": 2, "metrics": {"auc_pr": 0.41}}]


@pytest.fixture(scope="module")
def comparison(small_comparison: ComparisonResult) -> ComparisonResult:
    return add_model(small_comparison, "<script>alert(1)</script>", build_model(N_FEATURES, 1))


class _Page(HTMLParser):
    """Elements with their attributes, the body's text and every table's header cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.decls: list[str] = []
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.open: list[str] = []
        self.body_text = ""
        self.headers: list[list[str]] = []
        self._cell: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.decls.append(decl)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("meta", "img", "br", "hr", "link"):
            return
        self.open.append(tag)
        if tag == "thead":
            self.headers.append([])
        elif tag == "th" and "thead" in self.open:
            self._cell = ""

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()
        if tag == "th" and self._cell is not None:
            self.headers[-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if "body" in self.open:
            self.body_text += data
        if self._cell is not None:
            self._cell += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.open == []
    return page


def test_html_report_is_one_self_contained_page_with_embedded_plots(
    comparison: ComparisonResult, tmp_path: Path
) -> None:
    md = write_report(tmp_path / "out", comparison, ROUNDS, None)

    page = _parse(md.parent / "report.html")

    assert [d.lower() for d in page.decls] == ["doctype html"]
    assert ("meta", {"charset": "utf-8"}) in page.elements
    assert any(tag == "title" for tag, _ in page.elements) and any(tag == "style" for tag, _ in page.elements)
    images = [attrs for tag, attrs in page.elements if tag == "img"]
    assert len(images) == 4
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(attrs["src"].split(",", 1)[1])[:8] == PNG_MAGIC
        assert attrs["alt"]
    assert not [a for _, a in page.elements if a.get("href") or (a.get("src") and not a["src"].startswith("data:"))]


def test_html_report_shows_tables_not_markdown_and_escapes_names(
    comparison: ComparisonResult, tmp_path: Path
) -> None:
    md = write_report(tmp_path, comparison, None, None)

    page = _parse(md.parent / "report.html")

    assert ["model", "AUC-PR", "AUC-ROC", "precision", "recall", "F1", "TP", "FP", "FN", "threshold"] in page.headers
    assert "|---" not in page.body_text and "`" not in page.body_text and "](" not in page.body_text
    assert "<script>alert(1)</script>" in page.body_text
    assert not [tag for tag, _ in page.elements if tag == "script"]
    assert len([tag for tag, _ in page.elements if tag == "img"]) == 3


_HASH = "7b66b368c8e60ca81f71f6fed4a55f083dcf6243827db1af50134b2c0a295e7b"
_PROVENANCE = {
    "run": "20261203T062200Z-96284e",
    "federation": "fedfraud-demo",
    "model_file": "model.npz",
    "model_hash": _HASH,
    "audit_log": "/runs/20261203T062200Z-96284e/audit.jsonl",
    "audit_records": "29",
    "audit_root": "15e9400b7ef3ffba18884b6d739bd98aca68804862d34588dc10b319652dea4f",
    "witnessed_by": "bank-a, bank-b, insurer-c",
}


def test_provenance_ties_the_federated_model_to_its_audit_log(comparison: ComparisonResult, tmp_path: Path) -> None:
    md = write_report(tmp_path, comparison, None, None, {**_PROVENANCE, "model_hash_in_log": _HASH})

    text = _parse(md.parent / "report.html").body_text
    assert f"Federated model hash: {_HASH}" in text
    assert "Audit log Merkle root (RFC 9162, all records): 15e9400b7ef3" in text
    assert "run_closed record states this same final model hash" in text
    assert "different final model hash" not in text


def test_provenance_says_so_when_the_log_names_another_model(comparison: ComparisonResult, tmp_path: Path) -> None:
    other = "0" * 64
    md = write_report(tmp_path, comparison, None, None, {**_PROVENANCE, "model_hash_in_log": other})

    text = _parse(md.parent / "report.html").body_text
    assert "states a different final model hash" in text and other in text
    assert "this report's model is not the one the log describes" in text
