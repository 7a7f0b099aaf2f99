"""Federated preprocessing for bring-your-own data: the shared scaling.

Before the first training round of a ``data-format = "byo"`` run, every
institution sends the sufficient statistics of its numeric columns (counts,
sums, sums of squares of the signed-log values) into one SecAgg+ round; the
server learns only the federation's totals, derives the
:class:`fraud.byo.FeatureSpec` (global means and standard deviations; the
categorical vocabularies come from the schema) and sends it with every round.
No institution scales its data with statistics of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Context
from flwr.server import LegacyContext
from flwr.serverapp import Grid

from fedfraud.datasets import spec_to_text
from fedfraud.errors import ProtocolError
from fedfraud.settings import RunSettings

from .evaluation import secure_round
from .secagg_workflow import current_round


class PreprocessThenFit:
    """Fit workflow that first agrees the feature spec (once), then trains."""

    def __init__(
        self,
        settings: RunSettings,
        schema: Any,
        fit_workflow: Callable[[Grid, Context], None],
        on_spec: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.schema = schema
        self.fit_workflow = fit_workflow
        self.on_spec = on_spec
        self.done = False

    def __call__(self, grid: Grid, context: Context) -> None:
        """Agree the spec in the first round, then run the training round."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected Flower's LegacyContext, found {type(context).__name__}")
        if not self.done:
            from fraud.byo import FeatureSpec, stats_from_weighted_mean

            strategy = secure_round(grid, context, self.settings, "stats", {})
            if strategy.mean is None:
                raise ProtocolError(
                    f"round {current_round(context)}: the secure statistics round failed; "
                    "no shared scaling, so no training"
                )
            stats = stats_from_weighted_mean(
                tuple(self.schema.numeric), strategy.mean, float(strategy.total_weight)
            )
            self.on_spec(spec_to_text(FeatureSpec.from_stats(self.schema, stats)))
            self.done = True
        self.fit_workflow(grid, context)
