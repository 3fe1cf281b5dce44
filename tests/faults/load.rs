//! Load: clients that submit distinct records until told to stop, and the
//! collector that feeds every answer through the checker as it arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use stele_core::receipt::Receipt;
use stele_testkit::checker::LogChecker;
use tokio::sync::mpsc;

use super::{AGENCY, LOG, RECORD_TYPE};

#[derive(Debug)]
pub enum Outcome {
    Receipt { status: u16, receipt: Box<Receipt> },
    Status { status: u16, body: String },
    Transport { timed_out: bool, error: String },
}

#[derive(Debug)]
pub struct Attempt {
    pub subject: String,
    pub target: String,
    pub started: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

/// Where clients send their submissions; tests change it when servers
/// come and go. Attempt `k` of record `i` goes to `targets[(i + k) % len]`.
pub type Targets = Arc<RwLock<Vec<String>>>;

pub struct Load {
    stop: Arc<AtomicBool>,
    rx: mpsc::UnboundedReceiver<Attempt>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub struct LoadSpec {
    pub clients: usize,
    /// Records to submit in all (None: until stopped).
    pub records: Option<u64>,
    /// Prefix of every subject, so reruns never collide.
    pub prefix: String,
    pub client_timeout: Duration,
}

pub fn submitter(token: &str, timeout: Duration) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse()?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .build()?)
}

fn record_body(subject: &str) -> serde_json::Value {
    serde_json::json!({ "type": RECORD_TYPE, "subject": subject, "attributes": { "suite": "faults" } })
}

pub async fn submit_once(http: &reqwest::Client, target: &str, subject: &str) -> Attempt {
    let started = Instant::now();
    let url = format!("{target}/logs/{LOG}/records");
    let outcome = match http.post(&url).json(&record_body(subject)).send().await {
        Err(e) => Outcome::Transport {
            timed_out: e.is_timeout(),
            error: e.to_string(),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            match response.text().await {
                Err(e) => Outcome::Transport {
                    timed_out: e.is_timeout(),
                    error: e.to_string(),
                },
                Ok(body) if status == 200 || status == 201 => {
                    match serde_json::from_str::<Receipt>(&body) {
                        Ok(receipt) => Outcome::Receipt {
                            status,
                            receipt: Box::new(receipt),
                        },
                        Err(e) => Outcome::Status {
                            status,
                            body: format!("unparsable receipt ({e}): {body}"),
                        },
                    }
                }
                Ok(body) => Outcome::Status { status, body },
            }
        }
    };
    Attempt {
        subject: subject.to_string(),
        target: target.to_string(),
        started,
        latency: started.elapsed(),
        outcome,
    }
}

impl Load {
    pub fn start(spec: LoadSpec, token: &str, targets: Targets) -> Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let http = submitter(token, spec.client_timeout)?;
        let prefix = Arc::new(spec.prefix);
        let tasks = (0..spec.clients)
            .map(|_| {
                let (stop, next, tx, http, targets, prefix) = (
                    stop.clone(),
                    next.clone(),
                    tx.clone(),
                    http.clone(),
                    targets.clone(),
                    prefix.clone(),
                );
                let limit = spec.records;
                tokio::spawn(async move {
                    'records: loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if stop.load(Ordering::SeqCst) || limit.is_some_and(|l| i >= l) {
                            break;
                        }
                        let subject = format!("{prefix}-{i}");
                        for k in 0u64.. {
                            if stop.load(Ordering::SeqCst) {
                                break 'records;
                            }
                            let target = {
                                let t = targets.read().expect("targets lock");
                                t[((i + k) % t.len() as u64) as usize].clone()
                            };
                            let attempt = submit_once(&http, &target, &subject).await;
                            let pause = match &attempt.outcome {
                                Outcome::Receipt { .. } => None,
                                Outcome::Status {
                                    status: 503 | 429, ..
                                } => Some(Duration::from_millis(25)),
                                Outcome::Status { .. } | Outcome::Transport { .. } => {
                                    Some(Duration::from_millis(50))
                                }
                            };
                            let _ = tx.send(attempt);
                            match pause {
                                None => break,
                                Some(p) => tokio::time::sleep(p).await,
                            }
                        }
                    }
                })
            })
            .collect();
        Ok(Load { stop, rx, tasks })
    }

    /// Tells every client to stop after its current request and waits for them.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Everything the clients saw, fed through the checker as it arrives.
