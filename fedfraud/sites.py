"""Provision the demo federation's institution sites and server folder.

The demo plays every party on one machine, so it creates, once, what each
party would create for itself in production (``fedfraud provision`` does the
production version with TLS and node-authentication keys):

* ``<root>/sites/<institution>/``, each institution's site folder
  (:class:`core.layout.SiteLayout`): its signing key (Ed25519, mode
  0600), its policy (rendered from ``policies/<institution>.toml``, or from
  the bank-a example for institutions without one, with this site's own
  public key and the demo's partner list), the server audit key it trusts,
  its audit folder and the partner keys it pins;
* ``<root>/server/``, the server's folder
  (:class:`core.layout.ServerLayout`): its audit key pair and the
  copies of the institutions' policies the server is given.

Existing keys are reused, never overwritten; policies are re-rendered on every
call so that they always carry the current keys and partners.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w

from audit.keys import (
    generate_signing_key,
    load_private_key,
    public_key_b64,
    save_private_key,
    save_public_key,
)
from core.errors import ConfigError, InputError
from core.layout import DataLayout, DemoSites, SiteLayout

TEMPLATE_INSTITUTION = "bank-a"


def _ensure_key(path: Path) -> Any:
    if path.exists():
        return load_private_key(path)
    key = generate_signing_key()
    save_private_key(key, path)
    return key


def _write_public(key: Any, path: Path) -> None:
    if path.exists():
        path.unlink()
    save_public_key(key.public_key(), path)


def render_policy(
    source: Path,
    institution: str,
    public_key_b64: str,
    partners: Sequence[str],
    allowed_features: Sequence[str] | None = None,
) -> str:
    """A policy for ``institution`` from an example file, with key and partners set.

    ``allowed_features`` replaces the example's allowlist (for the
    bring-your-own-data demo, whose columns are the schema's).
    """
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"example policy {source} cannot be read: {exc}") from exc
    identity = data.get("identity")
    data_use = data.get("data_use")
    if not isinstance(identity, dict) or not isinstance(data_use, dict):
        raise InputError(f"example policy {source} has no [identity] or [data_use] table")
    if identity.get("id") != institution:
        identity["id"] = institution
        identity["name"] = f"{institution} (demo institution)"
    identity["public_key"] = public_key_b64
    data_use["accepted_partners"] = [p for p in partners if p != institution]
    if allowed_features is not None:
        data_use["allowed_features"] = sorted(set(allowed_features))
    return tomli_w.dumps(data)


def prepare_demo_sites(
    root: Path,
    institutions: Sequence[str],
    policy_dir: Path,
    schema_file: Path | None = None,
) -> DemoSites:
    """Create (or refresh) the demo's sites and server folder under ``root``.

    With ``schema_file`` (a bring-your-own-data run) every institution and the
    server get a copy of the federation's schema, and the rendered policies
    allow exactly the schema's model columns.
    """
    allowed = None
    if schema_file is not None:
        from fraud.datasets import model_columns
        from fraud.byo_schema import load_schema

        allowed = model_columns(load_schema(schema_file))
    sites = DemoSites(root)
    template = policy_dir / f"{TEMPLATE_INSTITUTION}.toml"
    if not template.is_file():
        raise ConfigError(f"example policy {template} is missing")
    server = sites.server
    sites.server_dir.mkdir(parents=True, exist_ok=True)
    if server.policies_dir.exists():
        shutil.rmtree(server.policies_dir)
    server.policies_dir.mkdir()
    server_key = _ensure_key(server.audit_key)
    _write_public(server_key, server.audit_pub)
    for institution in institutions:
        site = sites.site_layout(institution)
        site.audit_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(site.root, 0o700)
        key = _ensure_key(site.audit_key)
        _write_public(server_key, site.server_audit_pub)
        source = policy_dir / f"{institution}.toml"
        text = render_policy(
            source if source.is_file() else template,
            institution,
            public_key_b64(key),
            institutions,
            allowed,
        )
        site.policy.write_text(text, encoding="utf-8")
        server.policy(institution).write_text(text, encoding="utf-8")
        if schema_file is not None:
            shutil.copyfile(schema_file, site.schema)
            server_copy = server.schema(institution)
            server_copy.parent.mkdir(exist_ok=True)
            shutil.copyfile(schema_file, server_copy)
    pin_partner_keys(
        {name: sites.site(name) for name in institutions},
        {name: load_private_key(sites.site_layout(name).audit_key).public_key() for name in institutions},
    )
    return sites


def pin_partner_keys(site_dirs: Mapping[str, Path], public_keys: Mapping[str, Any]) -> None:
    """Give every site the public keys of its partners (:meth:`SiteLayout.partner_key`).

    This is the roster each institution's SecAgg+ checks its peers' signed
    keys against. In production each institution approves its partners' keys
    itself; the demo plays every party and pins them for all.
    """
    for name, site_dir in site_dirs.items():
        site = SiteLayout(site_dir)
        if site.partners_dir.exists():
            shutil.rmtree(site.partners_dir)
        site.partners_dir.mkdir(mode=0o700)
        for partner, key in public_keys.items():
            if partner != name:
                save_public_key(key, site.partner_key(partner))


def split_byo_demo(
    csv_path: Path,
    column: str,
    label: str,
    data_root: Path,
    seed: int,
    test_fraction: float = 0.3,
    mapping: dict[str, str] | None = None,
) -> list[str]:
    """Split one CSV into institutions by ``column``, then each into train/test.

    Rows keep their original text (the schema reads them, as it would read an
    institution's own files); the split is stratified by ``label`` and seeded.
    Returns the institution ids (:func:`fraud.byo_split.institution_id` of the
    column's values); ``mapping`` receives ``{value: id}``.
    """
    import numpy as np
    import pandas as pd

    from fraud.byo_split import split_by_column

    raw_dir = data_root / "_by_" / column
    # A split of the same file (size, mtime), column, label and seed is
    # reused: a bank-sized file is not split again on every demo run.
    stat = csv_path.stat()
    key = {
        "csv": str(csv_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "column": column, "label": label, "seed": seed, "test_fraction": test_fraction,
    }
    record = raw_dir / "split.json"
    if record.is_file():
        done = json.loads(record.read_text(encoding="utf-8"))
        names = list(done.get("names", []))
        if done.get("key") == key and names and all(
            split.is_file() for n in names for split in DataLayout(data_root / n).splits
        ):
            if mapping is not None:
                mapping.update(done["mapping"])
            return names
    found: dict[str, str] = {}
    paths = split_by_column(csv_path, column, raw_dir, found)
    rng = np.random.default_rng(seed)
    for name, path in paths.items():
        split_train_test(path, label, data_root / name, rng, test_fraction, source=csv_path)
    record.write_text(
        json.dumps({"key": key, "names": list(paths), "mapping": found}, indent=2), encoding="utf-8"
    )
    if mapping is not None:
        mapping.update(found)
    return list(paths)


def split_train_test(
    csv_path: Path,
    label: str,
    out: Path,
    rng: Any,
    test_fraction: float = 0.3,
    source: Path | None = None,
) -> None:
    """Split one institution's CSV into ``out/train.csv`` and ``out/test.csv``.

    Stratified by ``label`` and seeded by ``rng``; rows keep their original
    text (the schema reads them later, as it reads any institution's files).
    The file is streamed (:func:`fraud.byo_split.split_train_test_rows`), so a
    bank-sized export is split without being held in memory.
    """
    from fraud.byo_split import split_train_test_rows

    split_train_test_rows(csv_path, label, out, rng, test_fraction, source=source)


def place_own_sites(
    entries: Sequence[str], label: str, data_root: Path, seed: int
) -> list[str]:
    """Each institution's own files, as ``NAME=PATH``, under ``data_root/NAME/``.

    ``PATH`` is a folder with ``train.csv`` and ``test.csv`` (linked, never
    copied or changed) or one CSV file (split into train/test, stratified by
    the label and seeded). Returns the institution ids in the given order.

    Raises
    ------
    InputError
        For a malformed entry, a name that is not a valid institution id, a
        name given twice, or a folder without both split files.
    """
    import numpy as np

    from fraud.byo_split import institution_id

    rng = np.random.default_rng(seed)
    names: list[str] = []
    for entry in entries:
        name, sep, path_text = entry.partition("=")
        if not sep or not name or not path_text:
            raise InputError(f"--site {entry!r}: expected NAME=PATH (a folder with train.csv and test.csv, or one CSV)")
        if institution_id(name) != name:
            raise InputError(f"--site {entry!r}: {name!r} is not a valid institution id (try {institution_id(name)!r})")
        if name in names:
            raise InputError(f"--site {entry!r}: institution {name!r} is given twice")
        path = Path(path_text).resolve()
        out = data_root / name
        given, placed = DataLayout(path), DataLayout(out)
        if path.is_dir():
            missing = [f.name for f in given.splits if not f.is_file()]
            if missing:
                raise InputError(f"--site {entry!r}: {path} has no {' and no '.join(missing)}")
            out.mkdir(parents=True, exist_ok=True)
            for source, link in zip(given.splits, placed.splits):
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(source)
        elif path.is_file():
            for link in placed.splits:
                if link.is_symlink():
                    link.unlink()
            split_train_test(path, label, out, rng)
        else:
            raise InputError(f"--site {entry!r}: {path} is no such file or folder")
        names.append(name)
    if len(names) < 2:
        raise InputError("a federation needs at least two --site NAME=PATH institutions")
    return names


def release_validation_data(
    sites: DemoSites,
    data_root: Path,
    institutions: Sequence[str],
    rows: int,
    seed: int,
    fraud_share: float | None = None,
    schema: Any = None,
) -> dict[str, dict[str, Any]]:
    """Each institution releases an SDV synthetic sample of its training split.

    Built-in data: the generator's raw model inputs. Bring-your-own data
    (``schema`` given): the columns the schema keeps for the model, read
    strictly as the federation reads them (identifiers never leave).

    This is what each institution runs on its own site (here: in turn, on one
    machine). A release is made only if the institution's own policy allows
    it; it is refused (and not written) if it fails the privacy check. The
    released file goes to the server's ``validation/`` folder, the union of
    which is the server's validation set. Releases are reused while the
    institution's training data and the parameters are unchanged.

    Returns each institution's release report (or its reason for not releasing).
    """
    import pandas as pd

    from fraud.features import LABEL_COLUMN
    from fraud.generator_files import file_sha256
    from fraud.synth import SyntheticReleaseRefused, generator_release_frame, release_synthetic
    from policy import load_policy

    manifest = (
        json.loads((data_root / "manifest.json").read_text(encoding="utf-8")) if schema is None else {}
    )
    out = sites.server.validation_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.csv"), *out.glob("*.json")]:
        if stale.stem not in institutions:
            stale.unlink()  # another federation's release: not this run's validation
    reports: dict[str, dict[str, Any]] = {}
    for institution in institutions:
        site = sites.site_layout(institution)
        data = DataLayout(data_root / institution)
        target = out / f"{institution}.csv"
        policy = load_policy(site.policy)
        if not policy.outputs.synthetic_release_allowed:
            target.unlink(missing_ok=True)
            target.with_suffix(".json").unlink(missing_ok=True)
            reports[institution] = {"released": False, "reason": "policy forbids synthetic release"}
            continue
        key = {
            "train_sha256": (
                manifest["institutions"][institution]["train"]["sha256"]
                if schema is None
                else file_sha256(data.train)
            ),
            "rows": rows,
            "seed": seed,
            "fraud_share": fraud_share,
            "schema": schema.fingerprint() if schema is not None else "",
        }
        release_dir = site.synthetic_dir
        release_dir.mkdir(exist_ok=True)
        report_path = release_dir / "report.json"
        if report_path.exists() and target.exists() and target.with_suffix(".json").exists():
            cached = json.loads(report_path.read_text(encoding="utf-8"))
            if cached.get("key") == key:
                reports[institution] = cached
                continue
        if schema is None:
            train = generator_release_frame(pd.read_csv(data.train))
            test = generator_release_frame(pd.read_csv(data.test))
            label = LABEL_COLUMN
        else:
            from fraud.byo_read import load_institution_csv

            train = load_institution_csv(data.train, schema)
            test = load_institution_csv(data.test, schema)
            label = schema.label
        try:
            release = release_synthetic(
                train, test, rows, seed, fraud_share=fraud_share, label_column=label
            )
        except SyntheticReleaseRefused as exc:
            target.unlink(missing_ok=True)
            reports[institution] = {"released": False, "reason": str(exc)}
            continue
        release.data.to_csv(release_dir / "release.csv", index=False)
        report = {"released": True, "key": key, "report": release.report.to_dict()}
        report_path.write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
        shutil.copyfile(release_dir / "release.csv", target)
        shutil.copyfile(report_path, target.with_suffix(".json"))
        reports[institution] = report
    return reports
