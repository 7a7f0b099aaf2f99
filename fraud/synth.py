"""Synthetic validation data: each institution releases an SDV sample of its training split, checked first.

The server needs labelled validation data to choose an operating threshold,
but may not see real rows. Each institution therefore fits an SDV
single-table synthesizer **locally** on its own training split and releases
a synthetic sample; the server's validation set is the union of the
releases (:func:`union_releases`).

Columns: the model's raw, readable inputs before any transform, plus the
label; identifiers never. For a bring-your-own-data frame that is exactly
what :func:`fraud.byo_read.load_institution_csv` returns (numeric, categorical,
calendar timestamps, label 0/1); for the built-in generator use
:func:`generator_release_frame` (:data:`fraud.features.RAW_COLUMNS` and
``is_fraud``). Metadata is declared, not detected: text columns, the label
and 0/1 columns are categorical, datetimes are datetime, other numbers
numerical.

Every release carries a :class:`SyntheticReport`:

* **quality** -- sdmetrics' ``QualityReport`` of synthetic against the
  training rows (overall score, "Column Shapes", "Column Pair Trends", in
  [0, 1]);
* **privacy** -- :func:`check_privacy`, a distance-to-closest-record (DCR)
  test. A release is refused (:class:`SyntheticReleaseRefused`) when

  1. any synthetic row is an exact copy of a training row (DCR 0), or
  2. the share of synthetic rows closer to the training set than the 5th
     percentile of the holdout rows' DCR exceeds :data:`MAX_SHARE_CLOSER`
     (0.10). Real rows the synthesizer never saw are that close 5 % of the
     time, so a generator that does not memorise scores about 0.05 or less;
     0.10 leaves room for sampling noise on a few thousand rows while
     refusing a sample that hugs the training rows.

  The distance: every column contributes at most 1 and the DCR is their
  mean (L1): numbers (and datetimes) as ``|a - b| / range`` with the range
  taken from the training rows, capped at 1; categories 0 when equal, 1 when
  not; missing against present between 0.5 and 1, missing against missing 0.

Determinism: fitting and sampling run with the numpy and torch global RNGs
seeded from ``seed`` (and restored afterwards), and the synthesizer's
sampling RNG is set to ``seed`` through SDV's ``_set_random_state`` (SDV
otherwise samples from a fixed built-in seed). GaussianCopula releases are
then identical for identical inputs and seed. Not guaranteed: CTGAN across
torch builds or thread counts, and any release across SDV/rdt/copulas
versions (the report records the SDV version).

SDV writes a usage log (``sdv_logs.csv``, no data values) into the user's
data folder; the single-table logger is switched off while fedfraud runs
SDV, so nothing is written there by these functions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from core.errors import ConfigError, InputError, PolicyViolation
from fraud.features import LABEL_COLUMN, RAW_COLUMNS

RELEASE_FORMAT = "fedfraud-synthetic-release/1"
"""Format marker of every :class:`SyntheticReport`."""

MAX_SHARE_CLOSER = 0.10
"""Largest share of synthetic rows allowed closer to train than the holdout's 5th-percentile DCR."""

HOLDOUT_PERCENTILE = 5.0
EXACT_COPY_DCR = 1e-12
"""A DCR at or below this is an exact copy."""

_TABLE = "release"


class SynthMethod(StrEnum):
    """Synthesizers an institution may use."""

    GAUSSIAN_COPULA = "gaussian_copula"
    CTGAN = "ctgan"


class SyntheticReleaseRefused(PolicyViolation):
    """A synthetic sample failed the privacy check and must not leave the institution."""


