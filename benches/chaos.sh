#!/usr/bin/env bash
# The fault campaign (issue #22): two switchyard instances stream one Postgres slot — one of
# them inside a network namespace of its own — while bursts of updates are written, and FAULTS
# faults are injected one after another: kill -9 of the leader, SIGSTOP/SIGCONT of the leader,
# a network partition of the namespaced instance, Kafka cut off, the schema registry cut off,
# a Postgres restart. Afterwards Kafka is read back: every key must end in its row's final
# state (no committed change missing), per-key order must hold (re-sent suffixes only), and
# nothing may be dead-lettered. Prints the faults by kind and the figures.
#
#   FAULTS=50 benches/chaos.sh          # ~15 min on 2 cores
#
# Needs root (network namespaces) and iproute2, PostgreSQL 15, tansu and rivven-schema
# (scripts/tools.sh installs them). Not part of CI: the CI-sized check of each fault is in
# tests/it/ha.rs, cdc_order.rs, cdc.rs and shutdown.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools.sh >/dev/null
FAULTS=${FAULTS:-50}
CHAOS_FAULTS=$FAULTS cargo test --test it chaos::chaos_campaign -- --ignored --nocapture 2>&1 |
  grep -E '^chaos:|panicked|test result|seed' 
