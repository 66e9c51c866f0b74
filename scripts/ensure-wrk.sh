#!/usr/bin/env bash
# Makes sure wrk (the HTTP load generator of the `http` benchmark) is there.
# It is Debian's `wrk` package, installed from the distribution's packages when missing
# and we are root. Without root, or when the install fails, it prints how to install it
# and exits 0: the benchmark then falls back to its Python load generator (and its rows
# say so).
set -euo pipefail

log() { printf 'ensure-wrk: %s\n' "$*" >&2; }

if command -v wrk >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing wrk from Debian's packages"
  if DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
    && command -v wrk >/dev/null 2>&1; then
    log "wrk is installed at $(command -v wrk)"
    exit 0
  fi
  log "apt-get could not install wrk; the http benchmark uses its Python load generator"
  exit 0
fi

log "wrk is not installed, and installing it needs root and apt-get."
log "Install it with:  sudo apt-get install -y wrk"
log "Until then the http benchmark uses its Python load generator."
exit 0
