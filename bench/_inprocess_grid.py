"""An in-process Flower ``Grid`` for benchmarks only (not a transport).

:class:`InProcessGrid` delivers every message by calling the destination
node's ClientApp directly, in this process, one message after another, and
hands the replies back. It stands in for Flower's SuperLink/SuperNode
transport so that a benchmark times the aggregation protocols themselves
(server workflow + client mods) without gRPC, serialization or Ray.

What it does the way Flower's runtime does, because the code under test
relies on it:

* every node keeps one :class:`flwr.app.Context` for the whole run, so a mod
  keeps its protocol state between the messages of a round;
* each delivered message gets a fresh message id (replies point at it through
  ``reply_to_message_id``), and its reply gets its own id;
* :class:`flwr.supercore.task_identity.TaskIdentity` names the client task
  (run id, node id) while the ClientApp runs and the server task otherwise,
  as the SuperNode and the ServerApp processes would;
* an exception raised by the ClientApp becomes an error reply
  (``CLIENT_APP_RAISED_EXCEPTION``), as the SuperNode runtime sends; the
  traceback is kept in :attr:`InProcessGrid.failures` so a benchmark can
  report it precisely;
* a message crosses the "wire" as a copy in both directions (``deepcopy``):
  the receiver may mutate what it gets without touching the sender's object
  (Flower's stock setup stage, for one, sends one shared content to all nodes
  and its mod pops a key from it). The time spent copying is summed in
  :attr:`InProcessGrid.copy_seconds` so it can be reported separately.

Never use it outside benchmarks: there is no isolation, no timeout, no TTL.
"""

from __future__ import annotations

import copy
import itertools
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

#: Called with (node id, message) for every message delivered / reply received.
Hook = Callable[[int, Message], None]


@dataclass
class Delivery:
    """One ClientApp failure seen by the grid."""

    node_id: int
    stage_hint: str
    reason: str
    traceback: str


@dataclass
class InProcessGrid(Grid):
    """A Grid whose "network" is a direct call of each node's ClientApp.

    Parameters
    ----------
    apps : mapping node id -> ClientApp
        The ClientApp each node runs.
    contexts : mapping node id -> Context
        The one Context each node keeps for the run (mods keep state in it).
    run_id : int
        The run's id (messages carry it; so does :attr:`run`).
    server_task_id : int
        The task id of the server side (for :class:`TaskIdentity`).
    on_request, on_reply : Hook, optional
        Observers of each delivered message and each reply (e.g. to count bytes).
    """

    apps: Mapping[int, ClientApp]
    contexts: Mapping[int, Context]
    run_id: int
    server_task_id: int = 1
    on_request: Hook | None = None
    on_reply: Hook | None = None
    copy_seconds: float = 0.0
    failures: list[Delivery] = field(default_factory=list)
    _run: Run | None = None
    _pending: dict[str, Message] = field(default_factory=dict)
    _task_ids: itertools.count = field(default_factory=lambda: itertools.count(1000))

    def __post_init__(self) -> None:
        if set(self.apps) != set(self.contexts):
            raise ValueError("every node needs both a ClientApp and a Context")
        self._run = Run.create_empty(self.run_id)

    # -- identity -------------------------------------------------------------
    def activate(self) -> None:
        """Make this process the run's server task (call before the workflow)."""
        TaskIdentity.task_id = self.server_task_id
        TaskIdentity.run_id = self.run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID

    # -- Grid API ---------------------------------------------------------------
    def set_run(self, run: Run) -> None:
        """Operate in ``run`` (its id must be this grid's run id)."""
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be a Run, got {type(run).__name__}")
        if run.run_id != self.run_id:
            raise ValueError(f"this grid serves run {self.run_id}, not {run.run_id}")
        self._run = run

    @property
    def run(self) -> Run:
        """The run this grid operates in."""
        assert self._run is not None
        return Run(**vars(self._run))

    def create_message(  # noqa: PLR0913 - Flower's signature
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A new instruction message (Flower's deprecated helper, kept for the ABC)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """The ids of every node of the run."""
        return list(self.apps)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message now; keep the reply until it is pulled."""
        ids: list[str] = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            meta = message.metadata
            if meta.reply_to_message_id != "" or meta.ttl <= 0 or meta.run_id != self.run_id:
                raise ValueError(f"invalid instruction message for run {self.run_id}: {meta}")
            self._pending[message_id] = self._deliver(message)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to ``message_ids`` (each is handed out once)."""
        return [self._pending.pop(i) for i in message_ids if i in self._pending]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver every message and return every reply (``timeout`` is moot here)."""
        return self.pull_messages(self.push_messages(messages))

    # -- delivery ---------------------------------------------------------------
    def _copy(self, message: Message) -> Message:
        start = time.perf_counter()
        duplicate = copy.deepcopy(message)
        self.copy_seconds += time.perf_counter() - start
        return duplicate

    def _deliver(self, message: Message) -> Message:
        node_id = message.metadata.dst_node_id
        app = self.apps.get(node_id)
        if app is None:
            reply = Message(
                Error(ErrorCode.NODE_UNAVAILABLE, f"no node {node_id} in this grid"),
                reply_to=message,
            )
            reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            return reply
        incoming = self._copy(message)
        incoming.metadata.delivered_at = str(time.time())
        hint = _stage_hint(incoming)  # before a mod pops it
        if self.on_request is not None:
            self.on_request(node_id, incoming)
        # The SuperNode's ClientApp process: its own task identity.
        TaskIdentity.task_id = next(self._task_ids)
        TaskIdentity.run_id = incoming.metadata.run_id
        TaskIdentity.node_id = node_id
        try:
            reply = app(incoming, self.contexts[node_id])
        except Exception as exc:  # noqa: BLE001 - the runtime reports every failure
            self.failures.append(
                Delivery(node_id, hint, f"{type(exc).__name__}: {exc}",
                         traceback.format_exc())
            )
            reply = Message(
                Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}:<'{exc}'>"),
                reply_to=incoming,
            )
        finally:
            self.activate()
        reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        outgoing = self._copy(reply)
        if self.on_reply is not None:
            self.on_reply(node_id, outgoing)
        return outgoing


def _stage_hint(message: Message) -> str:
    """The protocol stage a message asks for, if it names one (for reports)."""
    try:
        for record in message.content.config_records.values():
            if "stage" in record:  # both protocols name the field so
                return str(record["stage"])
    except ValueError:
        pass
    return "?"
