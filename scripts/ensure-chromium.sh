#!/usr/bin/env bash
# Makes sure headless Chromium is there for the dashboard's browser tests.
# Playwright (a Python test dependency) ships its own driver; the browser itself is
# Debian's `chromium` (with `chromium-driver`), installed from the distribution's
# packages when missing and we are root. We never run `playwright install`.
# Without root it prints how to install it and exits 0: the browser tests then skip
# (or fail under TIERED_STATE_REQUIRE_SERVICES=1, as CI wants).
set -euo pipefail

log() { printf 'ensure-chromium: %s\n' "$*" >&2; }

CHROMIUM=${TIERED_STATE_CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing chromium and chromium-driver from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  if [ -x "$CHROMIUM" ]; then
    log "Chromium is installed at $CHROMIUM"
    exit 0
  fi
  log "apt-get finished but $CHROMIUM is still missing"
  exit 1
fi

log "Chromium is not installed at $CHROMIUM, and installing it needs root and apt-get."
log "Install it with:  sudo apt-get install -y chromium chromium-driver"
log "(or point TIERED_STATE_CHROMIUM at a Chromium binary). The browser tests skip until then."
exit 0
