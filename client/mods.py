"""Client mods: the gate, applied where a round opens.

``policy_gate_mod`` sits *outside* Flower's ``secaggplus_mod``. When a SecAgg+
round opens (its "setup" stage), it checks the round against the institution's
own policy and the run's settings before any key material is generated, so a
refusing institution leaves the round at once, cleanly, and the others go on if
the remaining cohort still satisfies them. Training itself is checked again
inside the client, once the real cohort (who shared keys) is known.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable

from fedfraud.settings import Aggregation, RunSettings

from .gate import RoundView, check_round, load_institution
from .node import resolve_node
from .secagg_adapter import carries_secagg, round_of, setup_request


def policy_gate_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Refuse a SecAgg+ round at its setup stage when a rule would be broken."""
    observed = setup_request(msg)
    if observed is not None:
        settings = RunSettings.from_run_config(ctxt.run_config)
        node = resolve_node(ctxt.node_config, settings)
        institution = load_institution(node, settings)
        check_round(
            RoundView(node.institution_id, round_of(msg), observed, observed.sample_num),
            settings,
            institution,
        )
    return call_next(msg, ctxt)


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for every training message, with one exception.

    A training message outside SecAgg+ is let through to the client only in an
    ``unsafe-plain`` benchmark run, where the client's gate still refuses
    unless this institution opted in itself (a file in its own site folder).
    Everything else goes through ``secaggplus_mod``, which refuses a training
    message that is not part of the protocol.
    """
    if msg.metadata.message_type == MessageType.TRAIN and not carries_secagg(msg):
        settings = RunSettings.from_run_config(ctxt.run_config)
        if settings.aggregation is Aggregation.UNSAFE_PLAIN:
            return call_next(msg, ctxt)
    return secaggplus_mod(msg, ctxt, call_next)
