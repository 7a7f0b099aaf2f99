"""Score new rows with a finished run's model: what ``fedfraud score`` does.

A run directory keeps, in ``scoring.json`` (:class:`ScoringFile`), everything
needed to apply the federated model to rows it has never seen, exactly as the
federation encoded and judged its own:

* the data format; for bring-your-own data the federation's schema (a copy
  of its TOML text and its fingerprint) and the agreed
  :class:`fraud.byo_encode.FeatureSpec` (the securely summed scaling);
* the feature order, the label and identifier columns;
* the operating threshold the server chose in the final round, and how;
* the model's architecture, layer names and shapes, the final model's hash
  and where the model is: ``model.npz`` in the run directory, or (``ckks``
  mode, where the server never holds a model) each institution's own copy,
  ``<site>/state/ckks-model-<run>.npz``, given with ``--model``.

Scoring (:func:`score_csv`) fails closed: a missing or altered run file, a
model whose hash is not the run's final model, a CSV that does not fit the
schema, each stops it with the file (and column, and line) named, and the
output file is written through a temporary file and a rename, so it is
either complete or absent.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from fraud.datasets import DataFormat, spec_from_text
from core.errors import ConfigError, InputError, ProtocolError
from core.layout import SCORING_FILE, RunLayout

SCORING_FORMAT: Final = "fedfraud-scoring/1"
"""Format marker every scoring file carries."""

ARCHITECTURE: Final = "fraud-mlp/1"
"""The model family of :class:`fraud.model.FraudMLP` (hidden widths in the file)."""

MODEL_DIGEST: Final = "sha256 fedfraud/update/v1"
"""How the model hash is computed (:func:`core.wire.update_digest`)."""

CHUNK_ROWS = 50_000
"""Rows parsed, encoded and scored at a time."""

ROW_COLUMN = "row"
"""Identifier column of the output when the input has none: the data row number (1-based)."""

Hex64 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchemaCopy(_Strict):
    """The federation's schema, as the server held it."""

    toml: StrictStr = Field(description="the schema file's text")
    fingerprint: Hex64 = Field(description="fraud.byo_schema.Schema.fingerprint() of that text")
    source: StrictStr = Field(description="the server's copy it came from")


class ModelRecord(_Strict):
    """The final model: architecture, layout, hash and where it is kept."""

    architecture: Literal["fraud-mlp/1"]
    n_features: Annotated[StrictInt, Field(ge=1)]
    hidden: tuple[Annotated[StrictInt, Field(ge=1)], ...] = Field(min_length=1)
    layer_names: tuple[StrictStr, ...] = Field(min_length=2)
    layer_shapes: tuple[tuple[Annotated[StrictInt, Field(ge=1)], ...], ...]
    digest: Literal["sha256 fedfraud/update/v1"]
    hash: Hex64
    file: StrictStr | None = Field(description="in the run directory; null when the server holds no model")
    held_by: StrictStr = Field(description="who holds the model, for people")


class GbdtModelRecord(_Strict):
    """The final boosted-tree ensemble (``model = "gbdt"``): ``model.json`` and its hash."""

    architecture: Literal["fedfraud-gbdt/1"]
    n_features: Annotated[StrictInt, Field(ge=1)]
    trees: Annotated[StrictInt, Field(ge=0)]
    digest: Literal["sha256 of the file"]
    hash: Hex64
    file: StrictStr
    scorer: StrictStr = Field(description="a numpy-only scorer of the file, in the run directory")
    held_by: StrictStr


class ThresholdRecord(_Strict):
    """The operating threshold: a row is flagged when its score is at least ``value``."""

    value: Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
    round: Annotated[StrictInt, Field(ge=1)]
    source: StrictStr


class ScoringFile(_Strict):
    """``scoring.json``: everything needed to score new rows with a run's model.

    Parsed strictly (unknown keys refused); the cross-checks between the
    schema, the feature spec, the features and the model are made by
    :func:`load_scoring` when the file is used.
    """

    format: Literal["fedfraud-scoring/1"]
    run_name: StrictStr
    federation_id: StrictStr
    fedfraud_version: StrictStr
    aggregation: StrictStr
    data_format: DataFormat
    byo_schema: SchemaCopy | None
    feature_spec: dict[str, Any] | None = Field(description="the agreed FeatureSpec (bring-your-own data)")
    features: tuple[StrictStr, ...] = Field(min_length=1)
    label_column: StrictStr
    id_column: StrictStr | None
    threshold: ThresholdRecord
    model: ModelRecord | GbdtModelRecord = Field(discriminator="architecture")


