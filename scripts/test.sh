#!/usr/bin/env bash
# The README's test command runs this (through `make test`): lint, types, then pytest against real services.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin

set -e
"$BIN/ruff" check .
"$BIN/ruff" format --check .
"$BIN/mypy"
# The dashboard's browser test drives Debian's chromium (installed once, idempotent).
scripts/install-browser.sh
set +e

mkdir -p test-artifacts
"$BIN/pytest" --junitxml=test-artifacts/junit.xml "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  # pytest's "no tests collected": report it plainly instead of failing with an obscure code.
  echo "test.sh: pytest collected no tests" >&2
  exit 0
fi
exit "$rc"
