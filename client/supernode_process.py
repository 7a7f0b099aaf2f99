"""The institution's SuperNode process: Flower's, asking for work sooner while idle.

Flower 1.42's SuperNode loop asks the SuperLink for a message and, when none
is waiting, sleeps 3 s before asking again (a constant in
``flwr.supernode.start_client_internal``). A secure round is a chain of
stages, and the server sends a stage's messages only once every institution
answered the one before: each SuperNode has just asked, found nothing, and
sleeps. So every stage of every round waited up to 3 s per SuperNode for
nothing (measured on 2 cores: a stage was 3 s of that sleep, about 2 s of
ClientApp start-up and 0.1-4 s of work).

This module runs Flower's own ``flower-supernode`` entry point with one
change: while no message is waiting, the SuperNode asks again every
:data:`IDLE_POLL_ENV` seconds (default :data:`DEFAULT_IDLE_POLL`), so a new
stage is picked up within that time. Each ask is one small request to the
SuperLink (or the fleet gateway): two a second per SuperNode by default.
After a minute without any message (between runs) it asks less and less
often, back to Flower's 3 s within half a minute (:func:`idle_wait`), so
that polling does not keep a machine busy between runs.

It can also send heartbeats more often (:data:`HEARTBEAT_ENV`, Flower's 10 to
1800 s; default Flower's 30 s). The SuperLink marks a SuperNode offline after
two missed intervals, and only then stops waiting for it: with 30 s, an
institution whose machine died holds up the stage it was in for about 60 s;
with 10 s, about 20 s. Each heartbeat is one small request (every 3.5-4.5 s
at 10 s; Flower sends one every 0.7-0.9 x (interval - 5 s)).

Everything else (TLS, node authentication, the SuperExec and its ClientApp
processes) is Flower's, unchanged.

Besides ``client/runner.py`` this is the one client-side module that reaches
into Flower's SuperNode internals; it refuses to start, naming the Flower
version, if the function it wraps or the constants it sets are not where
Flower 1.42 has them.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from core.errors import ConfigError

#: Environment variable: seconds between asks for work while the SuperNode is idle.
IDLE_POLL_ENV = "FEDFRAUD_SUPERNODE_IDLE_POLL"
DEFAULT_IDLE_POLL = 0.5
#: Bounds: faster than 0.05 s floods the SuperLink; slower than Flower's 3 s gains nothing.
MIN_IDLE_POLL, MAX_IDLE_POLL = 0.05, 3.0
_WRAPPED = "_pull_and_store_message"
#: Seconds after the last message during which an idle SuperNode keeps asking
#: every idle-poll interval; then it asks less often (see :func:`idle_wait`).
IDLE_GRACE = 60.0
#: After the grace, the wait doubles every this many seconds ...
IDLE_DOUBLING = 10.0
#: ... up to Flower's own fixed wait.
IDLE_CEILING = 3.0

#: Environment variable: seconds between the SuperNode's heartbeats, as it tells the SuperLink.
HEARTBEAT_ENV = "FEDFRAUD_SUPERNODE_HEARTBEAT"
#: Flower's own default, and the bounds its SuperLink accepts (``flwr.common.constant``).
DEFAULT_HEARTBEAT, MIN_HEARTBEAT, MAX_HEARTBEAT = 30.0, 10.0, 1800.0
#: Where Flower 1.42 reads the heartbeat interval: the SuperNode's connection
#: (what it tells the SuperLink) and the sender's loop (how often it sends).
_HEARTBEAT_MODULES = ("flwr.supernode.fleet_http_connection", "flwr.supercore.heartbeat")
_HEARTBEAT_NAME = "HEARTBEAT_DEFAULT_INTERVAL"


def idle_poll(env: Mapping[str, str]) -> float:
    """The idle poll interval named by ``env`` (default :data:`DEFAULT_IDLE_POLL`).

    Raises
    ------
    ConfigError
        If the value is not a number in ``[MIN_IDLE_POLL, MAX_IDLE_POLL]``.
    """
    return _seconds(env, IDLE_POLL_ENV, DEFAULT_IDLE_POLL, MIN_IDLE_POLL, MAX_IDLE_POLL)


def heartbeat_interval(env: Mapping[str, str]) -> float:
    """The heartbeat interval named by ``env`` (default :data:`DEFAULT_HEARTBEAT`, Flower's).

    Raises
    ------
    ConfigError
        If the value is not a number in ``[MIN_HEARTBEAT, MAX_HEARTBEAT]``
        (the range Flower's SuperLink accepts).
    """
    return _seconds(env, HEARTBEAT_ENV, DEFAULT_HEARTBEAT, MIN_HEARTBEAT, MAX_HEARTBEAT)


def _seconds(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise ConfigError(f"{name}={text!r}: give seconds between {low:g} and {high:g}")
    return value


def idle_wait(interval: float, idle_for: float) -> float:
    """Seconds to wait before asking again, ``idle_for`` s after the last message.

    ``interval`` for the first :data:`IDLE_GRACE` seconds: within a run the
    next stage follows within seconds, and every SuperNode's pick-up delays
    the whole stage. After that the wait doubles every :data:`IDLE_DOUBLING`
    seconds, up to :data:`IDLE_CEILING` (Flower's own fixed 3 s): between runs
    a SuperNode may idle for days, and each ask costs the SuperNode, the
    gateway and the SuperLink a TLS request.
    """
    if idle_for <= IDLE_GRACE:
        return interval
    doublings = min((idle_for - IDLE_GRACE) / IDLE_DOUBLING, 16.0)  # 16: past any ceiling, no overflow
    return min(max(interval, IDLE_CEILING), interval * 2.0**doublings)


def polling_until_work(
    pull: Callable[..., Any],
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> Callable[..., Any]:
    """``pull`` asked again until it returns a run id, every :func:`idle_wait` seconds.

    Flower's loop sleeps 3 s whenever its pull returns ``None`` (no message);
    the wrapped pull returns only once a message was received and stored, so
    that sleep is never reached. Errors propagate as before. ``clock`` and
    ``sleep`` are the process's own unless a test passes others.
    """
    last_message = clock()

    def pull_when_there_is_work(*args: Any, **kwargs: Any) -> Any:
        nonlocal last_message
        while True:
            run_id = pull(*args, **kwargs)
            if run_id is not None:
                last_message = clock()
                return run_id
            sleep(idle_wait(interval, clock() - last_message))

    pull_when_there_is_work.__wrapped__ = pull  # type: ignore[attr-defined]
    return pull_when_there_is_work


def install(interval: float, heartbeat: float = DEFAULT_HEARTBEAT) -> None:
    """Make Flower's SuperNode (in this process) ask for work every ``interval`` s while idle.

    And announce and send heartbeats every ``heartbeat`` seconds (Flower's
    rhythm for that interval).

    Raises
    ------
    ConfigError
        If this Flower has no such loop function or heartbeat constant
        (another version than 1.42); nothing is changed then.
    """
    import importlib

    import flwr
    from flwr.supernode import start_client_internal as loop

    version = f"flwr {getattr(flwr, '__version__', '?')}"
    pull = getattr(loop, _WRAPPED, None)
    if not callable(pull):
        raise ConfigError(
            f"{version}: flwr.supernode.start_client_internal has no "
            f"{_WRAPPED}; fedfraud's SuperNode needs Flower 1.42"
        )
    modules = [importlib.import_module(name) for name in _HEARTBEAT_MODULES]
    for module in modules:
        if not isinstance(getattr(module, _HEARTBEAT_NAME, None), (int, float)):
            raise ConfigError(
                f"{version}: {module.__name__} has no {_HEARTBEAT_NAME}; fedfraud's SuperNode needs Flower 1.42"
            )
    for module in modules:
        setattr(module, _HEARTBEAT_NAME, heartbeat)
    if getattr(pull, "__wrapped__", None) is None:
        setattr(loop, _WRAPPED, polling_until_work(pull, interval))


def main(argv: list[str] | None = None) -> None:
    """``flower-supernode`` with Flower's own arguments, asking for work sooner while idle.

    Its heartbeat interval is :data:`HEARTBEAT_ENV`'s.
    """
    try:
        install(idle_poll(os.environ), heartbeat_interval(os.environ))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from client import warm_start

    # The SuperExec, and so each flwr-clientapp shim, inherits this environment.
    server = warm_start.start(os.environ)
    sys.argv = ["flower-supernode", *(sys.argv[1:] if argv is None else argv)]
    try:
        flower_supernode()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
