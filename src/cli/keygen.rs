//! `stele keygen`: a fresh Ed25519 signing key for a log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use stele_core::note::Signer;

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

/// Creates `path` (and its parent directories) with `contents`, readable
/// only by the owner. Fails if the file exists.
pub fn write_secret_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("creating {}", path.display()))
        }
    })?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
