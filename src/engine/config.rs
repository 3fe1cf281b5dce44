//! What the engine is started with: the logs ([`LogConfig`]) and the
//! sequencer and cache knobs ([`EngineConfig`]). Built from the validated
//! [`Config`](crate::config::Config) by `Config::settings`; the defaults
//! here are the defaults of the whole service.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stele_core::note::Signer;

use super::quota::QuotaConfig;
use crate::names::LogName;

/// One log's static configuration.
pub struct LogConfig {
    pub name: LogName,
    /// Checkpoint origin; must equal the key's name.
    pub origin: String,
    /// The signing key; None on a read node, which only verifies.
    pub signer: Option<Arc<Signer>>,
    /// The log's verifier key (the signer's, on a writer).
    pub vkey: String,
    /// The high-water mark file (the newest checkpoint signed and stored,
    /// beside the key: `mark_file_for(key_file)`); `None`: no mark, storage
    /// is only checked against itself.
    pub mark_file: Option<PathBuf>,
    /// Accept records of types the registry does not know (unvalidated, no
    /// `type_version`): for logs that predate the registry. Default false:
    /// every record's type must be registered.
    pub accept_unregistered: bool,
    /// The log's witness policy: publish only checkpoints its quorum
    /// cosigned (`witnessing`). None: publish every signed checkpoint.
    pub witnesses: Option<super::witnessing::WitnessConfig>,
}

impl LogConfig {
    /// A writer's log signed with `signer` (its name is the origin): no
    /// mark file, no witnesses, registered types only.
    pub fn for_signer(name: LogName, signer: Signer) -> Self {
        LogConfig {
            name,
            origin: signer.name().to_string(),
            vkey: signer.vkey(),
            signer: Some(Arc::new(signer)),
            mark_file: None,
            accept_unregistered: false,
            witnesses: None,
        }
    }
}

/// Sequencer and cache knobs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most records in one batch (one transaction).
    pub max_batch: usize,
    /// Longest an idle sequencer waits for more records once it has a
    /// first one (0: none — it commits at once, and what arrives during
    /// that commit is the next batch).
    pub max_wait: Duration,
    /// Pending submissions per log beyond which new ones get 503.
    pub queue_capacity: usize,
    /// Bytes of full tiles and entry bundles kept in memory.
    pub cache_bytes: u64,
    /// Directory and size in bytes of the tile cache's disk tier (full hash
    /// tiles with their interiors in an unlinked scratch file); `None`: no
    /// disk tier.
    pub disk_cache: Option<(PathBuf, u64)>,
    /// How long the registered agencies are held before they are read
    /// again (revocations take at most this long to bite). Zero: read them
    /// for every token check.
    pub token_cache_ttl: Duration,
    /// Retry-After sent with 503s.
    pub retry_after: Duration,
    /// Per-agency quotas and queue shares.
    pub quotas: QuotaConfig,
    /// The payload store's keys; None: this server takes no private records.
    pub vault: Option<Arc<crate::vault::Vault>>,
    /// Largest `document` of a private record, in bytes.
    pub max_document_bytes: usize,
    /// Where the writer publishes every log's tiles; None: nowhere.
    pub publish: Option<Arc<super::publishing::PublishTarget>>,
    /// This process is a read node (on a streaming replica): it never
    /// takes the writer lease, never signs, never writes.
    pub read_node: Option<ReadNode>,
}

/// A read node's settings.
#[derive(Clone, Debug)]
pub struct ReadNode {
    /// The writer's public URL, named in the answer to a write.
    pub writer_url: Option<String>,
    /// How often the replica's state is read again.
    pub refresh: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 1000,
            max_wait: Duration::ZERO,
            queue_capacity: 20_000,
            cache_bytes: 64 << 20,
            disk_cache: None,
            token_cache_ttl: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            quotas: QuotaConfig::default(),
            vault: None,
            max_document_bytes: 36 * 1024,
            publish: None,
            read_node: None,
        }
    }
}
