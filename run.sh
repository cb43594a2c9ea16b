#!/usr/bin/env bash
# Start MarketFleet with embedded defaults: registry (SQLite), MQTT broker, CoAP, ingest, API and dashboard,
# all on 127.0.0.1, data in ./var. No external service is needed.
#   ./run.sh            the platform
#   ./run.sh --demo     also seed a demo market and simulate its devices
# Any other arguments go to `marketfleet serve` (e.g. --help).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "run.sh: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.marketfleet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "run.sh: installing MarketFleet into .venv (first run takes a minute)"
    pip_log="$(mktemp)"
    if ! .venv/bin/python -m pip install -q -e . >"$pip_log" 2>&1; then
        cat "$pip_log" >&2
        echo "run.sh: pip install failed (see above)" >&2
        exit 1
    fi
    rm -f "$pip_log"
    touch "$stamp"
fi
exec .venv/bin/marketfleet serve "$@"
