"""What the client's gate reads of the protocol state its own SecAgg+ mod keeps.

:mod:`client.secagg_mod` keeps the round's state in the ClientApp context
(:data:`secagg.protocol.STATE_RECORD`). The gate reads the parameters the
institution itself accepted there, and the cohort it verified, instead of
trusting anything the server claims elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flwr.app import Context

from core.errors import ProtocolError
from secagg.protocol import STATE_RECORD, Stage


@dataclass(frozen=True)
class ObservedSecAgg:
    """SecAgg+ parameters as this institution's own protocol state records them."""

    stage_before: str
    sample_num: int
    num_shares: int
    reconstruction_threshold: int
    clipping_range: float
    quantization_range: int
    modulus_range: int
    max_weight: float
    #: Institutions whose signed key advertisements this one verified (itself
    #: included); empty before the key-sharing stage.
    cohort: tuple[str, ...] = ()

    @property
    def key_holders(self) -> int:
        """How many institutions' keys this one verified (itself included)."""
        return len(self.cohort)


def load_state(context: Context) -> dict[str, Any]:
    """The protocol state of the current round ({} if none)."""
    record = context.state.config_records.get(STATE_RECORD)
    if record is None or "json" not in record:
        return {}
    return dict(json.loads(str(record["json"])))


def state_parameters(state: dict[str, Any]) -> ObservedSecAgg:
    """The parameters in a protocol state."""
    return ObservedSecAgg(
        stage_before=str(state["stage"]),
        sample_num=int(state["sample_num"]),
        num_shares=int(state["num_shares"]),
        reconstruction_threshold=int(state["reconstruction_threshold"]),
        clipping_range=float(state["clipping_range"]),
        quantization_range=int(state["quantization_range"]),
        modulus_range=int(state["modulus_range"]),
        max_weight=float(state["max_weight"]),
        cohort=tuple(sorted(str(a["institution"]) for a in state.get("adverts", []))),
    )


def observed_secagg(context: Context) -> ObservedSecAgg:
    """Read the SecAgg+ state, failing closed when there is none.

    Training (and any other secure task) runs only inside the protocol's
    "collect masked vectors" stage, after the cohort was verified. Anything
    else means the server asked for a result outside the protocol, which
    would return it unprotected.
    """
    state = load_state(context)
    if not state:
        raise ProtocolError("training requested outside SecAgg+ (no protocol state)")
    if state.get("stage") != Stage.COLLECT.value:
        raise ProtocolError(
            f"training requested at the wrong SecAgg+ stage (after {state.get('stage')!r}); refusing"
        )
    try:
        return state_parameters(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("SecAgg+ protocol state is incomplete") from exc
