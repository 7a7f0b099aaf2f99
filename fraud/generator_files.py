"""Files of the built-in synthetic data: each institution's train/test CSV splits and a manifest.

:func:`write_federation_data` generates every institution's transactions
(:mod:`fraud.generator`), splits them and writes ``<name>/train.csv``,
``<name>/test.csv`` and ``manifest.json`` atomically (a staging directory
renamed into place). :func:`ensure_federation_data` reuses the data already
in a folder when its manifest matches the parameters and every file's
sha256 matches, else regenerates it; :func:`read_manifest` and
:func:`verify_federation_data` are its two checks.

The same parameters give the same files, byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import ConfigError, InputError
from fraud.generator import (
    GENERATOR_VERSION,
    TYPOLOGIES,
    Heterogeneity,
    InstitutionProfile,
    default_profiles,
    generate_institution,
    heterogeneity_level,
    institution_seed,
    split_train_test,
)

MANIFEST_FORMAT = "fedfraud-federation-data/1"
"""Format marker written into every manifest."""

MANIFEST_NAME = "manifest.json"


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split_summary(frame: pd.DataFrame, path: Path, root: Path) -> dict[str, Any]:
    counts = frame["typology"].value_counts()
    rows = len(frame)
    frauds = int(frame["is_fraud"].sum())
    return {
        "file": path.relative_to(root).as_posix(),
        "rows": rows,
        "frauds": frauds,
        "fraud_rate": frauds / rows if rows else 0.0,
        "typology_counts": {str(t): int(counts.get(str(t), 0)) for t in TYPOLOGIES},
        "sha256": file_sha256(path),
    }


def _check_params(names: Sequence[str], rows_per_institution: int, seed: int, test_fraction: float) -> list[str]:
    names = list(names)
    default_profiles(names)  # Validates the names.
    if not isinstance(rows_per_institution, int) or isinstance(rows_per_institution, bool) or rows_per_institution < 100:
        raise ConfigError(f"rows_per_institution must be an int >= 100, got {rows_per_institution!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(test_fraction, float | int) or not 0.05 <= float(test_fraction) <= 0.95:
        raise ConfigError(f"test_fraction must be in [0.05, 0.95], got {test_fraction!r}")
    return names


def write_federation_data(
    out_dir: Path,
    names: Sequence[str],
    rows_per_institution: int,
    seed: int,
    test_fraction: float = 0.3,
    heterogeneity: Heterogeneity | str = Heterogeneity.STANDARD,
) -> dict[str, Any]:
    """Generate and write every institution's train/test CSVs and a manifest.

    The whole tree is built in a staging directory next to ``out_dir`` and
    renamed into place at the end, so a crash leaves either the previous
    complete data or nothing: never half-written files. ``out_dir`` is owned
    by the generator: an existing ``out_dir`` is replaced only if it is empty
    or holds a manifest written by this module.

    Parameters
    ----------
    out_dir
        Target directory; receives ``<name>/train.csv``, ``<name>/test.csv``
        and ``manifest.json``.
    names
        Institution names (see :func:`default_profiles`).
    rows_per_institution
        Rows generated per institution, before the split.
    seed
        Federation seed; each institution's seed is derived from it and the
        institution's name (:func:`institution_seed`).
    test_fraction
        Share of each typology (hence of each label) put in the test split.
    heterogeneity
        Which family of institution profiles (:class:`Heterogeneity`). The
        manifest records it only when it is not ``standard``, so the default
        manifest is byte for byte what earlier releases wrote.

    Returns
    -------
    dict
        The manifest that was written: ``format``, ``generator_version``,
        ``seed``, ``rows_per_institution``, ``test_fraction``, ``names``
        (``heterogeneity`` if not ``standard``) and
        ``institutions``, a dict by name of ``seed``, ``profile``, ``rows``,
        ``frauds``, ``fraud_rate``, ``typology_counts``, ``train_rows``,
        ``test_rows`` and per split (``train``, ``test``): ``file`` (relative
        to ``out_dir``), ``rows``, ``frauds``, ``fraud_rate``,
        ``typology_counts`` and ``sha256``.

    Raises
    ------
    ConfigError
        On invalid parameters, when ``out_dir`` holds foreign files, or when
        it cannot be written (the cause is chained).
    """
    out_dir = Path(out_dir)
    names = _check_params(names, rows_per_institution, seed, test_fraction)
    level = heterogeneity_level(heterogeneity)
    _refuse_foreign_dir(out_dir)
    profiles = default_profiles(names, level)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    except OSError as exc:
        raise ConfigError(f"cannot write federation data to {out_dir}: {exc.strerror or exc}") from exc
    try:
        manifest = _write_tree(staging, profiles, rows_per_institution, seed, float(test_fraction), level)
        _swap_into_place(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"cannot write federation data to {out_dir}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _refuse_foreign_dir(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise ConfigError(f"{out_dir} is not empty and has no {MANIFEST_NAME}; refusing to replace it")


def _write_tree(
    root: Path,
    profiles: Sequence[InstitutionProfile],
    rows: int,
    seed: int,
    test_fraction: float,
    heterogeneity: Heterogeneity,
) -> dict[str, Any]:
    institutions: dict[str, dict[str, Any]] = {}
    for profile in profiles:
        inst_seed = institution_seed(seed, profile.name)
        frame = generate_institution(profile, rows, inst_seed)
        train, test = split_train_test(frame, test_fraction, inst_seed)
        folder = root / profile.name
        folder.mkdir()
        counts = frame["typology"].value_counts()
        entry: dict[str, Any] = {
            "seed": inst_seed,
            "profile": profile.to_dict(),
            "rows": len(frame),
            "frauds": int(frame["is_fraud"].sum()),
            "fraud_rate": float(frame["is_fraud"].mean()),
            "typology_counts": {str(t): int(counts.get(str(t), 0)) for t in TYPOLOGIES},
            "train_rows": len(train),
            "test_rows": len(test),
        }
        for split, part in (("train", train), ("test", test)):
            path = folder / f"{split}.csv"
            part.to_csv(path, index=False, lineterminator="\n")
            entry[split] = _split_summary(part, path, root)
        institutions[profile.name] = entry
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "rows_per_institution": rows,
        "test_fraction": test_fraction,
        "names": [p.name for p in profiles],
        "institutions": institutions,
    }
    if heterogeneity is not Heterogeneity.STANDARD:
        # Recorded only when not the default, so default manifests keep their bytes.
        manifest["heterogeneity"] = str(heterogeneity)
    with (root / MANIFEST_NAME).open("w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    return manifest


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    # rename() of a directory onto a missing path is atomic; an existing tree
    # is first moved aside, then deleted once the new one is in place.
    old: Path | None = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        os.rename(out_dir, old)
    try:
        os.rename(staging, out_dir)
    except OSError:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """Read ``out_dir/manifest.json``.

    Raises
    ------
    InputError
        If the manifest is missing, unreadable or not a manifest of this module.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{path}: format must be {MANIFEST_FORMAT!r}")
    return manifest


