//! Prometheus metrics, one registry per process (or per test server).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogLabel {
    pub log: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubmissionLabels {
    pub log: String,
    /// `created`, `duplicate`, `rejected`, `rate-limited`, `pushback`, `failed`
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The matched route template (`/logs/{log}/records`), or `unmatched`:
    /// a bounded set, whatever paths clients send.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WitnessLabels {
    pub log: String,
    /// The witness's name in the log's policy.
    pub witness: String,
    /// `cosigned`, `size-conflict`, `refused`, `alarm`, `failed`
    pub outcome: String,
}

/// Every metric the service exports.
pub struct Metrics {
    pub registry: Registry,
    pub submissions: Family<SubmissionLabels, Counter>,
    pub batch_size: Family<LogLabel, Histogram>,
    pub time_to_receipt: Family<LogLabel, Histogram>,
    pub batch_commit_seconds: Family<LogLabel, Histogram>,
    pub queue_depth: Family<LogLabel, Gauge>,
    pub tree_size: Family<LogLabel, Gauge>,
    pub http_requests: Family<HttpLabels, Counter>,
    /// Size of the latest checkpoint a quorum of witnesses cosigned.
    pub witnessed_tree_size: Family<LogLabel, Gauge>,
    /// 1 while the last witnessing round reached the quorum, 0 while it did not.
    pub witness_quorum: Family<LogLabel, Gauge>,
    pub witness_requests: Family<WitnessLabels, Counter>,
    /// Reads of private content, by outcome (`released`, `refused`,
    /// `erased`, `corrupt`).
    pub content_reads: Family<SubmissionLabels, Counter>,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    /// Tree size of the checkpoint in the publishing bucket.
    pub published_tree_size: Family<LogLabel, Gauge>,
    /// Entries the log shows that the bucket does not have yet.
    pub publish_lag_entries: Family<LogLabel, Gauge>,
    /// How long the bucket has lacked a checkpoint the log shows.
    pub publish_lag_seconds: Family<LogLabel, Gauge<f64, AtomicU64>>,
    /// From a checkpoint shown by the log to a bucket checkpoint covering it.
    pub publish_delay: Family<LogLabel, Histogram>,
    /// Objects put create-only, by outcome (`new`, `present`: identical
    /// already, `conflict`: different already, `failed`).
    pub publish_objects: Family<SubmissionLabels, Counter>,
    /// Publishing rounds that failed and will be tried again.
    pub publish_failures: Family<LogLabel, Counter>,
    /// 1 once publishing stopped on an alarm (a conflicting object).
    pub publish_alarm: Family<LogLabel, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stele");
        let submissions = Family::<SubmissionLabels, Counter>::default();
        registry.register(
            "submissions",
            "Record submissions by outcome",
            submissions.clone(),
        );
        let batch_size = Family::<LogLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 14))
        });
        registry.register(
            "batch_size",
            "Records per committed batch",
            batch_size.clone(),
        );
        let time_to_receipt = Family::<LogLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "time_to_receipt_seconds",
            "Time from a submission entering the queue to its receipt",
            time_to_receipt.clone(),
        );
        let batch_commit_seconds = Family::<LogLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "batch_commit_seconds",
            "Time to commit one batch transaction",
            batch_commit_seconds.clone(),
        );
        let queue_depth = Family::<LogLabel, Gauge>::default();
        registry.register(
            "queue_depth",
            "Pending submissions per log",
            queue_depth.clone(),
        );
        let tree_size = Family::<LogLabel, Gauge>::default();
        registry.register(
            "tree_size",
            "Size of the latest signed checkpoint",
            tree_size.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let witnessed_tree_size = Family::<LogLabel, Gauge>::default();
        registry.register(
            "witnessed_tree_size",
            "Size of the latest checkpoint a quorum of the log's witnesses cosigned (the published one)",
            witnessed_tree_size.clone(),
        );
        let witness_quorum = Family::<LogLabel, Gauge>::default();
        registry.register(
            "witness_quorum",
            "1 while the log's latest checkpoint reached its witness quorum, 0 while publication is stopped",
            witness_quorum.clone(),
        );
        let witness_requests = Family::<WitnessLabels, Counter>::default();
        registry.register(
            "witness_requests",
            "add-checkpoint requests to each witness, by outcome",
            witness_requests.clone(),
        );
        let content_reads = Family::<SubmissionLabels, Counter>::default();
        registry.register(
            "content_reads",
            "reads of private records' content: released (after its access entry), refused (no read grant), erased, corrupt (the payload does not match its commitment)",
            content_reads.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "HTTP connections open now",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because max_connections were open",
            connections_refused.clone(),
        );
        let published_tree_size = Family::<LogLabel, Gauge>::default();
        registry.register(
            "published_tree_size",
            "Tree size of the checkpoint in the publishing bucket",
            published_tree_size.clone(),
        );
        let publish_lag_entries = Family::<LogLabel, Gauge>::default();
        registry.register(
            "publish_lag_entries",
            "Entries the log shows that the publishing bucket does not have yet",
            publish_lag_entries.clone(),
        );
        let publish_lag_seconds = Family::<LogLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "publish_lag_seconds",
            "How long the publishing bucket has lacked a checkpoint the log shows (0: up to date)",
            publish_lag_seconds.clone(),
        );
        // Buckets 25 % apart (1 ms to ~44 s): fine enough for the p50 and
        // p99 BENCHMARKS.md quotes.
        let publish_delay = Family::<LogLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 1.25, 48))
        });
        registry.register(
            "publish_delay_seconds",
            "From a checkpoint the log shows to a checkpoint in the bucket that covers it",
            publish_delay.clone(),
        );
        let publish_objects = Family::<SubmissionLabels, Counter>::default();
        registry.register(
            "publish_objects",
            "Objects put create-only into the publishing bucket: new, present (identical already), conflict (different already: alarm), failed",
            publish_objects.clone(),
        );
        let publish_failures = Family::<LogLabel, Counter>::default();
        registry.register(
            "publish_failures",
            "Publishing rounds that failed and are tried again",
            publish_failures.clone(),
        );
        let publish_alarm = Family::<LogLabel, Gauge>::default();
        registry.register(
            "publish_alarm",
            "1 once publishing stopped because the bucket holds what this log never wrote",
            publish_alarm.clone(),
        );
        Metrics {
            registry,
            published_tree_size,
            publish_lag_entries,
            publish_lag_seconds,
            publish_delay,
            publish_objects,
            publish_failures,
            publish_alarm,
            connections_open,
            connections_refused,
            submissions,
            batch_size,
            time_to_receipt,
            batch_commit_seconds,
            queue_depth,
            tree_size,
            http_requests,
            witnessed_tree_size,
            witness_quorum,
            witness_requests,
            content_reads,
        }
    }

    /// Counts one read of private content of `log` with `outcome`.
    pub fn content_read(&self, log: &str, outcome: &str) {
        self.content_reads
            .get_or_create(&SubmissionLabels {
                log: log.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts one object put into the publishing bucket with `outcome`.
    pub fn published(&self, log: &str, outcome: &str) {
        self.publish_objects
            .get_or_create(&SubmissionLabels {
                log: log.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts `n` submissions to `log` with `outcome` (`created`,
    /// `duplicate`, `rejected`, `rate-limited`, `pushback`, `failed`).
    pub fn submitted(&self, log: &str, outcome: &str, n: u64) {
        self.submissions
            .get_or_create(&SubmissionLabels {
                log: log.to_string(),
                outcome: outcome.to_string(),
            })
            .inc_by(n);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
