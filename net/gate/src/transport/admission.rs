//! Who may stay once the netcode handshake is done: the [`Admission`]
//! policy and its [`Refusal`]s.

use std::sync::{Mutex, PoisonError};

use crate::token::{BurnError, NonceBook, TokenClaims, unix_now};

use super::ClientId;

/// Why a connection was refused after the netcode handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("token already used")]
    Replayed,
    #[error("token expired")]
    Expired,
    #[error("token unknown")]
    Unknown,
    #[error("token user data holds no valid claims")]
    BadClaims,
    #[error("refused by policy")]
    Denied,
}

impl From<BurnError> for Refusal {
    fn from(e: BurnError) -> Self {
        match e {
            BurnError::Replayed => Refusal::Replayed,
            BurnError::Expired => Refusal::Expired,
            BurnError::Unknown => Refusal::Unknown,
        }
    }
}

/// Decides whether a client that completed the netcode handshake may stay.
/// Called on the listener's task: keep it quick (a map lookup, not I/O).
pub trait Admission: Send + Sync + 'static {
    fn admit(&self, client: ClientId, claims: &TokenClaims) -> Result<(), Refusal>;
}

/// Admits everyone with valid claims (tests, single-process setups).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _: ClientId, _: &TokenClaims) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Burns the token's nonce: each token connects once.
impl Admission for Mutex<NonceBook> {
    fn admit(&self, _: ClientId, claims: &TokenClaims) -> Result<(), Refusal> {
        let mut book = self.lock().unwrap_or_else(PoisonError::into_inner);
        book.burn(&claims.nonce, unix_now()).map_err(Refusal::from)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn nonce_book_admission_burns_once() {
        let book = Mutex::new(NonceBook::new(4, Duration::from_secs(30)));
        let claims = TokenClaims {
            account: 1,
            nonce: [7; 16],
            issued_at: 0,
        };
        assert_eq!(book.admit(1, &claims), Err(Refusal::Unknown));
        book.lock()
            .unwrap()
            .record(claims.nonce, unix_now())
            .unwrap();
        assert_eq!(book.admit(1, &claims), Ok(()));
        assert_eq!(book.admit(1, &claims), Err(Refusal::Replayed));
    }
}
