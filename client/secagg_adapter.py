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
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE, Stage

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
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("SecAgg+ protocol state is incomplete") from exc
