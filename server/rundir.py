"""The run directory: what a run leaves behind for people and tools.

``runs/<run-id>/`` holds ``config.json`` (the run config as given),
``rounds.jsonl`` (one JSON line per finished round, flushed and fsynced so a
watcher can follow progress), ``model.pt`` and ``model.npz`` (the final global
model), ``scoring.json`` (what ``fedfraud score`` needs to apply the model to
new rows, :mod:`fraud.scoring`), ``model_card.json`` and ``model_card.md``
(:mod:`server.model_card`) and ``summary.json`` (written last; its presence
means the run finished).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from core.errors import ConfigError
from core.layout import GBDT_FILE, GBDT_SCORER_FILE, MODEL_FILE, ROUNDS_FILE, WEIGHTS_FILE


class RunDirectory:
    """Writer for one run's directory; files are replaced atomically."""

    def __init__(self, path: Path) -> None:
        if not path.is_absolute():
            raise ConfigError(f"run-dir must be an absolute path, found {str(path)!r}")
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, payload: Mapping[str, Any]) -> Path:
        """Write ``payload`` as pretty JSON via a temporary file and a rename."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        return target

    def write_text(self, name: str, text: str) -> Path:
        """Write UTF-8 text via a temporary file and a rename."""
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        return target

    def append_round(self, record: Mapping[str, Any]) -> None:
        """Append one round's record to ``rounds.jsonl`` and make it durable."""
        line = json.dumps(record, sort_keys=True, allow_nan=False)
        with (self.path / ROUNDS_FILE).open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write_model(
        self, weights: Sequence[npt.NDArray[np.floating]], names: Sequence[str]
    ) -> None:
        """Save the final global model as a torch state dict and as plain arrays."""
        if len(weights) != len(names):
            raise ConfigError("model weights and layer names differ in length")
        state = {name: torch.from_numpy(np.array(array)) for name, array in zip(names, weights)}
        tmp = self.path / (MODEL_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path / MODEL_FILE)
        tmp_npz = self.path / "model.tmp.npz"
        arrays: dict[str, Any] = {name: np.asarray(array) for name, array in zip(names, weights)}
        np.savez(tmp_npz, **arrays)
        os.replace(tmp_npz, self.path / WEIGHTS_FILE)

    def write_checkpoint(self, weights: Sequence[npt.NDArray[np.floating]], names: Sequence[str]) -> None:
        """After every accepted round: the model so far, as :meth:`write_model` writes the final one.

        A run that stops (ServerApp, SuperLink or machine) leaves its last
        accepted model here, for a new run's ``initial-model``.
        """
        self.write_model(weights, names)

    def write_gbdt(self, model_bytes: npt.NDArray[np.uint8]) -> None:
        """Save the final ensemble as ``model.json`` and its standalone scorer beside it."""
        for name, data in ((GBDT_FILE, model_bytes.tobytes()),
                           (GBDT_SCORER_FILE, gbdt_scorer_source().encode("utf-8"))):
            tmp = self.path / (name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, self.path / name)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (e.g. an AUC without positives) as None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def read_model(path: Path, names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> list[npt.NDArray[np.float32]]:
    """A run directory's ``model.npz`` as arrays in layer order, checked against the model's layout.

    Raises
    ------
    InputError
        If the file cannot be read, or its layers, shapes or values are not
        those of this run's model (the message names the file and the layer).
    """
    from core.errors import InputError

    try:
        with np.load(path, allow_pickle=False) as archive:
            found = {key: np.asarray(archive[key]) for key in archive.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read a model ({exc})") from exc
    if sorted(found) != sorted(names):
        raise InputError(
            f"{path}: layers {', '.join(sorted(found)) or 'none'} are not this run's model's "
            f"({', '.join(names)}); was it written by a run with other features?"
        )
    arrays = []
    for name, shape in zip(names, shapes):
        array = found[name]
        if tuple(array.shape) != tuple(shape):
            raise InputError(f"{path}: layer {name} has shape {tuple(array.shape)}, this run's model needs {tuple(shape)}")
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
            raise InputError(f"{path}: layer {name} holds non-finite or non-float values")
        arrays.append(array.astype(np.float32))
    return arrays


def gbdt_scorer_source() -> str:
    """The standalone scorer a bank can use without fedfraud (numpy only)."""
    from fraud import gbdt_scorer

    return Path(gbdt_scorer.__file__).read_text(encoding="utf-8")


def read_rounds(run_dir: Path) -> list[dict[str, Any]]:
    """Read the finished rounds of a run (complete lines only)."""
    path = run_dir / ROUNDS_FILE
    if not path.exists():
        return []
    rounds: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rounds.append(json.loads(line))
    return rounds
