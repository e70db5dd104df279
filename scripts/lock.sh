#!/usr/bin/env bash
# Writes the lock files from pyproject.toml, with every distribution's hash:
#   requirements-test.lock  the runtime dependencies and the test extras (scripts/test.sh, CI)
#   requirements.lock       the runtime dependencies, uvloop and dns (the Dockerfile), at the same
#                           versions as the test lock
#   requirements-build.lock the build backend (scripts/build.in), for the Dockerfile and
#                           scripts/test.sh, which build the project without build isolation
# for every Python pyproject allows and every platform (uv's universal resolution).
#
#   bash scripts/lock.sh            keep the locked versions; add or drop what pyproject changed
#   bash scripts/lock.sh --upgrade  the newest versions pyproject's ranges allow
#
# Then run `bash scripts/test.sh`: what it passes with is what the image ships.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9  # the lock files' format follows the tool's: one version for everyone
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool"
"$tool/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"

compile() {
    "$tool/bin/uv" pip compile --universal --generate-hashes --quiet \
        --custom-compile-command "bash scripts/lock.sh" "$@"
}
compile pyproject.toml --extra test --output-file requirements-test.lock "$@"
# The image's set is a subset of the tested one: the test lock constrains it.
compile pyproject.toml --extra uvloop --extra dns --constraint requirements-test.lock \
    --output-file requirements.lock "$@"
compile scripts/build.in --output-file requirements-build.lock "$@"
echo "wrote requirements-test.lock, requirements.lock and requirements-build.lock"
