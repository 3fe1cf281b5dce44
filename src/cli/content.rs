//! `stele fetch` and `stele erase`: a private record's content, read with
//! a stated purpose and checked against the commitment in the record's
//! signed, included leaf before it is printed; and its erasure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::Value;
use stele_core::note::Verifier;

use super::client::{block_on, load_verifier, problem_message, AgencyArgs, LogClient, TlsArgs};
use crate::files::write_atomic;
use crate::records::private::{commitment, ACCESS_TYPE, ERASURE_TYPE, SALT_LEN};
use crate::wire;

/// The agency's token and the log (shared by both commands).
#[derive(Debug, clap::Args)]
pub struct Agent {
    #[command(flatten)]
    pub agency: AgencyArgs,
    /// The private record's index.
    #[arg(long)]
    pub index: u64,
}

/// Command-line arguments of `stele fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub agent: Agent,
    /// Why the content is read. It is written, publicly, into the access
    /// entry the log appends before it releases the content: say why, never
    /// about whom.
    #[arg(long)]
    pub purpose: String,
    /// The log's verifier key: the receipts are checked with it.
    #[arg(long)]
    pub vkey: Option<String>,
    /// The log's verifier key, from a file.
    #[arg(long, value_name = "FILE")]
    pub vkey_file: Option<PathBuf>,
    /// Also save the whole answer (content, salt, both receipts) here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Command-line arguments of `stele erase`.
#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    #[command(flatten)]
    pub agent: Agent,
    /// `subject-request`, `retention-expired`, `legal-order` or
    /// `recorded-in-error` (public, in the erasure entry).
    #[arg(long)]
    pub reason: String,
}

