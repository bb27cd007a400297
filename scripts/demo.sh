#!/usr/bin/env bash
# Runs the demo at http://127.0.0.1:5000 (preview mode unless TOUCAN_API_KEY is set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/flask --app examples.demo.app run --host 127.0.0.1 --port "${PORT:-5000}" "$@"
