#!/usr/bin/env bash
# One-time (idempotent) set-up: a project virtualenv with every Python dependency, and the Apache Kafka
# broker's jars fetched from Maven Central with Maven. Re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

die() { echo "setup: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || die "Python 3.11+ not found (set PYTHON=/path/to/python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11+ required, found $("$PYTHON" --version)"
command -v java >/dev/null || die "Java 17+ not found: install a JDK 17 (e.g. apt-get install openjdk-17-jdk-headless)"
java_major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
[ "${java_major%%.*}" -ge 17 ] 2>/dev/null || die "Java 17+ required for Apache Kafka 4.x, found ${java_major}"
command -v mvn >/dev/null || die "Maven not found: install Maven (e.g. apt-get install maven); it fetches the Kafka broker jars"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.clickstream-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # lightfm 1.17 only builds without build isolation, and only with a pip that still runs its setup.py
  # the legacy way (pip >= 24 breaks its __LIGHTFM_SETUP__ trick).
  "$PY" -m pip install -q "pip==23.2.1"
  if ! "$PY" -c 'import lightfm' 2>/dev/null; then
    echo "setup: building lightfm 1.17 (about 30 s)"
    "$PY" -m pip install -q "setuptools<70" wheel cython "numpy>=1.26,<2.4" scipy
    "$PY" -m pip install -q --no-build-isolation lightfm==1.17
  fi
  echo "setup: installing clickstream-dagster and its dependencies"
  "$PY" -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi

"$VENV/bin/clickstream" setup
# Prometheus and Alertmanager for the stack (Debian's packages), when this machine lets us install them; without
# them the stack runs and `up` says how to add them.
scripts/install-system.sh --best-effort monitoring
echo "setup: done"
