#!/usr/bin/env bash
# The whole test suite: tests (real HTTP, Redis, gunicorn, Chromium), ruff and mypy --strict.
# Sets itself up on a fresh Debian machine: a venv with tox, and the system packages
# the tests need (chromium, redis-server, redis-sentinel, memcached, tinyproxy) through apt when it
# may install them.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || [ -n "${TOUCAN_TEST_CHROMIUM:-}" ] || need_apt+=(chromium)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
command -v memcached >/dev/null 2>&1 || need_apt+=(memcached)
command -v tinyproxy >/dev/null 2>&1 || need_apt+=(tinyproxy)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing ${need_apt[*]} with apt-get"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        echo "==> installing ${need_apt[*]} with sudo apt-get"
        sudo apt-get update -q
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
    else
        echo "The test suite needs these system packages: ${need_apt[*]}" >&2
        echo "Install them (Debian/Ubuntu: sudo apt-get install ${need_apt[*]}) and run again." >&2
        echo "(Or point TOUCAN_TEST_CHROMIUM at a Chromium binary.)" >&2
        exit 1
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip tox
exec .venv/bin/tox run -e py,lint,type,docs,package,min -- "$@"
