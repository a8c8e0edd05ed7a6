#!/usr/bin/env bash
# Webhook ingest benchmark: signed 1 KiB Stripe-style POSTs at 64 connections on loopback, against
# nginx answering a static 200, against switchyard with the Kafka ack in the path, and against
# switchyard with the bench-only null sink (SWITCHYARD_BENCH_SINK=null: verify, parse, dedupe,
# route and Avro-encode through the registry, but no Kafka); and the ack path's floor: a minimal
# producer (benches/produce_floor.rs) with switchyard's producer settings, 64 records of 1 KiB in
# flight, each awaiting its acknowledgement, against the same Tansu. Runs alternate nginx, ack,
# null, floor, nginx, ack, … on one machine; the report is the median of the per-group ratios:
# null/nginx (target >= 0.45), ack/floor (target >= 0.8), and switchyard's CPU per acknowledged
# request over its CPU per null-sink request (target <= 1.5). ack/nginx is printed without a
# target: it is bound by the broker's produce round trip, which the floor measures.
# Method: /work/shared/BENCHMARKING.md. Results: BENCHMARKS.md.
#
#   benches/webhooks.sh                          # 5 triplets of 10 s runs
#   PAIRS=3 DURATION=10 benches/webhooks.sh      # shorter
#
# Load generator: benches/webhook_load.rs (cargo bench target, closed loop like wrk -c64: each
# connection sends its next request when the answer to the last one is in). Every request is a
# distinct event (own Stripe "id"), signed with Stripe-Signature, so switchyard's deduplication
# stores every one. The same generator and the same requests go to nginx and to switchyard.
#
# Everything runs on 127.0.0.1 under a temp dir: Tansu, rivven-schema, nginx (Debian package,
# installed with apt if missing) and the release build of switchyard (one daemon per run, fresh
# DLQ/dedupe store and topic). Every process started here is stopped by PID on exit.
#
# Knobs (environment):
#   PAIRS=5           groups (nginx, switchyard ack, switchyard null sink, floor)
#   KINDS="nginx ack null floor"  the runs of each group, in this order (e.g. KINDS=null: the
#                     null sink alone, quick A/B of a change by CPU per request; ratios need
#                     their baseline: nginx for null, floor for ack, null for ack's CPU)
#   DURATION=10       measured seconds per run; WARMUP=3 seconds of load before it, not counted
#   CONNECTIONS=64    concurrent connections; THREADS=2 generator threads (like wrk -t2)
#   RATE=0            open loop (latency, like wrk2): this many requests/s in all, on a fixed
#                     schedule; a request whose connection was still busy counts its latency
#                     from its scheduled time. Use DURATION>=30 and CONNECTIONS above rate x
#                     latency (e.g. RATE=10000 CONNECTIONS=256). 0: closed loop (throughput)
#   BODY_BYTES=1024   request body size
#   NGINX_WORKERS=2   nginx worker_processes (the machine's cores)
#   STORAGE=memory://tansu/   Tansu storage engine (null://sink discards)
#   DEDUPE_WINDOW=24h the source's dedupe_window (every accepted id is stored durably before the
#                     200; "0s" turns deduplication off: a diagnostic, not the product's path)
#   HTTP_THREADS=     the daemon's [server] http_threads (default: its own, one per core)
#   KAFKA_PROPS=      TOML lines for [kafka.properties], e.g. '"linger.ms" = "1"' (a diagnostic)
#   PARTITIONS=       the daemon's [kafka] partitions for the topics it creates (default: its own, 3)
#   DLQ_DIR=          directory of the DLQ/dedupe SQLite files (default: the temp dir, on disk;
#                     /dev/shm takes fsync latency out: a diagnostic)
#   VERIFY=first      count the Kafka messages of the first ack run (`switchyard tail`); all | none
#   SPARE=2           extra triplets used to rerun a noisy one
#   NOISE=0.3         a run is noisy if other processes used more than this many cores, or
#                     the hypervisor took more (steal time: this VM's CPUs ran someone else)
#   QUIET_WAIT=300    before each triplet, wait up to this many seconds for the machine to be idle
#                     (under NOISE cores busy over 2 s): neighbours' builds skew every figure
#   AVOID='benches/cdc\.sh'   pgrep -f pattern of benchmarks that must not share the machine: each
#                     run waits (up to AVOID_WAIT=3600 s) until none runs, and a triplet during
#                     which one started is rerun; empty to disable
#   READY_TIMEOUT=60  seconds for a daemon to be ready; STOP_TIMEOUT=30 for SIGTERM, then SIGKILL
#   PERF=0            1 samples the daemon with `perf record $PERF_ARGS` (default: -F 499; "-g -F 499" for call graphs) in
#                     each switchyard run and prints its top symbols; profiled runs are slower,
#                     do not quote them; PERF_KEEP=DIR keeps the perf-*.data files there
#   BUILD=1           0 uses the binaries already built (target/release/switchyard, webhook_load)
#   KEEP=0            1 keeps the temp dir (logs, configs, per-run JSON, each daemon's /metrics
#                     at the end of its run: sy/metrics-N.txt, each run's latency per request
#                     in time order: runs/N-KIND.timeline)
#   RESULTS=          also copy the per-run TSV there
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PAIRS=${PAIRS:-5}
KINDS=${KINDS:-nginx ack null floor}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-64}
RATE=${RATE:-0}
THREADS=${THREADS:-2}
BODY_BYTES=${BODY_BYTES:-1024}
NGINX_WORKERS=${NGINX_WORKERS:-2}
STORAGE=${STORAGE:-memory://tansu/}
VERIFY=${VERIFY:-first}
DEDUPE_WINDOW=${DEDUPE_WINDOW:-24h}
KAFKA_PROPS=${KAFKA_PROPS:-}
PARTITIONS=${PARTITIONS:-}
HTTP_THREADS=${HTTP_THREADS:-}
DLQ_DIR=${DLQ_DIR:-}
SPARE=${SPARE:-2}
NOISE=${NOISE:-0.3}
QUIET_WAIT=${QUIET_WAIT:-300}
AVOID=${AVOID-benches/cdc\.sh}
AVOID_WAIT=${AVOID_WAIT:-3600}
READY_TIMEOUT=${READY_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}
PERF=${PERF:-0}
PERF_ARGS=${PERF_ARGS:--F 499}
RESULTS=${RESULTS:-}
SECRET=whsec_bench
CLK_TCK=$(getconf CLK_TCK)
export CLK_TCK

BENCH=webhooks
# shellcheck source=lib.sh
. "$ROOT/benches/lib.sh"
[ "$PAIRS" -ge 1 ] || die "need PAIRS >= 1"
avoid_wait() { # waits while another benchmark (AVOID) runs
  [ -n "$AVOID" ] || return 0
  local deadline=$((SECONDS + AVOID_WAIT)) said=0
  while pgrep -f "$AVOID" >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "'$AVOID' still running after ${AVOID_WAIT}s"
    [ "$said" = 1 ] || { log "waiting for '$AVOID' to finish (up to ${AVOID_WAIT}s)"; said=1; }
    sleep 5
  done
}
collided() { [ -n "$AVOID" ] && pgrep -f "$AVOID" >/dev/null; }

# --- tools -------------------------------------------------------------------------------
if [ ! -x "$TANSU_BIN" ] || [ ! -x "$RIVVEN_SCHEMA_BIN" ]; then
  log "tools missing; installing them with scripts/tools.sh"
  # shellcheck source=../scripts/tools.sh
  . "$ROOT/scripts/tools.sh"
fi
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
if [ ! -x "$NGINX_BIN" ]; then
  log "installing nginx (Debian package)"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
for b in "$TANSU_BIN" "$RIVVEN_SCHEMA_BIN" "$NGINX_BIN"; do
  [ -x "$b" ] || die "not found: $b"
done
command -v python3 >/dev/null || die "python3 is needed for the summary"
command -v curl >/dev/null || die "curl is needed"

avoid_wait # a build would disturb it too
if [ "$BUILD" = 1 ]; then
  log "building switchyard and the load generator (release)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --locked --features bench-sink) >&2
  bench_exe() { # name → path of the bench target's release executable, built
    (cd "$ROOT" && CARGO_TARGET_DIR="$ROOT/target" cargo bench --locked --bench "$1" --no-run \
      --message-format=json 2>/dev/null) | python3 -c '
import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == sys.argv[1] and m.get("executable")]
print(exe[-1] if exe else "")' "$1"
  }
  GEN=$(bench_exe webhook_load)
  FLOOR=$(bench_exe produce_floor)
