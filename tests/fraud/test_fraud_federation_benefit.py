"""Why federate: a pooled model beats every institution's local model."""

from __future__ import annotations

from fraud.benchmark import local_vs_pooled
from fraud.generator import DEFAULT_INSTITUTIONS


def test_pooled_model_beats_every_local_model_on_the_combined_test_set() -> None:
    # 3 institutions x 20,000 rows, 5 local epochs, as in the README's figures.
    result = local_vs_pooled(DEFAULT_INSTITUTIONS, rows_per_institution=20_000, seed=7, epochs=5)

    locals_ = [result[name] for name in DEFAULT_INSTITUTIONS]
    assert all(value > 5 * result["base_rate"] for value in locals_), result
    assert result["pooled"] > max(locals_) + 0.03, result