#[derive(Default)]
pub struct Collector {
    /// The receipt each subject got (one per subject; a duplicate
    /// submission must get the same index back).
    pub receipts: BTreeMap<String, Receipt>,
    pub attempts: Vec<Attempt>,
    /// Subjects ever submitted.
    pub subjects: BTreeSet<String>,
}

impl Collector {
    pub fn absorb(&mut self, attempt: Attempt, checker: &mut LogChecker) -> Result<()> {
        self.subjects.insert(attempt.subject.clone());
        if let Outcome::Receipt { receipt, status } = &attempt.outcome {
            checker
                .add_receipt(receipt)
                .with_context(|| format!("receipt from {}", attempt.target))?;
            let leaf: serde_json::Value =
                serde_json::from_str(&receipt.leaf).context("leaf is not JSON")?;
            ensure!(
                leaf["subject"] == attempt.subject.as_str()
                    && leaf["agency"] == AGENCY
                    && leaf["type"] == RECORD_TYPE,
                "receipt for {} (status {status}) carries leaf {}",
                attempt.subject,
                receipt.leaf
            );
            if let Some(previous) = self.receipts.get(&attempt.subject) {
                ensure!(
                    previous.index == receipt.index && previous.leaf_hash == receipt.leaf_hash,
                    "{} was acknowledged twice with different entries: index {} and {}",
                    attempt.subject,
                    previous.index,
                    receipt.index
                );
            } else {
                self.receipts
                    .insert(attempt.subject.clone(), (**receipt).clone());
            }
        }
        self.attempts.push(attempt);
        Ok(())
    }

    /// Reads attempts until `done` holds (checked after each), the clients
    /// have all finished, or `deadline` passes (an error). With `check`, the
    /// checker verifies the live log every 250 ms meanwhile.
    pub async fn pump(
        &mut self,
        load: &mut Load,
        checker: &mut LogChecker,
        check: bool,
        timeout: Duration,
        mut done: impl FnMut(&Collector) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            if done(self) {
                return Ok(());
            }
            tokio::select! {
                attempt = load.rx.recv() => match attempt {
                    Some(a) => self.absorb(a, checker)?,
                    None => return Ok(()),
                },
                _ = tick.tick() => {
                    if check {
                        checker.check().await.context("live check")?;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("timed out after {timeout:?}: {}", self.summary());
                }
            }
        }
    }

    /// Stops the clients and absorbs what they reported last.
    pub async fn finish(&mut self, load: &mut Load, checker: &mut LogChecker) -> Result<()> {
        load.stop().await;
        while let Ok(a) = load.rx.try_recv() {
            self.absorb(a, checker)?;
        }
        Ok(())
    }

    pub fn summary(&self) -> String {
        let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
        for a in &self.attempts {
            let key = match &a.outcome {
                Outcome::Receipt { status, .. } => status.to_string(),
                Outcome::Status { status, .. } => status.to_string(),
                Outcome::Transport {
                    timed_out: true, ..
                } => "timeout".into(),
                Outcome::Transport { .. } => "transport error".into(),
            };
            *by_outcome.entry(key).or_default() += 1;
        }
        format!(
            "{} receipts, {} attempts by outcome {by_outcome:?}",
            self.receipts.len(),
            self.attempts.len()
        )
    }

    /// Submits every subject that never got a receipt again, one at a time,
    /// until each has one (deduplication must answer those that were
    /// committed without an acknowledgement with their existing entry).
    pub async fn settle(
        &mut self,
        token: &str,
        target: &str,
        checker: &mut LogChecker,
    ) -> Result<usize> {
        let http = submitter(token, Duration::from_secs(30))?;
        let missing: Vec<String> = self
            .subjects
            .iter()
            .filter(|s| !self.receipts.contains_key(*s))
            .cloned()
            .collect();
        for subject in &missing {
            let mut tries = 0;
            loop {
                let attempt = submit_once(&http, target, subject).await;
                let got = matches!(attempt.outcome, Outcome::Receipt { .. });
                let detail = format!("{:?}", attempt.outcome);
                self.absorb(attempt, checker)?;
                if got {
                    break;
                }
                tries += 1;
                ensure!(
                    tries < 100,
                    "resubmitting {subject}: no receipt after {tries} tries, last {detail}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(missing.len())
    }
}
