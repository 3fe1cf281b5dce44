//! Collecting cosignatures: a log with a witness policy (C2SP tlog-policy)
//! publishes only checkpoints a quorum of its witnesses cosigned.
//!
//! Each round (every `interval`, on the writer; once more at the end of
//! recovery, before anything new is signed) takes the log's latest signed
//! checkpoint and sends it, concurrently, to every policy witness that has
//! not cosigned it yet (C2SP tlog-witness `add-checkpoint`), with a
//! consistency proof from the size that witness last cosigned. That size
//! starts unknown (0: no proof); a `409` with `text/x.tlog.size` tells it,
//! and the request is sent again from there. When the cosigning witnesses
//! meet the quorum, the note with their cosignature lines is checked under
//! the policy, stored durably (`LogWriter::store_witnessed`), and only then
//! published: `GET checkpoint`, `?wait=witnessed` and the receipt endpoint
//! serve it.
//!
//! What a witness can say, and what it means here:
//! - `200`: its cosignature (verified against its key before it counts).
//! - `409` + size: it cosigned another size; re-send from there. A size
//!   *above* the stored tree means the database is behind what the
//!   witnesses saw (a restore): an **alarm**.
//! - `409` (plain): it cosigned another root at this size (a fork);
//!   `422`: our proof does not lead from what it cosigned to our tree (not
//!   an extension): both **alarms**.
//! - anything else (unreachable, timeout, `403`, `404`, `5xx`): a
//!   **failure** of that witness this round.
//!
//! An alarm stops the sequencer for good in this process (it refuses
//! writes, `/readyz` names the alarm): the tree it holds is not an
//! extension of what witnesses already cosigned. Failures only stop
//! publication: records still integrate with log-signed receipts, the
//! published (witnessed) checkpoint stays where it was, `/readyz` and the
//! `witness_quorum` metric say so, and the next round tries again. There is
//! no fail-open switch: a log with a policy never publishes a checkpoint
//! the policy does not accept. A witness that missed a published
//! checkpoint's round (down, slow) is asked again every round until it
//! cosigns it; its line is then added to the published note.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use stele_core::cosignature::{add_signature_lines, Cosignature};
use stele_core::policy::Policy;
use stele_core::witness::{
    parse_response, verify_cosignatures_response, AddCheckpointRequest, AddCheckpointResponse,
    ADD_CHECKPOINT_PATH,
};
use tokio::sync::{watch, Mutex};

use super::log::Log;
use super::sequencer::Ctx;
use super::tiles::{ProofJob, TileSource};
use crate::metrics::WitnessLabels;

/// How many times one witness is asked in one round (a `409` with its size
/// costs one more ask).
const MAX_ASKS: usize = 3;

/// While a client waits for a witnessed receipt, rounds come this often
/// (or at the interval, if that is shorter) instead of once per interval.
const HURRIED_SPACING: Duration = Duration::from_millis(100);

/// A log's witness policy and how it is applied.
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    pub policy: Policy,
    /// The policy file as written (served for pinning).
    pub policy_text: String,
    /// Time between rounds.
    pub interval: Duration,
    /// Longest one `add-checkpoint` request may take.
    pub timeout: Duration,
}

impl WitnessConfig {
    /// Checks a policy for use by the log whose key is `vkey`: the log must
    /// be one of its `log` lines, every witness needs a URL, and the
    /// quorum must not be `none`.
    pub fn new(
        policy_text: String,
        vkey: &str,
        interval: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let policy = Policy::parse(policy_text.as_bytes())
            .map_err(|e| anyhow::anyhow!("line {}: {}", e.line, e.message))?;
        anyhow::ensure!(
            policy.logs().iter().any(|l| l.verifier.vkey() == vkey),
            "the policy has no `log` line with this log's key ({vkey})"
        );
        anyhow::ensure!(
            policy.quorum().is_some(),
            "the policy's quorum is `none`: it would publish uncosigned checkpoints; remove the policy instead"
        );
        for w in policy.witnesses() {
            anyhow::ensure!(
                w.url.is_some(),
                "witness {} has no URL in the policy: the log cannot send it checkpoints",
                w.name
            );
        }
        anyhow::ensure!(
            !interval.is_zero(),
            "the witnessing interval must be above 0"
        );
        anyhow::ensure!(!timeout.is_zero(), "the witness timeout must be above 0");
        Ok(WitnessConfig {
            policy,
            policy_text,
            interval,
            timeout,
        })
    }
}

/// The latest witnessed checkpoint: the log's note with a quorum of
/// cosignature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub size: u64,
    pub note: Arc<str>,
}

/// The collector's memory between rounds.
#[derive(Default)]
struct Round {
    /// The size each witness (by policy index) last said it cosigned.
    known: Vec<Option<u64>>,
    /// The log-signed note being collected for.
    note: Option<Arc<str>>,
    size: u64,
    /// The cosignatures collected for `note`, by witness.
    cosigned: Vec<Option<Cosignature>>,
}

