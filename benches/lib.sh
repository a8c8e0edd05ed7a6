# Shared by the benchmark scripts (sourced, not run): messages, process control, ports, waits,
# and the Kafka broker (Tansu) and schema registry (rivven-schema) each benchmark starts on
# 127.0.0.1. The sourcing script sets BENCH (its name, for messages) first, and T (its temp
# dir) before it starts the broker or the registry.

die() { echo "$BENCH bench: $*" >&2; exit 1; }
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

TOOLS_BIN=${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/tools/bin
TANSU_BIN=${TANSU_BIN:-$TOOLS_BIN/tansu}
RIVVEN_SCHEMA_BIN=${RIVVEN_SCHEMA_BIN:-$TOOLS_BIN/rivven-schema}

stop_pid() { # pid seconds: SIGTERM, then SIGKILL after the timeout
  local pid=$1 secs=$2 deadline
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + secs))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_until() { # description seconds command...
  local what=$1 secs=$2 deadline; shift 2
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what (logs: $T)"
    sleep 0.2
  done
}

load1() { cut -d' ' -f1 /proc/loadavg; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

start_tansu() { # storage-engine: Tansu on a free port; sets KAFKA_PORT, TANSU_PID ($T/tansu.log)
  KAFKA_PORT=$(free_port)
  log "Tansu on 127.0.0.1:$KAFKA_PORT, storage $1"
  "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine "$1" \
    >"$T/tansu.log" 2>&1 </dev/null &
  TANSU_PID=$!
  wait_until "the broker" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT"
}

start_registry() { # rivven-schema on a free port, in $T/registry; sets REGISTRY_PORT, REGISTRY_PID
  REGISTRY_PORT=$(free_port)
  log "rivven-schema on 127.0.0.1:$REGISTRY_PORT"
  mkdir -p "$T/registry"
  (cd "$T/registry" && exec "$RIVVEN_SCHEMA_BIN" serve --host 127.0.0.1 --port "$REGISTRY_PORT") \
    >"$T/registry.log" 2>&1 </dev/null &
  REGISTRY_PID=$!
  wait_until "the registry" 30 curl -sf "http://127.0.0.1:$REGISTRY_PORT/subjects"
}