@dataclass(frozen=True)
class PrivacyCheck:
    """Numbers of the DCR privacy check (only built when the check passed, or attached to the refusal).

    Parameters
    ----------
    n_synthetic, n_train, n_holdout
        Rows compared.
    exact_copies
        Synthetic rows identical to a training row.
    holdout_dcr_p5
        5th percentile of the holdout rows' DCR to the training rows.
    share_closer
        Share of synthetic rows whose DCR is below ``holdout_dcr_p5``.
    limit
        The largest ``share_closer`` accepted.
    synthetic_dcr_median, holdout_dcr_median
        Medians, for the report.
    """

    n_synthetic: int
    n_train: int
    n_holdout: int
    exact_copies: int
    holdout_dcr_p5: float
    share_closer: float
    limit: float
    synthetic_dcr_median: float
    holdout_dcr_median: float


@dataclass(frozen=True)
class SyntheticReport:
    """What an institution publishes alongside its synthetic sample."""

    method: str
    seed: int
    n_rows: int
    fraud_share_requested: float | None
    fraud_share: float
    train_fraud_share: float
    quality_score: float
    column_shapes: float
    column_pair_trends: float
    privacy: PrivacyCheck
    sdv_version: str
    format: str = RELEASE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class SyntheticRelease:
    """A checked synthetic sample and its report."""

    data: pd.DataFrame
    report: SyntheticReport
    label_column: str


def generator_release_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Select the built-in generator's raw model inputs and label (no ids, no typology)."""
    missing = [c for c in (*RAW_COLUMNS, LABEL_COLUMN) if c not in frame.columns]
    if missing:
        raise InputError(f"frame is missing columns: {missing}")
    return frame.loc[:, [*RAW_COLUMNS, LABEL_COLUMN]].reset_index(drop=True)


# ---------------------------------------------------------------------------
# Distance to closest record
# ---------------------------------------------------------------------------


def _kind(series: pd.Series, name: str, label_column: str) -> str:
    if name == label_column:
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    values = series.dropna().unique()
    if len(values) and set(np.asarray(values, dtype=np.float64).tolist()) <= {0.0, 1.0}:
        return "categorical"
    return "numerical"


def _embed(
    frames: Sequence[pd.DataFrame], reference: pd.DataFrame, label_column: str
) -> list[npt.NDArray[np.float64]]:
    """Embed rows so that L1 distance / n_columns is the documented DCR (capped per column)."""
    blocks: list[list[npt.NDArray[np.float64]]] = [[] for _ in frames]
    for column in reference.columns:
        kind = _kind(reference[column], column, label_column)
        if kind == "categorical":
            ref_text = reference[column].astype(object).where(reference[column].notna(), None)
            vocab = sorted({str(v) for v in ref_text if v is not None})
            for out, frame in zip(blocks, frames, strict=True):
                values = frame[column].astype(object).where(frame[column].notna(), None)
                text = np.array(["\x00missing" if v is None else str(v) for v in values], dtype=object)
                # One-hot halves: two different categories are 0.5 + 0.5 = 1 apart.
                known = np.stack([text == v for v in vocab], axis=1).astype(np.float64) * 0.5
                other = (~np.isin(text, vocab) & (text != "\x00missing")).astype(np.float64)[:, None] * 0.5
                miss = (text == "\x00missing").astype(np.float64)[:, None] * 0.5
                out.append(np.concatenate([known, other, miss], axis=1))
            continue
        ref_num = _numbers(reference[column], kind)
        finite = ref_num[~np.isnan(ref_num)]
        low = float(finite.min()) if finite.size else 0.0
        span = float(finite.max() - finite.min()) if finite.size else 0.0
        span = span if span > 0 else 1.0
        for out, frame in zip(blocks, frames, strict=True):
            num = _numbers(frame[column], kind)
            missing = np.isnan(num)
            # Values are clipped to the training range, so one column adds at most 1.
            scaled = np.clip((num - low) / span, 0.0, 1.0)
            # A missing value sits mid-range with a half-weight indicator: it is
            # 0.5 to 1 away from any present value and 0 from another missing one.
            scaled = np.where(missing, 0.5, scaled)
            out.append(np.stack([scaled, 0.5 * missing.astype(np.float64)], axis=1))
    return [np.concatenate(b, axis=1) for b in blocks]


