"""The ClientApp each institution runs (thin: logic lives in the modules beside it)."""

from __future__ import annotations

from flwr.app import Context
from flwr.client import Client
from flwr.clientapp import ClientApp

from .secagg_mod import hardened_secagg_mod
from .session import institution_node, run_settings


def client_fn(context: Context) -> Client:
    """Build this institution's client from its run and node config."""
    # Imported here, not at module level: in the Deployment Engine every
    # message starts a fresh ClientApp process, and the SecAgg+ key stages
    # (handled by the mod, before this runs) need no torch or pandas.
    from .fraud_client import FraudClient

    settings = run_settings(context)
    node = institution_node(context, settings)
    return FraudClient(context, settings, node).to_client()


# Every training message goes through fedfraud's hardened SecAgg+ mod, which
# checks each round against the institution's own settings, policy, pinned
# partner keys and round ledger; training happens only inside its "collect
# masked vectors" stage, checked again by the client's gate.
app = ClientApp(client_fn=client_fn, mods=[hardened_secagg_mod])
