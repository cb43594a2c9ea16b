#!/usr/bin/env bash
# One entry point for developers and CI: venv, editable install, real services,
# then pytest. Tests talk to real PostgreSQL/InfluxDB/Mosquitto/Chromium, so the
# Debian packages are installed here (scripts/install-services.sh) rather than
# assumed. Default pytest args: -q -ra; any arguments replace them.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Quiet: pip's output (build-backend warnings included) is shown only on failure.
pip_log="$(mktemp)"
# The vision tests need torch: pin the release whose wheels this machine kind serves (docs/vision.md), first,
# so that ultralytics does not pull a different (several GB) build.
if ! .venv/bin/python -m pip install -q 'torch==2.14.1' 'torchvision==0.29.1' >"$pip_log" 2>&1 \
    || ! .venv/bin/python -m pip install -q -e '.[dev,vision]' >>"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    echo "test.sh: pip install -e '.[dev,vision]' failed" >&2
    rm -f "$pip_log"
    exit 1
fi
rm -f "$pip_log"

scripts/install-services.sh

# Browser tests drive Debian's /usr/bin/chromium; never let Playwright fetch
# its own browser builds (there is no network for that).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ "$#" -eq 0 ]; then
    set -- -q -ra
fi

.venv/bin/ruff check . || { echo "test.sh: ruff found problems (run .venv/bin/ruff check --fix .)" >&2; exit 1; }

rc=0
.venv/bin/python -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$rc"
