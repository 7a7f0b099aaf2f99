"""Facts about the model that the protocol side reads, without PyTorch or pandas.

Every stage of a secure round runs in a fresh ClientApp process in the
Deployment Engine; reading a run's settings or an institution's policy
features there must not import PyTorch (about 2 s of CPU) or pandas. The
modules that train and transform re-export these names.
"""

from __future__ import annotations

#: Largest FedProx coefficient a run may set (run config ``fedprox-mu``);
#: beyond it local training barely moves.
MAX_PROX_MU = 100.0

#: Columns of the built-in transactions that reach the model as they are
#: (after scaling): the same name in the CSV file and in ``X``.
AS_IS_COLUMNS: tuple[str, ...] = (
    "merchant_risk",
    "terminal_fraud_rate_28d",
    "customer_tx_count_1d",
    "customer_tx_count_7d",
    "customer_tx_count_30d",
    "customer_mean_amount_1d",
    "customer_mean_amount_7d",
    "customer_mean_amount_30d",
    "amount_to_mean_30d",
    "seconds_since_last_tx",
    "new_device",
    "foreign_country",
)

FEATURE_COLUMNS: tuple[str, ...] = (
    "log_amount",
    "hour_sin",
    "hour_cos",
    "is_weekend",
    "channel_card_present",
    "channel_card_not_present",
    "channel_online_banking",
    *AS_IS_COLUMNS,
)
"""Model inputs, in the column order of ``X``."""
