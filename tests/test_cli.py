"""The ``fedfraud`` command as a person runs it: help, bad input, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def fedfraud(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfraud", *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = fedfraud("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("demo", "compare", "generate", "policy", "audit", "provision"):
        assert command in result.stdout


def test_bad_secagg_setting_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = fedfraud("demo", "--set", "reconstruction-threshold=3", cwd=tmp_path)
    assert result.returncode == 2  # ConfigError
    assert "reconstruction-threshold" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing half written
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "demo").exists()


def test_unknown_run_config_key_is_named(tmp_path: Path) -> None:
    result = fedfraud("demo", "--set", "local-epoch=3", cwd=tmp_path)
    assert result.returncode == 2
    assert "local-epoch" in result.stderr


def test_byo_without_schema_is_a_clear_error(tmp_path: Path) -> None:
    csv = tmp_path / "claims.csv"
    csv.write_text("a,b\n1,2\n")
    result = fedfraud("demo", "--byo-csv", str(csv), cwd=tmp_path)
    assert result.returncode == 2
    assert "--schema" in result.stderr
