//! The addresses netcode is handshaking with, as the gate sees them: so
//! that a datagram from an address netcode knows neither as connected nor
//! as pending is dropped (and counted) before netcode sees it.
//!
//! netcode decrypts a packet from an address it knows with that address's
//! key; from any other address it reads only connection requests and logs
//! everything else as an error (`no private key was found`). Such packets
//! are normal: a netcode client says goodbye with ~10 redundant disconnect
//! packets (the standard's way of surviving loss), and netcode forgets the
//! client at the first; a kicked client keeps sending until it notices.
//! They are not errors, and netcode needs not see them.
//!
//! renetcode does not expose its pending table, so the listener mirrors it:
//! an address is recorded when netcode answers its connection request (the
//! token decrypted, a challenge or a denial went back), and forgotten when
//! the handshake completes or when the token expires (as netcode forgets a
//! pending client). Connected clients are the listener's own `by_addr`.
//!
//! **Invariant:** bounded ([`MAX_HANDSHAKING`]); an address that does not
//! fit is not recorded, so its handshake cannot complete until room frees
//! (its datagrams are dropped and counted as strays, it retries). The bound
//! is twice netcode's own limit on pending clients, which netcode reaches
//! first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// How many handshaking addresses a listener remembers: twice renetcode's
/// limit on pending clients (4 × its 1024 clients).
pub(super) const MAX_HANDSHAKING: usize = 2 * 4 * 1024;

/// Handshaking addresses and the expire timestamps of their tokens.
#[derive(Debug, Default)]
pub(super) struct Handshaking {
    expires: BTreeMap<SocketAddr, u64>,
    /// `(expire, addr)`, for purging in time order.
    by_expiry: BTreeSet<(u64, SocketAddr)>,
}

impl Handshaking {
    /// netcode answered a connection request from `addr` whose token
    /// expires at `expire_timestamp` (Unix seconds). Returns whether it is
    /// recorded (false only when full).
    pub(super) fn record(&mut self, addr: SocketAddr, expire_timestamp: u64) -> bool {
        if self.expires.len() >= MAX_HANDSHAKING && !self.expires.contains_key(&addr) {
            return false;
        }
        if let Some(old) = self.expires.insert(addr, expire_timestamp) {
            self.by_expiry.remove(&(old, addr));
        }
        self.by_expiry.insert((expire_timestamp, addr));
        true
    }

    pub(super) fn contains(&self, addr: &SocketAddr) -> bool {
        self.expires.contains_key(addr)
    }

    /// The handshake of `addr` is over (admitted or refused).
    pub(super) fn remove(&mut self, addr: &SocketAddr) {
        if let Some(expire) = self.expires.remove(addr) {
            self.by_expiry.remove(&(expire, *addr));
        }
    }

    /// Forgets the addresses whose token expired by `now_secs` (netcode's
    /// clock), as netcode forgets their pending clients.
    pub(super) fn purge(&mut self, now_secs: u64) {
        while let Some(&(expire, addr)) = self.by_expiry.first() {
            if now_secs <= expire {
                break;
            }
            self.by_expiry.pop_first();
            self.expires.remove(&addr);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        debug_assert_eq!(self.expires.len(), self.by_expiry.len());
        self.expires.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn records_forgets_and_expires() {
        let mut h = Handshaking::default();
        assert!(h.record(addr(1), 100));
        assert!(h.record(addr(2), 200));
        assert!(h.contains(&addr(1)));
        h.remove(&addr(1));
        assert!(!h.contains(&addr(1)));
        // netcode keeps a pending client while now <= expire.
        h.purge(200);
        assert!(h.contains(&addr(2)));
        h.purge(201);
        assert!(!h.contains(&addr(2)));
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn bounded() {
        let mut h = Handshaking::default();
        for i in 0..MAX_HANDSHAKING {
            let a = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], (i >> 16) as u16));
            assert!(h.record(a, 100));
        }
        assert!(!h.record(addr(1), 100), "full");
        let known = SocketAddr::from(([10, 0, 0, 0], 0));
        assert!(h.record(known, 150), "a known address is updated");
        assert_eq!(h.len(), MAX_HANDSHAKING);
        h.purge(101);
        assert_eq!(h.len(), 1);
        assert!(h.record(addr(1), 100));
    }
}
