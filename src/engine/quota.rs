//! Fairness between agencies: token-bucket quotas (records per second and
//! record bytes per second, per agency, each with its own override) and a
//! cap on the share of a log's queue one agency may hold. Over either, a
//! submission gets `429` with `Retry-After` and nothing is queued, so one
//! agency's flood fills neither the queue nor the batches of the others.
//!
//! Buckets are the `governor` crate's (GCRA): exact, lock-free, and
//! refilled continuously rather than per second.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::LogError;
use crate::names::AgencyName;

/// One agency's rates; 0 means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    pub records_per_s: u32,
    pub bytes_per_s: u32,
    /// How many seconds of the rate an idle agency may spend at once (the
    /// bucket's size); at least 1.
    pub burst_s: u32,
}

/// Quotas of every agency.
#[derive(Clone, Debug)]
pub struct QuotaConfig {
    /// For agencies without an override.
    pub default: Rate,
    pub agencies: HashMap<AgencyName, Rate>,
    /// The largest share (0 to 1] of a log's queue one agency may hold.
    pub max_queue_share: f64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            default: Rate::default(),
            agencies: HashMap::new(),
            max_queue_share: 0.5,
        }
    }
}

struct Buckets {
    records: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
}

fn bucket(per_s: u32, burst_s: u32) -> Option<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(per_s)?;
    let burst = NonZeroU32::new(per_s.saturating_mul(burst_s.max(1))).unwrap_or(rate);
    Some(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

pub(crate) struct Quotas {
    config: QuotaConfig,
    buckets: Mutex<HashMap<AgencyName, Arc<Buckets>>>,
}

impl Quotas {
    pub(crate) fn new(config: QuotaConfig) -> Self {
        Quotas {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn buckets(&self, agency: &AgencyName) -> Arc<Buckets> {
        let mut map = self.buckets.lock().expect("quota lock");
        shared(&mut map, agency, || {
            let r = self
                .config
                .agencies
                .get(agency)
                .copied()
                .unwrap_or(self.config.default);
            Arc::new(Buckets {
                records: bucket(r.records_per_s, r.burst_s),
                bytes: bucket(r.bytes_per_s, r.burst_s),
            })
        })
    }

    /// Takes `records` and `bytes` from the agency's buckets, or says when
    /// to retry.
    pub(crate) fn check(
        &self,
        agency: &AgencyName,
        records: usize,
        bytes: usize,
    ) -> Result<(), LogError> {
        let b = self.buckets(agency);
        for (bucket, n, what) in [(&b.records, records, "records"), (&b.bytes, bytes, "bytes")] {
            let Some(bucket) = bucket else { continue };
            let n =
                NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
            match bucket.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(not_until)) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    return Err(LogError::RateLimited {
                        detail: format!("agency {agency} is over its quota of {what} per second; retry later"),
                        retry_after: wait.max(Duration::from_secs(1)),
                    });
                }
                Err(_) => {
                    return Err(LogError::RateLimited {
                        detail: format!(
                            "this request's {n} {what} are more than agency {agency} may send at once (its quota's burst); split it"
                        ),
                        retry_after: Duration::from_secs(1),
                    })
                }
            }
        }
        Ok(())
    }

    /// The most queue slots of one log an agency may hold, of `capacity`.
    pub(crate) fn queue_share(&self, capacity: usize) -> usize {
        ((capacity as f64 * self.config.max_queue_share) as usize).clamp(1, capacity.max(1))
    }
}

/// `agency`'s value in `map`, made by `make` the first time; the name is
/// copied only then (this runs on every submission).
fn shared<V: Clone>(
    map: &mut HashMap<AgencyName, V>,
    agency: &AgencyName,
    make: impl FnOnce() -> V,
) -> V {
    if let Some(v) = map.get(agency) {
        return v.clone();
    }
    map.entry(agency.clone()).or_insert_with(make).clone()
}

/// Each agency's slots in one log's queue.
pub(crate) struct QueueShares {
    per_agency: usize,
    shares: Mutex<HashMap<AgencyName, Arc<Semaphore>>>,
}

impl QueueShares {
    pub(crate) fn new(per_agency: usize) -> Self {
        QueueShares {
            per_agency,
            shares: Mutex::new(HashMap::new()),
        }
    }

    /// `n` slots of `agency`'s share, held until the request is answered.
    pub(crate) fn take(&self, agency: &AgencyName, n: usize) -> Option<OwnedSemaphorePermit> {
        let share = shared(&mut self.shares.lock().expect("share lock"), agency, || {
            Arc::new(Semaphore::new(self.per_agency))
        });
        share.try_acquire_many_owned(u32::try_from(n).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ag(n: &str) -> AgencyName {
        AgencyName::parse(n).unwrap()
    }

    #[test]
    fn buckets_refuse_what_is_over_the_quota_per_agency() {
        let mut agencies = HashMap::new();
        agencies.insert(
            ag("big"),
            Rate {
                records_per_s: 1000,
                bytes_per_s: 0,
                burst_s: 1,
            },
        );
        let q = Quotas::new(QuotaConfig {
            default: Rate {
                records_per_s: 10,
                bytes_per_s: 1000,
                burst_s: 1,
            },
            agencies,
            max_queue_share: 0.5,
        });
        for _ in 0..10 {
            q.check(&ag("small"), 1, 10).unwrap();
        }
        match q.check(&ag("small"), 1, 10) {
            Err(LogError::RateLimited { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        // Another agency has its own bucket; an override has its own rate.
        q.check(&ag("other"), 10, 10).unwrap();
        q.check(&ag("big"), 900, 1 << 30).unwrap();
        // More than a whole burst at once can never pass.
        assert!(matches!(
            q.check(&ag("fresh"), 11, 1),
            Err(LogError::RateLimited { .. })
        ));
        assert!(matches!(
            q.check(&ag("fresh2"), 1, 1001),
            Err(LogError::RateLimited { .. })
        ));
    }

    #[test]
    fn no_quota_means_no_limit() {
        let q = Quotas::new(QuotaConfig::default());
        for _ in 0..1000 {
            q.check(&ag("a"), 1000, 1 << 20).unwrap();
        }
    }

    #[test]
    fn one_agency_holds_at_most_its_share() {
        let s = QueueShares::new(3);
        let held = s.take(&ag("a"), 2).unwrap();
        assert!(s.take(&ag("a"), 2).is_none());
        assert!(s.take(&ag("b"), 3).is_some());
        drop(held);
        assert!(s.take(&ag("a"), 3).is_some());
    }
}
