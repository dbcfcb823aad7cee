//! Random identifiers: session ids (also netcode client ids) and the hex
//! strings of queue tickets and resume keys, from the OS random source.
//! Callers check uniqueness.
//!
//! **Invariant:** when the OS has no randomness to give, no id or key is
//! made from anything weaker (a clock is guessable): the request fails.

use tessera_gate::token::to_hex;

/// The OS random source failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the OS random source failed ({0}); refusing to make guessable ids")]
pub(crate) struct NoRandomness(pub(crate) getrandom::Error);

/// A fresh session id: random, with the top bit set so it never collides
/// with the small client ids of synthetic walkers.
pub(crate) fn new_session_id() -> Result<u64, NoRandomness> {
    session_id_from(getrandom::fill)
}

/// `n` random bytes as lowercase hex.
pub(crate) fn random_hex(n: usize) -> Result<String, NoRandomness> {
    hex_from(n, getrandom::fill)
}

fn session_id_from(
    fill: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>,
) -> Result<u64, NoRandomness> {
    let mut b = [0u8; 8];
    fill(&mut b).map_err(NoRandomness)?;
    Ok(u64::from_le_bytes(b) | (1 << 63))
}

fn hex_from(
    n: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>,
) -> Result<String, NoRandomness> {
    let mut b = vec![0u8; n];
    fill(&mut b).map_err(NoRandomness)?;
    Ok(to_hex(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_random_source_fails_closed() {
        let broken = |_: &mut [u8]| Err(getrandom::Error::UNEXPECTED);
        assert!(session_id_from(broken).is_err());
        assert!(hex_from(16, broken).is_err());
    }

    #[test]
    fn ids_come_from_the_random_source() {
        let ones = |b: &mut [u8]| {
            b.fill(0x11);
            Ok(())
        };
        assert_eq!(
            session_id_from(ones).expect("random"),
            0x1111_1111_1111_1111 | (1 << 63)
        );
        assert_eq!(hex_from(3, ones).expect("random"), "111111");
        let a = new_session_id().expect("the OS has randomness");
        assert_ne!(a & (1 << 63), 0);
        assert_eq!(random_hex(24).expect("the OS has randomness").len(), 48);
    }
}
