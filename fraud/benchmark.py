"""Local-versus-pooled sanity check: why the institutions federate at all.

Trains one model per institution on its own training split and one on the
pooled training splits, then scores all of them on the combined test set.
Because each institution sees mostly its own fraud typologies, the pooled
model (what federation approximates) should beat every local model.

Run ``python -m fraud.benchmark`` to print the figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from fraud.features import N_FEATURES, to_arrays
from fraud.generator import (
    DEFAULT_INSTITUTIONS,
    default_profiles,
    generate_institution,
    institution_seed,
    split_train_test,
)
from fraud.model import build_model
from fraud.train import TrainConfig, predict_scores, train_local


def local_vs_pooled(
    names: Sequence[str] = DEFAULT_INSTITUTIONS,
    rows_per_institution: int = 20_000,
    seed: int = 7,
    epochs: int = 5,
    test_fraction: float = 0.3,
) -> dict[str, float]:
    """Return AUC-PR on the combined test set of each local model and the pooled one.

    Returns
    -------
    dict
        ``{name: auc_pr, ..., "pooled": auc_pr, "base_rate": fraud share of
        the combined test set}``.
    """
    trains: dict[str, pd.DataFrame] = {}
    tests: list[pd.DataFrame] = []
    for profile in default_profiles(names):
        inst_seed = institution_seed(seed, profile.name)
        frame = generate_institution(profile, rows_per_institution, inst_seed)
        train, test = split_train_test(frame, test_fraction, inst_seed)
        trains[profile.name] = train
        tests.append(test)
    x_test, y_test = to_arrays(pd.concat(tests, ignore_index=True))
    config = TrainConfig(local_epochs=epochs, seed=seed)

    def auc_pr_of(train: pd.DataFrame) -> float:
        x, y = to_arrays(train)
        model = build_model(N_FEATURES, seed)
        train_local(model, x, y, config)
        return float(average_precision_score(y_test, predict_scores(model, x_test)))

    out = {name: auc_pr_of(train) for name, train in trains.items()}
    out["pooled"] = auc_pr_of(pd.concat(list(trains.values()), ignore_index=True))
    out["base_rate"] = float(np.mean(y_test))
    return out


def main() -> None:
    """Print the local and pooled AUC-PR figures."""
    for name, value in local_vs_pooled().items():
        print(f"{name:>12}: {value:.3f}")


if __name__ == "__main__":
    main()
