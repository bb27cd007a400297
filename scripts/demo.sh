#!/usr/bin/env bash
# Runs the demo at http://127.0.0.1:5000 (preview mode unless TOUCAN_API_KEY is set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Quiet set-up: the log is shown only if it fails.
log=.venv/demo-install.log
if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e .; } >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
echo "flask_toucan demo (preview mode unless TOUCAN_API_KEY is set): http://127.0.0.1:${PORT:-5000}"
exec .venv/bin/flask --app examples.demo.app run --host 127.0.0.1 --port "${PORT:-5000}" "$@"
