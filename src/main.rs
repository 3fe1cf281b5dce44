// mimalloc: the request path allocates many small, short-lived buffers
// (headers, JSON, receipts) across threads; glibc malloc spent ~17% of the
// server's CPU in a submit profile. See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stele::cli::main()
}