/// Command-line arguments of `stele disclose`.
#[derive(Debug, clap::Args)]
pub struct DiscloseArgs {
    #[command(flatten)]
    pub agent: Agent,
    /// Where to write the disclosure (JSON) for the data subject.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Command-line arguments of `stele accesses`.
#[derive(Debug, clap::Args)]
pub struct AccessesArgs {
    /// The log's URL, e.g. `http://127.0.0.1:8080/logs/default`.
    #[arg(long, value_name = "URL")]
    pub log: String,
    /// The disclosure file the writing agency handed over.
    #[arg(long, value_name = "FILE")]
    pub disclosure: PathBuf,
    /// The log's verifier key: the checkpoint and every proof are checked
    /// with it.
    #[arg(long)]
    pub vkey: Option<String>,
    /// The log's verifier key, from a file.
    #[arg(long, value_name = "FILE")]
    pub vkey_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Also prove the list complete: rebuild the whole tree from the log's
    /// public entry bundles (as `stele monitor --audit` does), check that it
    /// reproduces the answer's signed checkpoint, and find every access and
    /// erasure entry about the record in it; any the log left out of the
    /// list is an error. Downloads the whole log (about 5 s per million
    /// entries).
    #[arg(long)]
    pub complete: bool,
}

/// The access and erasure entries about `record` among the leaves of the
/// tree of `cp`, found by rebuilding it from the log's entry bundles; an
/// error if the bundles do not reproduce `cp`'s root.
pub async fn entries_about(
    client: &LogClient,
    cp: &stele_core::checkpoint::Checkpoint,
    record: u64,
) -> anyhow::Result<Vec<u64>> {
    let mut found = Vec::new();
    let mut visit = |index: u64, leaf: &[u8]| {
        if index <= record {
            return;
        }
        let Ok(l) = serde_json::from_slice::<Value>(leaf) else {
            return;
        };
        let t = l.get("type").and_then(Value::as_str);
        if matches!(t, Some(ACCESS_TYPE) | Some(ERASURE_TYPE))
            && l.pointer("/attributes/record").and_then(Value::as_u64) == Some(record)
        {
            found.push(index);
        }
    };
    let mut slot = None;
    let mut save = |_: &super::audit::AuditState| Ok(());
    match super::audit::audit_visiting(client, cp, &mut slot, 32, None, &mut save, &mut visit)
        .await?
    {
        Ok(_) => Ok(found),
        Err(alarm) => bail!("the log's tiles do not prove its checkpoint: {alarm}"),
    }
}

/// Checks an answer of `GET .../records/{index}/accesses` for the record of
/// `disclosure`: the checkpoint is signed by the log's key, the record's
/// leaf carries the disclosure's commitment, and every entry is included in
/// the checkpoint's tree and is an access or erasure entry naming the
/// record. The entries' leaves, in order.
pub fn verify_accesses(
    answer: &wire::Accesses,
    disclosure: &wire::Disclosure,
    verifier: &Verifier,
) -> anyhow::Result<Vec<Value>> {
    let note = answer
        .checkpoint
        .as_deref()
        .context("the answer has no checkpoint")?;
    let cp = stele_core::note::open_checkpoint(note, verifier)
        .map_err(|e| anyhow::anyhow!("the checkpoint does not verify: {e}"))?;
    if cp.size != answer.tree_size {
        bail!(
            "the checkpoint is of size {}, the answer says {}",
            cp.size,
            answer.tree_size
        );
    }
    let mut leaves = Vec::new();
    for e in std::iter::once(&answer.record).chain(&answer.entries) {
        stele_core::merkle::verify_inclusion(
            &stele_core::leaf_hash(e.leaf.as_bytes()),
            e.index,
            cp.size,
            &e.inclusion_proof,
            &cp.root,
        )
        .map_err(|err| anyhow::anyhow!("entry {} is not in the signed tree: {err}", e.index))?;
        leaves.push(serde_json::from_str::<Value>(&e.leaf).context("a leaf is not JSON")?);
    }
    let record = leaves.remove(0);
    if answer.record.index != disclosure.index
        || record.get("commitment").and_then(Value::as_str) != Some(&disclosure.commitment)
    {
        bail!(
            "the answer is not about the disclosed record {}",
            disclosure.index
        );
    }
    for (l, e) in leaves.iter().zip(&answer.entries) {
        let t = l.get("type").and_then(Value::as_str);
        let names =
            l.pointer("/attributes/record").and_then(Value::as_u64) == Some(disclosure.index);
        if !(names && matches!(t, Some(ACCESS_TYPE) | Some(ERASURE_TYPE)))
            || e.index <= disclosure.index
        {
            bail!(
                "entry {} is not an entry about record {}",
                e.index,
                disclosure.index
            );
        }
    }
    Ok(leaves)
}

/// Runs `stele disclose`.
pub fn disclose(args: DiscloseArgs) -> anyhow::Result<ExitCode> {
    let a = &args.agent;
    let (token, client) = a.agency.connect()?;
    let rel = format!("records/{}/disclosure", a.index);
    let req = client.http().post(client.url(&rel));
    let (status, retry_after, bytes) = block_on(client.authed("POST", &rel, &token, req))?;
    if !status.is_success() {
        eprintln!(
            "error: the log issued no disclosure: {}",
            problem_message(status, retry_after.as_deref(), &bytes)
        );
        return Ok(ExitCode::FAILURE);
    }
    let d: wire::Disclosure = serde_json::from_slice(&bytes).context("not a disclosure")?;
    let mut pretty = serde_json::to_string_pretty(&d)?;
    pretty.push('\n');
    crate::files::write_secret_file(&args.out, &pretty)?;
    eprintln!(
        "wrote the disclosure of record {} to {} (hand it to the data subject; an earlier one no longer works)",
        d.index,
        args.out.display()
    );
    // The subject's page on the log's server, the disclosure in the
    // fragment (never sent to the server).
    if let Ok((receipt_page, _)) = super::receipt_print::receipt_page_for(&a.agency.log) {
        use base64::Engine as _;
        let page = receipt_page.trim_end_matches("/receipt");
        let json = serde_json::to_vec(&d)?;
        println!(
            "{page}/disclosure#d={}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `stele accesses`.
pub fn accesses(args: AccessesArgs) -> anyhow::Result<ExitCode> {
    let verifier = load_verifier(args.vkey.as_deref(), args.vkey_file.as_deref())?;
    let text = std::fs::read_to_string(&args.disclosure)
        .with_context(|| format!("reading {}", args.disclosure.display()))?;
    let d: wire::Disclosure = serde_json::from_str(&text).context("not a disclosure file")?;
    if d.log != verifier.name() {
        bail!(
            "the disclosure is of log {}, the key of {}",
            d.log,
            verifier.name()
        );
    }
    let client = LogClient::with_tls(&args.log, &args.tls)?;
    let rel = format!("records/{}/accesses", d.index);
    let answer = block_on(async {
        let resp = client
            .http()
            .get(client.url(&rel))
            .header("stele-disclosure", &d.capability)
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!(
                "the log listed nothing: {}",
                problem_message(status, None, &bytes)
            );
        }
        serde_json::from_slice::<wire::Accesses>(&bytes).context("not an accesses answer")
    })?;
    let leaves = verify_accesses(&answer, &d, &verifier)?;
    if args.complete {
        let note = answer.checkpoint.as_deref().unwrap_or_default();
        let cp = stele_core::note::open_checkpoint(note, &verifier)
            .map_err(|e| anyhow::anyhow!("the checkpoint does not verify: {e}"))?;
        let all = block_on(entries_about(&client, &cp, d.index))?;
        let listed: Vec<u64> = answer.entries.iter().map(|e| e.index).collect();
        if all != listed {
            bail!(
                "the list is not complete: the log holds the entries {all:?} about record {}, the answer listed {listed:?}",
                d.index
            );
        }
        eprintln!(
            "complete: the {} entries of the signed tree hold no other entry about record {}",
            cp.size, d.index
        );
    }
    println!(
        "record {} of {}: {} entries about it, proven in the signed tree of {}",
        d.index,
        d.log,
        leaves.len(),
        answer.tree_size
    );
    for (l, e) in leaves.iter().zip(&answer.entries) {
        let field = |p: &str| {
            l.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let what = if field("/type") == ERASURE_TYPE {
            format!(
                "erased by {}: {}",
                field("/agency"),
                field("/attributes/reason")
            )
        } else {
            format!(
                "read by {}: {}",
                field("/agency"),
                field("/attributes/purpose")
            )
        };
        println!("  {}  entry {}  {what}", field("/ts"), e.index);
    }
    Ok(ExitCode::SUCCESS)
}

/// What a checked content answer proved.
#[derive(Debug)]
pub struct VerifiedContent {
    /// The content as committed (canonical JSON).
    pub content: Vec<u8>,
    /// The record's leaf.
    pub leaf: Value,
    /// The access entry's index.
    pub access_index: u64,
}

/// Checks an answer of `GET .../records/{index}/content`: both receipts
/// verify with the log's key; the record is entry `index` and a private
/// record; SHA-256 over the commitment context, the salt and the RFC 8785
/// form of the content is the commitment in its leaf; the access entry is a
/// `stele.access` entry of `purpose` for this record (by `reader`, when
/// given). Any failure is an error naming what did not hold.
pub fn verify_content(
    answer: &wire::Content,
    verifier: &Verifier,
    index: u64,
    purpose: &str,
    reader: Option<&str>,
) -> anyhow::Result<VerifiedContent> {
    let record = answer
        .receipt
        .verify(verifier)
        .map_err(|e| anyhow::anyhow!("the record's receipt does not verify: {e}"))?;
    if record.index != index {
        bail!("the answer is about entry {}, not {index}", record.index);
    }
    let leaf: Value = serde_json::from_str(&answer.receipt.leaf).context("the leaf is not JSON")?;
    let Some(committed) = leaf.get("commitment").and_then(Value::as_str) else {
        bail!("entry {index} is not a private record (its leaf has no commitment)");
    };
    let salt = base64::engine::general_purpose::STANDARD
        .decode(&answer.salt)
        .context("the salt is not base64")?;
    if salt.len() != SALT_LEN {
        bail!("the salt has {} bytes, not {SALT_LEN}", salt.len());
    }
    if !answer.content.is_object() {
        bail!("the content is not a JSON object");
    }
    let content = serde_json_canonicalizer::to_vec(&answer.content)
        .context("the content cannot be canonicalized")?;
    let computed = commitment(&salt, &content);
    if computed != committed {
        bail!(
            "the content does not match the record: its commitment is {computed}, the signed leaf of entry {index} commits to {committed}"
        );
    }
    let access = answer
        .access
        .verify(verifier)
        .map_err(|e| anyhow::anyhow!("the access entry's receipt does not verify: {e}"))?;
    let a: Value =
        serde_json::from_str(&answer.access.leaf).context("the access leaf is not JSON")?;
    let attrs = a.get("attributes");
    let ok = a.get("type").and_then(Value::as_str) == Some(ACCESS_TYPE)
        && attrs.and_then(|x| x.get("record")).and_then(Value::as_u64) == Some(index)
        && attrs.and_then(|x| x.get("purpose")).and_then(Value::as_str) == Some(purpose)
        && reader.is_none_or(|r| a.get("agency").and_then(Value::as_str) == Some(r));
    if !ok {
        bail!(
            "the access entry {} does not record this read: {}",
            access.index,
            answer.access.leaf
        );
    }
    Ok(VerifiedContent {
        content,
        leaf,
        access_index: access.index,
    })
}

fn purpose_header(p: &str) -> String {
    percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs `stele fetch`.
pub fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let verifier = load_verifier(args.vkey.as_deref(), args.vkey_file.as_deref())?;
    let a = &args.agent;
    let (token, client) = a.agency.connect()?;
    let reader = token.split_once('.').map(|(n, _)| n.to_string());
    let rel = format!("records/{}/content", a.index);
    let req = client
        .http()
        .get(client.url(&rel))
        .header("stele-purpose", purpose_header(&args.purpose));
    let (status, retry_after, bytes) = block_on(client.authed("GET", &rel, &token, req))?;
    if !status.is_success() {
        eprintln!(
            "error: the log did not release the content: {}",
            problem_message(status, retry_after.as_deref(), &bytes)
        );
        return Ok(ExitCode::FAILURE);
    }
    let answer: wire::Content =
        serde_json::from_slice(&bytes).context("the log's answer is not a content answer")?;
    let checked = verify_content(
        &answer,
        &verifier,
        a.index,
        &args.purpose,
        reader.as_deref(),
    )
    .context("refusing the content")?;
    if let Some(out) = &args.out {
        let mut pretty = serde_json::to_string_pretty(&answer)?;
        pretty.push('\n');
        write_atomic(out, pretty.as_bytes())?;
    }
    println!("{}", String::from_utf8_lossy(&checked.content));
    eprintln!(
        "content of record {} matches the commitment in its signed, included leaf; this read is access entry {}",
        a.index, checked.access_index
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `stele erase`.
pub fn erase(args: EraseArgs) -> anyhow::Result<ExitCode> {
    let a = &args.agent;
    let (token, client) = a.agency.connect()?;
    let rel = format!("records/{}/content", a.index);
    let req = client
        .http()
        .delete(client.url(&rel))
        .query(&[("reason", &args.reason)]);
    let (status, retry_after, bytes) = block_on(client.authed("DELETE", &rel, &token, req))?;
    if !status.is_success() {
        eprintln!(
            "error: the log did not erase the content: {}",
            problem_message(status, retry_after.as_deref(), &bytes)
        );
        return Ok(ExitCode::FAILURE);
    }
    let receipt: wire::Receipt =
        serde_json::from_slice(&bytes).context("the log's answer is not a receipt")?;
    println!("{}", serde_json::to_string_pretty(&receipt)?);
    eprintln!(
        "the content of record {} is erased; the erasure is entry {}",
        a.index, receipt.index
    );
    Ok(ExitCode::SUCCESS)
}
