"""``fedfraud audit`` sub-commands through typer's CliRunner: exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.cli import app

from audit_vectors import VECTORS

runner = CliRunner()
SERVER_KEY = VECTORS / "server_key.b64"
KEYS = VECTORS / "trusted_keys.json"


def _args(name: str, *extra: str) -> list[str]:
    folder = VECTORS / name
    args = ["verify", str(folder / "server.jsonl"), "--server-key", str(SERVER_KEY), "--keys", str(KEYS)]
    for w in sorted(folder.glob("witness-*.jsonl")):
        args += ["--institution-log", str(w)]
    return args + list(extra)


def _policy_files(tmp_path: Path, name: str) -> list[str]:
    keys = json.loads(KEYS.read_text())
    policies = json.loads((VECTORS / name / "policies.json").read_text())
    args = []
    for inst, tables in policies.items():
        lines = ["schema_version = 1", "[identity]", f'id = "{inst}"', f'public_key = "{keys[inst]}"', 'name = "extra fields are ignored"']
        for table, values in tables.items():
            lines.append(f"[{table}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        path = tmp_path / f"{inst}.toml"
        path.write_text("\n".join(lines) + "\n")
        args += ["--policy", str(path)]
    return args


@pytest.mark.parametrize(
    ("vector", "code", "word"),
    [
        ("valid_run", 0, "VALID"),
        ("record_deleted", 10, "TAMPERED"),
        ("torn_last_line", 10, "torn"),
        ("tail_truncated_unwitnessed", 11, "INCOMPLETE"),
        ("fork", 13, "EQUIVOCATION"),
    ],
)
def test_verify_exit_codes(vector: str, code: int, word: str) -> None:
    result = runner.invoke(app, _args(vector))
    assert result.exit_code == code, result.output
    assert word in result.output


def test_verify_points_at_the_record() -> None:
    result = runner.invoke(app, _args("record_deleted"))
    assert "line 13" in result.output and "record 13" in result.output and "missing" in result.output


def test_verify_with_policy_files_reports_violation(tmp_path: Path) -> None:
    folder = VECTORS / "policy_min_cohort"
    args = ["verify", str(folder / "server.jsonl"), "--server-key", str(SERVER_KEY), *_policy_files(tmp_path, "policy_min_cohort")]
    for w in sorted(folder.glob("witness-*.jsonl")):
        args += ["--institution-log", str(w)]
    result = runner.invoke(app, args)
    assert result.exit_code == 12, result.output
    assert "POLICY_VIOLATED" in result.output and "minimum cohort" in result.output


def test_verify_json_output() -> None:
    result = runner.invoke(app, _args("records_reordered", "--json"))
    assert result.exit_code == 10
    data = json.loads(result.output)
    assert data["verdict"] == "TAMPERED" and data["exit_code"] == 10
    failed = [c for c in data["checks"] if not c["ok"]]
    assert failed[0]["line"] == 21 and failed[0]["name"] == "chain"


def test_unreadable_input_exits_3(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(tmp_path / "missing.jsonl"), "--server-key", str(SERVER_KEY), "--keys", str(KEYS)])
    assert result.exit_code == 3
    bad_keys = tmp_path / "keys.json"
    bad_keys.write_text('{"bank-a": "not base64!"}')
    result = runner.invoke(app, _args("valid_run")[:4] + ["--keys", str(bad_keys)])
    assert result.exit_code == 3


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["verify"]).exit_code == 2
    no_keys = ["verify", str(VECTORS / "valid_run" / "server.jsonl"), "--server-key", str(SERVER_KEY)]
    assert runner.invoke(app, no_keys).exit_code == 2


def test_help_documents_exit_codes() -> None:
    result = runner.invoke(app, ["verify", "--help"])
    assert result.exit_code == 0
    for text in ("0 VALID", "10 TAMPERED", "11 INCOMPLETE", "12 POLICY_VIOLATED", "13 EQUIVOCATION", "3 unreadable"):
        assert text in " ".join(result.output.split())


def test_show_prints_rounds() -> None:
    result = runner.invoke(app, ["show", str(VECTORS / "valid_run" / "server.jsonl")])
    assert result.exit_code == 0, result.output
    assert "insurer-c" in result.output and "unmask" in result.output and "auprc" in result.output


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_report_includes_gdpr_ai_act_and_verdict(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"report.{fmt}"
    folder = VECTORS / "policy_min_cohort"
    args = ["report", str(folder / "server.jsonl"), "--server-key", str(SERVER_KEY), "--format", fmt, "--out", str(out),
            *_policy_files(tmp_path, "policy_min_cohort")]
    for w in sorted(folder.glob("witness-*.jsonl")):
        args += ["--institution-log", str(w)]
    result = runner.invoke(app, args)
    assert result.exit_code == 12, result.output
    text = out.read_text()
    for needle in ("Art. 30", "Art. 12", "POLICY_VIOLATED", "Retention", "365 days", "Recipients", "Security measures"):
        assert needle in text
    if fmt == "html":
        assert text.startswith("<!DOCTYPE html>")