else
  log "BUILD=0: using the binaries already in $ROOT/target/release"
  GEN=$(ls -t "$ROOT"/target/release/deps/webhook_load-* 2>/dev/null | grep -v '\.d$' | head -1)
  FLOOR=$(ls -t "$ROOT"/target/release/deps/produce_floor-* 2>/dev/null | grep -v '\.d$' | head -1)
fi
SY=$ROOT/target/release/switchyard
[ -x "$SY" ] || die "no binary at $SY"
[ -n "$GEN" ] && [ -x "$GEN" ] || die "could not build the webhook_load bench target (cargo bench --bench webhook_load --no-run)"
[ -n "$FLOOR" ] && [ -x "$FLOOR" ] || die "could not build the produce_floor bench target (cargo bench --bench produce_floor --no-run)"

# --- temp dir, processes, cleanup --------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-webhooks-bench.XXXXXX")
chmod 755 "$T"
mkdir -p "$T/sy" "$T/registry" "$T/nginx" "$T/runs" "$T/bin"
# Private copies: target/ is shared, and a rebuild during the runs must not swap the binary.
cp "$SY" "$T/bin/switchyard" && SY=$T/bin/switchyard
cp "$GEN" "$T/bin/webhook_load" && GEN=$T/bin/webhook_load
cp "$FLOOR" "$T/bin/produce_floor" && FLOOR=$T/bin/produce_floor
if [ -n "$DLQ_DIR" ]; then
  DLQ_DIR=$(mktemp -d "$DLQ_DIR/switchyard-webhooks-dlq.XXXXXX")
