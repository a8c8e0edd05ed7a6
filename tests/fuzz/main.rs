//! Property tests of every parser of untrusted input: the pgoutput decoder and the text values
//! it carries, the webhook body (JSON scan, JSON Pointer, forms), signature headers, identity
//! extraction, and configuration loading.
//!
//! Each property feeds a parser arbitrary bytes and inputs built to be almost right (valid
//! messages truncated, length fields set to huge values, JSON nested deep, headers with odd
//! separators and many entries, TOML with edits), and checks what a user relies on: no panic,
//! an error that says what is wrong, the same answer as a reference where one exists, and no
//! allocation that a length field in the input can make large (counted by this binary's
//! allocator, per thread).
//!
//! CI runs a fixed number of cases per property with a fixed seed (the same cases every run,
//! well under a minute in a debug build); `benches/fuzz.sh` runs them long, with a new seed each
//! run: `PROPTEST_CASES=100000 PROPTEST_RNG_SEED=<n> cargo test --release --test fuzz` is what it
//! does. A failure prints the minimal input; keep it as a regression test next to the property.

mod config;
mod identity;
mod json;
mod pg_values;
mod pgoutput;
mod signatures;
mod traces;

use proptest::test_runner::{Config, RngSeed};

/// The seed of CI runs: the same cases every time, so a red build is a finding, not noise.
const CI_SEED: u64 = 0x5717_c4ea_d0d0_2222;

/// The runner configuration of a property: `ci_cases` cases (`PROPTEST_CASES` overrides), the
/// CI seed unless `PROPTEST_RNG_SEED` gives another, no regression files written into the tree.
pub fn cases(ci_cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci_cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(CI_SEED);
    }
    config.failure_persistence = None;
    config
}

/// Runs `f` and checks that at no point it held more than `limit` bytes of heap (on this
/// thread): what a hostile length field could inflate shows here long before memory runs out.
pub fn within_heap<T>(limit: u64, what: &dyn Fn() -> String, f: impl FnOnce() -> T) -> T {
    let mut out = None;
    // A panic must not escape `measure`: it would leave the counter's nesting one deeper for
    // every later case on this thread (proptest runs them all on one, shrinking panics often).
    let info = allocation_counter::measure(|| {
        out = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    let out = match out {
        Some(Ok(v)) => v,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => unreachable!("measure runs the closure once"),
    };
    assert!(
        info.bytes_max <= limit,
        "{} held {} bytes of heap at its peak, more than the {limit} allowed",
        what(),
        info.bytes_max
    );
    out
}

#[test]
fn the_heap_bound_sees_a_large_allocation() {
    // The guard of every "bounded allocation" property: it must see what it is meant to catch.
    let caught = std::panic::catch_unwind(|| {
        within_heap(1 << 20, &|| "a 64 MiB buffer".into(), || {
            std::hint::black_box(Vec::<u8>::with_capacity(64 << 20)).capacity()
        })
    });
    assert!(caught.is_err(), "a 64 MiB allocation passed a 1 MiB bound");
    let small = within_heap(1 << 20, &|| "a 1 KiB buffer".into(), || {
        std::hint::black_box(Vec::<u8>::with_capacity(1024)).capacity()
    });
    assert_eq!(small, 1024);
}
