"""``fedfraud audit show`` and ``verify`` print hostile strings from a log as text.

Rich reads ``[...]`` as markup: a refusal rule ``[/x]`` used to abort ``show``
with a MarkupError, ``[red]`` restyled the output, and escape sequences and
bidirectional overrides went to the terminal raw.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import audit_support
from audit.cli import app
from audit.keys import public_key_b64
from audit_support import BuiltRun, build_run, policy_hash

runner = CliRunner()

# No "/" in the institution id: it is part of the witness log's file name.
INSTITUTION = "[red]evil[bold]\u202eexe.txt"
RULES = ["[/x] closes nothing", "[link=https://example.org]click[/link]", "esc\x1b[2Jclear"]


@pytest.fixture
def hostile_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BuiltRun:
    monkeypatch.setattr(audit_support, "INSTITUTIONS", ("bank-a", "bank-b", INSTITUTION))

    def refuse(auditor, rnd: int) -> None:  # type: ignore[no-untyped-def]
        if rnd == 1:
            auditor.policy_refusal(1, INSTITUTION, RULES, policy_hash(INSTITUTION))

    return build_run(tmp_path / "run", refuse_in_round=None, hook=refuse,
                     metrics={"auc_pr": 0.578207380778315})


def test_show_prints_hostile_rules_and_ids_as_text(hostile_run: BuiltRun) -> None:
    result = runner.invoke(app, ["show", str(hostile_run.log)], env={"COLUMNS": "400"})

    assert result.exit_code == 0, result.exception
    text = result.output
    assert "\u202e" not in text and "\x1b" not in text
    assert "\\u202e" in text and "\\u001b" in text
    assert "[/x]" in text and "[red]evil" in text and "[link=" in text
    assert "auc_pr=0.5782" in text and "0.578207380778315" not in text


def test_verify_prints_hostile_ids_as_text(hostile_run: BuiltRun, tmp_path: Path) -> None:
    server_key = tmp_path / "server.b64"
    server_key.write_text(public_key_b64(hostile_run.server_key))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({i: public_key_b64(k) for i, k in hostile_run.inst_keys.items()}))
    args = ["verify", str(hostile_run.log), "--server-key", str(server_key), "--keys", str(keys)]
    for path in hostile_run.inst_logs.values():
        args += ["--institution-log", str(path)]

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    assert "\u202e" not in result.output
    assert "[red]evil[bold]\\u202eexe.txt's log" in result.output