def verify_federation_data(out_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Check that every file the manifest lists exists with its sha256.

    Raises
    ------
    InputError
        Naming the first file that is missing or whose hash differs.
    """
    out_dir = Path(out_dir)
    try:
        for inst in manifest["institutions"].values():
            for split in ("train", "test"):
                entry = inst[split]
                path = out_dir / entry["file"]
                if not path.is_file():
                    raise InputError(f"{path}: listed in the manifest but missing")
                if file_sha256(path) != entry["sha256"]:
                    raise InputError(f"{path}: sha256 differs from the manifest")
    except (KeyError, TypeError) as exc:
        raise InputError(f"{out_dir / MANIFEST_NAME}: malformed manifest ({exc!r})") from exc


def ensure_federation_data(
    out_dir: Path,
    names: Sequence[str],
    rows_per_institution: int,
    seed: int,
    test_fraction: float = 0.3,
    heterogeneity: Heterogeneity | str = Heterogeneity.STANDARD,
) -> dict[str, Any]:
    """Reuse the data in ``out_dir`` if it matches the parameters, else regenerate.

    Data is reused only if the manifest has this generator version, the same
    names, rows, seed, test fraction and heterogeneity (absent means
    ``standard``), and every file's sha256 matches.

    Returns
    -------
    dict
        The manifest of the data now in ``out_dir``.

    Raises
    ------
    ConfigError
        As :func:`write_federation_data`.
    """
    out_dir = Path(out_dir)
    names = _check_params(names, rows_per_institution, seed, test_fraction)
    level = heterogeneity_level(heterogeneity)
    with contextlib.suppress(InputError):
        manifest = read_manifest(out_dir)
        same = (
            manifest.get("generator_version") == GENERATOR_VERSION
            and manifest.get("names") == names
            and manifest.get("rows_per_institution") == rows_per_institution
            and manifest.get("seed") == seed
            and manifest.get("test_fraction") == float(test_fraction)
            and manifest.get("heterogeneity", str(Heterogeneity.STANDARD)) == str(level)
        )
        if same:
            verify_federation_data(out_dir, manifest)
            return manifest
    return write_federation_data(out_dir, names, rows_per_institution, seed, test_fraction, level)