def _numbers(series: pd.Series, kind: str) -> npt.NDArray[np.float64]:
    if kind == "datetime":
        stamps = pd.to_datetime(series, errors="coerce")
        days = stamps.astype("int64").to_numpy(dtype=np.float64) / 86_400e9
        return np.where(stamps.isna().to_numpy(), np.nan, days)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def _nearest_l1(queries: npt.NDArray[np.float64], points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=1, metric="manhattan").fit(points)
    distances, _ = index.kneighbors(queries)
    return np.asarray(distances[:, 0], dtype=np.float64)


def check_privacy(
    synthetic: pd.DataFrame,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    label_column: str = LABEL_COLUMN,
    limit: float = MAX_SHARE_CLOSER,
) -> PrivacyCheck:
    """Check that no synthetic row copies or hugs a real training row; raise if one does.

    Steps:

    1. DCR of every synthetic row to the training rows.
    2. DCR of every holdout row (real, never seen by the synthesizer) to the
       training rows; its 5th percentile is the baseline.
    3. Refuse if any synthetic row is an exact copy (DCR 0).
    4. Refuse if the share of synthetic rows closer than the baseline
       exceeds ``limit``.

    Returns
    -------
    PrivacyCheck
        The numbers, when both checks pass.

    Raises
    ------
    SyntheticReleaseRefused
        Naming every failed check and its numbers (``violations`` lists them).
    InputError
        If the frames' columns differ or one is empty.
    """
    for name, frame in (("synthetic", synthetic), ("train", train), ("holdout", holdout)):
        if len(frame) == 0:
            raise InputError(f"the {name} frame is empty")
        if list(frame.columns) != list(train.columns):
            raise InputError(f"the {name} frame's columns differ from the training frame's")
    if not 0.0 <= float(limit) < 1.0:
        raise ConfigError(f"limit must be in [0, 1), got {limit!r}")

    # 1-2. Distances to the closest training record.
    emb_syn, emb_hold, emb_train = _embed([synthetic, holdout, train], train, label_column)
    n_cols = len(train.columns)
    syn_dcr = _nearest_l1(emb_syn, emb_train) / n_cols
    hold_dcr = _nearest_l1(emb_hold, emb_train) / n_cols
    baseline = float(np.percentile(hold_dcr, HOLDOUT_PERCENTILE))
    copies = int(np.sum(syn_dcr <= EXACT_COPY_DCR))
    share = float(np.mean(syn_dcr < baseline))
    result = PrivacyCheck(
        n_synthetic=len(synthetic),
        n_train=len(train),
        n_holdout=len(holdout),
        exact_copies=copies,
        holdout_dcr_p5=baseline,
        share_closer=share,
        limit=float(limit),
        synthetic_dcr_median=float(np.median(syn_dcr)),
        holdout_dcr_median=float(np.median(hold_dcr)),
    )

    # 3-4. Collect every violation, then refuse once.
    violations: list[str] = []
    if copies:
        violations.append(f"exact copies: {copies} of {len(synthetic)} synthetic rows equal a training row")
    if share > limit:
        violations.append(
            f"near copies: {share:.3f} of synthetic rows are closer to the training rows than "
            f"{baseline:.4f} (the holdout's {HOLDOUT_PERCENTILE:g}th-percentile DCR); the limit is {limit:.3f}"
        )
    if violations:
        raise SyntheticReleaseRefused(
            "synthetic release refused: " + "; ".join(violations), violations=tuple(violations)
        )
    return result


# ---------------------------------------------------------------------------
# Release
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed numpy's and torch's global RNGs; restore both afterwards; silence SDV's usage log."""
    from sdv.logging.utils import disable_single_table_logger

    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), disable_single_table_logger():
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(np_state)


def _metadata(frame: pd.DataFrame, label_column: str) -> dict[str, Any]:
    columns: dict[str, dict[str, str]] = {}
    for column in frame.columns:
        kind = _kind(frame[column], column, label_column)
        columns[column] = {"sdtype": kind}
    return {"columns": columns}


