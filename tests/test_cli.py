"""The ``fedfraud`` command as a person runs it: help, bad input, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.shared_data import INSURANCE_CSV


def fedfraud(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfraud", *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = fedfraud("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("demo", "compare", "generate", "score", "policy", "audit", "provision"):
        assert command in result.stdout


def test_bad_secagg_setting_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = fedfraud("demo", "--set", "reconstruction-threshold=3", cwd=tmp_path)
    assert result.returncode == 9  # ConfigError
    assert "reconstruction-threshold" in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing half written
    assert not (tmp_path / "data").exists()
    assert not (tmp_path / "demo").exists()


def test_unknown_run_config_key_is_named(tmp_path: Path) -> None:
    result = fedfraud("demo", "--set", "local-epoch=3", cwd=tmp_path)
    assert result.returncode == 9
    assert "local-epoch" in result.stderr


def test_unknown_heterogeneity_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = fedfraud("demo", "--heterogeneity", "extreme", cwd=tmp_path)
    assert result.returncode == 9
    assert "--heterogeneity must be one of standard, high, got 'extreme'" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing half written


def test_demo_help_offers_the_heterogeneous_institutions(tmp_path: Path) -> None:
    result = fedfraud("demo", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--heterogeneity" in result.stdout and "fedprox-mu=0.1" in result.stdout


def test_byo_without_schema_is_a_clear_error(tmp_path: Path) -> None:
    csv = tmp_path / "claims.csv"
    csv.write_text("a,b\n1,2\n")
    result = fedfraud("demo", "--byo-csv", str(csv), cwd=tmp_path)
    assert result.returncode == 9
    assert "--schema" in result.stderr


def test_error_messages_keep_their_brackets_and_help_is_not_cut_in_a_pipe() -> None:
    # Brackets in a message are text, not markup (they vanished before); the
    # help read through a pipe (80 columns) cuts no word with an ellipsis.
    import subprocess
    import sys

    env = {**__import__("os").environ, "COLUMNS": "80"}
    error = subprocess.run(
        [sys.executable, "-m", "fedfraud", "demo", "--set", "nope=1"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert error.returncode == 9
    assert "[tool.flwr.app.config]" in error.stderr
    helptext = subprocess.run(
        [sys.executable, "-m", "fedfraud", "demo", "--help"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    ).stdout
    assert "…" not in helptext
    assert "pyproject.toml" in helptext


def test_printed_commands_are_never_wrapped() -> None:
    # A command printed for copy-paste stays on one line, whatever the width.
    import io

    from rich.console import Console

    from fedfraud import cli

    line = "fedfraud audit verify " + " ".join(f"--policy /some/long/path/site-{i}/policy.toml" for i in range(6))
    buffer = io.StringIO()
    narrow = Console(file=buffer, width=40, soft_wrap=cli.console.soft_wrap, highlight=False)
    narrow.print(line)
    assert buffer.getvalue().rstrip("\n") == line


def test_fixed_max_weight_below_an_institutions_rows_is_refused_before_flower(tmp_path: Path) -> None:
    # Before the auto max-weight, a bank's 390k rows met the default 100000
    # inside Flower, 40 s in, with the cause only in flower.log.
    root = Path(__file__).resolve().parents[1]
    result = fedfraud(
        "demo", "--byo-csv", str(INSURANCE_CSV),
        "--split-by", "policy_state", "--schema", str(root / "fraud/schemas/insurance_claims.toml"),
        "--set", "max-weight=100", cwd=tmp_path,
    )
    assert result.returncode == 9
    assert "max-weight 100 is below the training rows of il (237), in (217), oh (247)" in result.stderr
    assert "max-weight=0" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_site_and_byo_csv_together_are_refused(tmp_path: Path) -> None:
    result = fedfraud("demo", "--byo-csv", "x.csv", "--site", "a=b", "--schema", "s.toml", cwd=tmp_path)
    assert result.returncode == 9
    assert "not both" in result.stderr


def test_fingerprints_and_commands_print_unaltered() -> None:
    # Rich turned ':AB:' in a printed CA fingerprint into an emoji, so it could
    # not be compared with openssl's; and a long command must not be wrapped.
    from fedfraud import cli, code, data_check, deployment, provision

    fingerprint = "SHA256 Fingerprint=12:AB:34:CD:56:AB:78:" + ":".join(["9F"] * 40)
    for console in (cli.console, cli.err_console, code.console, data_check.console,
                    deployment.console, provision.console):
        with console.capture() as captured:
            console.print(fingerprint)
        assert captured.get() == fingerprint + "\n"


def test_generate_high_heterogeneity_spans_the_fraud_rates(tmp_path: Path) -> None:
    result = fedfraud(
        "generate", "--out", str(tmp_path / "data"), "--rows", "2000", "--heterogeneity", "high", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    rates = {name: item["fraud_rate"] for name, item in json.loads(result.stdout).items()}
    assert rates == {"bank-a": 0.005, "bank-b": 0.05, "insurer-c": 0.1}
    refused = fedfraud("generate", "--out", str(tmp_path / "other"), "--heterogeneity", "extreme", cwd=tmp_path)
    assert refused.returncode == 9
    assert "heterogeneity must be one of standard, high" in refused.stderr
    assert not (tmp_path / "other").exists()


def test_printed_paths_and_commands_are_never_altered_by_the_console(tmp_path: Path) -> None:
    # A folder whose name looks like console markup is printed as it is.
    from fedfraud.cli import console

    odd = tmp_path / "runs [bold]x[/bold] :AB:"
    with console.capture() as captured:
        console.print(f"run directory: {odd}")
    assert captured.get().strip() == f"run directory: {odd}"


def test_bad_simulation_cores_are_refused_before_anything_starts(tmp_path: Path) -> None:
    import os

    result = subprocess.run(
        [sys.executable, "-m", "fedfraud", "demo"], capture_output=True, text=True, timeout=120, check=False,
        cwd=tmp_path, env={**os.environ, "FEDFRAUD_SIMULATION_CPUS": "0"},
    )
    assert result.returncode == 9
    assert "FEDFRAUD_SIMULATION_CPUS='0': give a whole number of cores from 1 to 256" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing half written


def test_simulation_cores_come_from_the_environment_or_default_to_two() -> None:
    import pytest

    from core.errors import ConfigError
    from fedfraud.simulation import SIMULATION_CPUS_ENV, simulation_cpus

    assert simulation_cpus({}) == 2
    assert simulation_cpus({SIMULATION_CPUS_ENV: " 1 "}) == 1
    for bad in ("two", "-1", "1.5", "257"):
        with pytest.raises(ConfigError, match=SIMULATION_CPUS_ENV):
            simulation_cpus({SIMULATION_CPUS_ENV: bad})
