//! `stele verify`: checks a receipt (`.json`) or a C2SP `tlog-proof@v1`
//! offline against the log's verifier key, step by step, and optionally
//! proves the receipt's checkpoint consistent with the live log.
//!
//! Every check is a call into `stele_core`; the verdict also requires the
//! core's own [`Receipt::verify`] / [`TlogProof::verify`] to agree, so this
//! command can never be more lenient than the library.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use stele_core::checkpoint::Checkpoint;
use stele_core::merkle::{verify_consistency, verify_inclusion};
use stele_core::note::{open_checkpoint, Verifier};
use stele_core::receipt::{Receipt, Step};
use stele_core::tlog_proof::TlogProof;
use stele_core::{leaf_hash, Hash};

use super::client::{block_on, check_quorum, describe_key, LogClient, LogKeyArgs, TlsArgs};
use stele_core::policy::Policy;

/// Command-line arguments of `stele verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A receipt (`.json`, as the log returns it) or a `.tlog-proof` file;
    /// `-` reads standard input.
    pub receipt: PathBuf,
    #[command(flatten)]
    pub key: LogKeyArgs,
    /// For a `.tlog-proof`: the file with the exact leaf bytes (default: the
    /// `.leaf` file beside the proof, as `stele submit` saves it).
    #[arg(long, value_name = "FILE")]
    pub leaf: Option<PathBuf>,
    /// Also fetch the log's live checkpoint from this log URL (e.g.
    /// `https://host/logs/default`), check its signature, and prove the
    /// receipt's checkpoint consistent with it.
    #[arg(long, value_name = "URL")]
    pub online: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Names of the steps as printed (and as tests look for them).
pub const STEP_PARSE: &str = "parse";
pub const STEP_LEAF_HASH: &str = "leaf hash";
pub const STEP_SIGNATURE: &str = "checkpoint signature";
pub const STEP_INCLUSION: &str = "inclusion proof";
pub const STEP_TLOG_PROOF: &str = "tlog-proof";
pub const STEP_ONLINE: &str = "consistency with the live log";
pub const STEP_QUORUM: &str = "witness quorum";

fn step_name(s: Step) -> &'static str {
    match s {
        Step::Parse => STEP_PARSE,
        Step::LeafHash => STEP_LEAF_HASH,
        Step::CheckpointSignature => STEP_SIGNATURE,
        Step::InclusionProof => STEP_INCLUSION,
        Step::TlogProof => STEP_TLOG_PROOF,
    }
}

