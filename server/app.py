"""The ServerApp (thin: the round loop lives in :mod:`server.loop`)."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.settings import RunSettings

from .busy import exclusive_run
from .loop import run_federation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config (one run at a time per server folder)."""
    settings = RunSettings.from_run_config(context.run_config)
    with exclusive_run(settings, context.run_id):
        run_federation(grid, context)
