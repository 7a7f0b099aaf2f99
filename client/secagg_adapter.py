"""The one module on the client side that reads Flower's SecAgg+ internals.

``secaggplus_mod`` keeps its protocol state in the ClientApp context under
``secaggplus_state``. The gate reads the parameters the server *actually* set
there (threshold, number of participants, clipping range) instead of trusting
anything the server claims elsewhere. If Flower renames these fields, only
this module changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import Context
from flwr.app import ConfigRecord, Message
from flwr.app.message_type import MessageType
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)

from fedfraud.errors import ProtocolError


@dataclass(frozen=True)
class ObservedSecAgg:
    """SecAgg+ parameters as this institution's own protocol state records them."""

    stage_before: str
    sample_num: int
    share_num: int
    threshold: int
    clipping_range: float
    quantization_range: int
    modulus_range: int
    max_weight: float
    #: Institutions this one exchanged SecAgg+ keys with (itself included);
    #: 0 before the key-sharing stage.
    key_holders: int = 0


def observed_secagg(context: Context) -> ObservedSecAgg:
    """Read the SecAgg+ state, failing closed when there is none.

    Training runs only inside SecAgg+'s "collect masked vectors" stage; at that
    moment the stored stage is still the previous one, "share keys". Anything
    else means the server asked for a fit outside the protocol, which would
    return an unprotected update.
    """
    records = context.state.config_records
    if RECORD_KEY_STATE not in records:
        raise ProtocolError("training requested outside SecAgg+ (no protocol state)")
    state = records[RECORD_KEY_STATE]
    stage = state.get("current_stage")
    if stage != Stage.SHARE_KEYS:
        raise ProtocolError(
            f"training requested at the wrong SecAgg+ stage (after {stage!r}); refusing"
        )
    try:
        return ObservedSecAgg(
            stage_before=str(stage),
            sample_num=int(state["sample_num"]),  # type: ignore[arg-type]
            share_num=int(state["share_num"]),  # type: ignore[arg-type]
            threshold=int(state["threshold"]),  # type: ignore[arg-type]
            clipping_range=float(state["clipping_range"]),  # type: ignore[arg-type]
            quantization_range=int(state["target_range"]),  # type: ignore[arg-type]
            modulus_range=int(state["mod_range"]),  # type: ignore[arg-type]
            max_weight=float(state["max_weight"]),  # type: ignore[arg-type]
            key_holders=len(state.get("public_keys_dict:K", [])),  # type: ignore[arg-type]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("SecAgg+ protocol state is incomplete") from exc


def setup_request(msg: Message) -> ObservedSecAgg | None:
    """The SecAgg+ parameters of a "setup" message, or None for any other message.

    The setup stage opens a round: an institution that refuses the round
    should do so here, before it generates or shares any key material.
    """
    if msg.metadata.message_type != MessageType.TRAIN or msg.has_error():
        return None
    records = msg.content.config_records
    if RECORD_KEY_CONFIGS not in records:
        return None
    configs: ConfigRecord = records[RECORD_KEY_CONFIGS]
    if configs.get(Key.STAGE) != Stage.SETUP:
        return None
    try:
        return ObservedSecAgg(
            stage_before="setup",
            sample_num=int(configs[Key.SAMPLE_NUMBER]),  # type: ignore[arg-type]
            share_num=int(configs[Key.SHARE_NUMBER]),  # type: ignore[arg-type]
            threshold=int(configs[Key.THRESHOLD]),  # type: ignore[arg-type]
            clipping_range=float(configs[Key.CLIPPING_RANGE]),  # type: ignore[arg-type]
            quantization_range=int(configs[Key.TARGET_RANGE]),  # type: ignore[arg-type]
            modulus_range=int(configs[Key.MOD_RANGE]),  # type: ignore[arg-type]
            max_weight=float(configs[Key.MAX_WEIGHT]),  # type: ignore[arg-type]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("SecAgg+ setup message is incomplete") from exc


def round_of(msg: Message) -> int:
    """The round a message belongs to (Flower's workflows put it in group_id)."""
    try:
        return int(msg.metadata.group_id)
    except (TypeError, ValueError) as exc:
        raise ProtocolError("message carries no round number") from exc


def carries_secagg(msg: Message) -> bool:
    """Whether a message is part of a SecAgg+ exchange (has the protocol's configs)."""
    return RECORD_KEY_CONFIGS in msg.content.config_records if msg.has_content() else False
