//! A read node's sequencer (`[read_node]`): it follows a PostgreSQL
//! streaming replica of the writer's database and never takes the writer
//! lease, never signs, never writes. Every `refresh` it reads the replica's
//! log state; a new checkpoint is served only once it verifies with the
//! log's key and extends, provably, both the checkpoint served so far and
//! the newest one this node ever served (its *served mark*). Replica lag is
//! therefore an older but valid checkpoint, never a fork or a step back.
//!
//! The served mark is a file holding that checkpoint note (the writer's
//! high-water mark format, `mark.rs`), replaced atomically before a newer
//! checkpoint is served. It makes "never smaller" hold across restarts: a
//! node restarted onto a replica further behind (or onto another replica)
//! serves nothing for the log, and `/readyz` says why, until the replica
//! has caught up with the mark.

use super::mark;
use super::recovery::Refreshed;
use super::{Mode, Sequencer};
use crate::engine::log::Status;
use crate::engine::ReadNode;
use crate::error::DATABASE_UNAVAILABLE;
use stele_core::checkpoint::Checkpoint;

impl Sequencer {
    /// Loads the served mark and reads the replica once: the mode a read
    /// node runs in.
    pub(crate) async fn become_reader(&mut self, r: &ReadNode) -> Mode {
        if let Some(path) = &self.log.mark_file {
            match mark::load(path, &self.log.verifier).await {
                Ok(m) => self.served_mark = m,
                Err(why) => return self.refused(format!("log {}: {why}", self.log.name)),
            }
        }
        tracing::info!(
            log = %self.log.name,
            writer = r.writer_url.as_deref().unwrap_or("(not configured)"),
            served_mark = self.served_mark.as_ref().map(|m| m.size),
            "read node"
        );
        self.follow().await
    }

    pub(super) async fn reader_step(&mut self) -> Mode {
        let refresh = self
            .ctx
            .config
            .read_node
            .as_ref()
            .map_or(super::LEASE_RETRY, |r| r.refresh);
        self.idle(refresh).await;
        if self.stopping() {
            return Mode::Reader;
        }
        self.follow().await
    }

    /// One look at the replica; the status says whether what is served is
    /// current.
    async fn follow(&mut self) -> Mode {
        let behind = match self.refresh_snapshot().await {
            Refreshed::Refused => {
                self.lease = None;
                return Mode::Refused;
            }
            Refreshed::Behind(why) => Some(why),
            Refreshed::Unreadable => Some(DATABASE_UNAVAILABLE.to_string()),
            Refreshed::Same | Refreshed::Adopted => None,
        };
        let writer = self
            .ctx
            .config
            .read_node
            .as_ref()
            .and_then(|r| r.writer_url.clone());
        self.log.set_status(Status::Reader { writer, behind });
        Mode::Reader
    }

    /// On a read node: why `cp` (verified, from the replica) is not served
    /// yet, if it is smaller than the served mark.
    pub(super) fn below_served_mark(&self, cp: &Checkpoint) -> Option<String> {
        let m = self.served_mark.as_ref()?;
        (cp.size < m.size).then(|| {
            format!(
                "the replica is at tree size {}, behind the size {} this read node already served: waiting for it to catch up",
                cp.size, m.size
            )
        })
    }

    /// On a read node: moves the served mark up to `cp` before it is
    /// served. An error leaves the older checkpoint served.
    pub(super) async fn move_served_mark(
        &mut self,
        cp: &Checkpoint,
        note_text: &str,
    ) -> Result<(), String> {
        if self.ctx.config.read_node.is_none() {
            return Ok(());
        }
        let Some(path) = &self.log.mark_file else {
            return Ok(());
        };
        if self.served_mark.as_ref().is_some_and(|m| m.size >= cp.size) {
            return Ok(());
        }
        mark::store(path, note_text).await?;
        self.served_mark = Some(cp.clone());
        Ok(())
    }
}
