#!/usr/bin/env bash
# Starts the local PostgreSQL (and Redis) used by the tests where they are installed
# but not running. Tests that need a server that is still down skip with a reason.
set -u

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  else
    echo "services: PostgreSQL is not installed here; PostgreSQL tests will be skipped"
  fi
fi
if ! port_open 6379; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "services: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  else
    echo "services: Redis is not installed here; Redis tests will be skipped"
  fi
fi
for _ in $(seq 1 20); do port_open 5432 && break; sleep 0.5; done
exit 0
