//! The connecting side: one attempt ([`connect`]), or a [`Connector`] that
//! retries with [`Backoff`] and comes back after each link closes.

use std::{
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::net::TcpStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use super::{
    ConfigError, ConnectError, Link, LinkConfig, PeerInfo,
    handshake::{count_handshake_failure, handshake_framed, offer_hello, send_refusal, within},
    io::{LinkState, establish},
};
use crate::stats::Counter;

/// How often a connector that keeps failing says it is still waiting.
pub const WAITING_WARN_EVERY: Duration = Duration::from_secs(30);

/// Exponential reconnect backoff with jitter.
///
/// Attempt `n` (from 0) waits a base of `initial × factorⁿ`, capped at `max`,
/// then "equal jitter": a uniformly random time between half the base and the
/// base, so a cluster of clients that lost the same peer does not reconnect
/// in lockstep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Base delay before the first retry. Default 100 ms.
    pub initial: Duration,
    /// Cap on the base delay. Default 5 s.
    pub max: Duration,
    /// Growth per attempt. Default 2.
    pub factor: u32,
    /// Give up after this many failed attempts in one `connect` call.
    /// Default `None`: retry until connected or refused for good.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 2,
            max_attempts: None,
        }
    }
}

impl Backoff {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.initial.is_zero() || self.max < self.initial {
            return Err(ConfigError::Backoff("need 0 < initial <= max"));
        }
        if self.factor == 0 {
            return Err(ConfigError::Backoff("factor must be at least 1"));
        }
        Ok(())
    }

    /// The base delay before retry `attempt` (from 0), without jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(self.factor.saturating_pow(attempt))
            .min(self.max)
    }

    /// The jittered delay before retry `attempt`: in `[base / 2, base]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        jittered(self.base(attempt), random_u64())
    }
}

fn jittered(base: Duration, r: u64) -> Duration {
    let half = base / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(r % span.saturating_add(1))
}

/// Randomness for jitter only (not for anything secret): std's per-process
/// random hash keys applied to the current instant.
fn random_u64() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

/// One attempt: connect to `addr` and run the handshake, both within
/// [`LinkConfig::handshake_timeout`].
pub async fn connect(addr: &str, cfg: &LinkConfig) -> Result<Link, ConnectError> {
    cfg.validate()?;
    let t = cfg.handshake_timeout;
    let stream = tokio::time::timeout(t, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(t))??;
    let peer_addr = stream.peer_addr()?;
    let mut framed = handshake_framed(stream);
    match within(t, offer_hello(&mut framed, cfg)).await {
        Ok(acceptor) => {
            info!(peer = %peer_addr, node = ?acceptor.node, role = %acceptor.role, "link up");
            let peer = PeerInfo {
                role: acceptor.role,
                node: acceptor.node,
                addr: peer_addr,
            };
            // Client links are not part of any server's task set.
            let tracker = TaskTracker::new();
            let link = establish(framed, peer, cfg, CancellationToken::new(), &tracker);
            tracker.close();
            Ok(link)
        }
        Err(e) => {
            count_handshake_failure(&cfg.stats, &e);
            // Tell the acceptor why we hang up.
            send_refusal(&mut framed, &e, cfg).await;
            Err(e.into())
        }
    }
}

/// Connects with retries: see [`Connector::connect`].
pub async fn connect_with_backoff(
    addr: impl Into<String>,
    cfg: &LinkConfig,
) -> Result<Link, ConnectError> {
    Connector::new(addr, cfg.clone()).connect().await
}

/// A client that keeps coming back to one address.
///
/// Call [`Connector::connect`] for the first link and again each time the
/// link closes; then re-register, since the peer may have restarted and
/// forgotten us. Backoff carries over between calls: a link that dies
/// within [`Backoff::max`] of being established counts as a failure, so a peer
/// that accepts and immediately drops us is not hammered.
#[derive(Debug)]
pub struct Connector {
    addr: String,
    cfg: LinkConfig,
    failures: u32,
    last: Option<Arc<LinkState>>,
}

