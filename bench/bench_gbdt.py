"""Benchmark: federated boosted trees (``model = "gbdt"``) against pooled and local references.

For every dataset and seed this script

1. runs the real product twice through ``fedfraud demo`` (a subprocess each,
   Flower's simulation engine, the hardened SecAgg+): a federated **gbdt** run
   (one per ``--*-gbdt`` setting) and a federated **MLP** run on the same data
   with the same seed, both with ``--no-compare``;
2. builds each run's comparison in this process with the product's own
   :func:`fedfraud.comparison.build_comparison` (the same code that
   ``--compare`` runs; ``report.md`` is still written into the run's
   ``report/`` folder), so every model is judged the same way: threshold
   chosen on the synthetic validation set, then the combined test set;
3. adds a **local-only HistGradientBoostingClassifier** per institution
   (trained here on that institution's training rows, scored with
   :func:`fraud.compare.add_model`, i.e. the same threshold rule) and reports
   the best of them ("best local HGB"); "best local MLP" is the best
   ``local:<inst>`` of the MLP run's comparison (its usual 5-round budget).
   "Best" means highest AUC-PR on the combined test set, an optimistic pick;
4. times the federated gbdt per tree (``rounds.jsonl``: summed round
   ``seconds`` over the trees in ``model.json``) against fitting the pooled
   HistGradientBoostingClassifier here, on the same machine in the same run
   (``--hgb-repeats`` fits, median; per tree = fit time / ``n_iter_``);
5. counts the bytes each institution uploads per tree: per level, open nodes x
   features x ``gbdt-max-bins`` x 3 sums, each sum 3 limbs of 4 bytes
   (:func:`secagg.masks.encode_integers`, :func:`secagg.masks.pack`), with the
   open nodes per level read from the saved trees' ``depth`` arrays; plus the
   bin agreement once, the ensemble sent down with every level, and the fixed
   SecAgg+ overhead of one secure round measured on an in-process hardened
   round (``bench/bench_hardened_secagg.py``'s harness, message payloads
   without protobuf framing).

Results: ``--results-md`` and ``--results-json`` (default
``bench/results/gbdt.md``/``.json``; with ``--quick``, next to the runs).
Each finished run's figures are cached in its folder under ``--out``; a
second invocation reuses them (``--fresh`` to redo).

Usage::

    .venv/bin/python bench/bench_gbdt.py --quick              # smoke run, a few minutes
    .venv/bin/python bench/bench_gbdt.py                      # the full benchmark
    .venv/bin/python bench/bench_gbdt.py --datasets insurance --seeds 42 \\
        --insurance-gbdt rounds=5,gbdt-max-depth=3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FEDFRAUD = ROOT / ".venv" / "bin" / "fedfraud"
INSURANCE_CSV = ROOT.parent / "shared" / "data" / "insurance_claims" / "insurance_claims.csv"
INSURANCE_SCHEMA = ROOT / "fraud" / "schemas" / "insurance_claims.toml"

# The product's own defaults (pyproject.toml's gbdt-* keys; the demo's 10 rounds).
DEFAULT_BUILTIN_GBDT = ["rounds=10"]
DEFAULT_INSURANCE_GBDT = ["rounds=10"]
QUICK_GBDT = ["rounds=1,gbdt-trees-per-round=2,gbdt-max-depth=3,gbdt-learning-rate=0.3"]

FED_GBDT = "federated gbdt (secagg+)"
POOLED_GBDT = "pooled gbdt (same algorithm)"
FED_MLP = "federated (secagg+)"
POOLED_HGB = "pooled-hgb"
BYTES_PER_SUM = 3 * 4  # encode_integers: 3 limbs per value, packed as 4-byte words
FINE_BINS_FALLBACK = 1024

_T0 = time.monotonic()


def say(text: str) -> None:
    """Progress line on stderr with the elapsed time."""
    elapsed = time.monotonic() - _T0
    print(f"[bench-gbdt {elapsed / 60:5.1f} min] {text}", file=sys.stderr, flush=True)


# -- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GbdtSpec:
    """One gbdt setting: the number of rounds and ``--set`` overrides."""

    text: str
    rounds: int
    sets: dict[str, str]
    seeds: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> GbdtSpec:
        rounds = None
        seeds: tuple[int, ...] | None = None
        sets: dict[str, str] = {}
        for item in (p.strip() for p in text.split(",") if p.strip()):
            key, sep, value = item.partition("=")
            if not sep or not value:
                raise argparse.ArgumentTypeError(f"{text!r}: expected key=value items, found {item!r}")
            if key == "rounds":
                rounds = int(value)
            elif key == "seeds":
                seeds = tuple(int(v) for v in value.split("+"))
            else:
                sets[key] = value
        if rounds is None or rounds < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: needs rounds=N (N >= 1)")
        sets.setdefault("model", "gbdt")
        return cls(text, rounds, sets, seeds)

    @property
    def slug(self) -> str:
        short = {"gbdt-trees-per-round": "t", "gbdt-max-depth": "d", "gbdt-learning-rate": "lr",
                 "gbdt-min-child-rows": "mc", "gbdt-l2": "l2", "gbdt-max-bins": "b"}
        parts = [f"r{self.rounds}"] + [
            f"{short.get(k, k)}{v}" for k, v in sorted(self.sets.items()) if k != "model"
        ]
        parts = [p.replace("gbdt-early-stopping", "es") for p in parts]
        return "-".join(parts).replace(".", "p")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, found {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("at least one seed")
    return seeds


def parse_datasets(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in ("builtin", "insurance")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"datasets are builtin and/or insurance, found {text!r}")
    return names


# -- running the product -----------------------------------------------------------------


def data_args(dataset: str, seed_dir: Path, args: argparse.Namespace) -> list[str]:
    if dataset == "builtin":
        return ["--rows", str(args.rows), "--data-dir", str(seed_dir / "data")]
    return [
        "--byo-csv", str(args.insurance_csv), "--split-by", "policy_state",
        "--schema", str(INSURANCE_SCHEMA), "--data-dir", str(seed_dir / "data"),
    ]


def product_state() -> dict[str, Any]:
    """The commit the product runs from and its files with uncommitted edits (others may be editing)."""

    def git(*cmd: str) -> str:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.rstrip("\n")

    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line.strip()]
    return {"head": git("rev-parse", "--short", "HEAD").strip(), "dirty": dirty, "at": dt.datetime.now(dt.timezone.utc).isoformat()}


def run_demo(tag: str, run_parent: Path, extra: list[str], timeout: float) -> tuple[Path, float]:
    """One ``fedfraud demo --no-compare``; returns the run directory and wall seconds."""
    run_parent.mkdir(parents=True, exist_ok=True)
    for old in run_parent.glob("runs/*"):
        if old.is_dir():
            # A stale run from an interrupted invocation would be ambiguous.
            old.rename(old.with_name(old.name + ".stale"))
    cmd = [
        str(FEDFRAUD), "demo", "--no-compare",
        "--runs-dir", str(run_parent / "runs"), "--parties-dir", str(run_parent / "parties"), *extra,
    ]
    log_path = run_parent / "demo.log"
    say(f"{tag}: {' '.join(cmd[1:])}")
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise RuntimeError(f"{tag}: fedfraud demo exited {proc.returncode}; log {log_path}:\n" + "\n".join(tail))
    runs = [p for p in (run_parent / "runs").iterdir() if p.is_dir() and not p.name.endswith(".stale")]
    if len(runs) != 1:
        raise RuntimeError(f"{tag}: expected one run directory in {run_parent / 'runs'}, found {runs}")
    say(f"{tag}: demo finished in {seconds:.0f} s ({runs[0]})")
    return runs[0], seconds


def metrics_of(evaluation: Any) -> dict[str, Any]:
    m = evaluation.combined
    return {
        "auc_pr": float(m.auc_pr), "auc_roc": float(m.auc_roc), "recall": float(m.recall),
        "precision": float(m.precision), "fn": int(m.fn), "fp": int(m.fp), "tp": int(m.tp),
        "threshold": float(evaluation.threshold),
    }


def load_train_sets(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each institution's training rows, encoded as the run's comparison encodes them."""
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["run_config"]
    names = [n.strip() for n in str(config["institutions"]).split(",") if n.strip()]
    root = Path(config["data-dir"])
    if str(config.get("data-format", "builtin")) == "byo":
        from fraud.scoring import load_scoring
        from fraud.byo_encode import encode
        from fraud.byo_read import load_institution_csv

        scoring = load_scoring(run_dir)
        return {
            n: encode(load_institution_csv(root / n / "train.csv", scoring.schema), scoring.schema, scoring.spec)
            for n in names
        }
    from fraud.features import load_arrays

    return {n: load_arrays(root / n / "train.csv", "data file") for n in names}


