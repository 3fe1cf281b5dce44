//! (stub)
pub fn main() -> std::process::ExitCode {
    todo!()
}
