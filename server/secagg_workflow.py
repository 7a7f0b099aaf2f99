"""Flower's SecAgg+ workflow with one repair: institutions that leave early.

Flower 1.42's ``SecAggPlusWorkflow`` fixes its list of "sampled" nodes before
the setup stage. A node that leaves during *setup* or *share keys* (for
example an institution whose policy refuses the round) is therefore counted
as a dropped node at the unmask stage, and every survivor is asked for key
shares of that node, which it never received: the survivors fail and the
whole round is lost. A node that left before distributing its key shares
never entered anyone's masks, so the right thing is to forget it.

This subclass does exactly that, after each of the two early stages. It is
the one module on the server side that touches Flower's internals: the
workflow's state, and the legacy message format of the witnessing request.
"""

from __future__ import annotations

from typing import Any

from flwr.server.workflow import SecAggPlusWorkflow


class EarlyDropoutSafeSecAggPlus(SecAggPlusWorkflow):  # type: ignore[misc]
    """``SecAggPlusWorkflow`` that survives institutions leaving before key sharing ends."""

    def setup_stage(self, grid: Any, context: Any, state: Any) -> bool:
        """Run Flower's setup stage, then forget nodes that did not answer it."""
        ok = bool(super().setup_stage(grid, context, state))
        state.sampled_node_ids = set(state.active_node_ids)
        return ok

    def share_keys_stage(self, grid: Any, context: Any, state: Any) -> bool:
        """Run Flower's share-keys stage, then forget nodes that shared no keys."""
        ok = bool(super().share_keys_stage(grid, context, state))
        state.sampled_node_ids = set(state.active_node_ids)
        return ok


def current_round(context: Any) -> int:
    """The round Flower's default workflow is in (kept in the context's state)."""
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, Key

    return int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])


def secagg_workflow(secagg: Any) -> EarlyDropoutSafeSecAggPlus:
    """The SecAgg+ workflow for a run's :class:`secagg.params.SecAggSettings`."""
    return EarlyDropoutSafeSecAggPlus(
        num_shares=secagg.num_shares,
        reconstruction_threshold=secagg.reconstruction_threshold,
        max_weight=secagg.max_weight,
        clipping_range=secagg.clipping_range,
        quantization_range=secagg.quantization_range,
        modulus_range=secagg.modulus_range,
        timeout=secagg.timeout,
    )


def witness_request(
    grid: Any, node_id: int, config: dict[str, Any], server_round: int, timeout: float
) -> Any:
    """A legacy ``get_properties`` message (the institution's client answers it)."""
    from flwr.app import Message
    from flwr.common import GetPropertiesIns
    from flwr.common.constant import MessageTypeLegacy
    from flwr.compat.common import recorddict_compat as compat

    return Message(
        content=compat.getpropertiesins_to_recorddict(GetPropertiesIns(config=config)),
        dst_node_id=node_id,
        message_type=MessageTypeLegacy.GET_PROPERTIES,
        group_id=str(server_round),
        ttl=timeout,
    )


def witness_reply(reply: Any) -> dict[str, Any]:
    """The properties of a ``get_properties`` reply (empty if the status is not OK)."""
    from flwr.common import Code
    from flwr.compat.common import recorddict_compat as compat

    res = compat.recorddict_to_getpropertiesres(reply.content)
    if res.status.code != Code.OK:
        return {}
    return dict(res.properties)
