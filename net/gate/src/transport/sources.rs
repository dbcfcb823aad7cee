//! Per-source handshake limits: a token bucket per source address (an IPv6
//! source by its /64, which one host usually holds whole), checked before
//! the listener's shared handshake bucket, so a flood from a few addresses
//! is dropped at its own bucket and leaves the shared one to everyone else.
//!
//! Bounded: at most `max_sources` buckets. A bucket that has refilled is
//! the same as a new one, so [`SourceLimits::purge`] forgets it; sources
//! that find the table full of busy ones share one overflow bucket. A
//! spoofed flood from more distinct sources than that is left to the
//! listener's bucket, as before.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::bucket::Bucket;

use super::RateQuota;

/// What a source is counted by: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SourceKey {
    V4(u32),
    V6(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => SourceKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// The per-source handshake buckets of one listener.
pub(super) struct SourceLimits {
    rate: f64,
    burst: f64,
    max_sources: usize,
    /// Sources never limited here (the listener's bucket still applies).
    exempt: Vec<IpAddr>,
    buckets: BTreeMap<SourceKey, Bucket>,
    /// Shared by the sources that find the table full.
    overflow: Bucket,
}

impl SourceLimits {
    pub(super) fn new(quota: RateQuota, max_sources: usize, exempt: &[IpAddr]) -> Self {
        let burst = f64::from(quota.burst);
        Self {
            rate: f64::from(quota.per_second),
            burst,
            max_sources,
            exempt: exempt.iter().map(|ip| ip.to_canonical()).collect(),
            buckets: BTreeMap::new(),
            overflow: Bucket::full(burst, Instant::now()),
        }
    }

    /// Whether a handshake datagram from `ip` may go on to the listener's
    /// bucket at `now`.
    pub(super) fn check(&mut self, ip: IpAddr, now: Instant) -> bool {
        let ip = ip.to_canonical();
        if self.exempt.contains(&ip) {
            return true;
        }
        let (rate, burst) = (self.rate, self.burst);
        let key = SourceKey::of(ip);
        if let Some(b) = self.buckets.get_mut(&key) {
            return b.take(now, rate, burst);
        }
        if self.buckets.len() < self.max_sources {
            let mut b = Bucket::full(burst, now);
            let ok = b.take(now, rate, burst);
            self.buckets.insert(key, b);
            return ok;
        }
        self.overflow.take(now, rate, burst)
    }

    /// Forgets the buckets that have refilled by `now`: they hold nothing a
    /// new one would not.
    pub(super) fn purge(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, b| b.refill(now, rate, burst) < burst);
    }

    /// Sources tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_flooding_source_is_limited_alone() {
        let mut l = SourceLimits::new(RateQuota::new(10, 5), 16, &[]);
        let now = Instant::now();
        let flood = ip("198.51.100.7");
        let passed = (0..100).filter(|_| l.check(flood, now)).count();
        assert_eq!(passed, 5, "the burst, then nothing");
        assert!(
            l.check(ip("203.0.113.9"), now),
            "another source is not held up"
        );
        // A tenth of a second later the flooder has one token again.
        let later = now + Duration::from_millis(100);
        assert!(l.check(flood, later));
        assert!(!l.check(flood, later));
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let mut l = SourceLimits::new(RateQuota::new(1, 2), 16, &[]);
        let now = Instant::now();
        assert!(l.check(ip("2001:db8:1:2::1"), now));
        assert!(l.check(ip("2001:db8:1:2::ffff"), now));
        assert!(!l.check(ip("2001:db8:1:2:abcd::9"), now), "same /64");
        assert!(l.check(ip("2001:db8:1:3::1"), now), "another /64");
        // An IPv4-mapped address is its IPv4 source.
        assert!(l.check(ip("192.0.2.1"), now));
        assert!(l.check(ip("::ffff:192.0.2.1"), now));
        assert!(!l.check(ip("192.0.2.1"), now));
    }

    #[test]
    fn memory_is_bounded_and_refilled_buckets_are_forgotten() {
        let mut l = SourceLimits::new(RateQuota::new(10, 2), 4, &[]);
        let now = Instant::now();
        for i in 0..100u32 {
            l.check(IpAddr::from((0x0A00_0000 + i).to_be_bytes()), now);
        }
        assert_eq!(l.tracked(), 4, "never more than max_sources");
        // The 96 others shared the overflow bucket: its burst is spent.
        assert!(!l.check(ip("192.0.2.200"), now));
        l.purge(now + Duration::from_secs(1));
        assert_eq!(l.tracked(), 0, "every bucket refilled");
        assert!(l.check(ip("192.0.2.200"), now + Duration::from_secs(1)));
    }

    #[test]
    fn exempt_sources_are_not_limited() {
        let mut l = SourceLimits::new(RateQuota::new(1, 1), 4, &[ip("127.0.0.1")]);
        let now = Instant::now();
        assert!((0..50).all(|_| l.check(ip("127.0.0.1"), now)));
        assert!(l.check(ip("127.0.0.2"), now));
        assert!(!l.check(ip("127.0.0.2"), now));
    }
}