def comparison_of(run_dir: Path) -> Any:
    """The product's comparison of a finished run (also writes its report.md)."""
    from fedfraud.comparison import build_comparison
    from fraud.report import write_report

    result, rounds, reports = build_comparison(run_dir)
    write_report(run_dir / "report", result, rounds, reports)
    return result


def add_local_hgb(result: Any, train: dict[str, tuple[np.ndarray, np.ndarray]], seed: int) -> tuple[Any, list[str]]:
    """Add one local-only HistGradientBoostingClassifier per institution to a comparison."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from fraud.compare import add_model

    names = []
    for inst, (X, y) in train.items():
        model = HistGradientBoostingClassifier(random_state=seed).fit(X, y.astype(np.int64))
        name = f"local-hgb:{inst}"
        result = add_model(result, name, lambda A, m=model: np.clip(m.predict_proba(A)[:, 1], 0.0, 1.0))
        names.append(name)
    return result, names


def time_pooled_hgb(train: dict[str, tuple[np.ndarray, np.ndarray]], seed: int, repeats: int) -> dict[str, Any]:
    """Fit the pooled HistGradientBoostingClassifier ``repeats`` times (as the comparison does)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X = np.concatenate([xy[0] for xy in train.values()])
    y = np.concatenate([xy[1] for xy in train.values()]).astype(np.int64)
    fits, per_tree, iters = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        model = HistGradientBoostingClassifier(random_state=seed).fit(X, y)
        seconds = time.perf_counter() - start
        fits.append(seconds)
        iters.append(int(model.n_iter_))
        per_tree.append(seconds / max(1, int(model.n_iter_)))
    return {
        "rows": int(y.size), "features": int(X.shape[1]), "repeats": repeats, "fit_seconds": fits,
        "n_iter": iters, "early_stopping": bool(getattr(model, "do_early_stopping_", False)),
        "fit_seconds_median": statistics.median(fits), "seconds_per_tree_median": statistics.median(per_tree),
    }


