#!/usr/bin/env bash
# Builds the on-device web app's runtime: ONNX Runtime Web from npm, at the version pinned in
# web/package-lock.json, copied into src/emolens/webapp/static/vendor/ (git-ignored; wheels built
# afterwards carry it). Needs Node.js 18+ and npm; run it again after changing web/package.json.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "build_webapp.sh: npm is missing (install Node.js 18+ and npm)" >&2; exit 2; }
npm ci --prefix web --no-audit --no-fund --ignore-scripts --loglevel=error
node web/build.mjs
