//! The `stele` command line. (Being built: `serve`, `keygen` and `agency`
//! live here; `submit`, `verify` and `monitor` in their own modules.)

pub mod audit;
pub mod client;
pub mod monitor;
pub mod submit;
pub mod verify;

pub fn main() -> std::process::ExitCode {
    todo!()
}