def tree_bytes(run_dir: Path) -> dict[str, Any]:
    """Upload and download per institution, from the saved trees and the histogram layout."""
    from fraud.gbdt import FINE_BINS, Ensemble

    model = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))
    ensemble = Ensemble.from_dict(model)
    n_features = len(ensemble.edges)
    max_bins = ensemble.params.max_bins
    max_depth = ensemble.params.max_depth
    per_tree_up, per_tree_levels, per_tree_down, open_nodes = [], [], [], []
    partial = Ensemble(ensemble.features, ensemble.edges, ensemble.base_score, ensemble.params)
    for tree in ensemble.trees:
        depths = np.asarray(tree.depth)
        # Every node at depth L < max_depth was open when level L was summed.
        counts = [int((depths == level).sum()) for level in range(max_depth)]
        counts = [c for c in counts if c > 0]
        open_nodes.append(counts)
        per_tree_levels.append(len(counts))
        per_tree_up.append(sum(c * n_features * max_bins * 3 * BYTES_PER_SUM for c in counts))
        # Each level's request carries the ensemble so far plus the growing tree
        # (approximated here by the finished tree).
        partial.growing = tree
        per_tree_down.append(len(counts) * len(partial.to_json()))
        partial.growing = None
        partial.trees.append(tree)
    n_trees = len(ensemble.trees)
    bins_up = (n_features * FINE_BINS + 2) * BYTES_PER_SUM
    return {
        "trees": n_trees,
        "features": n_features,
        "max_bins": max_bins,
        "max_depth": max_depth,
        "levels_per_tree_mean": float(np.mean(per_tree_levels)) if n_trees else 0.0,
        "secure_rounds": int(sum(per_tree_levels)) + 1,
        "open_nodes_first_tree": open_nodes[0] if open_nodes else [],
        "upload_per_tree_mean": float(np.mean(per_tree_up)) if n_trees else 0.0,
        "upload_per_tree_max": int(max(per_tree_up)) if n_trees else 0,
        "upload_histograms_total": int(sum(per_tree_up)),
        "upload_bin_agreement": int(bins_up),
        "download_ensemble_per_tree_mean": float(np.mean(per_tree_down)) if n_trees else 0.0,
        "model_json_bytes": int((run_dir / "model.json").stat().st_size),
    }


def round_seconds(run_dir: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text(encoding="utf-8").splitlines() if line]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    stop = ""
    flower_log = run_dir / "flower.log"
    if flower_log.is_file():
        for line in flower_log.read_text(encoding="utf-8", errors="replace").splitlines():
            if "early stopping:" in line:
                stop = line.split("early stopping:", 1)[1].strip()
    return {
        "rounds": len(rows),
        "early_stopping": stop,
        # Rounds after an early stop grow nothing (only the secure evaluation
        # runs): the time per tree counts the accepted rounds, which grew trees.
        "growing_round_seconds": float(sum(float(r.get("seconds", 0.0)) for r in rows if r.get("accepted"))),
        "round_seconds": float(sum(float(r.get("seconds", 0.0)) for r in rows)),
        "fit_seconds": float(sum(float(r.get("fit_seconds", 0.0)) for r in rows)),
        "run_seconds": float(summary.get("seconds", float("nan"))),
        "accepted_rounds": sum(1 for r in rows if r.get("accepted")),
        "refusals": [r.get("refusal") for r in rows if r.get("refusal")],
    }


