#!/usr/bin/env bash
# The whole test suite: tests (real HTTP, Redis, gunicorn, Chromium), ruff, mypy --strict, the
# docs, the built package, and the tests again against the lowest versions we support.
# Sets itself up on a fresh Debian machine: a venv with tox, and the system packages
# the tests need (chromium, redis-server, redis-sentinel, memcached, tinyproxy) through apt when it
# may install them.
#
#   bash scripts/test.sh           everything (what CI runs)
#   bash scripts/test.sh --quick   the unit tier only: no browser, gunicorn or extra servers
#
# Other arguments go to pytest (e.g. -k refresh, or -x).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

quick=0
pytest_args=()
for arg in "$@"; do
    if [ "$arg" = "--quick" ]; then quick=1; else pytest_args+=("$arg"); fi
done

# The system pieces of the full run (the quick run needs none of them).
need_apt=()
if [ "$quick" = 0 ]; then
    command -v chromium >/dev/null 2>&1 || [ -n "${TOUCAN_TEST_CHROMIUM:-}" ] || need_apt+=(chromium)
    command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
    command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
    command -v memcached >/dev/null 2>&1 || need_apt+=(memcached)
    command -v tinyproxy >/dev/null 2>&1 || need_apt+=(tinyproxy)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing ${need_apt[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        echo "==> installing ${need_apt[*]} with sudo apt-get"
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    else
        echo "The test suite needs these system packages: ${need_apt[*]}" >&2
        echo "Install them (Debian/Ubuntu: sudo apt-get install ${need_apt[*]}) and run again." >&2
        echo "(Or point TOUCAN_TEST_CHROMIUM at a Chromium binary; or run --quick, which needs none.)" >&2
        exit 1
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
fi
# (Only pip's "Location ... is ignored" chatter about absent local indexes is dropped.)
.venv/bin/python -m pip install -q --upgrade pip tox 2> >(grep -v "^WARNING: Location '" >&2)

if [ "$quick" = 1 ]; then
    envs=py
    pytest_args=(-m "not infra" "${pytest_args[@]}")
else
    envs=py,mcp2,lint,type,type-mcp1,docs,package,min
fi
status=0
.venv/bin/tox run -q -e "$envs" -- "${pytest_args[@]}" || status=$?
elapsed=$(( $(date +%s) - started ))
took="$((elapsed / 60))m$((elapsed % 60))s"
what="$envs"
[ "$quick" = 1 ] && what="py, unit tier (--quick)"
if [ "$status" = 0 ]; then
    echo "scripts/test.sh: PASSED ($what) in $took"
else
    echo "scripts/test.sh: FAILED ($what) in $took: see the first error above"
fi
exit "$status"