@dataclass(frozen=True)
class ScoringRun:
    """A run's scoring file, read and cross-checked, with its parsed schema and spec."""

    run_dir: Path
    file: ScoringFile
    schema: Any = None
    spec: Any = None


def load_scoring(run_dir: Path) -> ScoringRun:
    """Read and check a run directory's ``scoring.json``.

    Checks, in order:

    1. the run directory and its scoring file exist, and the file is JSON of
       the :class:`ScoringFile` form (format marker, no unknown key);
    2. bring-your-own data: the schema text parses, its fingerprint is the
       one recorded, the feature spec parses and was made for that schema,
       and its feature names are the recorded features; the label and
       identifier columns are the schema's;
    3. built-in data: this installation computes the same features, in the
       same order, as the run did;
    4. the model's layout is one :class:`fraud.model.FraudMLP` of the
       recorded widths has.

    Raises
    ------
    InputError
        Naming the file and what is wrong.
    """
    path = run_dir / SCORING_FILE
    # 1. The file, its form.
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory")
    if not path.is_file():
        why = (
            "the run was written by a fedfraud that kept none"
            if RunLayout(run_dir).summary.is_file()
            else "the run did not finish (no summary.json either)"
        )
        raise InputError(f"{path}: no scoring file; {why}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the scoring file as JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != SCORING_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise InputError(f"{path}: expected format {SCORING_FORMAT!r}, found {found!r}")
    try:
        scoring = ScoringFile.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"{path}: invalid scoring file: {details}") from exc
    try:
        schema, spec = _check_data(scoring)
        _check_model(scoring)
    except (InputError, ConfigError, ProtocolError) as exc:
        raise InputError(f"{path}: {exc}") from exc
    return ScoringRun(run_dir, scoring, schema, spec)


def _check_data(scoring: ScoringFile) -> tuple[Any, Any]:
    if scoring.data_format is DataFormat.BUILTIN:
        # 3. Built-in data: fixed transforms of this installation.
        from fraud.features import FEATURE_COLUMNS, ID_COLUMNS, LABEL_COLUMN

        if scoring.byo_schema is not None or scoring.feature_spec is not None:
            raise InputError("a built-in-data run has no schema or feature spec")
        if scoring.features != FEATURE_COLUMNS:
            raise InputError(
                "the run's built-in features differ from this installation's "
                f"({len(scoring.features)} vs {len(FEATURE_COLUMNS)}); score with the fedfraud "
                f"version that trained it ({scoring.fedfraud_version})"
            )
        if scoring.label_column != LABEL_COLUMN or scoring.id_column != ID_COLUMNS[0]:
            raise InputError("label or identifier column differ from the built-in format's")
        return None, None
    # 2. Bring-your-own data: schema, spec and features agree.
    from fraud.byo_encode import feature_names
    from fraud.byo_schema import schema_from_toml

    if scoring.byo_schema is None or scoring.feature_spec is None:
        raise InputError("a bring-your-own-data run needs byo_schema and feature_spec")
    schema = schema_from_toml(scoring.byo_schema.toml, "byo_schema.toml")
    if schema.fingerprint() != scoring.byo_schema.fingerprint:
        raise InputError("byo_schema: the schema text does not have the recorded fingerprint")
    spec = spec_from_text(json.dumps(scoring.feature_spec))
    if spec.schema_fingerprint != scoring.byo_schema.fingerprint:
        raise InputError("feature_spec was made for another schema (fingerprints differ)")
    if spec.feature_names != feature_names(schema) or spec.feature_names != scoring.features:
        raise InputError("feature_spec, the schema and 'features' name different features")
    if len(spec.numeric_mean) != len(schema.numeric) or len(spec.numeric_std) != len(schema.numeric):
        raise InputError("feature_spec has statistics for another number of numeric columns")
    if not all(math.isfinite(v) for v in (*spec.numeric_mean, *spec.numeric_std)) or min(
        spec.numeric_std, default=1.0
    ) <= 0:
        raise InputError("feature_spec has non-finite means or non-positive deviations")
    expected_id = schema.id_columns[0] if schema.id_columns else None
    if scoring.label_column != schema.label or scoring.id_column != expected_id:
        raise InputError("label or identifier column differ from the schema's")
    return schema, spec


