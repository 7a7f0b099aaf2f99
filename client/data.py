"""The institution's own data, as model arrays, for either data format.

Built-in data: the generator's CSV files and fixed transforms. Bring-your-own
data: the institution's CSV files read strictly with its ``schema.toml``, and
encoded with the federation's agreed :class:`fraud.byo_encode.FeatureSpec` (sent by
the server after the secure statistics round; checked against this
institution's own schema before use).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fraud.datasets import DataFormat, model_columns, spec_from_text
from core.layout import SCHEMA_FILE
from core.errors import ProtocolError
from federation.settings import RunSettings

from .node import InstitutionNode, require_file

XY = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]

#: Parsed splits kept in this process, keyed by file (path, size, mtime) and
#: schema: a large file is read and checked once per process, not once per
#: task of every round. A changed file has another key and is read again.
#: Callers never modify a cached frame (encoding copies it).
_FRAMES: OrderedDict[tuple[str, int, int, str], Any] = OrderedDict()
#: Splits kept: train and test of up to three institutions sharing a process.
_FRAMES_KEPT = 6


class LocalData:
    """Reads one institution's splits; never sends anything anywhere."""

    def __init__(self, node: InstitutionNode, settings: RunSettings) -> None:
        self.node = node
        self.format = settings.data_format
        self.schema: Any = None
        if self.format is DataFormat.BYO:
            from fraud.byo_schema import load_schema

            self.schema = load_schema(require_file(node.site_dir / SCHEMA_FILE, "institution schema"))

    def _path(self, split: str) -> Path:
        return self.node.train_path if split == "train" else self.node.test_path

    def _frame(self, split: str) -> Any:
        # pandas (and torch, elsewhere) load only when data is actually read:
        # the SecAgg+ key stages run in fresh processes and need neither.
        path = require_file(self._path(split), f"{split} data")
        stat = path.stat()
        schema_key = self.schema.fingerprint() if self.schema is not None else ""
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, schema_key)
        cached = _FRAMES.get(key)
        if cached is not None:
            _FRAMES.move_to_end(key)
            return cached
        if self.format is DataFormat.BYO:
            from fraud.byo_read import load_institution_csv

            frame = load_institution_csv(path, self.schema)
        else:
            from fraud.features import read_transactions

            frame = read_transactions(path, f"{split} data")
        _FRAMES[key] = frame
        while len(_FRAMES) > _FRAMES_KEPT:
            _FRAMES.popitem(last=False)
        return frame

    def cache_key(self, split: str) -> str:
        """Identity of the split's file as read (path, size, mtime, schema), for caches."""
        path = require_file(self._path(split), f"{split} data")
        stat = path.stat()
        schema_key = self.schema.fingerprint() if self.schema is not None else ""
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{schema_key}"

    def arrays(self, split: str, spec_text: object = None) -> XY:
        """The split as model inputs and labels."""
        frame = self._frame(split)
        if self.format is DataFormat.BUILTIN:
            from fraud.features import to_arrays

            return to_arrays(frame)
        from fraud.byo_encode import encode

        return encode(frame, self.schema, self.spec(spec_text))

    def spec(self, spec_text: object) -> Any:
        """The federation's feature spec, checked against this institution's schema."""
        spec = spec_from_text(spec_text)
        if spec.schema_fingerprint != self.schema.fingerprint():
            raise ProtocolError(
                f"{self.node.institution_id}: the federation's schema differs from this "
                "institution's schema.toml; refusing"
            )
        return spec

    def n_features(self, spec_text: object = None) -> int:
        """Width of the model's input for this run."""
        if self.format is DataFormat.BUILTIN:
            from fraud.constants import FEATURE_COLUMNS

            return len(FEATURE_COLUMNS)
        return int(self.spec(spec_text).n_features)

    def policy_features(self) -> tuple[str, ...]:
        """The columns this institution's data feeds the model, as policies name them."""
        if self.format is DataFormat.BUILTIN:
            from fraud.constants import FEATURE_COLUMNS

            return tuple(FEATURE_COLUMNS)
        return model_columns(self.schema)

    def numeric_stats_vector(self) -> npt.NDArray[np.int64]:
        """This site's statistics for the exact secure sum of the statistics round.

        Built-in data: the training row count alone (for ``max-weight`` auto).
        Bring-your-own data: the row count, then per numeric column the count
        of present values, the sum and the sum of squares of the transformed
        values (:class:`fraud.byo_stats.NumericStats`), totals in fixed point.
        """
        from secagg.secure_sum import STATS_SCALE, counts_and_totals

        if self.format is DataFormat.BUILTIN:
            _, labels = self.arrays("train", None)
            return counts_and_totals([labels.shape[0]], [], STATS_SCALE, "training rows")
        from fraud.byo_stats import local_numeric_stats

        stats = local_numeric_stats(self._frame("train"), self.schema)
        k = len(stats.columns)
        vector = stats.to_vector()
        return counts_and_totals(vector[: 1 + k], vector[1 + k :], STATS_SCALE, "column statistics")
