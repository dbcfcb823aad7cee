//! argon2id password hashing with a hard cap on how many hashes run at once.
//!
//! One hash costs 19 MiB of memory and tens of milliseconds of one core. [`PasswordHasher`]
//! lets at most [`PasswordHasher::cap`] hashes run at once (by default, the number of cores);
//! further callers wait. Its calls block: an async caller (the coordinator) runs them on a
//! blocking thread, and should first take a permit from an async semaphore of
//! [`PasswordHasher::cap`] permits, so no more blocking threads are ever parked here than
//! can make progress:
//!
//! ```ignore
//! let permits = Arc::new(tokio::sync::Semaphore::new(store.hasher().cap()));
//! let _permit = permits.acquire().await?;
//! let store = store.clone();
//! let account = tokio::task::spawn_blocking(move || store.login(&email, &password, &addr)).await?;
//! ```
//!
//! The cap here holds whatever the caller does; the async semaphore only keeps waiting off
//! the blocking pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use password_hash::rand_core::OsRng;

use crate::error::HashError;

/// OWASP's argon2id parameters: 19 MiB, 2 passes, 1 lane.
pub const ARGON2_M_KIB: u32 = 19_456;
pub const ARGON2_T: u32 = 2;
pub const ARGON2_P: u32 = 1;

/// Hashes and verifies passwords, at most `cap` at once.
#[derive(Debug)]
pub struct PasswordHasher {
    cap: usize,
    free: Mutex<usize>,
    freed: Condvar,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    hashes: AtomicU64,
}

/// A running hash's slot; frees it on drop, even if hashing panics.
struct Slot<'a>(&'a PasswordHasher);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.0.freed.notify_one();
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }
}

impl PasswordHasher {
    /// A hasher that runs at most `cap` hashes at once (at least 1).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            cap,
            free: Mutex::new(cap),
            freed: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            hashes: AtomicU64::new(0),
        }
    }

    /// How many hashes may run at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The most hashes that have run at once since this hasher was made.
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Hashes computed or verified so far.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    fn argon2() -> Result<Argon2<'static>, HashError> {
        let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
            .map_err(|e| HashError::Hash(e.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    fn slot(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        drop(free);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.hashes.fetch_add(1, Ordering::Relaxed);
        Slot(self)
    }

    /// Hashes a password with a fresh random salt; returns the PHC string. Blocks.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let argon2 = Self::argon2()?;
        let _slot = self.slot();
        argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError::Hash(e.to_string()))
    }

    /// Checks a password against a PHC string: `Ok(false)` for a wrong password. Blocks.
    /// The parameters come from the stored hash, so hashes made with older parameters
    /// still verify.
    pub fn verify(&self, password: &str, phc: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(phc).map_err(|e| HashError::MalformedHash(e.to_string()))?;
        let argon2 = Self::argon2()?;
        let _slot = self.slot();
        match argon2.verify_password(password.as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(HashError::MalformedHash(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn hash_then_verify() {
        let h = PasswordHasher::new(1);
        let phc = h.hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify("correct horse", &phc).unwrap());
        assert!(!h.verify("wrong horse!", &phc).unwrap());
        assert!(matches!(
            h.verify("x", "not a hash"),
            Err(HashError::MalformedHash(_))
        ));
    }

    /// Many threads verify at once; never more than `cap` hashes run together, and the cap
    /// is reached (so the test would notice a cap that serialises everything to 1, too).
    #[test]
    fn concurrency_cap_holds() {
        let cap = 2;
        let h = Arc::new(PasswordHasher::new(cap));
        let phc = h.hash("correct horse").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let h = Arc::clone(&h);
                let phc = phc.clone();
                std::thread::spawn(move || {
                    for _ in 0..2 {
                        assert!(h.verify("correct horse", &phc).unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(h.peak_in_flight() <= cap, "peak {}", h.peak_in_flight());
        assert_eq!(h.peak_in_flight(), cap);
        assert_eq!(h.hashes(), 17);
    }
}
