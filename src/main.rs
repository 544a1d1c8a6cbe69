#![forbid(unsafe_code)]

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

// jemalloc rather than the C library's: a controller's many small, short
// allocations (a pass's state) between long-lived ones (each release's
// caches and compressed Release) left glibc's arenas holding twice the live
// heap. Measured at 1,000 releases: 116–119 MiB resident against 137, and a
// fifth less CPU (README, "Dependencies").
#[cfg(all(not(feature = "dhat-heap"), not(target_env = "msvc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    cutover::cli::main()
}
