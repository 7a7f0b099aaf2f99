"""``fedfraud audit`` sub-commands through typer's CliRunner: exit codes and messages."""

from __future__ import annotations

import json
import re
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
    """Real, valid policy files (the bank-a example) with the vector's protection limits."""
    import tomllib

    import tomli_w

    from fedfraud.simulation import project_dir
    from fedfraud.sites import render_policy

    keys = json.loads(KEYS.read_text())
    policies = json.loads((VECTORS / name / "policies.json").read_text())
    args = []
    for inst, tables in policies.items():
        text = render_policy(project_dir() / "policies" / "bank-a.toml", inst, keys[inst], sorted(keys))
        data = tomllib.loads(text)
        for key in ("min_cohort_size", "max_rounds", "required_aggregation"):
            data["protection"][key] = tables["protection"][key]
        data["audit"]["retention_days"] = tables["audit"]["retention_days"]
        path = tmp_path / f"{inst}.toml"
        path.write_text(tomli_w.dumps(data))
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


def _verify_args(folder: Path, *extra: str) -> list[str]:
    return ["verify", str(folder / "server.jsonl"), "--server-key", str(SERVER_KEY), "--keys", str(KEYS), *extra]


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda text: re.sub(r"min_cohort_size = (\d+)", r'min_cohort_size = "\1"', text), "min_cohort_size"),
        (lambda text: text.replace("[protection]", "[protection]\nunknown_rule = 1"), "unknown_rule"),
    ],
    ids=["string_as_min_cohort_size", "unknown_field"],
)
def test_policy_that_policy_check_rejects_is_refused_not_skipped(
    tmp_path: Path, edit: object, fragment: str
) -> None:
    # Before: such a policy verified VALID with the cohort check silently skipped.
    args = _policy_files(tmp_path, "policy_min_cohort")
    path = Path(args[1])
    path.write_text(edit(path.read_text()))  # type: ignore[operator]
    folder = VECTORS / "valid_run"
    result = runner.invoke(app, ["verify", str(folder / "server.jsonl"), "--server-key", str(SERVER_KEY), *args])
    assert result.exit_code == 3, result.output
    assert fragment in result.output


def test_policy_edited_after_the_run_no_longer_matches_the_genesis(tmp_path: Path) -> None:
    # The genesis records each institution's policy hash; a policy file whose
    # hash differs (edited after the run) is reported, not waved through.
    args = _policy_files(tmp_path, "policy_min_cohort")
    folder = VECTORS / "valid_run"
    cmd = ["verify", str(folder / "server.jsonl"), "--server-key", str(SERVER_KEY), *args]
    for w in sorted(folder.glob("witness-*.jsonl")):
        cmd += ["--institution-log", str(w)]
    result = runner.invoke(app, cmd)
    assert result.exit_code == 12, result.output
    assert "policy hash" in result.output and "policy hashes stayed fixed" not in result.output


@pytest.mark.parametrize("target", ["log", "institution-log"])
def test_device_or_fifo_as_input_is_refused_without_hanging(tmp_path: Path, target: str) -> None:
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = VECTORS / "valid_run"
    for hostile in (Path("/dev/zero"), fifo):
        if target == "log":
            cmd = ["verify", str(hostile), "--server-key", str(SERVER_KEY), "--keys", str(KEYS)]
        else:
            cmd = _verify_args(folder, "--institution-log", str(hostile))
        result = runner.invoke(app, cmd)
        assert result.exit_code == 3, result.output
        assert "not a regular file" in result.output


def test_another_runs_institution_log_is_a_usage_error(tmp_path: Path) -> None:
    from audit_support import build_run

    other = build_run(tmp_path / "other", run_id="run-2")
    result = runner.invoke(
        app, _verify_args(VECTORS / "valid_run", "--institution-log", str(other.inst_logs["bank-a"]))
    )
    assert result.exit_code == 2, result.output
    assert "run-2" in result.output


def test_missing_institution_log_is_reported_not_a_crash(tmp_path: Path) -> None:
    # An institution that left before its first witnessing has no log: the
    # documented command reports what is missing (11) instead of exit 3.
    folder = VECTORS / "valid_run"
    cmd = _verify_args(folder, "--institution-log", str(tmp_path / "never-witnessed.jsonl"))
    for w in sorted(folder.glob("witness-*.jsonl")):
        cmd += ["--institution-log", str(w)]
    result = runner.invoke(app, cmd)
    assert result.exit_code == 11, result.output
    assert "not found" in result.output


def test_fast_help_states_the_measured_speed_up() -> None:
    result = runner.invoke(app, ["verify", "--help"])
    text = " ".join(result.output.split())
    assert "about 3x" not in text and "1.6x" not in text
    assert all(word in text for word in ("100,000-record", "10,000-10,500", "14,000", "records/s"))