def _synthesizer(method: SynthMethod, metadata: Any, ctgan_epochs: int) -> Any:
    if method == SynthMethod.GAUSSIAN_COPULA:
        from sdv.single_table import GaussianCopulaSynthesizer

        return GaussianCopulaSynthesizer(metadata)
    from sdv.single_table import CTGANSynthesizer

    return CTGANSynthesizer(metadata, epochs=ctgan_epochs, enable_gpu=False, verbose=False)


def _check_release_inputs(
    train: pd.DataFrame, holdout: pd.DataFrame, n_rows: int, seed: int, fraud_share: float | None, label: str
) -> None:
    problems: list[str] = []
    if not isinstance(n_rows, int) or isinstance(n_rows, bool) or not 1 <= n_rows <= 1_000_000:
        problems.append(f"n_rows must be an int in [1, 1e6], got {n_rows!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(f"seed must be a non-negative int, got {seed!r}")
    if fraud_share is not None and not (isinstance(fraud_share, float | int) and 0.0 < float(fraud_share) < 1.0):
        problems.append(f"fraud_share must be None or in (0, 1), got {fraud_share!r}")
    if problems:
        raise ConfigError("invalid synthetic release settings: " + "; ".join(problems))
    if label not in train.columns:
        raise InputError(f"the training frame has no label column {label!r}")
    if list(holdout.columns) != list(train.columns):
        raise InputError("the holdout frame's columns differ from the training frame's")
    values = set(pd.to_numeric(train[label], errors="coerce").dropna().tolist())
    if values != {0.0, 1.0} or train[label].isna().any():
        raise InputError(f"label column {label!r} must hold 0 and 1 (both), found {sorted(values)[:5]}")


def release_synthetic(
    train_frame: pd.DataFrame,
    holdout_frame: pd.DataFrame,
    n_rows: int,
    seed: int,
    method: str = "gaussian_copula",
    fraud_share: float | None = None,
    label_column: str = LABEL_COLUMN,
    ctgan_epochs: int = 10,
) -> SyntheticRelease:
    """Fit an SDV synthesizer on this institution's training rows and release a checked sample.

    Parameters
    ----------
    train_frame
        The institution's training rows: raw model inputs and the 0/1 label,
        no identifiers (see the module docstring). Not modified.
    holdout_frame
        Real rows the synthesizer never sees (e.g. the test split), same
        columns: the privacy baseline.
    n_rows
        Rows to release.
    seed
        Seed for fitting and sampling.
    method
        ``"gaussian_copula"`` (default, a few seconds) or ``"ctgan"``.
    fraud_share
        ``None`` samples the label as learned; a share in (0, 1) samples
        ``round(share * n_rows)`` frauds with SDV ``Condition`` objects.
    label_column
        Name of the 0/1 label column.
    ctgan_epochs
        Training epochs for CTGAN (few keep it fast; quality suffers).

    Returns
    -------
    SyntheticRelease
        The sample and its report (quality and privacy numbers).

    Raises
    ------
    SyntheticReleaseRefused
        If the privacy check fails; nothing is released.
    ConfigError, InputError
        On bad settings or frames.
    """
    from sdmetrics.reports import QualityReport
    from sdv import __version__ as sdv_version
    from sdv.metadata import Metadata

    try:
        synth_method = SynthMethod(method)
    except ValueError as exc:
        raise ConfigError(f"method must be one of {[m.value for m in SynthMethod]}, got {method!r}") from exc
    if not isinstance(ctgan_epochs, int) or isinstance(ctgan_epochs, bool) or ctgan_epochs < 1:
        raise ConfigError(f"ctgan_epochs must be a positive int, got {ctgan_epochs!r}")
    _check_release_inputs(train_frame, holdout_frame, n_rows, seed, fraud_share, label_column)
    train = train_frame.reset_index(drop=True).copy()
    train[label_column] = pd.to_numeric(train[label_column]).astype(np.int64)
    holdout = holdout_frame.reset_index(drop=True).copy()
    holdout[label_column] = pd.to_numeric(holdout[label_column]).astype(np.int64)

    # 1. Fit locally and sample, seeded. One synthesizer per class: fraud
    #    rows are few and differ from legitimate ones in their joint
    #    structure, which a single copula over both classes washes out (its
    #    samples of "fraud" then look legitimate). Sampling each class from
    #    its own model also gives exact control of the released fraud share.
    metadata_dict = _metadata(train, label_column)
    metadata = Metadata.load_from_dict({"tables": {_TABLE: metadata_dict}})
    train_share = float(train[label_column].mean())
    share = train_share if fraud_share is None else float(fraud_share)
    n_fraud = int(round(share * n_rows))
    if 0 < train_share and n_fraud == 0 and fraud_share is None:
        n_fraud = 1
    counts = {1: n_fraud, 0: n_rows - n_fraud}
    parts = []
    with _seeded(seed):
        for label, count in counts.items():
            rows = train[train[label_column] == label]
            if count == 0:
                continue
            if len(rows) < 2:
                raise ConfigError(
                    f"cannot synthesize class {label}: only {len(rows)} training row(s) of it"
                )
            synthesizer = _synthesizer(synth_method, metadata, ctgan_epochs)
            synthesizer.fit({_TABLE: rows})
            synthesizer._set_random_state(seed + label)  # SDV's only hook to seed sampling (private).
            part = synthesizer.sample(count)[_TABLE]
            part[label_column] = label
            parts.append(part)
    sample = pd.concat(parts, ignore_index=True)
    sample = sample.loc[:, list(train.columns)].reset_index(drop=True)
    sample[label_column] = pd.to_numeric(sample[label_column]).astype(np.int64)

    # 2. Privacy first: a refused sample never gets a quality score.
    privacy = check_privacy(sample, train, holdout, label_column)

    # 3. Quality against the training rows.
    report = QualityReport()
    report.generate({_TABLE: train}, {_TABLE: sample}, {"tables": {_TABLE: metadata_dict}}, verbose=False)
    properties = report.get_properties().set_index("Property")["Score"]
    return SyntheticRelease(
        data=sample,
        report=SyntheticReport(
            method=synth_method.value,
            seed=seed,
            n_rows=len(sample),
            fraud_share_requested=None if fraud_share is None else float(fraud_share),
            fraud_share=float(sample[label_column].mean()),
            train_fraud_share=train_share,
            quality_score=_finite(report.get_score()),
            column_shapes=_finite(properties.get("Column Shapes", math.nan)),
            column_pair_trends=_finite(properties.get("Column Pair Trends", math.nan)),
            privacy=privacy,
            sdv_version=str(sdv_version),
        ),
        label_column=label_column,
    )


def _finite(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else math.nan


def union_releases(releases: Mapping[str, SyntheticRelease] | Sequence[SyntheticRelease]) -> pd.DataFrame:
    """Concatenate institutions' released samples into the server's validation frame.

    Raises
    ------
    InputError
        If there is no release, or naming the release whose columns (names,
        order or label column) differ from the first one's.
    """
    items = list(releases.items()) if isinstance(releases, Mapping) else [(str(i), r) for i, r in enumerate(releases)]
    if not items:
        raise InputError("no synthetic releases to combine")
    first_name, first = items[0]
    columns = list(first.data.columns)
    for name, release in items[1:]:
        if release.label_column != first.label_column:
            raise InputError(
                f"release {name!r} labels column {release.label_column!r}, release {first_name!r} {first.label_column!r}"
            )
        if list(release.data.columns) != columns:
            extra = [c for c in release.data.columns if c not in columns]
            lacks = [c for c in columns if c not in release.data.columns]
            raise InputError(
                f"release {name!r} has other columns than release {first_name!r}: adds {extra}, lacks {lacks}"
                + ("" if extra or lacks else " (order differs)")
            )
    return pd.concat([r.data for _, r in items], ignore_index=True)
