#!/bin/sh
# Entrypoint of the EmoLens image (also runs outside a container, as the tests do).
#   serve        (default) wait for the database, then `emolens serve` on 0.0.0.0:$PORT with $EMOLENS_WORKERS
#   healthcheck  exit 0 when /readyz answers 200 (the image's HEALTHCHECK)
#   anything else runs as a command, e.g. `emolens keys create me --scope admin`
set -eu

: "${EMOLENS_HOME:=/data}"
: "${PORT:=8000}"
: "${EMOLENS_WORKERS:=2}"
: "${EMOLENS_DB_WAIT_S:=60}"
export EMOLENS_HOME

case "${1:-serve}" in
serve)
    [ "$#" -gt 0 ] && shift
    mkdir -p "$EMOLENS_HOME" 2>/dev/null || true
    if ! [ -d "$EMOLENS_HOME" ] || ! [ -w "$EMOLENS_HOME" ]; then
        echo "emolens: EMOLENS_HOME=$EMOLENS_HOME is not writable by uid $(id -u); fix the volume's owner" >&2
        exit 2
    fi
    # Wait for the database (a PostgreSQL container may still be starting), and migrate it once
    # here rather than in every worker at the same moment.
    python -m emolens.cli.waitdb --timeout "$EMOLENS_DB_WAIT_S"
    exec emolens serve --host "${HOST:-0.0.0.0}" --port "$PORT" --workers "$EMOLENS_WORKERS" "$@"
    ;;
healthcheck)
    exec python -c "import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:${PORT}/readyz', timeout=4).status == 200 else 1)
except Exception as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)"
    ;;
*)
    exec "$@"
    ;;
esac
