"""A Grid that listens for institutions' refusals on every reply, and knows the roster.

Flower's SecAgg+ workflow keeps the errors of institutions that left a round
to itself (and drops them when the round halts). Refusals matter for the
audit trail, so the round loop hands the workflow this wrapper: it forwards
every call to the real Grid unchanged and reads the refusal tokens in error
replies on the way back (see :mod:`core.wire`). It also carries the
roster (each institution's signing key) and the audit hook with which the
secure-aggregation workflow records every node that took part.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from flwr.app import Message
from flwr.serverapp import Grid

from core.wire import Refusal, find_refusals


#: Reply polling of :meth:`RefusalTap.send_and_receive`: first pull after
#: ``MIN_POLL`` seconds, doubling while nothing arrives, at most ``MAX_POLL``.
MIN_POLL = 0.05
MAX_POLL = 0.25


class RefusalTap(Grid):  # type: ignore[misc]
    """Forwards to ``inner``; collects refusals per round."""

    def __init__(
        self,
        inner: Grid,
        roster: Mapping[str, Ed25519PublicKey] | None = None,
        on_participants: Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]]], object] | None = None,
    ) -> None:
        self._inner = inner
        self._refusals: dict[int, dict[tuple[str, tuple[str, ...]], Refusal]] = {}
        #: The institutions' signing keys (the roster every node must prove a
        #: place on); empty: the workflow checks no node's identity itself.
        self.roster: dict[str, Ed25519PublicKey] = dict(roster or {})
        #: Called with (binding, nodes) after each secure round's first stage.
        self.on_participants = on_participants
        #: The institutions every policy allows to receive the model (ckks
        #: mode sends the encrypted sum to these survivors only); None: all.
        self.model_recipients: frozenset[str] | None = None

    def take(self, server_round: int) -> list[Refusal]:
        """The refusals seen for a round (each distinct one once, in arrival order).

        An institution may refuse twice in one round (its training and its
        evaluation, say): both are kept, so the audit log names both.
        """
        return list(self._refusals.pop(server_round, {}).values())

    def _scan(self, messages: Iterable[Message]) -> list[Message]:
        replies = list(messages)
        for message in replies:
            if message.has_error():
                reason = message.error.reason or ""
                for refusal in find_refusals(reason):
                    key = (refusal.institution, refusal.rules)
                    self._refusals.setdefault(refusal.server_round, {})[key] = refusal
        return replies

    # -- Grid interface, forwarded -------------------------------------------------
    def set_run(self, run: Any) -> None:  # noqa: D102
        self._inner.set_run(run)

    @property
    def run(self) -> Any:  # noqa: D102
        return self._inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # noqa: D102
        return self._inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return self._inner.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:  # noqa: D102
        return self._inner.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self._scan(self._inner.pull_messages(message_ids))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``; pull replies until all arrived or ``timeout`` passed.

        Flower's Deployment Engine Grid sleeps 3 s between pulls, so every
        stage of a secure round costs at least 3 s on top of the institutions'
        work. This polls soon after pushing and backs off to ``MAX_POLL`` (one
        cheap request to the local SuperLink), resetting whenever replies arrive.
        """
        ids = set(self._inner.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        pause = MIN_POLL
        while ids:
            pulled = self.pull_messages(ids)
            replies.extend(pulled)
            ids.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if not ids:
                break
            pause = MIN_POLL if pulled else min(pause * 2, MAX_POLL)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                pause = min(pause, left)
            time.sleep(pause)
        return replies