impl Connector {
    pub fn new(addr: impl Into<String>, cfg: LinkConfig) -> Self {
        Self {
            addr: addr.into(),
            cfg,
            failures: 0,
            last: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Connects, retrying transient failures (refused connections, timeouts,
    /// a peer that hangs up mid-handshake) with [`Backoff`] until a link is up.
    /// Returns at once on a permanent refusal (wrong secret, version or
    /// role), or after [`Backoff::max_attempts`] failures.
    ///
    /// Cancel-safe: drop the future to stop trying.
    pub async fn connect(&mut self) -> Result<Link, ConnectError> {
        self.cfg.validate()?;
        let backoff = self.cfg.backoff.clone();
        self.pause_after_short_link(&backoff).await;
        let mut attempts = 0u32;
        let mut warned: Option<tokio::time::Instant> = None;
        loop {
            match connect(&self.addr, &self.cfg).await {
                Ok(link) => {
                    if attempts > 0 {
                        info!(addr = %self.addr, attempts, "reconnected");
                    }
                    self.last = Some(link.state());
                    return Ok(link);
                }
                Err(e) => {
                    self.cfg.stats.bump(Counter::ConnectFailures);
                    attempts = attempts.saturating_add(1);
                    if !e.is_transient() {
                        warn!(addr = %self.addr, "not retrying: {e}");
                        return Err(e);
                    }
                    if backoff.max_attempts.is_some_and(|m| attempts >= m) {
                        return Err(ConnectError::GaveUp {
                            attempts,
                            last: Box::new(e),
                        });
                    }
                    let d = self.next_delay(&backoff);
                    // A process waiting on its peer says so (the default
                    // filter shows warnings), once and then every
                    // WAITING_WARN_EVERY, not on every attempt.
                    let now = tokio::time::Instant::now();
                    if warned.is_none_or(|w| now - w >= WAITING_WARN_EVERY) {
                        warned = Some(now);
                        warn!(
                            addr = %self.addr,
                            attempts,
                            "waiting for {}: {e}; still trying",
                            self.addr
                        );
                    } else {
                        debug!(addr = %self.addr, attempts, "connect failed: {e}; retrying in {d:?}");
                    }
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    /// Before reconnecting: waits out a backoff delay if the previous link
    /// died within [`Backoff::max`] of being established, and otherwise
    /// forgets earlier failures.
    async fn pause_after_short_link(&mut self, backoff: &Backoff) {
        let Some(prev) = self.last.take() else {
            return;
        };
        let lived = prev.lifetime().unwrap_or(Duration::MAX);
        if lived < backoff.max {
            let d = self.next_delay(backoff);
            debug!(addr = %self.addr, "previous link lived {lived:?}; reconnecting in {d:?}");
            tokio::time::sleep(d).await;
        } else {
            self.failures = 0;
        }
    }

    /// The delay before the next attempt, counting one more failure.
    fn next_delay(&mut self, backoff: &Backoff) -> Duration {
        let d = backoff.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let b = Backoff::default();
        assert_eq!(b.base(0), Duration::from_millis(100));
        assert_eq!(b.base(1), Duration::from_millis(200));
        assert_eq!(b.base(5), Duration::from_millis(3200));
        assert_eq!(b.base(6), Duration::from_secs(5));
        assert_eq!(b.base(u32::MAX), Duration::from_secs(5));
        for attempt in [0, 3, 40] {
            let base = b.base(attempt);
            for r in [0, 1, u64::MAX / 3, u64::MAX] {
                let d = jittered(base, r);
                assert!(d >= base / 2 && d <= base, "{d:?} vs {base:?}");
            }
            let d = b.delay(attempt);
            assert!(d >= base / 2 && d <= base, "{d:?} vs {base:?}");
        }
    }
}
