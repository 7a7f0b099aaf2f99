#!/usr/bin/env bash
# Run a 3-institution *production* federation on this machine, end to end:
# two-sided provisioning (each institution makes its own SuperNode and audit
# keys; the operator imports their public keys and makes the CA, TLS
# certificate and server key), a
# SuperLink with TLS and SuperNode authentication, one SuperNode per
# institution, registration of their keys, and a SecAgg+ run submitted with
# `flwr run`. Everything listens on 127.0.0.1 only; every process is stopped
# at the end, also on errors and Ctrl-C.
#
# Usage: scripts/run-local-federation.sh [options for `python -m fedfraud.deployment local`]
#   e.g. scripts/run-local-federation.sh --rounds 2 --rows 5000 --set timeout=60.0
# Environment: FEDERATION (default federation.example.toml), KEYS (default keys),
#              PYTHON (default: .venv/bin/python if present, else python3).
set -euo pipefail

cd "$(dirname "$0")/.."
FEDERATION="${FEDERATION:-federation.example.toml}"
KEYS="${KEYS:-keys}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export FLWR_TELEMETRY_ENABLED=0
# Flower's commands (flower-superlink, flower-supernode, flwr) live beside the interpreter.
PATH="$(dirname "$(command -v "$PYTHON")"):$PATH"
export PATH

# 1. Provision once, two-sided; an existing folder is reused (never overwritten).
if [[ ! -f "$KEYS/federation.json" ]]; then
    REGISTRATIONS="$KEYS.registrations"
    mkdir -p "$REGISTRATIONS"
    # 1a. Each institution makes its own keys (on its own machine in production;
    #     here its site folder is its folder under $KEYS/institutions).
    for id in $("$PYTHON" -c 'import sys; from pathlib import Path; from fedfraud.federation_file import load_federation; print(" ".join(load_federation(Path(sys.argv[1])).names))' "$FEDERATION"); do
        "$PYTHON" -m fedfraud.provision institution "$FEDERATION" "$id" --out "$KEYS/institutions/$id"
        cp "$KEYS/institutions/$id/registration.json" "$REGISTRATIONS/$id.json"
    done
    # 1b. The operator imports their public keys only, and makes the rest.
    "$PYTHON" -m fedfraud.provision init "$FEDERATION" --out "$KEYS" --registrations "$REGISTRATIONS"
else
    echo "reusing the keys in $KEYS (delete the folder, or use --force, to re-provision)"
fi

# 1c. Each institution approves the app bundle it reviewed (here: this
#     checkout). Its SuperNode, started with `fedfraud supernode`, runs no
#     other bundle. Approving again after a code change adds the new hash.
for site in "$KEYS"/institutions/*/; do
    "$PYTHON" -m fedfraud code approve --site "$site" . --label "local rehearsal checkout"
done

# 2. SuperLink + SuperNodes + flwr run, stopped at the end.
exec "$PYTHON" -m fedfraud.deployment local "$FEDERATION" --keys "$KEYS" "$@"
