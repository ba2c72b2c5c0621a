#!/usr/bin/env bash
# Idempotent: installs Debian's chromium (for the dashboard's headless browser test) only when
# /usr/bin/chromium is missing. Playwright drives this binary; its own browser downloads are never used.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

die() { echo "install-browser: $*" >&2; exit 1; }

if [ -x "$CHROMIUM" ]; then
  echo "install-browser: $CHROMIUM already installed ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

command -v apt-get >/dev/null || die "$CHROMIUM is missing and apt-get is not available: install Chromium with your package manager (or set CHROMIUM=/path/to/chromium)"

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null; then
  SUDO=(sudo)
else
  die "$CHROMIUM is missing and installing it needs root: run this script as root or install sudo"
fi

echo "install-browser: installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q || die "apt-get update failed: check the network and the apt sources"
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium fonts-liberation \
  || die "apt-get install chromium failed: see the output above"

[ -x "$CHROMIUM" ] || die "apt-get installed chromium but $CHROMIUM does not exist: set CHROMIUM=/path/to/chromium"
echo "install-browser: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
