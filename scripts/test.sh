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
# The dashboard browser test drives Debian chromium; the alert-rule tests promtool, the alert routing test
# Prometheus and Alertmanager (installed once, idempotent; required here, unlike in `make setup`).
scripts/install-system.sh browser monitoring
set +e

mkdir -p test-artifacts
"$BIN/pytest" --junitxml=test-artifacts/junit.xml "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  # pytest's "no tests collected": a run that tested nothing is a failure, said plainly.
  echo "test.sh: pytest collected no tests" >&2
  exit 1
fi
[ "$rc" -ne 0 ] && exit "$rc"
[ "$#" -gt 0 ] && exit 0  # a chosen subset (PYTEST_ARGS): no rehearsal

# The scale rehearsal (docs/deploy.md): 3 Kafka brokers and a Spark standalone cluster, started in a folder of
# its own; the cluster tests and the integration tests marked `rehearsal` run against it through its
# environment only (KAFKA_BOOTSTRAP_SERVERS, SPARK_REMOTE, ...), then it is stopped.
REHEARSAL_DIR=$(mktemp -d -t clickstream-rehearsal-XXXXXX)
chmod 755 "$REHEARSAL_DIR"
cluster() { CLICKSTREAM_DATA_DIR="$REHEARSAL_DIR" "$BIN/clickstream" cluster "$@"; }
trap 'cluster down >/dev/null 2>&1 || true' EXIT
echo "test.sh: starting the scale rehearsal in $REHEARSAL_DIR"
cluster up || { echo "test.sh: the scale rehearsal did not start" >&2; exit 1; }
eval "$(cluster env)"
"$BIN/pytest" -m "cluster or rehearsal" --junitxml=test-artifacts/junit-rehearsal.xml
rc=$?
[ "$rc" -eq 5 ] && { echo "test.sh: no rehearsal tests collected" >&2; exit 1; }
exit "$rc"
