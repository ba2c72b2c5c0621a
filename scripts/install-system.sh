#!/usr/bin/env bash
# Idempotent: installs from Debian's packages what pip cannot bring, each only when missing.
#
#   scripts/install-system.sh [--best-effort] GROUP...
#
# Groups:
#   monitoring  prometheus (with promtool) and prometheus-alertmanager (with amtool): the Prometheus and
#               Alertmanager that `clickstream up` starts, and the alert rules' checks and tests;
#   browser     chromium: the dashboard's headless browser test (Playwright drives this binary, never its own
#               download).
#
# `make setup` (so `make demo` and `make up`) runs `--best-effort monitoring`: where it cannot install (no
# apt-get, no root), it says how and carries on, and the stack runs without them. `make test` needs both groups
# and fails without them.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

best_effort=0
if [ "${1:-}" = "--best-effort" ]; then
  best_effort=1
  shift
fi
[ "$#" -gt 0 ] || set -- browser monitoring

missing=()
for group in "$@"; do
  case "$group" in
    browser)
      if [ -x "$CHROMIUM" ]; then
        echo "install-system: $CHROMIUM already installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
      else
        missing+=(chromium fonts-liberation)
      fi
      ;;
    monitoring)
      if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
        echo "install-system: prometheus already installed ($(prometheus --version 2>&1 | head -1))"
      else
        missing+=(prometheus)
      fi
      if command -v amtool >/dev/null && { command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null; }; then
        echo "install-system: alertmanager already installed"
      else
        missing+=(prometheus-alertmanager)
      fi
      ;;
    *)
      echo "install-system: unknown group '$group' (browser, monitoring)" >&2
      exit 2
      ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

give_up() {
  if [ "$best_effort" -eq 1 ]; then
    echo "install-system: $* -- carrying on without ${missing[*]} (the stack runs without them; install them with" \
      "\`sudo apt-get install -y --no-install-recommends ${missing[*]}\` or your package manager, then \`make down up\`)" >&2
    exit 0
  fi
  echo "install-system: $*" >&2
  exit 1
}

command -v apt-get >/dev/null || give_up "missing ${missing[*]} and apt-get is not available: install them with your package manager (or set CHROMIUM=/path/to/chromium)"

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
elif command -v sudo >/dev/null && [ "$best_effort" -eq 0 ]; then
  SUDO=(sudo)  # `make test` needs them: sudo may ask for the password
else
  give_up "missing ${missing[*]}, and installing them needs root: run this script as root, or with sudo rights"
fi

echo "install-system: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q || give_up "apt-get update failed: check the network and the apt sources"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
  || give_up "apt-get install ${missing[*]} failed: see the output above"

for group in "$@"; do
  case "$group" in
    browser) [ -x "$CHROMIUM" ] || give_up "apt-get installed chromium but $CHROMIUM does not exist: set CHROMIUM=/path/to/chromium" ;;
    monitoring)
      command -v promtool >/dev/null || give_up "apt-get installed prometheus but promtool is not on PATH"
      command -v amtool >/dev/null || give_up "apt-get installed prometheus-alertmanager but amtool is not on PATH"
      ;;
  esac
done
echo "install-system: installed ${missing[*]}"
