"""The ClientApp each institution runs (thin: logic lives in the modules beside it)."""

from __future__ import annotations

from flwr.app import Context
from flwr.client import Client
from flwr.clientapp import ClientApp

from fedfraud.settings import RunSettings

from .mods import policy_gate_mod, secure_aggregation_mod
from .node import resolve_node


def client_fn(context: Context) -> Client:
    """Build this institution's client from its run and node config."""
    # Imported here, not at module level: in the Deployment Engine every
    # message starts a fresh ClientApp process, and the SecAgg+ key stages
    # (handled by the mods, before this runs) need no torch or pandas.
    from .fraud_client import FraudClient

    settings = RunSettings.from_run_config(context.run_config)
    node = resolve_node(context.node_config, settings)
    return FraudClient(context, settings, node).to_client()


# The gate sees every round open before Flower's SecAgg+ mod does; training
# happens only inside SecAgg+'s "collect masked vectors" stage, checked again
# by the client itself (secure_aggregation_mod is Flower's secaggplus_mod,
# plus the opted-in unsafe-plain baseline for benchmarks).
app = ClientApp(client_fn=client_fn, mods=[policy_gate_mod, secure_aggregation_mod])
