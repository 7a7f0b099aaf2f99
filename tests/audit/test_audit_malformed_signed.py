"""A dishonest server signs records of a form the verifier does not expect: a verdict, never a crash.

The server holds its audit key, so every record it writes is "authentic";
its content still has to be read. These logs are re-signed end to end with
the server's own key after one member is given a form no honest writer
produces. Before the verifier guarded its content steps (3-6), metrics given
as a string made ``verify_log`` (and ``fedfraud audit verify``) end in a
traceback instead of the TAMPERED verdict its contract promises; a
countersignature whose checkpoint is not an object was already caught.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit.verify import Verdict, verify_log
from audit_support import BuiltRun, resign

Edit = Callable[[int, str, dict[str, Any]], tuple[str, dict[str, Any]]]


def _edit_first(kind_member: str, value: object) -> Callable[[BuiltRun], Edit]:
    """Give ``member`` of the first body that has it the value ``value``."""

    def make(run: BuiltRun) -> Edit:
        done: list[int] = []

        def edit(seq: int, ts: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            if not done and kind_member in body:
                done.append(seq)
                body = {**body, kind_member: value}
            return ts, body

        return edit

    return make


def _witness_checkpoint_not_an_object(run: BuiltRun) -> Edit:
    """The first countersignature's checkpoint becomes a string."""
    done: list[int] = []

    def edit(seq: int, ts: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        sig = body.get("countersignature")
        if not done and isinstance(sig, dict):
            done.append(seq)
            body = {**body, "countersignature": {**sig, "checkpoint": "a string"}}
        return ts, body

    return edit


MALFORMED = {
    "round_closed_metrics_a_string": _edit_first("metrics", "0.99"),
    "witness_checkpoint_not_an_object": _witness_checkpoint_not_an_object,
}


@pytest.mark.parametrize("attack", sorted(MALFORMED))
def test_server_signed_record_of_an_unexpected_form_is_tampered_not_a_crash(
    attack: str, pristine_run: BuiltRun, tmp_path: Path
) -> None:
    edit = MALFORMED[attack](pristine_run)
    forged = pristine_run.write_lines(resign(pristine_run.lines(), pristine_run.server_key, edit),
                                      tmp_path / "forged.jsonl")
    report = verify_log(forged, pristine_run.trusted, pristine_run.server_pub)
    assert report.verdict is Verdict.TAMPERED
    assert any(not c.ok for c in report.checks)


def test_the_cli_reports_a_malformed_signed_record_with_the_tampered_exit_code(
    pristine_run: BuiltRun, tmp_path: Path
) -> None:
    edit = MALFORMED["round_closed_metrics_a_string"](pristine_run)
    forged = pristine_run.write_lines(resign(pristine_run.lines(), pristine_run.server_key, edit),
                                      tmp_path / "forged.jsonl")
    server_pub = tmp_path / "server.pub"
    server_pub.write_text(base64.b64encode(pristine_run.server_pub).decode())
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({i: base64.b64encode(k).decode() for i, k in pristine_run.trusted.items()}))
    done = subprocess.run(
        [sys.executable, "-m", "fedfraud", "audit", "verify", str(forged), "--server-key", str(server_pub),
         "--keys", str(keys)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == Verdict.TAMPERED.exit_code, done.stdout + done.stderr
    assert "TAMPERED" in done.stdout

