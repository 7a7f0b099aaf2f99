"""The institution's SuperNode process: Flower's loop, asking for work sooner while idle.

The Deployment Engine tests (``tests/deployment/``) run every SuperNode
through this module; these check its pieces without Flower processes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.common import constant as flower_constants
from flwr.supercore import heartbeat as flower_heartbeat
from flwr.supernode import fleet_http_connection as flower_connection
from flwr.supernode import start_client_internal as flower_loop

from client import supernode_process
from client.supernode_process import (
    DEFAULT_HEARTBEAT,
    DEFAULT_IDLE_POLL,
    HEARTBEAT_ENV,
    IDLE_CEILING,
    IDLE_GRACE,
    IDLE_POLL_ENV,
    heartbeat_interval,
    idle_poll,
    idle_wait,
    install,
    polling_until_work,
)
from core.errors import ConfigError
from fedfraud.code import supernode_process as supernode_argv


def test_idle_poll_defaults_to_half_a_second_and_reads_the_environment() -> None:
    assert idle_poll({}) == DEFAULT_IDLE_POLL == 0.5
    assert idle_poll({IDLE_POLL_ENV: " "}) == DEFAULT_IDLE_POLL
    assert idle_poll({IDLE_POLL_ENV: "0.25"}) == 0.25
    assert idle_poll({IDLE_POLL_ENV: "3"}) == 3.0


@pytest.mark.parametrize("value", ["0", "0.01", "3.5", "-1", "nan", "inf", "fast"])
def test_idle_poll_outside_its_bounds_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"{IDLE_POLL_ENV}='{value}': give seconds between 0.05 and 3"):
        idle_poll({IDLE_POLL_ENV: value})


def test_heartbeat_defaults_to_flowers_and_reads_the_environment() -> None:
    assert heartbeat_interval({}) == DEFAULT_HEARTBEAT == flower_constants.HEARTBEAT_DEFAULT_INTERVAL
    assert heartbeat_interval({HEARTBEAT_ENV: "10"}) == 10.0
    assert heartbeat_interval({HEARTBEAT_ENV: "1800"}) == 1800.0


@pytest.mark.parametrize("value", ["9.9", "0", "1801", "nan", "soon"])
def test_heartbeat_outside_what_flowers_superlink_accepts_is_refused(value: str) -> None:
    # Flower's SuperLink refuses intervals outside [10, 1800] s at activation.
    assert (flower_constants.HEARTBEAT_MIN_INTERVAL, flower_constants.HEARTBEAT_MAX_INTERVAL) == (10, 1800)
    with pytest.raises(ConfigError, match=rf"{HEARTBEAT_ENV}='{value}': give seconds between 10 and 1800"):
        heartbeat_interval({HEARTBEAT_ENV: value})


def test_install_sets_the_interval_the_supernode_announces_and_sends_at(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (flower_connection, flower_heartbeat):
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", flower_constants.HEARTBEAT_DEFAULT_INTERVAL)
    monkeypatch.setattr(flower_loop, "_pull_and_store_message", flower_loop._pull_and_store_message)
    install(0.5, 10.0)
    # What ActivateNode and SendNodeHeartbeat tell the SuperLink, and the
    # sender loop's base interval: both Flower's own module globals.
    assert flower_connection.HEARTBEAT_DEFAULT_INTERVAL == 10.0
    assert flower_heartbeat.HEARTBEAT_DEFAULT_INTERVAL == 10.0


def test_install_refuses_a_flower_without_the_heartbeat_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(flower_heartbeat, "HEARTBEAT_DEFAULT_INTERVAL")
    monkeypatch.setattr(flower_loop, "_pull_and_store_message", flower_loop._pull_and_store_message)
    with pytest.raises(ConfigError, match="flwr.supercore.heartbeat has no HEARTBEAT_DEFAULT_INTERVAL"):
        install(0.5, 10.0)
    # Nothing was half changed.
    assert getattr(flower_loop._pull_and_store_message, "__wrapped__", None) is None


def test_pull_is_asked_again_until_a_message_arrives() -> None:
    answers = iter([None, None, None, 42])
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def pull(*args: object, **kwargs: object) -> int | None:
        calls.append((args, kwargs))
        return next(answers)

    started = time.monotonic()
    assert polling_until_work(pull, 0.01)("state", store="s") == 42
    # Three empty asks, each followed by one short wait, never Flower's 3 s.
    assert len(calls) == 4 and all(c == (("state",), {"store": "s"}) for c in calls)
    assert time.monotonic() - started < 2.0


class _Clock:
    """Time that passes only when the poller sleeps (each ask itself takes none)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_an_idle_supernode_asks_every_interval_for_a_minute_then_backs_off_to_flowers_3s() -> None:
    clock = _Clock()
    answers = iter([None] * 200 + [7] + [None] * 3 + [8])
    poll = polling_until_work(lambda: next(answers), 0.5, clock=clock, sleep=clock.sleep)

    assert poll() == 7
    first = clock.waits[:]
    # A minute at the idle-poll interval (within a run the next stage comes
    # within seconds), then longer waits, never beyond Flower's own 3 s.
    assert first[:121] == [0.5] * 121
    assert first[121:] == sorted(first[121:]) and first[121] < 0.6
    assert max(first) == IDLE_CEILING == 3.0 and first[-1] == 3.0
    assert 60.0 < sum(first[:121]) <= IDLE_GRACE + 0.5
    # A message resets it: the next idle spell starts at the interval again.
    assert poll() == 8
    assert clock.waits[len(first):] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("interval", [0.05, 0.5, 3.0])
