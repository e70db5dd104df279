#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: makes .venv, installs the locked dependencies
# and test extras (requirements-test.lock) and the project, makes sure redis-server (tests
# start their own) and Debian's chromium with its driver (the dashboard's browser test) and
# buildah with debootstrap (the image test) exist, lints, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# Exactly the locked versions, each checked against its hash (docs/development.md "Dependencies"), then the
# project itself with nothing more resolved, built by the locked setuptools; pip check: the
# lock is within pyproject's ranges.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
    -r requirements-test.lock -r requirements-build.lock
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation -e .
.venv/bin/python -m pip check --disable-pip-version-check

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
    else
        echo "redis-server is needed by the Redis tests: install it (e.g. apt-get install redis-server)" >&2
        exit 1
    fi
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    else
        echo "chromium and chromedriver are needed by the dashboard test: install them" \
            "(e.g. apt-get install chromium chromium-driver)" >&2
        exit 1
    fi
fi

# The container image test builds the Dockerfile with buildah on a debootstrap base
# (tests/deploy/test_image.py); both come from Debian's packages.
if ! command -v buildah >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap
    else
        echo "buildah and debootstrap are needed by the image test: install them" \
            "(e.g. apt-get install buildah debootstrap)" >&2
        exit 1
    fi
fi

# The shipped alerting rules are checked and unit-tested with promtool (tests/deploy/
# test_monitoring.py); Debian ships it in the prometheus package.
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus
    else
        echo "promtool is needed by the monitoring test: install it (e.g. apt-get install prometheus)" >&2
        exit 1
    fi
fi

# The TLS upstream tests make a self-signed certificate with openssl's command line.
if ! command -v openssl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
    else
        echo "openssl is needed by the TLS upstream tests: install it (e.g. apt-get install openssl)" >&2
        exit 1
    fi
fi

.venv/bin/ruff check proxy tests bench
.venv/bin/lint-imports --no-cache  # the layers in pyproject.toml: no folder imports one above it
# Types ([tool.mypy] in pyproject.toml): proxy/, tests/, bench/; strict on the pure decision code.
.venv/bin/mypy
# Four processes: most tests wait on sockets and subprocesses, so even two cores keep them busy
# (about 3 min instead of 6.5 on this 2-core machine).
exec .venv/bin/python -m pytest -n 4 "$@"
