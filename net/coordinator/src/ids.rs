//! Random identifiers: session ids (also netcode client ids) and the hex
//! strings of queue tickets and resume keys. Each falls back to the clock
//! when the OS has no randomness; callers check uniqueness.

use tessera_gate::token::{to_hex, unix_now};

/// A fresh session id: random, with the top bit set so it never collides
/// with the small client ids of synthetic walkers.
pub(crate) fn new_session_id() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: fall back to the clock (uniqueness is checked).
        b = (unix_now().as_nanos() as u64).to_le_bytes();
    }
    u64::from_le_bytes(b) | (1 << 63)
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    if getrandom::fill(&mut b).is_err() {
        let t = unix_now().as_nanos().to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % t.len()] ^ (i as u8);
        }
    }
    to_hex(&b)
}
