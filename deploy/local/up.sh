#!/usr/bin/env bash
# Quickstart on real components, all on 127.0.0.1, all under deploy/local/.data (gitignored):
# a private PostgreSQL 15, a Tansu Kafka broker, a rivven-schema registry, and switchyard
# running routes.toml. Sends sample webhooks, streams a demo table's changes, backfills an
# existing table while streaming, and shows each with `switchyard tail`.
# Stop everything with deploy/local/down.sh.
#
# Ports (override by environment): KAFKA_PORT=9092 REGISTRY_PORT=8081 SWITCHYARD_PORT=8080
#   SWITCHYARD_ADMIN_PORT=9090 (/metrics, /healthz, /readyz)
# PG_PORT=54329.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=$ROOT/deploy/local/.data
KAFKA_PORT=${KAFKA_PORT:-9092}
REGISTRY_PORT=${REGISTRY_PORT:-8081}
SWITCHYARD_PORT=${SWITCHYARD_PORT:-8080}
SWITCHYARD_ADMIN_PORT=${SWITCHYARD_ADMIN_PORT:-9090}   # /metrics, /healthz, /readyz
PG_PORT=${PG_PORT:-54329}
mkdir -p "$DATA"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_until() { # description seconds command...
  local what=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out after ${secs}s waiting for $what; logs are in $DATA" >&2; exit 1
    fi
    sleep 0.2
  done
}
running() { [ -f "$DATA/$1.pid" ] && kill -0 "$(cat "$DATA/$1.pid")" 2>/dev/null; }
start_bg() { # name command...
  local name=$1; shift
  if running "$name"; then echo "$name already running (pid $(cat "$DATA/$name.pid"))"; return; fi
  nohup "$@" >"$DATA/$name.log" 2>&1 &
  echo $! >"$DATA/$name.pid"
  echo "$name started (pid $!, log $DATA/$name.log)"
}

step "Installing tools (cached after the first run)"
. "$ROOT/scripts/tools.sh"

for p in "$KAFKA_PORT:kafka:tansu" "$REGISTRY_PORT:registry:registry" "$SWITCHYARD_PORT:switchyard:switchyard" \
         "$SWITCHYARD_ADMIN_PORT:switchyard_admin:switchyard" "$PG_PORT:pg:postgres"; do
  IFS=: read -r port what name <<<"$p"
  if ! running "$name" && port_busy "$port"; then
    echo "port $port (for $what) is in use; set ${what^^}_PORT to another port" >&2; exit 1
  fi
done

step "PostgreSQL 15 on 127.0.0.1:$PG_PORT (wal_level=logical)"
PGDATA=$DATA/postgres
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DATA" 2>/dev/null; then
  # A clone the postgres user cannot enter (e.g. under /root, or a 0700 temp dir): the cluster
  # lives outside it; down.sh finds it through postgres.path.
  PGDATA=/var/tmp/switchyard-local-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)/postgres
  echo "note: the postgres user cannot enter $DATA; the cluster lives in $PGDATA"
fi
echo "$PGDATA" >"$DATA/postgres.path"
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"; [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$PGDATA"
  as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 >"$DATA/initdb.log"
