//! `stele submit`: posts one record to a log and files the receipt.
//!
//! Beside the record file (or in `--out DIR`) it writes `<stem>.receipt.json`
//! (the receipt as returned), `<stem>.tlog-proof` (the C2SP offline proof)
//! and `<stem>.leaf` (the exact leaf bytes the proof covers), each written
//! to a temporary file and renamed, so a crash never leaves half a receipt.
//! With `--print png|pdf` it also writes a printable form with a QR code
//! (`receipt_print`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use stele_core::receipt::Receipt;

use super::client::{block_on, describe_key, load_verifier, problem_message, AgencyArgs};
use crate::files::write_atomic;

/// Command-line arguments of `stele submit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub agency: AgencyArgs,
    /// The record (JSON: `type`, optional `subject`, `content_hash`,
    /// `attributes`); `-` reads standard input.
    pub file: PathBuf,
    /// Where to save the receipt files (default: beside FILE; the current
    /// directory for standard input).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Verify the receipt with this verifier key before saving it.
    #[arg(long)]
    pub vkey: Option<String>,
    /// Verify the receipt with the key in this file before saving it.
    #[arg(long, value_name = "FILE")]
    pub vkey_file: Option<PathBuf>,
    /// Wait for a witnessed receipt (`?wait=witnessed`): one against a
    /// checkpoint the log's witness quorum cosigned (a log with a witness
    /// policy only). A 503 then means the record is stored but no witnessed
    /// checkpoint covers it yet; the retry finds the record by its body.
    #[arg(long)]
    pub witnessed: bool,
    /// How many times to retry when the log pushes back (429/503).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Also write a printable form with a QR code: `png` (the code) or
    /// `pdf` (an A4 page with the record and the code); `png,pdf` for both.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FORMAT")]
    pub print: Vec<super::receipt_print::PrintFormat>,
    /// The receipt page the QR code links to (default: `/receipt` on the
    /// log's server).
    #[arg(long, value_name = "URL")]
    pub receipt_page: Option<String>,
}

/// Runs the command; the exit code is the process's.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let body = if args.file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b)?;
        b
    } else {
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    serde_json::from_slice::<serde_json::Value>(&body).context("the record is not valid JSON")?;
    let verifier = if args.vkey.is_some() || args.vkey_file.is_some() {
        Some(load_verifier(
            args.vkey.as_deref(),
            args.vkey_file.as_deref(),
        )?)
    } else {
        None
    };

    let (token, client) = args.agency.connect()?;
    if !args.print.is_empty() {
        // The QR code needs the log's name: refuse before submitting, not after.
        super::receipt_print::receipt_page_for(&args.agency.log)?;
    }
    let retries = args.retries;
    let path = if args.witnessed {
        "records?wait=witnessed"
    } else {
        "records"
    };
    let answer = block_on(async move {
        let mut attempt = 0;
        loop {
            let (status, retry_after, bytes) = client.post_json(path, &token, body.clone()).await?;
            let pushback = status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
            if pushback && attempt < retries {
                attempt += 1;
                let wait = retry_after
                    .as_deref()
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(1)
                    .min(30);
                eprintln!(
                    "{}; retrying in {wait} s",
                    problem_message(status, retry_after.as_deref(), &bytes)
                );
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            return anyhow::Ok((status, retry_after, bytes));
        }
    })?;
    let (status, retry_after, bytes) = answer;
    if !status.is_success() {
        eprintln!(
            "error: the log refused the record: {}",
            problem_message(status, retry_after.as_deref(), &bytes)
        );
        return Ok(ExitCode::FAILURE);
    }
    let receipt: Receipt =
        serde_json::from_slice(&bytes).context("the log's answer is not a receipt")?;

    if let Some(v) = &verifier {
        if let Err(e) = receipt.verify(v) {
            bail!(
                "the log returned a receipt that does not verify with {}: {e}",
                describe_key(v)
            );
        }
    }

    let (dir, stem) = destination(&args.file, args.out.as_deref(), receipt.index);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json_path = dir.join(format!("{stem}.receipt.json"));
    let proof_path = dir.join(format!("{stem}.tlog-proof"));
    let leaf_path = dir.join(format!("{stem}.leaf"));
    let mut pretty = serde_json::to_string_pretty(&receipt)?;
    pretty.push('\n');
    write_atomic(&json_path, pretty.as_bytes())?;
    write_atomic(&proof_path, receipt.tlog_proof.as_bytes())?;
    write_atomic(&leaf_path, receipt.leaf.as_bytes())?;
    let printed = super::receipt_print::write(
        &receipt,
        &args.print,
        &dir,
        &stem,
        &args.agency.log,
        args.receipt_page.as_deref(),
    )?;

    print!("{pretty}");
    let what = if status == reqwest::StatusCode::OK {
        "already in the log"
    } else {
        "appended"
    };
    eprintln!(
        "record {what} at index {} of {}",
        receipt.index, receipt.log
    );
    if let Some(v) = &verifier {
        eprintln!("receipt verified with {}", describe_key(v));
    }
    eprintln!(
        "saved {}, {} and {}",
        json_path.display(),
        proof_path.display(),
        leaf_path.display()
    );
    for p in printed {
        eprintln!("saved {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Directory and file stem for the receipt files.
fn destination(file: &Path, out: Option<&Path>, index: u64) -> (PathBuf, String) {
    let from_stdin = file.as_os_str() == "-";
    let dir = match out {
        Some(d) => d.to_path_buf(),
        None if from_stdin => PathBuf::from("."),
        None => file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let stem = if from_stdin {
        format!("record-{index}")
    } else {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("record-{index}"))
    };
    (dir, stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_files_go_beside_the_record_or_in_out() {
        assert_eq!(
            destination(Path::new("a/b/deed.json"), None, 7),
            (PathBuf::from("a/b"), "deed".to_string())
        );
        assert_eq!(
            destination(Path::new("deed.json"), None, 7),
            (PathBuf::from("."), "deed".to_string())
        );
        assert_eq!(
            destination(Path::new("-"), None, 7),
            (PathBuf::from("."), "record-7".to_string())
        );
        assert_eq!(
            destination(Path::new("x.json"), Some(Path::new("r")), 7),
            (PathBuf::from("r"), "x".to_string())
        );
    }
}
