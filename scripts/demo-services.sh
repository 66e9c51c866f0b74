#!/usr/bin/env bash
# The servers of `make run-services`, on 127.0.0.1: Redis and PostgreSQL (started as for
# `make test`, by scripts/ensure-services.sh) and moto's standalone S3 server, with the demo's
# PostgreSQL database and S3 bucket.
#
#   demo-services.sh start   makes sure all three are up (moto in the background, kept
#                            running between runs: its objects live in its memory)
#   demo-services.sh stop    stops the moto server this script started (never Redis or
#                            PostgreSQL: they are shared with the test suite)
#
# Settings (environment): BIN (the venv's bin), MOTO_PORT, DEMO_DATABASE, DEMO_BUCKET.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
MOTO_PORT=${MOTO_PORT:-9100}
DEMO_DATABASE=${DEMO_DATABASE:-credit_demo}
DEMO_BUCKET=${DEMO_BUCKET:-credit-demo}
PIDFILE=instance/moto-server.pid
LOGFILE=instance/moto-server.log
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}

log() { printf 'demo-services: %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_moto() {
  if port_open "$MOTO_PORT"; then
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then return 0; fi
    log "port $MOTO_PORT is taken by another program; choose another: make run-services MOTO_PORT=..."
    return 1
  fi
  mkdir -p instance
  log "starting moto's S3 server on 127.0.0.1:$MOTO_PORT (log: $LOGFILE)"
  # Its own session: Ctrl+C on `make run` stops the web server, not the S3 data.
  if command -v setsid >/dev/null 2>&1; then
    setsid "$BIN/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGFILE" 2>&1 </dev/null &
  else
    nohup "$BIN/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGFILE" 2>&1 </dev/null &
  fi
  echo $! >"$PIDFILE"
  for _ in $(seq 1 60); do
    port_open "$MOTO_PORT" && return 0
    sleep 0.5
  done
  log "moto's server did not come up; see $LOGFILE"
  return 1
}

prepare() {
  "$BIN/python" - "$DEMO_DATABASE" "$DEMO_BUCKET" "http://127.0.0.1:$MOTO_PORT" <<'PY'
import sys

import boto3
import psycopg

database, bucket, endpoint = sys.argv[1:]
with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
    if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
        admin.execute(f'CREATE DATABASE "{database}"')
        print(f"demo-services: created the PostgreSQL database {database}", file=sys.stderr)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
    s3.create_bucket(Bucket=bucket)
PY
}

stop_moto() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping moto's S3 server (pid $pid)"
      kill "$pid"
    fi
    rm -f "$PIDFILE" "$LOGFILE"
    rmdir instance 2>/dev/null || true
  fi
}

case "${1:-}" in
  start)
    bash scripts/ensure-services.sh
    start_moto
    prepare
    ;;
  stop) stop_moto ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
