#!/usr/bin/env bash
# Large federations with the default settings (issue 16): `fedfraud demo` with
# N institutions of ROWS rows each, 2 rounds, no comparison, no synthetic
# releases. Prints each run's round lines and the SecAgg+ shares it derived
# (num-shares and reconstruction-threshold are auto by default).
#
#   bench/many_institutions.sh [N ...]        (default: 50 100)
#   ROWS=1000 bench/many_institutions.sh 20
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${ROWS:-600}"
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(50 100)
for n in "${sizes[@]}"; do
  names=$(python3 -c "print(','.join(f'inst-{i:03d}' for i in range($n)))")
  work=$(mktemp -d)
  start=$(date +%s)
  .venv/bin/fedfraud demo --institutions "$names" --rows "$rows" --rounds 2 --no-compare \
    --validation-rows 0 --data-dir "$work/data" --runs-dir "$work/runs" --parties-dir "$work/parties" \
    | grep -E '^round|^done'
  echo "n=$n rows=$rows wall=$(( $(date +%s) - start ))s (with data generation and start-up)"
  grep -o '"num_shares":[0-9]*,"quantization_range":[0-9]*,"reconstruction_threshold":[0-9]*' \
    "$work"/runs/*/audit.jsonl | head -1
  rm -rf "$work"
done
