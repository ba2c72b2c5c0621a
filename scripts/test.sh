#!/usr/bin/env bash
# The README's test command runs this (through `make test`): lint, types, then pytest against real services.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin

set -e
"$BIN/ruff" check .
"$BIN/ruff" format --check .
"$BIN/mypy"
"$BIN/lint-imports" --no-logo  # the layers' contracts in pyproject.toml
# The dashboard browser test drives Debian chromium, the alert-rule tests promtool (installed once, idempotent).
scripts/install-system.sh
set +e

mkdir -p test-artifacts
"$BIN/pytest" --junitxml=test-artifacts/junit.xml "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  # pytest's "no tests collected": a run that tested nothing is a failure, said plainly.
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
