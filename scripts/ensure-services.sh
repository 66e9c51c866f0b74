#!/usr/bin/env bash
# Makes sure the servers the test suite talks to are up on 127.0.0.1:
# Redis (6379) and PostgreSQL (5432, trust auth for local TCP connections).
# Installs them from Debian's packages when missing (root only), starts them
# with the machine's documented commands when stopped, and waits until they answer.
set -euo pipefail

log() { printf 'ensure-services: %s\n' "$*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  if [ "$(id -u)" != 0 ] || ! have apt-get; then
    log "cannot install $* (need root and apt-get); install it yourself"
    return 1
  fi
  log "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 0.5
  done
  log "$name did not come up on 127.0.0.1:$port"
  return 1
}

ensure_redis() {
  if port_open 6379; then return 0; fi
  have redis-server || apt_install redis-server
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 Redis
}

ensure_postgres() {
  if port_open 5432; then return 0; fi
  local fresh=0
  if ! have pg_ctlcluster; then apt_install postgresql; fresh=1; fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ "$fresh" = 1 ] || ! grep -q '^host.*127.0.0.1/32.*trust' "/etc/postgresql/$version/main/pg_hba.conf"; then
    # The suite connects as postgres over TCP without a password, as on this project's machines.
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 PostgreSQL
}

ensure_redis
ensure_postgres
log "Redis and PostgreSQL are up"