def best_of(models: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    chosen = [(v["auc_pr"], k) for k, v in models.items() if k.startswith(prefix)]
    if not chosen:
        return None
    _, name = max(chosen)
    return {"model": name, **models[name]}


def cached(path: Path, key: dict[str, Any], fresh: bool) -> dict[str, Any] | None:
    if fresh or not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if data.get("key") == key else None


def gbdt_case(dataset: str, seed: int, spec: GbdtSpec, args: argparse.Namespace) -> dict[str, Any]:
    seed_dir = args.out / f"{dataset}-s{seed}"
    parent = seed_dir / f"gbdt-{spec.slug}"
    spec_key = spec.text.split(",seeds=")[0] if spec.seeds else spec.text
    key = {"dataset": dataset, "seed": seed, "spec": spec_key, "rows": args.rows, "hgb_repeats": args.hgb_repeats}
    hit = cached(parent / "result.json", key, args.fresh)
    if hit is not None:
        say(f"{dataset} seed {seed} gbdt {spec.text}: cached result reused")
        return hit
    extra = [*data_args(dataset, seed_dir, args), "--seed", str(seed), "--rounds", str(spec.rounds)]
    for k, v in spec.sets.items():
        extra += ["--set", f"{k}={v}"]
    tag = f"{dataset} seed {seed} gbdt [{spec.text}]"
    out: dict[str, Any] = {"key": key, "dataset": dataset, "seed": seed, "spec": spec.text,
                           "product": product_state()}
    try:
        run_dir, wall = run_demo(tag, parent, extra, args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        say(f"{tag}: FAILED: {exc}")
        out["error"] = str(exc)
        return out
    out["run_dir"] = str(run_dir)
    out["demo_wall_seconds"] = wall
    out["timing"] = round_seconds(run_dir)
    if not (run_dir / "model.json").is_file():
        out["error"] = f"{run_dir}: no model.json (no tree grown)"
        say(f"{tag}: FAILED: {out['error']}")
        return out
    out["bytes"] = tree_bytes(run_dir)
    trees = out["bytes"]["trees"]
    out["timing"]["trees"] = trees
    out["timing"]["seconds_per_tree"] = out["timing"]["growing_round_seconds"] / trees if trees else float("nan")
    out["timing"]["fit_seconds_per_tree"] = out["timing"]["fit_seconds"] / trees if trees else float("nan")
    say(f"{tag}: comparison (trains the reference models in this process)")
    start = time.perf_counter()
    result = comparison_of(run_dir)
    train = load_train_sets(run_dir)
    result, local_hgb = add_local_hgb(result, train, seed)
    out["comparison_seconds"] = time.perf_counter() - start
    out["models"] = {name: metrics_of(ev) for name, ev in result.models.items()}
    out["local_hgb_models"] = local_hgb
    out["test_size"] = {"rows": sum(r for r, _ in result.test_sizes.values()),
                        "frauds": sum(f for _, f in result.test_sizes.values())}
    out["train_sizes"] = {n: int(len(xy[1])) for n, xy in train.items()}
    say(f"{tag}: timing the pooled HGB ({args.hgb_repeats} fits)")
    out["pooled_hgb_timing"] = time_pooled_hgb(train, seed, args.hgb_repeats)
    (parent / "result.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    fed = out["models"].get(FED_GBDT, {})
    hgb = out["models"].get(POOLED_HGB, {})
    say(f"{tag}: AUC-PR federated gbdt {fed.get('auc_pr', float('nan')):.3f}, pooled HGB "
        f"{hgb.get('auc_pr', float('nan')):.3f}, {trees} trees, {out['timing']['seconds_per_tree']:.2f} s/tree")
    return out


def mlp_case(dataset: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    seed_dir = args.out / f"{dataset}-s{seed}"
    parent = seed_dir / f"mlp-r{args.mlp_rounds}"
    key = {"dataset": dataset, "seed": seed, "mlp_rounds": args.mlp_rounds, "rows": args.rows}
    hit = cached(parent / "result.json", key, args.fresh)
    if hit is not None:
        say(f"{dataset} seed {seed} MLP: cached result reused")
        return hit
    extra = [*data_args(dataset, seed_dir, args), "--seed", str(seed), "--rounds", str(args.mlp_rounds)]
    tag = f"{dataset} seed {seed} MLP ({args.mlp_rounds} rounds)"
    out: dict[str, Any] = {"key": key, "dataset": dataset, "seed": seed, "product": product_state()}
    try:
        run_dir, wall = run_demo(tag, parent, extra, args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        say(f"{tag}: FAILED: {exc}")
        out["error"] = str(exc)
        return out
    out["run_dir"] = str(run_dir)
    out["demo_wall_seconds"] = wall
    out["timing"] = round_seconds(run_dir)
    say(f"{tag}: comparison")
    result = comparison_of(run_dir)
    out["models"] = {name: metrics_of(ev) for name, ev in result.models.items()}
    (parent / "result.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    say(f"{tag}: AUC-PR federated MLP {out['models'].get(FED_MLP, {}).get('auc_pr', float('nan')):.3f}")
    return out


# -- SecAgg+ fixed overhead ---------------------------------------------------------------


def secagg_overhead() -> dict[str, Any]:
    """Payload bytes per institution of one hardened SecAgg+ round beyond the masked vector.

    Uses the in-process harness of ``bench/bench_hardened_secagg.py`` (3
    institutions, real sites and policies, no Flower transport) with a
    one-parameter update, so nearly all bytes are the protocol's key
    advertisement, encrypted shares, consistency signature and unmasking.
    """
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_hardened_secagg as harness

    original = harness.default_run_config

    def with_fixed_weight() -> dict[str, Any]:
        # The harness also builds Flower's stock workflow, which needs a
        # positive max-weight (the project default 0 means "auto").
        config = original()
        config["max-weight"] = 100000.0
        # 3 institutions: every institution shares with the other two
        # (explicit, as the run config may leave these to "auto").
        config["num-shares"], config["reconstruction-threshold"] = 3, 2
        return config

    harness.default_run_config = with_fixed_weight
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gbdt-overhead-") as tmp:
            fed = harness.make_federation(Path(tmp), 3, 300, 1)
            harness.run_round(fed, harness.HARDENED)  # warm-up
            results = [harness.run_round(fed, harness.HARDENED) for _ in range(3)]
    finally:
        harness.default_run_config = original
    up = statistics.median(r.up_bytes_per_client for r in results)
    down = statistics.median(r.down_bytes_per_client for r in results)
    masked = statistics.median(r.masked_bytes_per_param for r in results)  # 1 parameter
    return {
        "institutions": 3,
        "up_bytes_per_round": up,
        "down_bytes_per_round": down,
        "masked_vector_bytes": masked,
        "up_overhead_per_round": up - masked,
        "down_overhead_per_round": down - 4,
        "in_process_round_seconds": statistics.median(r.seconds for r in results),
        "note": "payload of the protocol records (no protobuf/gRPC framing), hardened SecAgg+ training "
        "round with a 1-parameter update, in-process harness of bench/bench_hardened_secagg.py",
    }


# -- summaries ---------------------------------------------------------------------------


def median(values: list[float]) -> float:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return statistics.median(clean) if clean else float("nan")


def seed_row(gbdt: dict[str, Any], mlp: dict[str, Any] | None) -> dict[str, Any]:
    """The figures of one seed for one gbdt setting."""
    models = gbdt.get("models", {})
    row: dict[str, Any] = {"seed": gbdt["seed"]}
    if "error" in gbdt:
        row["error"] = gbdt["error"]
    if models:
        row["fed_gbdt"] = models.get(FED_GBDT)
        row["pooled_gbdt"] = models.get(POOLED_GBDT)
        row["pooled_hgb"] = models.get(POOLED_HGB)
        row["pooled_mlp_gbdt_run"] = models.get("pooled")
        row["best_local_hgb"] = best_of(models, "local-hgb:")
        row["best_local_mlp_gbdt_run"] = best_of(models, "local:")
        if row["fed_gbdt"] and row["pooled_hgb"]:
            row["ratio_auc_pr_fed_gbdt_over_pooled_hgb"] = row["fed_gbdt"]["auc_pr"] / row["pooled_hgb"]["auc_pr"]
        timing, hgb_t = dict(gbdt["timing"]), gbdt["pooled_hgb_timing"]
        run_dir = Path(gbdt.get("run_dir", ""))
        if "growing_round_seconds" not in timing and (run_dir / "rounds.jsonl").is_file():
            timing.update(round_seconds(run_dir))
            timing["seconds_per_tree"] = timing["growing_round_seconds"] / timing["trees"]
            gbdt["timing"] = timing
        row["early_stopping"] = timing.get("early_stopping", "")
        row["seconds_per_tree_fed"] = timing["seconds_per_tree"]
        row["seconds_per_tree_pooled_hgb"] = hgb_t["seconds_per_tree_median"]
        row["time_ratio_per_tree"] = timing["seconds_per_tree"] / hgb_t["seconds_per_tree_median"]
        row["pooled_hgb_fit_seconds"] = hgb_t["fit_seconds_median"]
        row["pooled_hgb_trees"] = hgb_t["n_iter"][0]
        row["fed_trees"] = timing["trees"]
        row["fed_round_seconds_total"] = timing["growing_round_seconds"]
        row["time_ratio_whole_fit"] = timing["growing_round_seconds"] / hgb_t["fit_seconds_median"]
        row["upload_per_tree_mean"] = gbdt["bytes"]["upload_per_tree_mean"]
        row["secure_rounds"] = gbdt["bytes"]["secure_rounds"]
        row["levels_per_tree_mean"] = gbdt["bytes"]["levels_per_tree_mean"]
        row["download_ensemble_per_tree_mean"] = gbdt["bytes"]["download_ensemble_per_tree_mean"]
    if mlp is not None and mlp.get("models"):
        row["fed_mlp"] = mlp["models"].get(FED_MLP)
        row["best_local_mlp"] = best_of(mlp["models"], "local:")
        row["pooled_mlp"] = mlp["models"].get("pooled")
    elif mlp is not None and "error" in mlp:
        row["mlp_error"] = mlp["error"]
    candidates = [row.get("best_local_mlp"), row.get("best_local_hgb")]
    candidates = [c for c in candidates if c]
    if candidates:
        row["best_local_any"] = max(candidates, key=lambda c: c["auc_pr"])
    return row


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group in ("fed_gbdt", "pooled_gbdt", "pooled_hgb", "best_local_hgb", "best_local_mlp", "best_local_any",
                  "fed_mlp", "pooled_mlp"):
        present = [r[group] for r in rows if r.get(group)]
        if present:
            out[group] = {m: median([p[m] for p in present]) for m in ("auc_pr", "recall", "fn", "fp", "precision")}
            out[group]["n"] = len(present)
    for scalar in ("ratio_auc_pr_fed_gbdt_over_pooled_hgb", "seconds_per_tree_fed", "seconds_per_tree_pooled_hgb",
                   "time_ratio_per_tree", "time_ratio_whole_fit", "upload_per_tree_mean", "secure_rounds",
                   "download_ensemble_per_tree_mean", "fed_trees", "pooled_hgb_trees", "pooled_hgb_fit_seconds"):
        values = [r[scalar] for r in rows if r.get(scalar) is not None]
        if values:
            out[scalar] = median(values)
    return out


# -- markdown ----------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def human_bytes(n: float) -> str:
    if n is None or (isinstance(n, float) and np.isnan(n)):
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def cell(model: dict[str, Any] | None, with_name: bool = False) -> str:
    if not model:
        return "-"
    text = f"{model['auc_pr']:.3f} / {model['recall']:.3f} / {int(round(model['fn']))}"
    if with_name and "model" in model:
        text += f" ({model['model'].split(':', 1)[1]})"
    return text


def median_cell(group: dict[str, Any] | None) -> str:
    if not group:
        return "-"
    fn = group["fn"]
    fn_text = str(int(fn)) if float(fn).is_integer() else f"{fn:.1f}"
    return f"**{group['auc_pr']:.3f} / {group['recall']:.3f} / {fn_text}**"


def dataset_tables(name: str, setting: dict[str, Any]) -> list[str]:
    rows, med = setting["seeds"], setting["medians"]
    lines = [
        f"#### Quality: AUC-PR / recall / false negatives on the combined test set ({name}, `{setting['spec']}`)",
        "",
        "| seed | federated gbdt | pooled HGB | gbdt / HGB AUC-PR | pooled gbdt (same algorithm) "
        "| best local MLP | best local HGB | federated MLP |",
        "|---|---|---|---:|---|---|---|---|",
    ]
    for r in rows:
        if "fed_gbdt" not in r:
            lines.append(f"| {r['seed']} | FAILED: {r.get('error', '?').splitlines()[0][:120]} | | | | | | "
                         f"{cell(r.get('fed_mlp'))} |")
            continue
        lines.append(
            f"| {r['seed']} | {cell(r['fed_gbdt'])} | {cell(r['pooled_hgb'])} | "
            f"{fmt(r.get('ratio_auc_pr_fed_gbdt_over_pooled_hgb'))} | {cell(r['pooled_gbdt'])} | "
            f"{cell(r.get('best_local_mlp'), True)} | {cell(r.get('best_local_hgb'), True)} | {cell(r.get('fed_mlp'))} |"
        )
    lines.append(
        f"| **median** | {median_cell(med.get('fed_gbdt'))} | {median_cell(med.get('pooled_hgb'))} | "
        f"**{fmt(med.get('ratio_auc_pr_fed_gbdt_over_pooled_hgb'))}** | {median_cell(med.get('pooled_gbdt'))} | "
        f"{median_cell(med.get('best_local_mlp'))} | {median_cell(med.get('best_local_hgb'))} | "
        f"{median_cell(med.get('fed_mlp'))} |"
    )
    lines += [
        "",
        f"#### Cost ({name}, `{setting['spec']}`)",
        "",
        "| seed | trees | secure rounds | federated s/tree | pooled HGB s/tree (trees) | ratio per tree "
        "| federated fit s / pooled HGB fit s | upload per institution per tree | ensemble download per tree |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "fed_gbdt" not in r:
            continue
        lines.append(
            f"| {r['seed']} | {r['fed_trees']} | {r['secure_rounds']} | {r['seconds_per_tree_fed']:.2f} | "
            f"{r['seconds_per_tree_pooled_hgb'] * 1e3:.1f} ms ({r['pooled_hgb_trees']}) | "
            f"{r['time_ratio_per_tree']:.0f}x | {r['fed_round_seconds_total']:.0f} / {r['pooled_hgb_fit_seconds']:.2f} "
            f"= {r['time_ratio_whole_fit']:.0f}x | {human_bytes(r['upload_per_tree_mean'])} | "
            f"{human_bytes(r['download_ensemble_per_tree_mean'])} |"
        )
    if med.get("seconds_per_tree_fed") is not None:
        lines.append(
            f"| **median** | {fmt(med.get('fed_trees'), 0)} | {fmt(med.get('secure_rounds'), 0)} | "
            f"**{med['seconds_per_tree_fed']:.2f}** | **{med['seconds_per_tree_pooled_hgb'] * 1e3:.1f} ms** | "
            f"**{med['time_ratio_per_tree']:.0f}x** | **{med['time_ratio_whole_fit']:.0f}x** | "
            f"**{human_bytes(med['upload_per_tree_mean'])}** | {human_bytes(med['download_ensemble_per_tree_mean'])} |"
        )
    stops = [f"seed {r['seed']}: {r['early_stopping']}" for r in rows if r.get("early_stopping")]
    if stops:
        lines += ["", "Early stopping (the product's `gbdt-early-stopping`, on the synthetic validation set): "
                  + "; ".join(stops) + ". The saved model keeps every grown tree."]
    lines.append("")
    return lines


def product_note(report: dict[str, Any]) -> str:
    states = []
    for block in report.get("raw", {}).values():
        for result in [*block.get("mlp", {}).values(), *(r for per in block.get("gbdt", {}).values() for r in per.values())]:
            if result.get("product"):
                states.append(result["product"])
    if not states:
        return ""
    heads = sorted({s["head"] for s in states})
    # The benchmark's own results files change while it runs; they are not the product.
    dirty = sorted({f for s in states for f in s["dirty"] if not f.startswith("bench/results/")})
    return (f"Product as on disk when each run started: commit(s) {', '.join(heads)}"
            + (f", with uncommitted edits in {', '.join(dirty)}." if dirty else "."))


def write_markdown(path: Path, report: dict[str, Any]) -> None:
    meta = report["meta"]
    ovh = report.get("secagg_overhead") or {}
    lines = [
        f"# Federated boosted trees (gbdt) vs pooled and local references ({meta['date']})",
        "",
        f"`{meta['command']}`",
        "",
        f"Machine: {meta['machine']} ({meta['platform']}). Seeds: {', '.join(map(str, meta['seeds']))}. "
        f"Wall time of the last invocation: {meta['wall_minutes']:.0f} min; the runs themselves (demo + "
        f"comparison + HGB timing, cached between invocations): {meta.get('runs_minutes', float('nan')):.0f} min.",
        "",
        product_note(report),
        "",
        "## How",
        "",
        "- Every federated model is a real `fedfraud demo` run (Flower simulation engine, 3 institutions, "
        "hardened SecAgg+, exact secure sums of the histograms), once with `model=gbdt` and once with the "
        f"MLP ({meta['mlp_rounds']} rounds, the usual MLP setting), same data and seed.",
        "- Each run's comparison is the product's own (`fedfraud.comparison.build_comparison`, the code behind "
        "`--compare`): every model's threshold is chosen on the synthetic validation set (10 x FN + 1 x FP), "
        "then held fixed on the combined test set (all institutions' test rows). Cells are "
        "**AUC-PR / recall / false negatives** there.",
        "- *pooled HGB*: scikit-learn `HistGradientBoostingClassifier(random_state=seed)` on all training rows "
        "(from the gbdt run's comparison). *best local HGB*: the same classifier trained here on one "
        "institution's rows, scored through `fraud.compare.add_model` (same threshold rule), best institution "
        "shown. *best local MLP*: the best `local:<inst>` of the MLP run's comparison "
        f"({meta['mlp_rounds']} rounds x 2 epochs). \"Best\" is picked by test AUC-PR (optimistic for the "
        "local side).",
        "- Time per tree: the gbdt run's summed `seconds` of its accepted rounds (rounds.jsonl; they include "
        "the bin agreement, every level's secure sum and the per-round secure evaluation; rounds after an "
        "early stop grow nothing and are left out) / trees in model.json, against the pooled HGB fitted "
        f"{meta['hgb_repeats']} times in this process right after the run (median fit time / `n_iter_`; "
        "sklearn uses both cores and stops early on > 10 000 rows). Ratios are medians over seeds.",
        "- Bytes: each institution uploads per level open nodes x features x max-bins x 3 sums (count, "
        f"gradient, hessian), each sum 3 limbs of 4 bytes ({BYTES_PER_SUM} B); open nodes per level are "
        "counted from the saved trees' `depth` arrays. Not in the per-tree figure: the bin agreement once per "
        "run (features x 1024 grid cells + 2, 12 B each), and the fixed SecAgg+ overhead of every secure round "
        + (
            f"(measured on an in-process hardened round with 3 institutions: about "
            f"{human_bytes(ovh['up_overhead_per_round'])} up and {human_bytes(ovh['down_overhead_per_round'])} "
            "down per institution per round, record payloads without gRPC framing; a tree of depth D takes D "
            "rounds). "
            if ovh.get("up_overhead_per_round") is not None
            else "(not measured: " + str(ovh.get("error", "skipped")) + "). "
        )
        + "The ensemble so far travels down with every level; its size per tree is given as *ensemble "
        "download* (approximate).",
        "",
    ]
    for dataset, block in report["datasets"].items():
        lines += [f"## {block['title']}", "", block["description"], ""]
        for setting in block["settings"]:
            lines += dataset_tables(dataset, setting)
    lines += ["## Conclusions (computed)", ""]
    lines += [f"- {c}" for c in report.get("conclusions", [])] or ["- (none)"]
    if report.get("notes"):
        lines += ["", "## Notes", "", report["notes"].strip()]
    if report.get("problems"):
        lines += ["", "## Problems met", ""]
        lines += [f"- {p}" for p in report["problems"]]
    lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def conclusions(report: dict[str, Any]) -> list[str]:
    out = []
    for dataset, block in report["datasets"].items():
        for setting in block["settings"]:
            med = setting["medians"]
            ratio = med.get("ratio_auc_pr_fed_gbdt_over_pooled_hgb")
            if ratio is None:
                out.append(f"{dataset}, `{setting['spec']}`: no federated gbdt result (see problems).")
                continue
            fed = med["fed_gbdt"]["auc_pr"]
            parts = [
                f"{dataset}, `{setting['spec']}`: federated gbdt median AUC-PR {fed:.3f}, pooled HGB "
                f"{med['pooled_hgb']['auc_pr']:.3f}, median per-seed ratio {ratio:.3f}: target 0.99x "
                f"{'reached' if ratio >= 0.99 else 'NOT reached'} "
            ]
            ratios = [r.get("ratio_auc_pr_fed_gbdt_over_pooled_hgb") for r in setting["seeds"]]
            ratios = [x for x in ratios if x is not None]
            parts.append(f"({sum(x >= 0.99 for x in ratios)}/{len(ratios)} seeds >= 0.99)")
            local = med.get("best_local_any")
            if local:
                wins = sum(
                    1 for r in setting["seeds"]
                    if r.get("fed_gbdt") and r.get("best_local_any") and r["fed_gbdt"]["auc_pr"] > r["best_local_any"]["auc_pr"]
                )
                parts.append(
                    f"; it beats the best local model (best of local MLP and local HGB, median {local['auc_pr']:.3f}) "
                    f"in {wins}/{len(ratios)} seeds"
                )
            if med.get("fed_mlp"):
                parts.append(f"; federated MLP median {med['fed_mlp']['auc_pr']:.3f}")
            if med.get("pooled_gbdt"):
                parts.append(f"; the same algorithm on pooled rows {med['pooled_gbdt']['auc_pr']:.3f}")
            parts.append(
                f". Cost: {med['seconds_per_tree_fed']:.2f} s per tree federated vs "
                f"{med['seconds_per_tree_pooled_hgb'] * 1e3:.1f} ms per tree pooled HGB ({med['time_ratio_per_tree']:.0f}x), "
                f"{human_bytes(med['upload_per_tree_mean'])} uploaded per institution per tree."
            )
            out.append("".join(parts))
    return out


# -- main --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/bench_gbdt.py",
        description=(
            "Federated gbdt (fedfraud demo --set model=gbdt) against pooled HGB, local-only HGB/MLP and the "
            "federated MLP, on the built-in data and the insurance claims split by policy_state: quality "
            "(AUC-PR, recall, FN on the combined test set), time per tree and bytes per institution per tree. "
            "Runs fedfraud demo as subprocesses, one at a time."
        ),
        epilog=(
            "gbdt settings are comma-separated key=value items: rounds=N and any run-config key passed as "
            "--set (gbdt-trees-per-round, gbdt-max-depth, gbdt-learning-rate, gbdt-min-child-rows, gbdt-l2, "
            "gbdt-max-bins). Repeat --builtin-gbdt/--insurance-gbdt to benchmark several settings. A secure "
            "round costs about 0.6 s: a run of T trees of depth D takes about T*D*0.6 s plus about 1 minute."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--seeds", type=parse_seeds, default="42,1,2", help="comma-separated seeds")
    parser.add_argument("--datasets", type=parse_datasets, default="builtin,insurance",
                        help="builtin (generator, 3 institutions) and/or insurance (BYO CSV split by policy_state)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: seed 42 only, 2000 built-in rows, 2 trees of depth 3, 1 MLP round, "
                        "1 HGB fit; results next to the runs, not in bench/results")
    parser.add_argument("--rows", type=int, default=20000, help="built-in rows per institution")
    parser.add_argument("--builtin-gbdt", action="append", type=GbdtSpec.parse, default=None, metavar="SPEC",
                        help=f"gbdt setting(s) for the built-in data (default: {DEFAULT_BUILTIN_GBDT[0]})")
    parser.add_argument("--insurance-gbdt", action="append", type=GbdtSpec.parse, default=None, metavar="SPEC",
                        help="gbdt setting(s) for the insurance data (default: " + " and ".join(DEFAULT_INSURANCE_GBDT) + ")")
    parser.add_argument("--mlp-rounds", type=int, default=5, help="rounds of the federated MLP run")
    parser.add_argument("--no-mlp", action="store_true", help="skip the federated MLP runs")
    parser.add_argument("--hgb-repeats", type=int, default=5, help="pooled HGB fits timed per gbdt run")
    parser.add_argument("--insurance-csv", type=Path, default=INSURANCE_CSV, help="the insurance claims CSV")
    parser.add_argument("--out", type=Path, default=None,
                        help="work folder for data, runs and logs (default runs/bench-gbdt, or runs/bench-gbdt-quick)")
    parser.add_argument("--results-md", type=Path, default=None, help="markdown results (default bench/results/gbdt.md)")
    parser.add_argument("--results-json", type=Path, default=None, help="JSON results (default bench/results/gbdt.json)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a demo run is abandoned")
    parser.add_argument("--fresh", action="store_true", help="ignore cached per-run results under --out")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only rewrite the markdown (--results-md) from a results JSON of an earlier invocation")
    parser.add_argument("--notes", type=Path, default=None, metavar="MD",
                        help="a markdown file of hand-written notes to include (kept in the JSON)")
    parser.add_argument("--skip-overhead", action="store_true", help="do not measure the SecAgg+ per-round overhead")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    if args.render is not None:
        report = json.loads(args.render.read_text(encoding="utf-8"))
        report["conclusions"] = conclusions(report)
        if args.notes is not None:
            report["notes"] = args.notes.read_text(encoding="utf-8")
            args.render.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
        target = args.results_md or args.render.with_suffix(".md")
        write_markdown(target, report)
        say(f"rewrote {target} from {args.render}")
        return 0
    if args.quick:
        args.seeds = args.seeds[:1]
        args.rows = min(args.rows, 2000)
        args.mlp_rounds = 1
        args.hgb_repeats = 1
        args.builtin_gbdt = args.builtin_gbdt or [GbdtSpec.parse(s) for s in QUICK_GBDT]
        args.insurance_gbdt = args.insurance_gbdt or [GbdtSpec.parse(s) for s in QUICK_GBDT]
    args.builtin_gbdt = args.builtin_gbdt or [GbdtSpec.parse(s) for s in DEFAULT_BUILTIN_GBDT]
    args.insurance_gbdt = args.insurance_gbdt or [GbdtSpec.parse(s) for s in DEFAULT_INSURANCE_GBDT]
    args.out = (args.out or ROOT / "runs" / ("bench-gbdt-quick" if args.quick else "bench-gbdt")).resolve()
    default_results = args.out if args.quick else ROOT / "bench" / "results"
    results_md = args.results_md or default_results / "gbdt.md"
    results_json = args.results_json or default_results / "gbdt.json"
    if "insurance" in args.datasets and not args.insurance_csv.is_file():
        parser.error(f"{args.insurance_csv}: not found (--insurance-csv)")
    if not FEDFRAUD.is_file():
        parser.error(f"{FEDFRAUD}: not found; create the virtualenv first")
    args.out.mkdir(parents=True, exist_ok=True)
    say(f"seeds {args.seeds}, datasets {args.datasets}, work folder {args.out}")

    report: dict[str, Any] = {"datasets": {}, "problems": []}
    if args.notes is not None:
        report["notes"] = args.notes.read_text(encoding="utf-8")
    if not args.skip_overhead:
        say("measuring the fixed SecAgg+ overhead of one secure round (in process)")
        try:
            report["secagg_overhead"] = secagg_overhead()
            say(f"overhead: {report['secagg_overhead']['up_overhead_per_round']:.0f} B up, "
                f"{report['secagg_overhead']['down_overhead_per_round']:.0f} B down per institution per round")
        except Exception as exc:  # noqa: BLE001 - reported, the benchmark goes on
            report["secagg_overhead"] = {"error": f"{type(exc).__name__}: {exc}"}
            say(f"overhead measurement failed: {type(exc).__name__}: {exc}")
            report["problems"].append(f"SecAgg+ overhead measurement failed: {type(exc).__name__}: {exc}")
    raw: dict[str, Any] = {}
    for dataset in args.datasets:
        specs = args.builtin_gbdt if dataset == "builtin" else args.insurance_gbdt
        raw[dataset] = {"mlp": {}, "gbdt": {s.text: {} for s in specs}}
        for seed in args.seeds:
            for spec in specs:
                if spec.seeds is not None and seed not in spec.seeds:
                    continue
                result = gbdt_case(dataset, seed, spec, args)
                raw[dataset]["gbdt"][spec.text][seed] = result
                if "error" in result:
                    report["problems"].append(
                        f"{dataset} seed {seed} gbdt `{spec.text}`: {result['error'].splitlines()[0][:300]}"
                    )
            if not args.no_mlp:
                result = mlp_case(dataset, seed, args)
                raw[dataset]["mlp"][seed] = result
                if "error" in result:
                    report["problems"].append(f"{dataset} seed {seed} MLP: {result['error'].splitlines()[0][:300]}")
        settings = []
        for spec in specs:
            rows = [
                seed_row(raw[dataset]["gbdt"][spec.text][s], raw[dataset]["mlp"].get(s))
                for s in args.seeds if s in raw[dataset]["gbdt"][spec.text]
            ]
            settings.append({"spec": spec.text, "seeds": rows, "medians": medians(rows)})
        any_run = next((r for per in raw[dataset]["gbdt"].values() for r in per.values() if "train_sizes" in r), None)
        sizes = any_run["train_sizes"] if any_run else {}
        test = any_run["test_size"] if any_run else {}
        if dataset == "builtin":
            title = "Built-in generator data"
            description = (f"3 institutions (bank-a, bank-b, insurer-c), {args.rows} rows each, standard "
                           f"heterogeneity. Training rows {sizes}; combined test set {test}.")
        else:
            title = "Insurance claims (bring-your-own CSV split by policy_state)"
            description = (f"`{args.insurance_csv.name}` split into 3 institutions by `policy_state` "
                           f"(schema fraud/schemas/insurance_claims.toml). Training rows {sizes}; combined "
                           f"test set {test}. The demo policies' small-cell rule ([histograms] min_child_rows) "
                           f"is 20, the run's default gbdt-min-child-rows.")
        report["datasets"][dataset] = {"title": title, "description": description, "settings": settings}
        # A partial results file after every dataset.
        report["meta"] = meta(args, results_md)
        report["conclusions"] = conclusions(report)
        write_markdown(results_md, report)
    report["raw"] = {
        d: {"mlp": {str(s): v for s, v in block["mlp"].items()},
            "gbdt": {spec: {str(s): v for s, v in per.items()} for spec, per in block["gbdt"].items()}}
        for d, block in raw.items()
    }
    report["meta"] = meta(args, results_md)
    report["meta"]["runs_minutes"] = sum(
        float(r.get("demo_wall_seconds", 0.0)) + float(r.get("comparison_seconds", 0.0))
        + sum(r.get("pooled_hgb_timing", {}).get("fit_seconds", []))
        for block in raw.values()
        for r in [*block["mlp"].values(), *(x for per in block["gbdt"].values() for x in per.values())]
    ) / 60
    report["conclusions"] = conclusions(report)
    write_markdown(results_md, report)
    results_json.parent.mkdir(parents=True, exist_ok=True)
    results_json.write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    say(f"results: {results_md} and {results_json}")
    for line in report["conclusions"]:
        print(line)
    for line in report["problems"]:
        print("PROBLEM:", line)
    return 0


def meta(args: argparse.Namespace, results_md: Path) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "bench/bench_gbdt.py " + " ".join(sys.argv[1:]),
        "machine": "2 cores, shared, no GPU" if (os.cpu_count() or 0) == 2 else f"{os.cpu_count()} cores, shared",
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "seeds": args.seeds,
        "datasets": args.datasets,
        "rows": args.rows,
        "mlp_rounds": args.mlp_rounds,
        "hgb_repeats": args.hgb_repeats,
        "quick": bool(args.quick),
        "builtin_gbdt": [s.text for s in args.builtin_gbdt],
        "insurance_gbdt": [s.text for s in args.insurance_gbdt],
        "wall_minutes": (time.monotonic() - _T0) / 60,
    }


if __name__ == "__main__":
    sys.exit(main())
