//! Datagrams netcode refused after the screen: counted by reason, and
//! summed up in at most one log line a second for the whole gate.
//!
//! A datagram the screen passes can still fail netcode: undecryptable (a
//! client that mutates its datagrams), a sequence already received (a
//! replay), a bad connect token. renetcode would log each at ERROR; the gate
//! asks it for the error instead (`try_process_packet`), counts it here, and
//! logs a WARN summary with the counts of the last interval. So a flood of
//! hostile datagrams costs counters, not a flood of log lines.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use renetcode::NetcodeError;
use tessera_link::bump;

/// The shortest time between two summary lines.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why netcode refused a datagram (the `reason` label of
/// `tessera_gate_netcode_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetcodeRefusal {
    /// Failed decryption or its MAC: a mutated or forged datagram.
    Undecryptable,
    /// A sequence number already received: a replayed datagram.
    Duplicate,
    /// Too small, an unknown packet type, a payload over the limit.
    Malformed,
    /// A connection request with a token netcode refuses: wrong version or
    /// protocol, expired, not for this address, no key for it.
    BadToken,
    /// Anything else netcode refuses.
    Other,
}

impl NetcodeRefusal {
    /// Every reason, in label order.
    pub const ALL: [Self; 5] = [
        Self::Undecryptable,
        Self::Duplicate,
        Self::Malformed,
        Self::BadToken,
        Self::Other,
    ];

    /// The reason of a refusal by netcode.
    pub fn of(error: &NetcodeError) -> Self {
        match error {
            NetcodeError::CryptoError => Self::Undecryptable,
            NetcodeError::DuplicatedSequence => Self::Duplicate,
            NetcodeError::PacketTooSmall
            | NetcodeError::InvalidPacketType
            | NetcodeError::PayloadAboveLimit => Self::Malformed,
            NetcodeError::InvalidVersion
            | NetcodeError::InvalidProtocolID
            | NetcodeError::Expired
            | NetcodeError::NotInHostList
            | NetcodeError::UnavailablePrivateKey => Self::BadToken,
            _ => Self::Other,
        }
    }

    /// Its metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Undecryptable => "undecryptable",
            Self::Duplicate => "duplicate",
            Self::Malformed => "malformed",
            Self::BadToken => "bad_token",
            Self::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The counters of netcode's refusals (all listeners) and the state of
/// their log summary.
#[derive(Debug, Default)]
pub struct NetcodeRefusals {
    counts: [AtomicU64; 5],
    log: Mutex<SummaryState>,
}

#[derive(Debug, Default)]
struct SummaryState {
    /// When the last summary was written.
    last: Option<Instant>,
    /// The counts it covered up to.
    logged: [u64; 5],
}

impl NetcodeRefusals {
    /// Counts one refusal.
    pub(super) fn record(&self, reason: NetcodeRefusal) {
        if let Some(c) = self.counts.get(reason.index()) {
            bump(c);
        }
    }

    /// Datagrams refused for `reason` so far.
    pub fn count(&self, reason: NetcodeRefusal) -> u64 {
        self.counts
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Datagrams refused so far, all reasons.
    pub fn total(&self) -> u64 {
        NetcodeRefusal::ALL.iter().map(|&r| self.count(r)).sum()
    }

    /// Logs a summary of the refusals since the last one, if there were
    /// any and the last was at least [`REFUSAL_LOG_INTERVAL`] ago. Called
    /// by every listener's update; a listener that finds another writing
    /// the summary skips it.
    pub(super) fn log_summary(&self, now: Instant) {
        let Ok(mut state) = self.log.try_lock() else {
            return;
        };
        if state
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < REFUSAL_LOG_INTERVAL)
        {
            return;
        }
        let counts = NetcodeRefusal::ALL.map(|r| self.count(r));
        let mut delta = [0u64; 5];
        for ((d, c), l) in delta.iter_mut().zip(counts).zip(state.logged) {
            *d = c.saturating_sub(l);
        }
        let refused: u64 = delta.iter().sum();
        if refused == 0 {
            return;
        }
        let seconds = state
            .last
            .map(|last| now.saturating_duration_since(last).as_secs_f64());
        let [undecryptable, duplicate, malformed, bad_token, other] = delta;
        match seconds {
            Some(s) => tracing::warn!(
                refused,
                undecryptable,
                duplicate,
                malformed,
                bad_token,
                other,
                "netcode refused {refused} datagrams in the last {s:.1} s"
            ),
            None => tracing::warn!(
                refused,
                undecryptable,
                duplicate,
                malformed,
                bad_token,
                other,
                "netcode refused {refused} datagrams (further refusals are summed up at most once a second)"
            ),
        }
        state.last = Some(now);
        state.logged = counts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_labels_in_order() {
        for (i, r) in NetcodeRefusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let names: Vec<_> = NetcodeRefusal::ALL.iter().map(|r| r.name()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }

    #[test]
    fn the_errors_of_a_mutated_or_replayed_datagram_are_named() {
        assert_eq!(
            NetcodeRefusal::of(&NetcodeError::CryptoError),
            NetcodeRefusal::Undecryptable
        );
        assert_eq!(
            NetcodeRefusal::of(&NetcodeError::DuplicatedSequence),
            NetcodeRefusal::Duplicate
        );
        assert_eq!(
            NetcodeRefusal::of(&NetcodeError::ClientNotFound),
            NetcodeRefusal::Other
        );
    }

    #[test]
    fn a_summary_covers_what_came_since_the_last() {
        let r = NetcodeRefusals::default();
        let t0 = Instant::now();
        r.log_summary(t0); // nothing to say: no state change
        assert!(r.log.lock().unwrap().last.is_none());
        r.record(NetcodeRefusal::Duplicate);
        r.log_summary(t0);
        assert_eq!(r.log.lock().unwrap().last, Some(t0));
        r.record(NetcodeRefusal::Undecryptable);
        r.log_summary(t0 + Duration::from_millis(500)); // too soon
        assert_eq!(r.log.lock().unwrap().logged, [0, 1, 0, 0, 0]);
        r.log_summary(t0 + REFUSAL_LOG_INTERVAL);
        assert_eq!(r.log.lock().unwrap().logged, [1, 1, 0, 0, 0]);
        assert_eq!(r.total(), 2);
    }
}
