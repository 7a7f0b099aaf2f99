"""Score rows with a fedfraud boosted-tree model (``model.json``), with numpy alone.

This file is copied into every gbdt run directory as ``score_gbdt.py`` so a
bank can use the model without installing fedfraud. It reproduces fedfraud's
own scores exactly (the product's tests compare them):

* a row goes to a node's ``left`` child iff its value of ``feature`` is
  strictly below ``threshold``, else to ``right``, until a leaf
  (``feature == -1``);
* ``margin = base_score + the sum of the leaves' values`` over the trees;
* ``score = 1 / (1 + exp(-margin))``.

The inputs are the model's features (``features`` in ``model.json``), already
transformed as the run did (the built-in transforms, or the agreed scaling of
a bring-your-own schema, recorded in the run's ``scoring.json``).

Usage as a script: ``python score_gbdt.py model.json features.csv`` prints one
score per row of a CSV whose header names the model's features.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import numpy as np

FORMAT = "fedfraud-gbdt/1"


def load(path: str) -> dict[str, Any]:
    """Read ``model.json`` and check its format marker."""
    with open(path, encoding="utf-8") as handle:
        model = json.load(handle)
    if not isinstance(model, dict) or model.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} model")
    return model


def margins(model: dict[str, Any], features: Any) -> np.ndarray:
    """Raw margins (log-odds) of the rows of ``features`` (shape [rows, n_features])."""
    x = np.asarray(features, dtype=np.float32).astype(np.float64)
    if x.ndim != 2 or x.shape[1] != len(model["features"]):
        raise ValueError(f"expected {len(model['features'])} feature columns, found shape {x.shape}")
    rows = np.arange(x.shape[0])
    out = np.full(x.shape[0], float(model["base_score"]), dtype=np.float64)
    for tree in model["trees"]:
        feature = np.asarray(tree["feature"], dtype=np.int64)
        threshold = np.asarray(tree["threshold"], dtype=np.float64)
        left = np.asarray(tree["left"], dtype=np.int64)
        right = np.asarray(tree["right"], dtype=np.int64)
        value = np.asarray(tree["value"], dtype=np.float64)
        node = np.zeros(x.shape[0], dtype=np.int64)
        while True:
            f = feature[node]
            inner = f >= 0
            if not inner.any():
                break
            goes_left = x[rows, np.where(inner, f, 0)] < threshold[node]
            node = np.where(inner, np.where(goes_left, left[node], right[node]), node)
        out += value[node]
    return out


def sigmoid(margin: Any) -> np.ndarray:
    """``1 / (1 + exp(-margin))`` without overflow."""
    m = np.asarray(margin, dtype=np.float64)
    e = np.exp(-np.abs(m))
    return np.where(m >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def scores(model: dict[str, Any], features: Any) -> np.ndarray:
    """Fraud scores in (0, 1)."""
    return sigmoid(margins(model, features))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python score_gbdt.py model.json features.csv", file=sys.stderr)
        return 2
    model = load(argv[1])
    with open(argv[2], newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in model["features"] if f not in (reader.fieldnames or [])]
        if missing:
            print(f"{argv[2]}: missing feature columns {missing}", file=sys.stderr)
            return 2
        table = [[float(row[f]) for f in model["features"]] for row in reader]
    for score in scores(model, np.asarray(table, dtype=np.float64).reshape(-1, len(model["features"]))):
        print(repr(float(score)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