def test_idle_wait_stays_between_the_interval_and_the_ceiling(interval: float) -> None:
    for idle_for in (0.0, IDLE_GRACE, IDLE_GRACE + 5, 3600.0, 1e12, float("inf")):
        wait = idle_wait(interval, idle_for)
        assert interval <= wait <= max(interval, IDLE_CEILING)
    assert idle_wait(interval, IDLE_GRACE) == interval
    assert idle_wait(interval, 1e12) == max(interval, IDLE_CEILING)


def test_pull_errors_propagate_unchanged() -> None:
    def pull() -> int | None:
        raise ConnectionError("SuperLink gone")

    with pytest.raises(ConnectionError, match="SuperLink gone"):
        polling_until_work(pull, 0.01)()


def test_install_wraps_flowers_own_loop_function_once(monkeypatch: pytest.MonkeyPatch) -> None:
    original = flower_loop._pull_and_store_message
    monkeypatch.setattr(flower_loop, "_pull_and_store_message", original)  # restored after the test
    install(0.2)
    wrapped = flower_loop._pull_and_store_message
    assert wrapped is not original and wrapped.__wrapped__ is original
    install(0.2)  # a second install keeps the one wrapper
    assert flower_loop._pull_and_store_message is wrapped


def test_install_refuses_a_flower_without_the_loop_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(flower_loop, "_pull_and_store_message")
    with pytest.raises(ConfigError, match="fedfraud's SuperNode needs Flower 1.42"):
        install(0.5)


def test_the_supernode_runs_this_module_with_flowers_arguments() -> None:
    argv = supernode_argv(["--superlink", "127.0.0.1:9443"])
    assert argv == [sys.executable, "-P", "-m", supernode_process.__name__, "--superlink", "127.0.0.1:9443"]
    # Flower's own argument parser answers through it.
    shown = subprocess.run([*argv[:4], "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "--auth-supernode-private-key" in shown.stdout


def test_a_client_folder_where_the_supernode_starts_is_not_imported(tmp_path: Path) -> None:
    # Started from a folder holding a `client` package of someone else's, the
    # SuperNode still runs the installed one.
    fake = tmp_path / "client"
    fake.mkdir()
    (fake / "__init__.py").write_text("", encoding="utf-8")
    (fake / "supernode_process.py").write_text("raise SystemExit('the folder was imported')\n", encoding="utf-8")
    argv = supernode_argv([])
    shown = subprocess.run([*argv[:4], "--help"], capture_output=True, text=True, timeout=120, check=False,
                           cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "the folder was imported" not in shown.stderr


@pytest.mark.parametrize(
    ("option", "refused"),
    [
        (["--idle-poll", "9"], f"{IDLE_POLL_ENV}='9.0': give seconds between 0.05 and 3"),
        # Flower's SuperLink would refuse it at activation; refused here first.
        (["--heartbeat", "5"], f"{HEARTBEAT_ENV}='5.0': give seconds between 10 and 1800"),
    ],
)
def test_a_bad_setting_stops_fedfraud_supernode_before_flower_starts(
    tmp_path: Path, option: list[str], refused: str
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "fedfraud", "supernode", str(site), *option, "--", "--superlink", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == ConfigError.exit_code, result.stdout + result.stderr
    assert refused in result.stdout + result.stderr
    assert not (site / "flower-home" / "apps").exists()
