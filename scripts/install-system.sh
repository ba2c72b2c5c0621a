#!/usr/bin/env bash
# Idempotent: installs from Debian's packages what the tests drive and pip cannot bring, each only when
# missing:
#   - chromium (the dashboard's headless browser test; Playwright drives this binary, never its own download);
#   - prometheus, with promtool (the alert rules' checks and unit tests, and the Prometheus the stack starts).
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

die() { echo "install-system: $*" >&2; exit 1; }

missing=()
if [ -x "$CHROMIUM" ]; then
  echo "install-system: $CHROMIUM already installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
else
  missing+=(chromium fonts-liberation)
fi
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  echo "install-system: prometheus already installed ($(prometheus --version 2>&1 | head -1))"
else
  missing+=(prometheus)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null || die "missing ${missing[*]} and apt-get is not available: install them with your package manager (or set CHROMIUM=/path/to/chromium)"

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  die "missing ${missing[*]}, and installing them needs root: run this script as root or install sudo"
fi

echo "install-system: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q || die "apt-get update failed: check the network and the apt sources"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
  || die "apt-get install ${missing[*]} failed: see the output above"

[ -x "$CHROMIUM" ] || die "apt-get installed chromium but $CHROMIUM does not exist: set CHROMIUM=/path/to/chromium"
command -v promtool >/dev/null || die "apt-get installed prometheus but promtool is not on PATH"
echo "install-system: installed ${missing[*]}"
