//! `stele submit` (stub).

/// Command-line arguments of `stele submit`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command; the exit code is the process's.
pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let _ = args;
    todo!()
}
