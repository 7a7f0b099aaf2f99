"""The statistics round: what the federation agrees before it trains.

Before the first training round, every institution sends its training row
count and, for ``data-format = "byo"``, the sufficient statistics of its
numeric columns (counts, sums, sums of squares of the signed-log values) into
one exact SecAgg+ sum; the server learns only the federation's totals. From
them it derives

* the training weight bound when ``max-weight`` is auto (the total row count,
  so weights ``n_i / N`` sum to 1), and
* for bring-your-own data the :class:`fraud.byo_encode.FeatureSpec` (global means
  and standard deviations; the categorical vocabularies come from the schema),
  sent with every round. No institution scales its data with statistics of
  its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Context
from flwr.server import LegacyContext
from flwr.serverapp import Grid
from flwr.supercore import log
import numpy as np

from fraud.datasets import spec_to_text
from federation.settings import RunSettings
from secagg.secure_sum import STATS_SCALE, split_counts_and_totals

from .evaluation import secure_round
from .secagg_workflow import current_round


WARNING = 30


class PreprocessThenFit:
    """Fit workflow that first runs the statistics round (once), then trains."""

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
        #: The federation's training rows, as summed in the statistics round.
        self.total_rows = 0

    def __call__(self, grid: Grid, context: Context) -> None:
        """Agree the row total (and spec) in the first round, then run the training round."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected Flower's LegacyContext, found {type(context).__name__}")
        if not self.done:
            strategy = secure_round(grid, context, self.settings, "stats", {})
            if strategy.total is None:
                # Refusals were recorded by the grid tap; the training round
                # opens (so the audit log records it) and halts before any
                # institution trains; the next round tries again.
                log(
                    WARNING,
                    "round %s: the secure statistics round failed; no agreed row total "
                    "or scaling, so no training this round",
                    current_round(context),
                )
                self.fit_workflow(grid, context)
                return
            columns = tuple(self.schema.numeric) if self.schema is not None else ()
            counts, totals = split_counts_and_totals(
                strategy.total, 1 + len(columns), STATS_SCALE
            )
            self.total_rows = int(counts[0])
            set_bound = getattr(self.fit_workflow, "set_weight_bound", None)
            if set_bound is not None:
                set_bound(self.total_rows)
            if self.schema is not None:
                from fraud.byo_encode import FeatureSpec
                from fraud.byo_stats import NumericStats

                stats = NumericStats.from_vector(columns, np.concatenate([counts, totals]))
                self.on_spec(spec_to_text(FeatureSpec.from_stats(self.schema, stats)))
            self.done = True
        self.fit_workflow(grid, context)