/// Prints steps as they are checked and remembers the first failure.
struct Report {
    failed: Option<(&'static str, String)>,
}

impl Report {
    fn new() -> Self {
        Report { failed: None }
    }
    fn ok(&self, step: &str, what: impl AsRef<str>) {
        println!("  ✓ {step}: {}", what.as_ref());
    }
    fn fail(&mut self, step: &'static str, why: impl Into<String>) {
        let why = why.into();
        println!("  ✗ {step}: {why}");
        if self.failed.is_none() {
            self.failed = Some((step, why));
        }
    }
    fn skipped(&self, steps: &[&str]) {
        for s in steps {
            println!("  · {s}: not checked");
        }
    }
    fn finish(self) -> ExitCode {
        match self.failed {
            None => {
                println!("VERIFIED");
                ExitCode::SUCCESS
            }
            Some((step, why)) => {
                println!("FAILED at step \"{step}\": {why}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs the command; the exit code is the process's.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (verifier, policy) = args.key.load()?;
    let input = read_input(&args.receipt)?;
    let text = String::from_utf8(input).context("the receipt is not UTF-8")?;
    let trimmed = text.trim_start();

    let mut report = Report::new();
    let checkpoint = if trimmed.starts_with('{') {
        verify_receipt(&text, &verifier, &mut report).map(|(cp, note)| {
            match &policy {
                Some(p) => check_policy_step(&mut report, p, &note, "the receipt's checkpoint"),
                None => say_kind(&note),
            }
            cp
        })
    } else if trimmed.starts_with("c2sp.org/tlog-proof@") {
        let leaf_path = match &args.leaf {
            Some(p) => p.clone(),
            None if args.receipt.as_os_str() != "-" => args.receipt.with_extension("leaf"),
            None => anyhow::bail!("a tlog-proof from standard input needs --leaf FILE"),
        };
        let leaf = std::fs::read(&leaf_path).with_context(|| {
            format!(
                "reading the leaf {} (give it with --leaf FILE)",
                leaf_path.display()
            )
        })?;
        verify_tlog_proof(&text, &leaf, &verifier, &mut report).map(|(cp, note)| {
            match &policy {
                Some(p) => check_policy_step(&mut report, p, &note, "the proof's checkpoint"),
                None => say_kind(&note),
            }
            cp
        })
    } else {
        anyhow::bail!(
            "{}: neither a receipt (JSON) nor a c2sp.org/tlog-proof@v1",
            args.receipt.display()
        );
    };

    if let Some(url) = &args.online {
        match checkpoint {
            Some(cp) => verify_online(url, &args.tls, &cp, &verifier, policy.as_ref(), &mut report),
            None => report.skipped(&[STEP_ONLINE]),
        }
    }
    Ok(report.finish())
}

/// Without `--policy`: says which kind of receipt this is.
fn say_kind(note: &str) {
    if stele_core::cosignature::has_cosignature_lines(note) {
        println!(
            "  · {STEP_QUORUM}: not checked (a witnessed receipt: its checkpoint carries cosignatures; give --policy FILE to require them)"
        );
    }
}

/// The witness-quorum step: the note must carry valid cosignatures of the
/// policy's quorum.
fn check_policy_step(report: &mut Report, policy: &Policy, note: &str, what: &str) {
    match check_quorum(policy, note) {
        Ok(who) => report.ok(STEP_QUORUM, format!("{what} is {who}; the quorum is met")),
        Err(why) if !stele_core::cosignature::has_cosignature_lines(note) => report.fail(
            STEP_QUORUM,
            format!("{what} is signed by the log only (a log-signed receipt; fetch the witnessed one at GET /logs/<log>/entries/<index>/receipt): {why}"),
        ),
        Err(why) => report.fail(STEP_QUORUM, format!("{what}: {why}")),
    }
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn parse_hashes(hex: &[String]) -> Result<Vec<Hash>, String> {
    hex.iter()
        .enumerate()
        .map(|(i, h)| Hash::from_hex(h).map_err(|e| format!("inclusion_proof[{i}]: {e}")))
        .collect()
}

/// Checks a receipt; returns its verified checkpoint (and its note) when
/// every step held.
fn verify_receipt(
    text: &str,
    verifier: &Verifier,
    report: &mut Report,
) -> Option<(Checkpoint, String)> {
    let all = [
        STEP_PARSE,
        STEP_LEAF_HASH,
        STEP_SIGNATURE,
        STEP_INCLUSION,
        STEP_TLOG_PROOF,
    ];
    let parsed = serde_json::from_str::<Receipt>(text)
        .map_err(|e| format!("not a receipt: {e}"))
        .and_then(|r| {
            let lh = Hash::from_hex(&r.leaf_hash).map_err(|e| format!("leaf_hash: {e}"))?;
            let proof = parse_hashes(&r.inclusion_proof)?;
            Ok((r, lh, proof))
        });
    let (receipt, claimed_leaf_hash, proof) = match parsed {
        Ok(x) => x,
        Err(e) => {
            report.fail(STEP_PARSE, e);
            report.skipped(&all[1..]);
            return None;
        }
    };
    println!("Receipt for entry {} of log {}", receipt.index, receipt.log);
    report.ok(
        STEP_PARSE,
        format!("well-formed receipt, {} proof hashes", proof.len()),
    );

    let computed = leaf_hash(receipt.leaf.as_bytes());
    if computed != claimed_leaf_hash {
        report.fail(
            STEP_LEAF_HASH,
            format!(
                "SHA-256(0x00 || leaf) is {computed}, but the receipt says {claimed_leaf_hash}"
            ),
        );
        report.skipped(&all[2..]);
        return None;
    }
    report.ok(
        STEP_LEAF_HASH,
        format!("SHA-256(0x00 || leaf) = {computed}"),
    );

    let cp = check_signature(
        report,
        &receipt.checkpoint,
        verifier,
        Some(&receipt.log),
        &all[3..],
    )?;

    if let Err(e) = verify_inclusion(&computed, receipt.index, cp.size, &proof, &cp.root) {
        report.fail(
            STEP_INCLUSION,
            format!("leaf {} in a tree of {}: {e}", receipt.index, cp.size),
        );
        report.skipped(&all[4..]);
        return None;
    }
    report.ok(
        STEP_INCLUSION,
        format!(
            "{} hashes lead from leaf {} to the root of the tree of {}",
            proof.len(),
            receipt.index,
            cp.size
        ),
    );

    match TlogProof::parse(&receipt.tlog_proof) {
        Err(e) => report.fail(STEP_TLOG_PROOF, format!("malformed: {e}")),
        Ok(t) if t.index != receipt.index => report.fail(
            STEP_TLOG_PROOF,
            format!("says index {}, the receipt says {}", t.index, receipt.index),
        ),
        Ok(t) if t.proof != proof => report.fail(
            STEP_TLOG_PROOF,
            "its proof hashes differ from inclusion_proof",
        ),
        Ok(t) if t.checkpoint != receipt.checkpoint => {
            report.fail(STEP_TLOG_PROOF, "its checkpoint differs from the receipt's")
        }
        Ok(_) => report.ok(STEP_TLOG_PROOF, "says the same as the JSON fields"),
    }

    // The library's own verdict must agree.
    if report.failed.is_none() {
        if let Err(e) = receipt.verify(verifier) {
            report.fail(step_name(e.step), e.detail);
        }
    }
    report.failed.is_none().then_some((cp, receipt.checkpoint))
}

/// Checks a tlog-proof against the leaf bytes.
fn verify_tlog_proof(
    text: &str,
    leaf: &[u8],
    verifier: &Verifier,
    report: &mut Report,
) -> Option<(Checkpoint, String)> {
    let all = [STEP_PARSE, STEP_LEAF_HASH, STEP_SIGNATURE, STEP_INCLUSION];
    let t = match TlogProof::parse(text) {
        Ok(t) => t,
        Err(e) => {
            report.fail(STEP_PARSE, format!("not a tlog-proof@v1: {e}"));
            report.skipped(&all[1..]);
            return None;
        }
    };
    println!("tlog-proof for entry {}", t.index);
    report.ok(
        STEP_PARSE,
        format!("well-formed tlog-proof@v1, {} proof hashes", t.proof.len()),
    );
    let lh = leaf_hash(leaf);
    report.ok(
        STEP_LEAF_HASH,
        format!("SHA-256(0x00 || leaf) = {lh} ({} leaf bytes)", leaf.len()),
    );
    let cp = check_signature(report, &t.checkpoint, verifier, None, &all[3..])?;
    if let Err(e) = verify_inclusion(&lh, t.index, cp.size, &t.proof, &cp.root) {
        report.fail(
            STEP_INCLUSION,
            format!("leaf {} in a tree of {}: {e}", t.index, cp.size),
        );
        return None;
    }
    report.ok(
        STEP_INCLUSION,
        format!(
            "{} hashes lead from leaf {} to the root of the tree of {}",
            t.proof.len(),
            t.index,
            cp.size
        ),
    );
    if let Err(e) = t.verify(leaf, verifier) {
        report.fail(step_name(e.step), e.detail);
        return None;
    }
    Some((cp, t.checkpoint))
}

/// Fetches the live checkpoint and proves `cp` consistent with it.
fn verify_online(
    url: &str,
    tls: &TlsArgs,
    cp: &Checkpoint,
    verifier: &Verifier,
    policy: Option<&Policy>,
    report: &mut Report,
) {
    let result = block_on(async {
        let client = LogClient::with_tls(url, tls)?;
        let note = client.checkpoint().await?;
        let live = open_checkpoint(&note, verifier).map_err(|e| {
            anyhow::anyhow!(
                "the live checkpoint at {} does not verify: {e}",
                client.url("checkpoint")
            )
        })?;
        let witnessed = match policy {
            Some(p) => Some(check_quorum(p, &note).map_err(|why| {
                anyhow::anyhow!(
                    "the live checkpoint at {} does not meet the witness policy: {why}",
                    client.url("checkpoint")
                )
            })?),
            None => None,
        };
        if live.size < cp.size {
            // A log with witnesses publishes the latest *witnessed*
            // checkpoint, which may lag a log-signed receipt: then the
            // receipt's tree must extend the live one, which a log that
            // rolled back cannot prove.
            let proof = client.consistency(live.size, cp.size).await.map_err(|e| {
                anyhow::anyhow!(
                    "the live tree has {} leaves, fewer than the receipt's {}, and the log cannot prove the receipt's tree extends it (rolled back?): {e:#}",
                    live.size,
                    cp.size
                )
            })?;
            verify_consistency(live.size, cp.size, &live.root, &cp.root, &proof).map_err(|e| {
                anyhow::anyhow!(
                    "the receipt's tree of {} is not an extension of the live tree of {}: {e}",
                    cp.size,
                    live.size
                )
            })?;
            return Ok(format!(
                "the receipt's tree of {} extends the live checkpoint's tree of {}{} ({} proof hashes)",
                cp.size,
                live.size,
                witnessed.map(|w| format!(", {w}")).unwrap_or_default(),
                proof.len()
            ));
        }
        if live.size == cp.size {
            if live.root != cp.root {
                anyhow::bail!(
                    "split view: the live root for size {} is {}, the receipt's is {}",
                    cp.size,
                    live.root.to_base64(),
                    cp.root.to_base64()
                );
            }
            return Ok(format!(
                "the live checkpoint is the receipt's (size {})",
                live.size
            ));
        }
        let proof = client.consistency(cp.size, live.size).await?;
        verify_consistency(cp.size, live.size, &cp.root, &live.root, &proof).map_err(|e| {
            anyhow::anyhow!(
                "the receipt's tree of {} is not a prefix of the live tree of {}: {e}",
                cp.size,
                live.size
            )
        })?;
        Ok(format!(
            "the live tree of {} (root {}) extends the receipt's tree of {} ({} proof hashes)",
            live.size,
            live.root.to_base64(),
            cp.size,
            proof.len()
        ))
    });
    match result {
        Ok(what) => report.ok(STEP_ONLINE, what),
        Err(e) => report.fail(STEP_ONLINE, format!("{e:#}")),
    }
}

/// The checkpoint-signature step, shared by receipts and tlog-proofs: opens
/// the note with the trusted key, checks the origin against the log the
/// receipt names (if any), and reports the step. On failure the `rest`
/// steps are reported as not checked.
fn check_signature(
    report: &mut Report,
    note: &str,
    verifier: &Verifier,
    expected_origin: Option<&str>,
    rest: &[&str],
) -> Option<Checkpoint> {
    let outcome = match open_checkpoint(note, verifier) {
        Ok(cp) => match expected_origin {
            Some(log) if cp.origin != log => Err(format!(
                "checkpoint origin {:?} but the receipt names log {:?}",
                cp.origin, log
            )),
            _ => Ok(cp),
        },
        Err(e) => Err(format!("{e} (trusted key: {})", describe_key(verifier))),
    };
    match outcome {
        Ok(cp) => {
            report.ok(
                STEP_SIGNATURE,
                format!(
                    "signed by {}; tree size {}, root {}",
                    describe_key(verifier),
                    cp.size,
                    cp.root.to_base64()
                ),
            );
            Some(cp)
        }
        Err(why) => {
            report.fail(STEP_SIGNATURE, why);
            report.skipped(rest);
            None
        }
    }
}
