//! The `switchyard` binary: a thin shell over the library's CLI.

/// mimalloc rather than glibc's malloc: events are allocated on one worker thread and freed on
/// another, which glibc serialises on its arena locks (about a third of the CDC path's CPU went
/// to malloc/free and their lock waits in `benches/cdc.sh` profiles).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
