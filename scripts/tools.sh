#!/usr/bin/env bash
# Installs what switchyard's tests and local quickstart need, once, into a cache outside the
# repo, and exports where it is. Source it (`. scripts/tools.sh`) or run it.
#
#   apt packages   build tools for rdkafka's bundled librdkafka, PostgreSQL 15 server, iproute2 (the network partition test), chromium and chromium-driver (the console's browser test)
#   tansu 0.6.0    Kafka-protocol broker (cargo install, ~15 min cold on 2 cores)
#   rivven-schema  Confluent-compatible schema registry (cargo install)
#
# Cache: $SWITCHYARD_CACHE (default ~/.cache/switchyard): tools/bin holds the binaries.
set -euo pipefail

SWITCHYARD_CACHE=${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}
TOOLS=$SWITCHYARD_CACHE/tools
mkdir -p "$TOOLS"

say() { printf '[tools] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to run: $*"; return 1; fi
}

apt_ensure() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing apt packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# rdkafka-sys builds librdkafka with its own configure script: a C toolchain, make, perl,
# pkg-config, zlib and OpenSSL headers. Tests run a private PostgreSQL 15 cluster.
apt_ensure build-essential pkg-config perl zlib1g-dev libssl-dev curl openssl postgresql-15 postgresql-client-15 iproute2 chromium chromium-driver

cargo_tool() { # name version bin features locked
  local name=$1 version=$2 bin=$3 features=$4 locked=$5
  if [ -x "$TOOLS/bin/$bin" ] && [ "$(cat "$TOOLS/$name.version" 2>/dev/null)" = "$version$features" ]; then
    return 0
  fi
  say "installing $name $version into $TOOLS (cached; slow the first time)"
  local args=(install --root "$TOOLS" "$name" --version "$version")
  [ "$locked" = locked ] && args+=(--locked)
  [ -n "$features" ] && args+=(--features "$features")
  CARGO_TARGET_DIR=$SWITCHYARD_CACHE/tools-target cargo "${args[@]}" >&2
  echo "$version$features" > "$TOOLS/$name.version"
}

cargo_tool tansu 0.6.0 tansu dynostore unlocked
cargo_tool rivven-schema 0.0.22 rivven-schema "" locked

export PATH="$TOOLS/bin:$PATH"
export TANSU_BIN=${TANSU_BIN:-$TOOLS/bin/tansu}
export RIVVEN_SCHEMA_BIN=${RIVVEN_SCHEMA_BIN:-$TOOLS/bin/rivven-schema}
PG_BINDIR=${PG_BINDIR:-$(pg_config --bindir 2>/dev/null || true)}
[ -x "$PG_BINDIR/initdb" ] || PG_BINDIR=/usr/lib/postgresql/15/bin
export PG_BINDIR
