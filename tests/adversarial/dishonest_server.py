"""A dishonest operator's ServerApp: fedfraud's own round loop, attacking inside SecAgg+.

The operator runs the product's ServerApp unchanged except for the SecAgg+
workflow, which lies to the institutions (this file is copied into a Flower
app of its own by ``test_dishonest_serverapp.py`` and run in the real
simulation engine against the institutions' real ClientApps):

* round 1, training: **overlap at unmask**: the first survivor is listed as
  both active and dead, so that its self-mask seed and its mask key would
  both come back;
* round 2, training: **key substitution**: one institution's round keys are
  replaced by keys the server made, under the institution's old signature;
* round 2, evaluation: **differencing**: the model evaluated by everyone in
  round 1 is evaluated again without one institution;
* round 3: honest, to show the federation goes on after the attacks.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

import server.evaluation
import server.loop
from secagg import hardened as hc
from secagg.protocol import Field, Stage
from server.secagg_workflow import HardenedSecAggWorkflow, _Round


class AttackingWorkflow(HardenedSecAggWorkflow):
    """The product's workflow with the attacks above mixed in."""

    def _setup(self, grid: Grid, state: _Round) -> bool:
        b = state.binding
        if b.task == "evaluate" and b.server_round == 2:
            dropped = max(state.fitins)
            state.fitins.pop(dropped)
            state.proxies.pop(dropped)
        return super()._setup(grid, state)

    def _send(
        self, grid: Grid, state: _Round, stage: Stage, payloads: dict[int, dict[str, Any]]
    ) -> dict[int, dict[str, Any]]:
        b = state.binding
        if b.task == "train" and b.server_round == 1 and stage is Stage.UNMASK:
            victim = min(payloads)
            for fields in payloads.values():
                fields[Field.ACTIVE] = sorted(set(fields[Field.ACTIVE]) | {victim})
                fields[Field.DEAD] = sorted(set(fields[Field.DEAD]) | {victim})
        if b.task == "train" and b.server_round == 2 and stage is Stage.SHARE_KEYS:
            forged = hc.RoundKeys.generate()
            for fields in payloads.values():
                fields[Field.SEAL_KEYS] = [forged.seal_public, *fields[Field.SEAL_KEYS][1:]]
                fields[Field.MASK_KEYS] = [forged.mask_public, *fields[Field.MASK_KEYS][1:]]
        return super()._send(grid, state, stage, payloads)


def attacking_workflow(secagg: Any, federation_id: str, ckks_mode: bool = False) -> AttackingWorkflow:
    """Stands in for :func:`server.secagg_workflow.secagg_workflow` in this server."""
    return AttackingWorkflow(secagg, federation_id)


# The operator's edit: every secure round of the product's loop uses the attack.
server.loop.secagg_workflow = attacking_workflow  # type: ignore[assignment]
server.evaluation.secagg_workflow = attacking_workflow  # type: ignore[assignment]

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """The product's federation, run by a dishonest operator."""
    server.loop.run_federation(grid, context)