def _check_model(scoring: ScoringFile) -> None:
    # 4. The layout must be that of a FraudMLP with the recorded widths.
    from fraud.model import build_model

    record = scoring.model
    if isinstance(record, GbdtModelRecord):
        if record.n_features != len(scoring.features):
            raise InputError(f"model.n_features is {record.n_features}, the run has {len(scoring.features)} features")
        return
    if record.n_features != len(scoring.features):
        raise InputError(f"model.n_features is {record.n_features}, the run has {len(scoring.features)} features")
    template = build_model(record.n_features, seed=0, hidden=record.hidden).state_dict()
    if record.layer_names != tuple(template) or record.layer_shapes != tuple(
        tuple(t.shape) for t in template.values()
    ):
        raise InputError("model.layer_names/layer_shapes are not those of the recorded architecture")


def model_record(model: Any, model_hash: str, file: str | None, held_by: str) -> ModelRecord:
    """Describe a :class:`fraud.model.FraudMLP` for the scoring file (widths, layers, shapes).

    Raises
    ------
    ConfigError
        If ``model`` is not a FraudMLP.
    """
    from torch import nn

    from fraud.model import FraudMLP

    if not isinstance(model, FraudMLP):
        raise ConfigError(f"expected a FraudMLP, found {type(model).__name__}")
    widths = [layer.out_features for layer in model.net if isinstance(layer, nn.Linear)]
    state = model.state_dict()
    return ModelRecord(
        architecture=ARCHITECTURE,
        n_features=model.n_features,
        hidden=tuple(widths[:-1]),
        layer_names=tuple(state),
        layer_shapes=tuple(tuple(int(d) for d in t.shape) for t in state.values()),
        digest=MODEL_DIGEST,
        hash=model_hash,
        file=file,
        held_by=held_by,
    )


def load_model_arrays(run: ScoringRun, model_path: Path | None = None) -> list[npt.NDArray[Any]]:
    """The run's final model, checked against the recorded hash.

    Parameters
    ----------
    run
        From :func:`load_scoring`.
    model_path
        A model file to use instead of the run directory's (required in
        ``ckks`` mode: the institution's ``state/ckks-model-<run>.npz``).
        Arrays named by layer (``model.npz``) or positional (``arr_0``...,
        as an institution keeps them) are both read.

    Raises
    ------
    InputError
        If there is no model file, it cannot be read, its arrays do not fit
        the layout, or its hash is not the run's final model's.
    """
    from core.wire import update_digest

    record = run.file.model
    if isinstance(record, GbdtModelRecord):
        raise InputError(f"{run.run_dir}: a gbdt run's model is {record.file}, not layer arrays")
    given = model_path is not None
    if model_path is None:
        if record.file is None:
            raise InputError(
                f"{run.run_dir}: the server holds no model of this run ({record.held_by}); "
                "pass the institution's copy with --model PATH"
            )
        model_path = run.run_dir / record.file
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such model file")
    names = list(record.layer_names)
    positional = [f"arr_{i}" for i in range(len(names))]
    try:
        with np.load(model_path, allow_pickle=False) as archive:
            keys = sorted(archive.files)
            if keys == sorted(names):
                arrays = [np.asarray(archive[name]) for name in names]
            elif keys == sorted(positional):
                arrays = [np.asarray(archive[name]) for name in positional]
            else:
                raise InputError(
                    f"{model_path}: arrays {keys[:8]} are neither the model's layers {names} "
                    f"nor arr_0..arr_{len(names) - 1}"
                )
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{model_path}: cannot read the model (.npz): {exc}") from exc
    found = update_digest(arrays)
    if found != record.hash:
        hint = (
            "an institution that missed the last round holds an older one"
            if given
            else "the run directory's model was altered or replaced"
        )
        raise InputError(
            f"{model_path}: not this run's final model (hash {found[:16]}..., the run's final model "
            f"is {record.hash[:16]}...); {hint}"
        )
    return arrays


def load_gbdt(run: ScoringRun, model_path: Path | None = None) -> Any:
    """The run's boosted-tree ensemble (:class:`fraud.gbdt.Ensemble`), checked against its hash."""
    import hashlib

    from fraud.gbdt import Ensemble

    record = run.file.model
    assert isinstance(record, GbdtModelRecord)
    path = model_path or run.run_dir / record.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the model: {exc.strerror}") from exc
    found = hashlib.sha256(data).hexdigest()
    if found != record.hash:
        raise InputError(
            f"{path}: not this run's final model (sha256 {found[:16]}..., the run's final model "
            f"is {record.hash[:16]}...); the run directory's model was altered or replaced"
        )
    ensemble = Ensemble.from_json(data)
    if list(ensemble.features) != list(run.file.features):
        raise InputError(f"{path}: the model's features are not the run's")
    return ensemble


