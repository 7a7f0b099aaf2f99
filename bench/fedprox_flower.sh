#!/usr/bin/env bash
# FedAvg vs FedProx (mu = 0.1) through the real product: `fedfraud demo`, i.e.
# Flower's simulation engine with fedfraud's SecAgg+, 5 rounds, 20 000 rows per
# institution, per heterogeneity level and seed. Prints the combined-test-set
# AUC-PR of the federated model, the best institution alone and the pooled
# model, from each run's comparison report. About 1 minute per run on 2 cores.
#
# Usage: bench/fedprox_flower.sh [OUT]   (default OUT: runs/bench-fedprox-flower, git-ignored)
# Results of 2026-12-02 on this 2-core machine: bench/results/fedprox-flower.md
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/bench-fedprox-flower}"
mkdir -p "$OUT"
for spec in "high 42" "high 1" "high 2" "standard 42" "standard 1"; do
    set -- $spec
    het=$1 seed=$2
    for mu in 0.0 0.1; do
        tag="$het-$seed-mu$mu"
        .venv/bin/fedfraud demo --heterogeneity "$het" --seed "$seed" --rounds 5 --rows 20000 \
            --data-dir "$OUT/data-$het-$seed" --runs-dir "$OUT/runs-$tag" --parties-dir "$OUT/parties-$tag" \
            --set "fedprox-mu=$mu" > "$OUT/log-$tag.txt" 2>&1
        .venv/bin/python - "$tag" "$OUT/runs-$tag" <<'PY'
import sys
from pathlib import Path
tag, runs = sys.argv[1], Path(sys.argv[2])
(report,) = runs.glob("*/report/report.md")
table = report.read_text(encoding="utf-8").split("| model | AUC-PR", 1)[1].split("\n\n", 1)[0]
auc = {}
for line in table.splitlines()[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    auc[cells[0]] = float(cells[1])
best = max(v for k, v in auc.items() if k.startswith("local:"))
print(f"{tag:22s} federated {auc['federated (secagg+)']:.3f}  best local {best:.3f}  pooled {auc['pooled']:.3f}")
PY
    done
done
