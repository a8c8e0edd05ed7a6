#!/usr/bin/env bash
# Long fuzzing of the parsers of untrusted input: the property tests of tests/fuzz (the pgoutput
# decoder and its text values, the webhook JSON scan and pointers, forms and identity, signature
# headers, configuration loading), which CI runs with a few hundred to a few thousand cases each
# and a fixed seed, run here with many cases and a new seed, one property at a time.
#
#   benches/fuzz.sh                          # 100000 cases per property, a new seed
#   CASES=1000000 benches/fuzz.sh            # longer (about ten times the time)
#   SEED=123456789 benches/fuzz.sh           # the cases of an earlier run again
#   FILTER=pgoutput benches/fuzz.sh          # the properties whose name contains "pgoutput"
#
# The build is the debug one (the test profile): integer overflow is a panic there, and a
# panic is what the properties catch; release builds wrap silently. On the 2-core machine a
# property runs from about 850 cases a second (signature headers of hundreds of entries) to
# over 50,000 (small pgoutput messages); the default run took 416 s (docs/fuzzing.md).
#
# A failing property prints its minimal input (proptest shrinks it) and the seed; the log of
# every property is kept under the printed directory. Make the input a regression test next to
# the property (tests/fuzz/<parser>.rs), fix the parser, and run again with the same SEED.
#
# Knobs (environment):
#   CASES=100000   cases per property (PROPTEST_CASES)
#   SEED=          the run's seed (PROPTEST_RNG_SEED); default: random, printed
#   FILTER=        only properties whose name contains this
#   THREADS=1      properties run one at a time, each on one thread (the timing is its own)
set -euo pipefail
cd "$(dirname "$0")/.."

CASES=${CASES:-100000}
SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
FILTER=${FILTER:-}
THREADS=${THREADS:-1}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-fuzz.XXXXXX")

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "$*"; exit 1; }

log "building tests/fuzz (debug)"
# The binary is run directly: edits to the tree during a long run rebuild nothing.
bin=$(cargo test --locked --test fuzz --no-run --message-format=json 2>"$LOGS/build.log" \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -x "$bin" ] || { cat "$LOGS/build.log" >&2; die "no test binary built"; }

mapfile -t tests < <("$bin" --list --format terse 2>/dev/null | sed -n 's/: test$//p' \
  | grep -F -- "$FILTER" || true)
[ "${#tests[@]}" -gt 0 ] || die "no test matches FILTER=$FILTER"

log "${#tests[@]} tests, $CASES cases per property, seed $SEED, logs in $LOGS"
printf '%-72s %10s %9s %s\n' test cases seconds result
failed=0
started=$SECONDS
for t in "${tests[@]}"; do
  out="$LOGS/${t//::/.}.log"
  t0=$(date +%s%N)
  if PROPTEST_CASES=$CASES PROPTEST_RNG_SEED=$SEED "$bin" --exact "$t" \
       --test-threads "$THREADS" >"$out" 2>&1; then
    result=ok
  else
    result="FAILED (see $out)"
    failed=$((failed + 1))
  fi
  secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  # Regression tests (a fixed input each) have no cases.
  if grep -q "proptest" "tests/fuzz/${t%%::*}.rs" 2>/dev/null && grep -qF "fn ${t##*::}(" \
       <(sed -n '/^proptest! {/,/^}/p' "tests/fuzz/${t%%::*}.rs"); then
    cases=$CASES
  else
    cases=-
  fi
  printf '%-72s %10s %9s %s\n' "$t" "$cases" "$secs" "$result"
done
log "done in $((SECONDS - started)) s: $failed failed; seed $SEED"
if [ "$failed" -gt 0 ]; then
  log "rerun one with: PROPTEST_CASES=$CASES PROPTEST_RNG_SEED=$SEED cargo test --test fuzz -- --exact <test>"
  exit 1
fi
rm -rf "$LOGS"