# ---------------------------------------------------------------------------
# Reading the rows to score
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    ids: list[str]


class _Rows:
    """The rows of one CSV file in the run's format, chunk by chunk."""

    def __init__(self, run: ScoringRun, path: Path) -> None:
        self.run = run
        self.path = path
        self.labelled = False
        self.id_column: str | None = None
        self.total = 0
        self._byo: Any = None
        self._frame: Any = None
        if run.schema is not None:
            from fraud.byo_read import RowsToScore

            self._byo = RowsToScore(path, run.schema)
            self.labelled, self.id_column, self.total = self._byo.labelled, self._byo.id_column, len(self._byo)
        else:
            self._read_builtin()

    def _read_builtin(self) -> None:
        from fraud.features import RAW_COLUMNS, read_transactions

        frame = read_transactions(self.path, "rows to score")
        absent = [c for c in RAW_COLUMNS if c not in frame.columns]
        if absent:
            raise InputError(f"{self.path}: columns missing (the built-in transaction format): {absent}")
        label = self.run.file.label_column
        if label in frame.columns:
            values = frame[label].to_numpy()
            good = np.isin(values, (0, 1)) & ~frame[label].isna().to_numpy()
            if not good.all():
                row = int(np.flatnonzero(~good)[0])
                raise InputError(
                    f"{self.path}: label column {label!r}, data row {row + 1}: "
                    f"{values[row]!r} is not 0 or 1"
                )
            self.labelled = True
        id_column = self.run.file.id_column
        self.id_column = id_column if id_column in frame.columns else None
        self._frame = frame
        self.total = len(frame)

    def chunks(self, rows: int) -> Iterator[_Chunk]:
        """Model inputs, labels (zeros without labels) and identifiers, ``rows`` at a time."""
        if self._byo is not None:
            from fraud.byo_encode import encode

            for frame, ids in self._byo.chunks(rows):
                x, y = encode(frame, self.run.schema, self.run.spec)
                yield _Chunk(x, y, ids)
            return
        from fraud.features import feature_frame

        label = self.run.file.label_column
        for start in range(0, self.total, rows):
            part = self._frame.iloc[start : start + rows]
            try:
                x = np.ascontiguousarray(feature_frame(part).to_numpy(dtype=np.float32))
            except InputError as exc:
                raise InputError(f"{self.path}: {exc}") from exc
            y = (
                part[label].to_numpy(dtype=np.float32)
                if self.labelled
                else np.zeros(len(part), dtype=np.float32)
            )
            if self.id_column is not None:
                ids = [str(v) for v in part[self.id_column].tolist()]
            else:
                ids = [str(start + i + 1) for i in range(len(part))]
            yield _Chunk(x, y, ids)


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreReport:
    """What :func:`score_csv` did.

    Attributes
    ----------
    rows, flagged
        Rows scored; rows whose score is at least the threshold.
    threshold
        The run's operating threshold.
    id_column
        The output's identifier column.
    labelled
        Whether the input had labels (then the metrics are set).
    metrics
        :func:`fraud.metrics.exact_metrics` of the raw scores.
    grid_metrics
        The same on the federation's score grid
        (:func:`fraud.metrics.metrics_from_histograms`), as ``rounds.jsonl``
        reports them: on the institutions' test files, these are the run's
        final metrics. Counts at the threshold equal the exact ones (the
        threshold is a grid edge).
    model_hash
        The hash of the model used (the run's final model).
    run_name, out
        The run whose model scored; the output file.
    """

    rows: int
    flagged: int
    threshold: float
    id_column: str
    labelled: bool
    metrics: Any
    grid_metrics: Any
    model_hash: str
    run_name: str
    out: Path

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN as ``None``)."""
        return {
            "rows": self.rows,
            "flagged": self.flagged,
            "threshold": self.threshold,
            "id_column": self.id_column,
            "labelled": self.labelled,
            "metrics": _finite(self.metrics.to_dict()) if self.metrics is not None else None,
            "grid_metrics": _finite(self.grid_metrics.to_dict()) if self.grid_metrics is not None else None,
            "model_hash": self.model_hash,
            "run_name": self.run_name,
            "out": str(self.out),
        }


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def score_csv(
    run_dir: Path,
    csv_path: Path,
    out_path: Path,
    model_path: Path | None = None,
    chunk_rows: int = CHUNK_ROWS,
    on_progress: Callable[[int, int], None] | None = None,
) -> ScoreReport:
    """Score the rows of ``csv_path`` with a run's final model; write ``out_path``.

    The output CSV has one line per input row, in order: the identifier (the
    first identifier column of the schema, ``transaction_id`` for built-in
    data, else ``row``, the data row number from 1), ``score`` (the fraud
    probability) and ``flagged`` (1 when ``score >= threshold``, else 0).

    Parameters
    ----------
    run_dir
        A finished run directory (with ``scoring.json``).
    csv_path
        Rows in the run's format: the schema's columns (bring-your-own data)
        or the built-in transaction columns; the label column is optional.
    out_path
        Where the scores go; replaced atomically, never half-written.
    model_path
        The model to use instead of the run directory's (``ckks`` runs).
    chunk_rows
        Rows parsed, encoded and scored at a time.
    on_progress
        Called with ``(rows done, rows in total)`` after each chunk.

    Raises
    ------
    InputError
        Naming the file (and column, and line) of any problem.
    """
    from fraud.metrics import SCORE_GRID_BINS, exact_metrics, metrics_from_histograms, score_histograms
    from fraud.model import build_model, set_weights
    from fraud.train import predict_scores

    # 1. The run, its model, the rows: every check before anything is written.
    run = load_scoring(run_dir)
    record = run.file.model
    if isinstance(record, GbdtModelRecord):
        ensemble = load_gbdt(run, model_path)

        def predict(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
            return ensemble.predict(x)
    else:
        arrays = load_model_arrays(run, model_path)
        model = build_model(record.n_features, seed=0, hidden=record.hidden)
        set_weights(model, arrays)

        def predict(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
            return predict_scores(model, x)
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: no such file")
    out_dir = out_path.parent if str(out_path.parent) else Path(".")
    if not out_dir.is_dir():
        raise InputError(f"{out_path}: the folder {out_dir} does not exist")
    if out_path.is_dir():
        raise InputError(f"{out_path}: is a folder; give the output file's name")
    if out_path.exists() and out_path.resolve() == csv_path.resolve():
        raise InputError(f"{out_path}: the output would replace the input file")
    rows = _Rows(run, csv_path)
    id_name = rows.id_column or ROW_COLUMN
    if id_name in ("score", "flagged"):
        id_name = f"{id_name}_id"
    threshold = run.file.threshold.value

    # 2. Score chunk by chunk into a temporary file next to the output.
    try:
        fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{out_path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"{out_path}: cannot write in {out_dir}: {exc.strerror}") from exc
    tmp = Path(tmp_name)
    scores: list[npt.NDArray[np.float64]] = []
    labels: list[npt.NDArray[np.float32]] = []
    pos = np.zeros(SCORE_GRID_BINS, dtype=np.int64)
    neg = np.zeros(SCORE_GRID_BINS, dtype=np.int64)
    done = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([id_name, "score", "flagged"])
            for chunk in rows.chunks(chunk_rows):
                chunk_scores = predict(chunk.x)
                flagged = chunk_scores >= threshold
                writer.writerows(
                    (ident, repr(float(s)), int(f))
                    for ident, s, f in zip(chunk.ids, chunk_scores, flagged, strict=True)
                )
                scores.append(chunk_scores)
                if rows.labelled:
                    labels.append(chunk.y)
                    p, n = score_histograms(chunk_scores, chunk.y, SCORE_GRID_BINS)
                    pos += p
                    neg += n
                done += len(chunk.ids)
                if on_progress is not None:
                    on_progress(done, rows.total)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{out_path}: cannot write the scores: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

    # 3. Metrics, when the rows are labelled.
    all_scores = np.concatenate(scores) if scores else np.zeros(0)
    metrics = grid = None
    if rows.labelled:
        y = np.concatenate(labels)
        metrics = exact_metrics(all_scores, y, threshold)
        grid = metrics_from_histograms(pos, neg, threshold)
    return ScoreReport(
        rows=done,
        flagged=int(np.sum(all_scores >= threshold)),
        threshold=threshold,
        id_column=id_name,
        labelled=rows.labelled,
        metrics=metrics,
        grid_metrics=grid,
        model_hash=record.hash,
        run_name=run.file.run_name,
        out=out_path,
    )
