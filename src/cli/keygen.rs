//! `stele keygen`: a fresh Ed25519 signing key for a log.

use std::path::PathBuf;
use std::process::ExitCode;

use stele_core::note::Signer;

use crate::files::write_secret_file;

/// Command-line arguments of `stele keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The log's origin (the key's name and the checkpoints' first line),
    /// e.g. `records.example.gov/land`.
    #[arg(long)]
    pub origin: String,
    /// Where to write the private key (mode 0600; an existing file is never
    /// overwritten). Without it the private key goes to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Writes the key, prints the verifier key (`vkey`).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (signer, skey) = Signer::generate(&args.origin)
        .map_err(|e| anyhow::anyhow!("cannot make a key for origin {:?}: {e}", args.origin))?;
    match &args.out {
        Some(path) => {
            write_secret_file(path, &format!("{skey}\n"))?;
            eprintln!(
                "wrote the private key to {} (keep it secret)",
                path.display()
            );
            println!("{}", signer.vkey());
        }
        None => {
            println!("{skey}");
            eprintln!("verifier key: {}", signer.vkey());
        }
    }
    Ok(ExitCode::SUCCESS)
}