fi
if ! as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -w -l "$PGDATA/postgres.log" \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDATA -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10" start >/dev/null
fi
echo "postgres running: postgres://postgres@127.0.0.1:$PG_PORT/postgres"
PSQL=("$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "postgresql://postgres@127.0.0.1:$PG_PORT/postgres")
# A table with rows from before switchyard streams: the backfill below copies them.
"${PSQL[@]}" -c "CREATE TABLE IF NOT EXISTS customers (id int PRIMARY KEY, name text NOT NULL, country text)" \
  -c "INSERT INTO customers VALUES (1, 'Ada', 'GB'), (2, 'Grace', 'US'), (3, 'Linus', 'FI') ON CONFLICT DO NOTHING"

step "Kafka broker (Tansu) on 127.0.0.1:$KAFKA_PORT"
start_bg tansu "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/
wait_until "the broker" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT"

step "Schema registry (rivven-schema) on 127.0.0.1:$REGISTRY_PORT"
(cd "$DATA" && start_bg registry "$RIVVEN_SCHEMA_BIN" serve --host 127.0.0.1 --port "$REGISTRY_PORT")
wait_until "the registry" 30 curl -sf "http://127.0.0.1:$REGISTRY_PORT/subjects"

step "Building switchyard"
cargo build --locked --bin switchyard
SY=${CARGO_TARGET_DIR:-$ROOT/target}/debug/switchyard
export KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export SCHEMA_REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
export SWITCHYARD_LISTEN=127.0.0.1:$SWITCHYARD_PORT
export SWITCHYARD_ADMIN_LISTEN=127.0.0.1:$SWITCHYARD_ADMIN_PORT
export SWITCHYARD_PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
# The console's and admin API's token: made once, kept in $DATA; the config gets its digest.
if [ ! -s "$DATA/admin.token" ]; then
  (umask 077; "$SY" token new --name oncall --role operator >"$DATA/admin.token" 2>/dev/null)
fi
SWITCHYARD_ADMIN_TOKEN_SHA256=$("$SY" token hash <"$DATA/admin.token")
export SWITCHYARD_ADMIN_TOKEN_SHA256
"$SY" check -c routes.toml

step "switchyard on 127.0.0.1:$SWITCHYARD_PORT"
start_bg switchyard "$SY" run -c "$ROOT/routes.toml"
wait_until "switchyard to be ready" 60 curl -sf "http://127.0.0.1:$SWITCHYARD_ADMIN_PORT/readyz"

step "Sending a sample webhook"
curl -sS -X POST "http://127.0.0.1:$SWITCHYARD_PORT/webhooks/shop" \
  -H "authorization: Bearer ${SHOP_WEBHOOK_TOKEN:-local-quickstart-token}" \
  -H 'content-type: application/json' -H "webhook-id: quickstart-$(date +%s)" -H 'ce-type: order.created' \
  -d '{"order_id": 1001, "total": "42.00", "currency": "EUR"}'
echo

step "Reading it back: switchyard tail webhooks.shop"
"$SY" tail webhooks.shop -c routes.toml --idle 3s

step "Sending a signed Stripe event (twice: the retry is a duplicate, not a second record)"
SECRET=${STRIPE_WEBHOOK_SECRET:-whsec_local_quickstart}
BODY="{\"id\":\"evt_quickstart_$(date +%s)\",\"type\":\"payment_intent.succeeded\",\"data\":{\"object\":{\"id\":\"pi_1001\"}}}"
T=$(date +%s)
SIG=$(printf '%s' "$T.$BODY" | openssl dgst -sha256 -hmac "$SECRET" | sed 's/^.* //')
for attempt in 1 2; do
  curl -sS -X POST "http://127.0.0.1:$SWITCHYARD_PORT/webhooks/stripe" \
    -H 'content-type: application/json' -H "Stripe-Signature: t=$T,v1=$SIG" -d "$BODY"
  echo
done
"$SY" tail webhooks.stripe -c routes.toml --idle 3s

step "Change data capture: a new table's inserts, update and delete (source demo, public.*)"
"${PSQL[@]}" -c "CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, customer_id int, total numeric(10,2), status text)" \
  -c "INSERT INTO orders (customer_id, total, status) VALUES (1, 42.00, 'new'), (2, 7.50, 'new')" \
  -c "UPDATE orders SET status = 'paid' WHERE id = (SELECT max(id) FROM orders)" \
  -c "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders WHERE status = 'new')"
# The topic exists once the first change is in Kafka.
wait_until "the changes in Kafka" 30 "$SY" tail cdc.public.orders -c routes.toml -n 1 --idle 1s
"$SY" tail cdc.public.orders -c routes.toml --idle 3s

step "Backfill: copying customers' existing rows while the stream runs"
"$SY" snapshot start -c routes.toml --source demo --table public.customers
wait_until "the backfill to finish" 60 bash -c "'$SY' snapshot status -c routes.toml --source demo | grep -q '\"state\": \"done\"'"
"$SY" snapshot status -c routes.toml --source demo
"$SY" tail cdc.public.customers -c routes.toml --idle 3s

cat <<MSG

Everything is running. Try:
  curl -X POST http://127.0.0.1:$SWITCHYARD_PORT/webhooks/shop -H "authorization: Bearer ${SHOP_WEBHOOK_TOKEN:-local-quickstart-token}" -H 'content-type: application/json' -d '{"hello":"world"}'
  KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP SCHEMA_REGISTRY_URL=$SCHEMA_REGISTRY_URL $SY tail webhooks.shop
The console: http://127.0.0.1:$SWITCHYARD_ADMIN_PORT/ui (sign in with the token in $DATA/admin.token)
The admin API: curl -H "authorization: Bearer \$(cat $DATA/admin.token)" http://127.0.0.1:$SWITCHYARD_ADMIN_PORT/api/v1/dead-letters/stats
Change a row and watch it arrive:
  $PG_BINDIR/psql postgresql://postgres@127.0.0.1:$PG_PORT/postgres -c "UPDATE customers SET country = 'SE' WHERE id = 1"
  KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP SCHEMA_REGISTRY_URL=$SCHEMA_REGISTRY_URL $SY tail cdc.public.customers --follow
Logs: $DATA/*.log      Stop: deploy/local/down.sh
MSG
