#!/usr/bin/env bash
# Set up a virtual environment with the test extras and run the whole test suite.
# Used by the README's test command and by CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned (2.13.0, CPU build) in the `train` extra: an unpinned torch would pull CUDA.
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check src tests benchmarks
# The browser test drives Debian's chromium through Playwright (no browser download). Install it
# when it is missing and we can (root, apt); otherwise that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 ||
        echo "note: could not install chromium; the browser test will be skipped" >&2
fi
.venv/bin/python -m pytest -q "$@"
