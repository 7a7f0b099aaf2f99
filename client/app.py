"""The ClientApp each institution runs (thin: logic lives in the modules beside it)."""

from __future__ import annotations

from flwr.app import Context
from flwr.client import Client
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from fedfraud.settings import RunSettings

from .fraud_client import FraudClient
from .mods import policy_gate_mod
from .node import resolve_node


def client_fn(context: Context) -> Client:
    """Build this institution's client from its run and node config."""
    settings = RunSettings.from_run_config(context.run_config)
    node = resolve_node(context.node_config, settings)
    return FraudClient(context, settings, node).to_client()


# The gate sees every round open before Flower's SecAgg+ mod does; training
# happens only inside SecAgg+'s "collect masked vectors" stage, checked again
# by the client itself.
app = ClientApp(client_fn=client_fn, mods=[policy_gate_mod, secaggplus_mod])