/// What one witness said in a round.
enum Answer {
    Cosigned(Cosignature),
    /// It cosigned a larger tree than storage holds.
    Ahead(u64),
    /// Not an extension of what it cosigned (its words).
    Alarm(String),
    Failed(String),
}

/// One log's witnesses.
pub(crate) struct Federation {
    pub config: WitnessConfig,
    client: reqwest::Client,
    round: Mutex<Round>,
    published: watch::Sender<Option<Arc<Published>>>,
    /// Why the last round did not publish (None: it did, or nothing new).
    failure: RwLock<Option<String>>,
    /// A witness showed that this log's tree is not an extension of what it
    /// cosigned: never write again in this process.
    alarm: RwLock<Option<String>>,
    /// A client waits for a witnessed receipt: the next round comes sooner.
    wake: tokio::sync::Notify,
}

impl Federation {
    pub fn new(config: WitnessConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("stele/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let n = config.policy.witnesses().len();
        Ok(Federation {
            config,
            client,
            round: Mutex::new(Round {
                known: vec![None; n],
                cosigned: vec![None; n],
                ..Round::default()
            }),
            published: watch::channel(None).0,
            failure: RwLock::new(None),
            alarm: RwLock::new(None),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub fn published(&self) -> Option<Arc<Published>> {
        self.published.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.published.subscribe()
    }

    /// Asks for the next round sooner than the interval (`HURRIED_SPACING`
    /// after the last one): a client waits for a witnessed receipt.
    pub fn hurry(&self) {
        self.wake.notify_one();
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.read().expect("failure lock").clone()
    }

    pub fn alarm(&self) -> Option<String> {
        self.alarm.read().expect("alarm lock").clone()
    }

    fn set_failure(&self, why: Option<String>) {
        *self.failure.write().expect("failure lock") = why;
    }

    fn raise(&self, why: String) {
        let mut alarm = self.alarm.write().expect("alarm lock");
        if alarm.is_none() {
            tracing::error!("{why}");
            *alarm = Some(why);
        }
    }

    /// Publishes `note` (size `size`) if it verifies under the policy, is
    /// for this log, and is larger than what is published or the same
    /// checkpoint with other cosignatures. For a stored
    /// witnessed checkpoint read back (at start, or by a follower).
    pub fn adopt(&self, log: &Log, ctx: &Ctx, size: u64, note: &str) -> Result<bool, String> {
        // Followers read the stored one back every interval: only a larger
        // one, or the same one with more cosignatures (a witness that
        // missed its round answered later), is worth checking.
        let published = self.published();
        if published
            .as_ref()
            .is_some_and(|p| p.size > size || *p.note == *note)
        {
            return Ok(false);
        }
        let w = self
            .config
            .policy
            .verify(note)
            .map_err(|e| format!("the stored witnessed checkpoint fails the policy: {e}"))?;
        if w.checkpoint.size != size || w.checkpoint.origin.as_str() != &*log.origin {
            return Err(format!(
                "the stored witnessed checkpoint is for {} at size {}, stored as size {size}",
                w.checkpoint.origin, w.checkpoint.size
            ));
        }
        if let Some(p) = published.filter(|p| p.size == size) {
            if stele_core::note::parse_unverified_checkpoint(&p.note).ok() != Some(w.checkpoint) {
                return Err(format!(
                    "the stored witnessed checkpoint of size {size} is not the checkpoint this process published at that size"
                ));
            }
        }
        self.publish(log, ctx, size, note);
        Ok(true)
    }

    fn publish(&self, log: &Log, ctx: &Ctx, size: u64, note: &str) {
        ctx.metrics
            .witnessed_tree_size
            .get_or_create(&log.label)
            .set(size as i64);
        self.published.send_replace(Some(Arc::new(Published {
            size,
            note: Arc::from(note),
        })));
    }

    /// Loads the stored witnessed checkpoint (start-up, followers).
    pub async fn load(&self, log: &Log, ctx: &Ctx) {
        match ctx.storage.witnessed_checkpoint(&log.name).await {
            Ok(Some((size, note))) => {
                if size <= log.snapshot().size {
                    if let Err(why) = self.adopt(log, ctx, size, &note) {
                        tracing::error!(log = %log.name, "{why}");
                        self.set_failure(Some(why));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(log = %log.name, "cannot read the witnessed checkpoint: {e}"),
        }
    }

    /// One round for the log's latest signed checkpoint. Returns the alarm,
    /// if a witness raised one. With `check` (after a start, a restore or a
    /// takeover, before anything new is signed) every witness is asked,
    /// even for a checkpoint already published: its answer says whether
    /// it cosigned a tree this one does not extend.
    pub async fn collect(&self, log: &Log, ctx: &Ctx, check: bool) -> Option<String> {
        if let Some(a) = self.alarm() {
            return Some(a);
        }
        let snapshot = log.snapshot();
        let note = snapshot.checkpoint.clone()?;
        let size = snapshot.size;
        let mut round = self.round.lock().await;
        // Published already: only the witnesses that missed this note's
        // round are asked again (a witness back after an outage is brought
        // up to date without waiting for a new entry, and its cosignature
        // joins the published note).
        let current = self.published().is_some_and(|p| p.size >= size);
        let stragglers = round.note.as_deref() == Some(note.as_str())
            && round.cosigned.iter().any(Option::is_none);
        if !check && current && !stragglers {
            return None;
        }
        if check || round.note.as_deref() != Some(note.as_str()) {
            round.note = Some(Arc::from(note.as_str()));
            round.size = size;
            round.cosigned.iter_mut().for_each(|c| *c = None);
        }
        let witnesses = self.config.policy.witnesses();
        let source = TileSource::new(
            log.name.as_arc(),
            &*ctx.storage,
            &ctx.cache,
            &snapshot,
            None,
        );
        let asks = (0..witnesses.len())
            .filter(|&i| round.cosigned[i].is_none())
            .map(|i| {
                let known = round.known[i];
                let source = &source;
                let note = note.as_str();
                async move { (i, self.ask(i, known, size, note, source).await) }
            })
            .collect::<Vec<_>>();
        let answers = futures::future::join_all(asks).await;
        let mut problems = Vec::new();
        let mut gained = false;
        for (i, (known, answer)) in answers {
            round.known[i] = known;
            let name = witnesses[i].name.to_string();
            let outcome = match answer {
                Answer::Cosigned(c) => {
                    round.cosigned[i] = Some(c);
                    gained = true;
                    "cosigned"
                }
                Answer::Ahead(theirs) => match ctx.storage.log_state(&log.name).await {
                    Ok(Some(stored)) if stored.tree_size >= theirs => {
                        problems.push(format!(
                            "{name}: cosigned size {theirs}, newer than this process's tree {size}"
                        ));
                        "failed"
                    }
                    Ok(_) => {
                        self.raise(format!(
                            "witness {name} already cosigned a tree of size {theirs}, but the database holds only {size} entries: the database is behind what the witnesses saw (restored from an older backup, or the wrong database?); refusing to sign"
                        ));
                        "alarm"
                    }
                    Err(e) => {
                        problems.push(format!("{name}: said size {theirs}; storage: {e}"));
                        "failed"
                    }
                },
                Answer::Alarm(why) => {
                    self.raise(format!(
                        "witness {name} refuses this tree of size {size} as not an extension of what it cosigned ({why}): a fork; refusing to sign"
                    ));
                    "alarm"
                }
                Answer::Failed(why) => {
                    problems.push(format!("{name}: {why}"));
                    "failed"
                }
            };
            ctx.metrics
                .witness_requests
                .get_or_create(&WitnessLabels {
                    log: log.name.to_string(),
                    witness: name,
                    outcome: outcome.into(),
                })
                .inc();
        }
        if let Some(a) = self.alarm() {
            self.set_failure(Some(a.clone()));
            ctx.metrics.witness_quorum.get_or_create(&log.label).set(0);
            return Some(a);
        }
        if !check && current && !gained {
            // A straggler still missing: what is published stands.
            return None;
        }
        let cosigned: HashSet<usize> = (0..witnesses.len())
            .filter(|&i| round.cosigned[i].is_some())
            .collect();
        let quorum = self.config.policy.quorum_met(&cosigned);
        let result = if quorum {
            self.finish(log, ctx, size, &note, &round).await
        } else {
            Err(format!(
                "checkpoint publication stopped: the checkpoint at size {size} has {} of the cosignatures the quorum needs ({})",
                cosigned.len(),
                if problems.is_empty() {
                    "no witness answered".to_string()
                } else {
                    problems.join("; ")
                }
            ))
        };
        match result {
            Ok(()) => {
                self.set_failure(None);
                ctx.metrics.witness_quorum.get_or_create(&log.label).set(1);
            }
            Err(why) => {
                tracing::warn!(log = %log.name, "{why}");
                self.set_failure(Some(why));
                ctx.metrics.witness_quorum.get_or_create(&log.label).set(0);
            }
        }
        None
    }

    /// The quorum is met: check the cosigned note under the policy, store
    /// it, publish it.
    async fn finish(
        &self,
        log: &Log,
        ctx: &Ctx,
        size: u64,
        note: &str,
        round: &Round,
    ) -> Result<(), String> {
        let lines = round.cosigned.iter().flatten().map(|c| c.line.as_str());
        let witnessed = add_signature_lines(note, lines)
            .map_err(|e| format!("cannot add the cosignatures to the checkpoint: {e}"))?;
        self.config
            .policy
            .verify(&witnessed)
            .map_err(|e| format!("the cosigned checkpoint fails the policy: {e}"))?;
        match ctx.storage.store_witnessed(&log.name, size, &witnessed).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "storage refused the witnessed checkpoint at size {size} (a larger one is stored, or the tree is smaller)"
                ))
            }
            Err(e) => {
                return Err(format!(
                    "cannot store the witnessed checkpoint at size {size}: {e}"
                ))
            }
        }
        self.publish(log, ctx, size, &witnessed);
        tracing::debug!(log = %log.name, size, "published a witnessed checkpoint");
        Ok(())
    }

    /// Asks witness `i` to cosign `note` (size `size`), from the size it is
    /// known to have. Returns the size it is known to have afterwards.
    async fn ask(
        &self,
        i: usize,
        mut known: Option<u64>,
        size: u64,
        note: &str,
        source: &TileSource<'_>,
    ) -> (Option<u64>, Answer) {
        let w = &self.config.policy.witnesses()[i];
        let Some(url) = &w.url else {
            return (known, Answer::Failed("no URL in the policy".into()));
        };
        let url = format!("{}{ADD_CHECKPOINT_PATH}", url.trim_end_matches('/'));
        for _ in 0..MAX_ASKS {
            let old = known.unwrap_or(0);
            if old > size {
                return (known, Answer::Ahead(old));
            }
            let proof = if old == 0 || old == size {
                Vec::new()
            } else {
                match source
                    .prove(&[ProofJob::Consistency {
                        from: old,
                        to: size,
                    }])
                    .await
                {
                    Ok(mut p) => p.remove(0),
                    Err(e) => {
                        return (
                            known,
                            Answer::Failed(format!(
                                "cannot prove consistency from {old} to {size}: {e}"
                            )),
                        )
                    }
                }
            };
            let body = AddCheckpointRequest::new(old, proof, note).encode();
            let resp = match self.client.post(&url).body(body).send().await {
                Ok(r) => r,
                Err(e) => return (known, Answer::Failed(format!("unreachable: {e}"))),
            };
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = match read_limited(resp).await {
                Ok(b) => b,
                Err(e) => return (known, Answer::Failed(e)),
            };
            let parsed = match parse_response(status, content_type.as_deref(), &bytes) {
                Ok(p) => p,
                Err(e) => return (known, Answer::Failed(format!("bad answer: {}", e.0))),
            };
            match parsed {
                AddCheckpointResponse::Cosigned(lines) => {
                    return match verify_cosignatures_response(note, &lines, &w.verifier) {
                        Ok(mut c) if !c.is_empty() => (Some(size), Answer::Cosigned(c.remove(0))),
                        Ok(_) => (
                            known,
                            Answer::Failed("answered 200 without its cosignature".into()),
                        ),
                        Err(e) => (
                            known,
                            Answer::Failed(format!("its cosignature does not verify: {e}")),
                        ),
                    };
                }
                AddCheckpointResponse::SizeConflict(theirs) => {
                    if known == Some(theirs) {
                        return (
                            known,
                            Answer::Failed(format!(
                                "answered 409 with size {theirs}, the size sent"
                            )),
                        );
                    }
                    known = Some(theirs);
                }
                AddCheckpointResponse::Refused { status, message } => {
                    return match status {
                        409 | 422 => (known, Answer::Alarm(format!("{status}: {message}"))),
                        _ => (known, Answer::Failed(format!("{status}: {message}"))),
                    };
                }
            }
        }
        (
            known,
            Answer::Failed(format!("its size kept changing over {MAX_ASKS} requests")),
        )
    }
}

/// Most bytes read from a witness's answer.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading its answer: {e}"))?
    {
        if out.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("its answer is over {MAX_ANSWER_BYTES} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Runs rounds for `log` every interval (sooner while clients wait for
/// witnessed receipts, at most every `HURRIED_SPACING`) until `stop`: on
/// the writer a round; on any other process, the stored witnessed
/// checkpoint is read back (so followers publish what the writer's
/// witnesses cosigned).
pub(crate) async fn run(
    fed: Arc<Federation>,
    log: Arc<Log>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    fed.load(&log, &ctx).await;
    let spacing = HURRIED_SPACING.min(fed.config.interval);
    loop {
        let last = tokio::time::Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(fed.config.interval) => {}
            _ = fed.wake.notified() => {
                tokio::select! {
                    _ = tokio::time::sleep_until(last + spacing) => {}
                    _ = stop.changed() => return,
                }
            }
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if log.status() == super::log::Status::Writable {
            fed.collect(&log, &ctx, false).await;
        } else {
            fed.load(&log, &ctx).await;
        }
    }
}
