//! Per-request limits, as middleware on the router: separate in-flight
//! capacity for writes and for public reads (beyond it, `503` with
//! `Retry-After` at once: load shedding, not queueing), an optional rate
//! per client address on public reads (`429`), and security headers on
//! every answer. Connection-level limits (how many, how long a client may
//! take to send its headers) are in [`super::serve`]; the deadline for a
//! request body in [`super::extract::JsonBytes`]; per-agency quotas in the
//! engine.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::problem::Problem;

/// A cap on requests in flight for one class of routes.
#[derive(Clone)]
pub struct InFlight {
    slots: Arc<Semaphore>,
    class: &'static str,
    retry_after: Duration,
}

impl InFlight {
    pub fn new(class: &'static str, max: usize, retry_after: Duration) -> Self {
        InFlight {
            slots: Arc::new(Semaphore::new(max.max(1))),
            class,
            retry_after,
        }
    }
}

/// Runs the request if its class has a free slot, else answers `503`.
pub async fn shed(State(limit): State<InFlight>, req: Request, next: Next) -> Response {
    let Ok(_slot) = limit.slots.clone().try_acquire_owned() else {
        return Problem::unavailable(
            format!("too many {} requests in flight; retry later", limit.class),
            limit.retry_after,
        )
        .into_response();
    };
    next.run(req).await
}

/// Requests per second per client address (IPv6: per /64), for public
/// reads. Bounded: addresses idle for a while are forgotten.
#[derive(Clone)]
pub struct PerAddress {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl PerAddress {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let limiter = Arc::new(RateLimiter::keyed(Quota::per_second(rate)));
        // Forget addresses whose bucket is full again, so the map holds
        // only recent clients.
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let Some(l) = weak.upgrade() else { return };
                l.retain_recent();
                l.shrink_to_fit();
            }
        });
        Some(PerAddress { limiter })
    }
}

fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let seg = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0,
                ))
            }
        },
        v4 => v4,
    }
}

/// `429` once a client address is over its rate.
pub async fn per_address(
    State(limit): State<Option<PerAddress>>,
    req: Request,
    next: Next,
) -> Response {
    if let (Some(limit), Some(ConnectInfo(peer))) =
        (&limit, req.extensions().get::<ConnectInfo<SocketAddr>>())
    {
        if let Err(not_until) = limit.limiter.check_key(&client_key(peer.ip())) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            return Problem::rate_limited(
                "too many requests from this address; retry later",
                wait.max(Duration::from_secs(1)),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The Content-Security-Policy of answers that set none (JSON, tiles,
/// problems): nothing may load, nothing may frame them.
const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every answer: `nosniff`, no framing, no referrer,
/// and a CSP (pages that need more set their own, kept as they are).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    add_security_headers(resp.headers_mut());
    resp
}

/// The security headers of every answer (the API's are added where each
/// request is observed, one layer fewer).
pub fn add_security_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DEFAULT_CSP),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