else
  DLQ_DIR=$T/sy
fi
TANSU_PID= REGISTRY_PID= NGINX_PID= DAEMON_PID= GEN_PID= PERF_PID=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$GEN_PID" 5
  stop_pid "$PERF_PID" 10
  stop_pid "$DAEMON_PID" 10
  stop_pid "$NGINX_PID" 10 # SIGTERM: the master stops its workers
  stop_pid "$TANSU_PID" 10
  stop_pid "$REGISTRY_PID" 10
  [ "$DLQ_DIR" != "$T/sy" ] && [ -d "$DLQ_DIR" ] && { [ "$KEEP" = 1 ] || [ "$rc" != 0 ] || rm -rf "$DLQ_DIR"; }
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
    [ "$rc" != 0 ] && [ "$KEEP" != 1 ] && { echo "failed (exit $rc): logs kept in $T" >&2; }
    [ "$KEEP" = 1 ] && echo "kept: $T" >&2
  else
    rm -rf "$T"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

thread_ticks() { # "tid comm ticks" of every thread of a process
  local f
  for f in /proc/"$1"/task/*/stat; do
    awk '{ c = $0; sub(/^[0-9]+ \(/, "", c); sub(/\) .*$/, "", c); r = $0; sub(/^.*\) /, "", r);
           split(r, a, " "); gsub(/ /, "_", c); print $1, c, a[12] + a[13] }' "$f" 2>/dev/null \
      | tr '\n' ' ' || true
    awk '/ctxt_switches:/ { n += $2 } END { print n + 0 }' "${f%stat}status" 2>/dev/null || echo 0
  done
}
thread_top() { # before after → the busiest threads (by name, summed) as "name cores"
  python3 - "$1" "$2" "$DURATION" "$WARMUP" "$CLK_TCK" <<'PY'
import sys
before, after, d, w, hz = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
def load(p):
    rows = [l.split() for l in open(p) if len(l.split()) >= 3]
    return {r[0]: (r[1], int(r[2]), int(r[3]) if len(r) > 3 else 0) for r in rows}
b, a = load(before), load(after)
by, cs = {}, {}
for tid, (name, t, c) in a.items():
    _, t0, c0 = b.get(tid, (name, 0, 0))
    by[name] = by.get(name, 0) + t - t0
    cs[name] = cs.get(name, 0) + c - c0
top = sorted(by.items(), key=lambda kv: -kv[1])[:6]
print(", ".join(f"{n} {t / hz / (d + w):.2f}" for n, t in top if t > 0)
      + f" (cores); context switches/s: " + ", ".join(f"{n} {cs[n] / (d + w):.0f}" for n, t in top if t > 0)
      + f", all {sum(cs.values()) / (d + w):.0f}")
PY
}

# --- Tansu, rivven-schema, nginx ---------------------------------------------------------
start_tansu "$STORAGE"
start_registry

NGINX_PORT=$(free_port)
log "nginx on 127.0.0.1:$NGINX_PORT ($NGINX_WORKERS workers, static 200)"
cat >"$T/nginx/nginx.conf" <<NGINX
# generated by benches/webhooks.sh: the ceiling, a static 200 for any POST
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $T/nginx/body;
  proxy_temp_path $T/nginx/proxy;
  fastcgi_temp_path $T/nginx/fastcgi;
  uwsgi_temp_path $T/nginx/uwsgi;
  scgi_temp_path $T/nginx/scgi;
  client_body_buffer_size 16k;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      default_type application/json;
      return 200 '{"status":"ok"}';
    }
  }
}
NGINX
"$NGINX_BIN" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" \
  >"$T/nginx/stdout.log" 2>&1 </dev/null &
NGINX_PID=$!
wait_until "nginx" 30 curl -sf -X POST -d '{}' "http://127.0.0.1:$NGINX_PORT/webhooks/stripe"
NGINX_WORKER_PIDS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
[ -n "$NGINX_WORKER_PIDS" ] || die "nginx has no worker processes"

# --- runs --------------------------------------------------------------------------------
RESULTS_TSV=$T/results.tsv
printf 'pair\tkind\tload1_start\tload1_end\trps\tp50_us\tp99_us\tp999_us\trequests\tbad\tbodies\tio_errors\tserver_cpu_s\tbroker_cpu_s\tregistry_cpu_s\tgen_cpu_s\tother_cores\tsteal_s\thwm_kib\tcheck\n' >"$RESULTS_TSV"

# gen OUT-JSON URL RUN-ID --cpu-pid …: one generator run; its JSON line goes to OUT-JSON
gen() {
  local out=$1 url=$2 run_id=$3 rc=0; shift 3
  # With KEEP=1 each run also leaves <run>.timeline: "<ms into the window> <latency µs>" per request.
  [ "$KEEP" = 1 ] && set -- "$@" --timeline "${out%.json}.timeline"
  timeout $((${WARMUP%.*} + ${DURATION%.*} + 90)) "$GEN" --url "$url" --duration "$DURATION" --warmup "$WARMUP" \
    --connections "$CONNECTIONS" --threads "$THREADS" --secret "$SECRET" --body-bytes "$BODY_BYTES" \
    --rate "$RATE" --run-id "$run_id" "$@" >"$out" 2>"${out%.json}.log" &
  GEN_PID=$!
  wait "$GEN_PID" || rc=$?
  GEN_PID=
  [ "$rc" = 0 ] || die "load generator exited $rc: $(tail -5 "${out%.json}.log")"
}

# row PAIR KIND JSON HWM CHECK: appends the run to the TSV
row() {
  python3 - "$@" >>"$RESULTS_TSV" <<'PY'
import json, sys
pair, kind, path, hwm, check = sys.argv[1:6]
r = json.load(open(path))
cpu = r["cpu_s"]
known = sum(v for v in cpu.values()) + r["generator_cpu_s"]
other = max(0.0, r["machine_busy_s"] - known) / r["seconds"]
bodies = ",".join(f"{k}:{v}" for k, v in r["bodies"].items()) or "-"
print("\t".join(str(x) for x in [
    pair, kind, r["load1_start"], r["load1_end"], round(r["rps"]), r["p50_us"], r["p99_us"], r["p999_us"],
    r["requests"], r["bad_window"] + r["bad_outside_window"], bodies, r["io_errors"],
    f'{cpu.get("server", 0):.2f}', f'{cpu.get("broker", 0):.2f}', f'{cpu.get("registry", 0):.2f}',
    f'{r["generator_cpu_s"]:.2f}', f"{other:.2f}", f'{r["steal_s"]:.2f}', hwm, check]))
PY
}

run_nginx() { # pair run-number
  local pair=$1 n=$2 out=$T/runs/$2-nginx.json cpu=() p
  for p in $NGINX_PID $NGINX_WORKER_PIDS; do cpu+=(--cpu-pid "server=$p"); done
  gen "$out" "http://127.0.0.1:$NGINX_PORT/webhooks/stripe" "$(printf 'n%05d' "$n")" "${cpu[@]}"
  row "$pair" nginx "$out" "" "static 200"
  log "pair $pair nginx: $(tail -1 "${out%.json}.log")"
}

write_config() { # run-number → path
  local n=$1 cfg=$T/sy/routes-$1.toml
  cat >"$cfg" <<TOML
# switchyard config for webhook benchmark run $n (generated by benches/webhooks.sh)
[server]
listen = "127.0.0.1:$(free_port)"
admin_listen = "127.0.0.1:$(free_port)"
$([ -n "$HTTP_THREADS" ] && echo "http_threads = $HTTP_THREADS")

[kafka]
bootstrap_servers = "127.0.0.1:$KAFKA_PORT"
$([ -n "$PARTITIONS" ] && echo "partitions = $PARTITIONS")
[kafka.properties]
$KAFKA_PROPS

[schema_registry]
url = "http://127.0.0.1:$REGISTRY_PORT"

[dlq]
url = "sqlite://$DLQ_DIR/dlq-$n.db"

[sources.stripe]
type = "webhook"
provider = "stripe"
secrets = ["$SECRET"]
tolerance = "1h"
dedupe_window = "$DEDUPE_WINDOW"

[[routes]]
name = "stripe"
source = "stripe"
topic = "bench.run$n.stripe"
TOML
  printf '%s\n' "$cfg"
}

run_switchyard() { # pair run-number ack|null
  local pair=$1 n=$2 kind=$3 cfg port admin out=$T/runs/$2-$3.json hwm dl warns check accepted msgs
  cfg=$(write_config "$n")
  port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$cfg")
  admin=$(sed -n 's/^admin_listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$cfg")
  "$SY" -c "$cfg" check >"$T/sy/check-$n.log" 2>&1 || die "switchyard check failed: $(cat "$T/sy/check-$n.log")"
  if [ "$kind" = null ]; then
    SWITCHYARD_BENCH_SINK=null SWITCHYARD_LOG=${SWITCHYARD_LOG:-info} "$SY" -c "$cfg" run \
      >"$T/sy/daemon-$n.log" 2>&1 </dev/null &
  else
    env -u SWITCHYARD_BENCH_SINK SWITCHYARD_LOG="${SWITCHYARD_LOG:-info}" "$SY" -c "$cfg" run \
      >"$T/sy/daemon-$n.log" 2>&1 </dev/null &
  fi
  DAEMON_PID=$!
  local deadline=$((SECONDS + READY_TIMEOUT))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz" 2>/dev/null)" = 200 ]; do
    kill -0 "$DAEMON_PID" 2>/dev/null || { tail -30 "$T/sy/daemon-$n.log" >&2; die "switchyard exited before it was ready"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -30 "$T/sy/daemon-$n.log" >&2; die "switchyard not ready in ${READY_TIMEOUT}s"; }
    sleep 0.2
  done
  if [ "$kind" = null ] && ! grep -q "BENCHMARK MODE" "$T/sy/daemon-$n.log"; then
    die "the null-sink run is sending to Kafka: $SY was built without --features bench-sink (rebuild, or BUILD=1)"
  fi
  thread_ticks "$DAEMON_PID" >"$T/sy/threads-$n.before"
  if [ "$PERF" = 1 ]; then
    # shellcheck disable=SC2086
    perf record $PERF_ARGS -p "$DAEMON_PID" -o "$T/sy/perf-$n-$kind.data" >"$T/sy/perf-$n.log" 2>&1 &
    PERF_PID=$!
  fi
  gen "$out" "http://127.0.0.1:$port/webhooks/stripe" "$(printf '%s%05d' "${kind:0:1}" "$n")" \
    --cpu-pid "server=$DAEMON_PID" --cpu-pid "broker=$TANSU_PID" --cpu-pid "registry=$REGISTRY_PID"
  thread_ticks "$DAEMON_PID" >"$T/sy/threads-$n.after"
  curl -s -m 5 "http://127.0.0.1:$admin/metrics" >"$T/sy/metrics-$n.txt" 2>/dev/null || true
  if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
  fi
  hwm=$(hwm_kib "$DAEMON_PID")
  stop_pid "$DAEMON_PID" "$STOP_TIMEOUT"
  DAEMON_PID=
  # Nothing may be dead-lettered; the log may hold no warning or error but null sink's banner.
  dl=$(cd "$T/sy" && "$SY" -c "$cfg" dlq stats --format json 2>>"$T/sy/dlq-$n.log" \
    | python3 -c 'import json,sys; print(sum(r["count"] for r in json.load(sys.stdin)))') \
    || die "switchyard dlq stats failed: $(cat "$T/sy/dlq-$n.log")"
  warns=$(grep -E 'WARN|ERROR' "$T/sy/daemon-$n.log" | grep -vc 'BENCHMARK MODE' || true)
  check="DLQ $dl, log warn/error $warns"
  accepted=$(python3 -c "import json; print(json.load(open('$out'))['accepted_total'])")
  if [ "$kind" = ack ] && { [ "$VERIFY" = all ] || { [ "$VERIFY" = first ] && [ "$pair" = 1 ]; }; } \
    && [ "${STORAGE%%:*}" = memory ]; then
    msgs=$(timeout 600 "$SY" -c "$cfg" tail "bench.run$n.stripe" --idle 5s 2>"$T/sy/tail-$n.log" | wc -l)
    check+=", kafka $msgs msgs / $accepted accepted"
    [ "$msgs" -ge "$accepted" ] || log "WARNING: run $n: $msgs messages in Kafka but $accepted requests answered accepted"
  else
    check+=", $accepted accepted"
  fi
  row "$pair" "$kind" "$out" "$hwm" "$check"
  log "pair $pair switchyard $kind: $(tail -1 "${out%.json}.log"); $check"
  log "  daemon threads, CPU over warm-up and run: $(thread_top "$T/sy/threads-$n.before" "$T/sy/threads-$n.after")"
  [ "$dl" = 0 ] || log "WARNING: run $n dead-lettered $dl events (see $T/sy/daemon-$n.log)"
  [ "$warns" = 0 ] || grep -E 'WARN|ERROR' "$T/sy/daemon-$n.log" | grep -v 'BENCHMARK MODE' | head -5 >&2
}

run_floor() { # pair run-number: the minimal producer against the same Tansu, same producer settings
  local pair=$1 n=$2 cfg out=$T/runs/$2-floor.json rc=0
  cfg=$(write_config "$n")
  timeout $((${WARMUP%.*} + ${DURATION%.*} + 90)) "$FLOOR" --config "$cfg" --topic "bench.run$n.floor" \
    --duration "$DURATION" --warmup "$WARMUP" --in-flight "$CONNECTIONS" --record-bytes "$BODY_BYTES" \
    --run-id "$(printf 'f%05d' "$n")" --cpu-pid "broker=$TANSU_PID" >"$out" 2>"${out%.json}.log" &
  GEN_PID=$!
  wait "$GEN_PID" || rc=$?
  GEN_PID=
  [ "$rc" = 0 ] || die "produce_floor exited $rc: $(tail -5 "${out%.json}.log")"
  row "$pair" floor "$out" "" "minimal producer, $CONNECTIONS in flight"
  log "pair $pair floor: $(tail -1 "${out%.json}.log")"
}

# A triplet is rerun when load1 moved by more than 1 across it, or when the rest of the machine
# used more than NOISE cores during one of its runs (a neighbour was busy).
noisy() { # → exit 0 if the last group of runs must be rerun; says why
  python3 - "$RESULTS_TSV" "$NOISE" "$DURATION" "$(wc -w <<<"$KINDS")" <<'PY'
import csv, sys
path, noise, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
runs = list(csv.DictReader(open(path), delimiter="\t"))[-int(sys.argv[4]):]
why = []
loads = [float(r["load1_start"]) for r in runs]
if max(loads) - min(loads) > 1:
    why.append(f"load1 moved {min(loads)} -> {max(loads)}")
for r in runs:
    if float(r["other_cores"]) > noise:
        why.append(f"{r['kind']}: other processes used {r['other_cores']} cores")
    if float(r["steal_s"]) / seconds > noise:
        why.append(f"{r['kind']}: the hypervisor took {float(r['steal_s']) / seconds:.2f} cores (steal)")
print("; ".join(why))
sys.exit(0 if why else 1)
PY
}

busy_cores() { # cores busy (user+nice+system, all processes) over 2 s
  local a b
  a=$(awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat); sleep 2
  b=$(awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat)
  python3 -c "print(f'{($b - $a) / $CLK_TCK / 2:.2f}')"
}
quiet_wait() { # waits up to QUIET_WAIT s for an idle machine; goes on regardless after that
  local deadline=$((SECONDS + QUIET_WAIT)) busy said=0
  while :; do
    busy=$(busy_cores)
    python3 -c "import sys; sys.exit(0 if $busy <= $NOISE else 1)" && return 0
    [ "$SECONDS" -lt "$deadline" ] || { log "machine still busy ($busy cores); going on"; return 0; }
    [ "$said" = 1 ] || { log "machine busy ($busy cores used by others); waiting up to ${QUIET_WAIT}s"; said=1; }
    sleep 3
  done
}


n=0 pair=0 spares=$SPARE
# Marks the last triplet's rows in the results: x (rerun, not counted) or n (noisy, counted).
mark_last_triplet() {
  python3 - "$RESULTS_TSV" "$1" "$(wc -w <<<"$KINDS")" <<'PY'
import sys
p, mark, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(p).read().splitlines()
for i in range(len(lines) - k, len(lines)):
    f = lines[i].split("\t"); f[0] += mark; lines[i] = "\t".join(f)
open(p, "w").write("\n".join(lines) + "\n")
PY
}

while [ "$pair" -lt "$PAIRS" ]; do
  avoid_wait
  quiet_wait
  pair=$((pair + 1)) clash=
  for kind in $KINDS; do
    avoid_wait; n=$((n + 1))
    case $kind in
      nginx) run_nginx "$pair" "$n" ;;
      ack | null) run_switchyard "$pair" "$n" "$kind" ;;
      floor) run_floor "$pair" "$n" ;;
      *) die "unknown kind '$kind' in KINDS (nginx, ack, null, floor)" ;;
    esac
    collided && clash=1; sleep 1
  done
  if why=$(noisy) || [ -n "$clash" ]; then
    [ -n "$clash" ] && why="${why:+$why; }'$AVOID' ran during it"
    if [ "$spares" -gt 0 ]; then
      log "pair $pair is noisy ($why): rerunning it"
      mark_last_triplet x
      spares=$((spares - 1)); pair=$((pair - 1))
    else
      log "pair $pair is noisy ($why) and no spare reruns are left: kept, marked n"
      mark_last_triplet n
    fi
  fi
done
[ -n "$RESULTS" ] && cp "$RESULTS_TSV" "$RESULTS"

# --- report ------------------------------------------------------------------------------
echo
echo "Webhook ingest benchmark: $CONNECTIONS connections, $BODY_BYTES-byte signed Stripe-style POSTs (each a distinct event id), $( [ "$RATE" = 0 ] && echo "closed loop" || echo "open loop at $RATE req/s"), ${DURATION}s measured after ${WARMUP}s warm-up, generator $THREADS threads"
echo "switchyard source: provider stripe, dedupe_window $DEDUPE_WINDOW, DLQ/dedupe store in $( [ "$DLQ_DIR" = "$T/sy" ] && echo "the temp dir ($(df --output=fstype "$T" | tail -1))" || echo "$DLQ_DIR ($(df --output=fstype "$DLQ_DIR" | tail -1))")"
echo "nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///') ($NGINX_WORKERS workers, static 200); Tansu storage $STORAGE, peak RSS $(($(hwm_kib "$TANSU_PID") / 1024)) MiB"
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -r), load1 now $(load1); switchyard $("$SY" --version 2>/dev/null || echo '?') ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src 2>/dev/null || echo ', src modified'))"
python3 - "$RESULTS_TSV" "$DURATION" "$KINDS" "$RATE" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
seconds = float(sys.argv[2])
kinds = sys.argv[3].split()
rate = float(sys.argv[4])
f = float
print()
print("per run: req/s; p50/p99 latency in ms; server CPU in µs per request (nginx: master+workers;")
print("switchyard: all threads; floor: the minimal producer, all threads, per acknowledged record);")
print("broker = Tansu µs/request; other = cores used by the rest of the machine;")
print("steal = cores the hypervisor took from this machine;")
print("bad = non-200 answers, or 200 not \"accepted\"/\"ok\"; x = noisy triplet, rerun and not counted;")
print("n = noisy, no spare rerun left: counted")
print(f"{'pair':<5}{'kind':<6}{'load1':>6}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'bad':>5}{'srv µs':>8}"
      f"{'broker':>7}{'gen µs':>7}{'other':>6}{'steal':>6}{'RSS MiB':>8}  check")
for r in rows:
    n = max(1, int(r["requests"]))
    rss = f"{int(r['hwm_kib']) / 1024:.1f}" if r["hwm_kib"] else "-"
    print(f"{r['pair']:<5}{r['kind']:<6}{r['load1_start']:>6}{int(r['rps']):>9,}{f(r['p50_us']) / 1000:>8.2f}"
          f"{f(r['p99_us']) / 1000:>8.2f}{int(r['bad']):>5}{f(r['server_cpu_s']) * 1e6 / n:>8.1f}"
          f"{f(r['broker_cpu_s']) * 1e6 / n:>7.1f}{f(r['gen_cpu_s']) * 1e6 / n:>7.1f}{f(r['other_cores']):>6.2f}"
          f"{f(r['steal_s']) / seconds:>6.2f}{rss:>8}  {r['check']}")
pairs = {}
for r in rows:
    if not r["pair"].endswith("x"):
        pairs.setdefault(r["pair"], {})[r["kind"]] = r
keep = [d for d in pairs.values() if len(d) == len(kinds)]
if not keep:
    sys.exit("no complete group of runs")
def per_req(r, k):
    return f(r[k]) * 1e6 / max(1, int(r["requests"]))
print()
if rate > 0:
    print(f"open loop at {rate:,.0f} req/s: every server gets the same schedule, so compare latency;"
          " a req/s below the rate means the server fell behind (its latency then grows)")
noisy = sum(1 for p in pairs if p.endswith("n") and len(pairs[p]) == len(kinds))
def ratio(what, values, target):
    print(f"median {what}: {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}, "
          f"n={len(values)}, {noisy} of them noisy)   {target}")
# ack/nginx has no target: the ack path is bound by the broker's produce round trip (the floor).
for kind, base, target in (("null", "nginx", "target >= 0.45"), ("ack", "nginx", "(no target: see ack/floor)"),
                           ("ack", "floor", "target >= 0.8")):
    if kind not in kinds or base not in kinds or rate > 0:
        continue
    ratio(f"ratio switchyard {kind}/{base}", [f(d[kind]["rps"]) / f(d[base]["rps"]) for d in keep], target)
if "ack" in kinds and "null" in kinds:
    ratio("switchyard CPU per request, ack/null",
          [per_req(d["ack"], "server_cpu_s") / per_req(d["null"], "server_cpu_s") for d in keep], "target <= 1.5")
print()
for kind in kinds:
    med = lambda k: statistics.median(f(d[kind][k]) for d in keep)
    medpr = lambda k: statistics.median(per_req(d[kind], k) for d in keep)
    extra = f", broker {medpr('broker_cpu_s'):.1f} µs/req" if kind in ("ack", "floor") else ""
    print(f"{kind:<6} median {med('rps'):>9,.0f} req/s, p50 {med('p50_us') / 1000:.2f} ms, p99 "
          f"{med('p99_us') / 1000:.2f} ms; server CPU {medpr('server_cpu_s'):.1f} µs/req{extra}; "
          f"generator {medpr('gen_cpu_s'):.1f} µs/req")
bad = sum(int(d[k]["bad"]) for d in keep for k in ("ack", "null") if k in d)
io = sum(int(d[k]["io_errors"]) for d in keep for k in d)
print(f"switchyard bad answers (non-200 or not \"accepted\") over all counted runs: {bad}; connection errors: {io}")
PY
if [ "$PERF" = 1 ]; then
  if [ -n "${PERF_KEEP:-}" ]; then mkdir -p "$PERF_KEEP" && cp "$T"/sy/perf-*.data "$PERF_KEEP"/; fi
  for f in "$T"/sy/perf-*.data; do
    echo; echo "perf: top symbols of switchyard ($(basename "$f"); runs were profiled, their figures are not comparable)"
    perf report -i "$f" --no-children --sort dso,symbol --percent-limit 1 --stdio 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | cut -c1-140 | head -40
  done
fi
