//! The `bankgate` binary; everything it does lives in the library (`bankgate::cli`).

/// mimalloc rather than glibc's malloc: the request path allocates small objects on one worker
/// thread and frees them on another, which glibc serialises on arena locks, and idle memory
/// goes back to the system instead of staying fragmented in the heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bankgate::cli::main()
}
