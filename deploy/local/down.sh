#!/usr/bin/env bash
# Stops what deploy/local/up.sh started (by PID). `--purge` also deletes deploy/local/.data.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=$ROOT/deploy/local/.data
for name in switchyard registry tansu; do
  if [ -f "$DATA/$name.pid" ]; then
    pid=$(cat "$DATA/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      echo "stopped $name (pid $pid)"
    fi
    rm -f "$DATA/$name.pid"
  fi
done
PGDATA=$(cat "$DATA/postgres.path" 2>/dev/null || echo "$DATA/postgres")
if [ -f "$PGDATA/PG_VERSION" ]; then
  PG_BINDIR=${PG_BINDIR:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 && echo "stopped postgres" || true
fi
if [ "${1:-}" = "--purge" ]; then
  case $PGDATA in "$DATA"/*) ;; *) rm -rf "$(dirname "$PGDATA")"; echo "removed $(dirname "$PGDATA")" ;; esac
  rm -rf "$DATA"; echo "removed $DATA"
fi
