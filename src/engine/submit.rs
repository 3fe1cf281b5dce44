//! Writes: a submission is checked against the agency's record types and
//! the log's status, takes queue slots, and waits for its sequencer's
//! answer.

use std::time::Instant;

use super::agency::{type_allowed, Agency};
use super::log::{Integrated, Pending, Request};
use super::{Engine, LogError};
use crate::records::{dedup_key, Record};

impl Engine {
    /// Submits one record and waits for its receipt.
    pub async fn submit(
        &self,
        log: &str,
        agency: &Agency,
        record: Record,
    ) -> Result<Integrated, LogError> {
        let mut out = self.submit_bulk(log, agency, vec![record]).await?;
        out.pop()
            .ok_or_else(|| LogError::bug("no receipt for a submission"))
    }

    /// Submits records (one request: validated all-or-nothing, one receipt
    /// each, in order). How many one request may carry is the HTTP layer's
    /// limit; here the queue's capacity bounds it (beyond it: 503). No
    /// records: no receipts, nothing queued.
    pub async fn submit_bulk(
        &self,
        log_name: &str,
        agency: &Agency,
        records: Vec<Record>,
    ) -> Result<Vec<Integrated>, LogError> {
        let log = self.log(log_name)?;
        let m = &self.ctx.metrics;
        let n = records.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if let Some(bad) = records
            .iter()
            .find(|r| !type_allowed(&agency.types, &r.r#type))
        {
            m.submitted(log_name, "rejected", n as u64);
            return Err(LogError::Forbidden(format!(
                "agency {} may not submit records of type {}",
                agency.name, bad.r#type
            )));
        }
        let retry_after = self.ctx.config.retry_after;
        if let Some(e) = log.status().error(retry_after) {
            m.submitted(log_name, "pushback", n as u64);
            return Err(e);
        }
        let bytes = records.iter().map(Record::size).sum();
        if let Err(e) = self.quotas.check(&agency.name, n, bytes) {
            m.submitted(log_name, "rate-limited", n as u64);
            return Err(e);
        }
        let permit = u32::try_from(n)
            .ok()
            .and_then(|k| log.slots.clone().try_acquire_many_owned(k).ok());
        let Some(permit) = permit else {
            m.submitted(log_name, "pushback", n as u64);
            return Err(LogError::Pushback {
                detail: format!("log {log_name} has too many pending submissions; retry later"),
                retry_after,
            });
        };
        let Some(share) = log.shares.take(&agency.name, n) else {
            m.submitted(log_name, "rate-limited", n as u64);
            return Err(LogError::RateLimited {
                detail: format!(
                    "agency {} holds its share of log {log_name}'s queue; retry when its submissions are answered",
                    agency.name
                ),
                retry_after,
            });
        };
        m.queue_depth
            .get_or_create(&log.label)
            .set(log.queue_depth() as i64);
        let items = records
            .into_iter()
            .map(|record| Pending {
                dedup_key: dedup_key(&agency.name, &record),
                agency: agency.name.clone(),
                record,
            })
            .collect();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Request {
            items,
            reply,
            enqueued: Instant::now(),
            _permit: permit,
            _share: share,
        };
        let stopped = || LogError::Pushback {
            detail: "the service is shutting down".into(),
            retry_after,
        };
        if log.queue.send(request).is_err() {
            m.submitted(log_name, "pushback", n as u64);
            return Err(stopped());
        }
        answer.await.map_err(|_| stopped())?
    }
}
