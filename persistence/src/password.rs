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

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use password_hash::rand_core::OsRng;

use crate::error::HashError;

/// OWASP's argon2id parameters: 19 MiB, 2 passes, 1 lane.
pub const ARGON2_M_KIB: u32 = 19_456;
pub const ARGON2_T: u32 = 2;
pub const ARGON2_P: u32 = 1;
/// The largest memory cost a stored hash may ask for; a larger one is refused as malformed
/// rather than allocated.
pub const ARGON2_MAX_M_KIB: u32 = 256 * 1024;

/// Hashes and verifies passwords, at most `cap` at once.
///
/// Each running hash works in one of `cap` reusable 19 MiB buffers, allocated on first use
/// and kept: the hasher's memory is bounded by `cap × 19 MiB` however many hashes it runs.
/// (Allocating afresh per hash lets glibc's adaptive mmap threshold keep freed buffers on
/// the heap, and the process grew to hundreds of MiB under a login storm.)
#[derive(Debug)]
pub struct PasswordHasher {
    cap: usize,
    pool: Mutex<Pool>,
    freed: Condvar,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    hashes: AtomicU64,
}

#[derive(Debug)]
struct Pool {
    permits: usize,
    buffers: Vec<Vec<Block>>,
}

/// A running hash's permit and buffer; gives both back on drop, even if hashing panics.
struct Slot<'a> {
    hasher: &'a PasswordHasher,
    blocks: Vec<Block>,
}

impl Slot<'_> {
    fn blocks(&mut self, n: usize) -> &mut [Block] {
        self.blocks.resize(n, Block::default());
        &mut self.blocks
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut blocks = std::mem::take(&mut self.blocks);
        // A buffer grown for an unusual stored hash goes back to the standard size.
        // One argon2 block is 1 KiB, so the standard buffer has `ARGON2_M_KIB` blocks.
        let standard = ARGON2_M_KIB as usize;
        if blocks.len() > standard {
            blocks.truncate(standard);
            blocks.shrink_to_fit();
        }
        self.hasher.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut pool = self
            .hasher
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pool.buffers.push(blocks);
        pool.permits += 1;
        self.hasher.freed.notify_one();
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }
}

fn malformed(e: impl std::fmt::Display) -> HashError {
    HashError::MalformedHash(e.to_string())
}

impl PasswordHasher {
    /// A hasher that runs at most `cap` hashes at once (at least 1).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            cap,
            pool: Mutex::new(Pool {
                permits: cap,
                buffers: Vec::with_capacity(cap),
            }),
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

    fn params() -> Result<Params, HashError> {
        Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
            .map_err(|e| HashError::Hash(e.to_string()))
    }

    fn slot(&self) -> Slot<'_> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        while pool.permits == 0 {
            pool = self
                .freed
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
        pool.permits -= 1;
        let blocks = pool.buffers.pop().unwrap_or_default();
        drop(pool);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.hashes.fetch_add(1, Ordering::Relaxed);
        Slot {
            hasher: self,
            blocks,
        }
    }

    /// Runs argon2 in a pooled buffer, waiting for a permit first.
    fn compute(
        &self,
        argon2: &Argon2<'_>,
        params: &Params,
        password: &str,
        salt: &[u8],
        out_len: usize,
    ) -> Result<Output, argon2::password_hash::Error> {
        let mut slot = self.slot();
        let blocks = slot.blocks(params.block_count());
        Output::init_with(out_len, |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut *blocks)
                .map_err(Into::into)
        })
    }

    /// Hashes a password with a fresh random salt; returns the PHC string. Blocks.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        let params = Self::params()?;
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt
            .as_salt()
            .decode_b64(&mut salt_buf)
            .map_err(|e| HashError::Hash(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let output = self
            .compute(
                &argon2,
                &params,
                password,
                salt_bytes,
                Params::DEFAULT_OUTPUT_LEN,
            )
            .map_err(|e| HashError::Hash(e.to_string()))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| HashError::Hash(e.to_string()))?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(phc.to_string())
    }

    /// Checks a password against a PHC string: `Ok(false)` for a wrong password. Blocks.
    /// The algorithm and parameters come from the stored hash, so hashes made with other
    /// parameters still verify; the comparison is constant-time.
    pub fn verify(&self, password: &str, phc: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(phc).map_err(malformed)?;
        let algorithm = Algorithm::try_from(parsed.algorithm).map_err(malformed)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()
            .map_err(malformed)?
            .unwrap_or_default();
        let params = Params::try_from(&parsed).map_err(malformed)?;
        if params.m_cost() > ARGON2_MAX_M_KIB {
            return Err(malformed(format!(
                "memory cost {} KiB is above {ARGON2_MAX_M_KIB}",
                params.m_cost()
            )));
        }
        let salt = parsed.salt.ok_or_else(|| malformed("no salt"))?;
        let mut salt_buf = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(malformed)?;
        let expected = parsed.hash.ok_or_else(|| malformed("no hash"))?;
        let argon2 = Argon2::new(algorithm, version, params.clone());
        let computed = self
            .compute(&argon2, &params, password, salt_bytes, expected.len())
            .map_err(malformed)?;
        // `Output`'s equality is constant-time.
        Ok(computed == expected)
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
    /// The pooled, buffer-reusing hasher agrees with the stock argon2 implementation both
    /// ways, across reuse of its buffers.
    #[test]
    fn agrees_with_stock_argon2() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let h = PasswordHasher::new(1);
        let stock = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            PasswordHasher::params().unwrap(),
        );
        for pw in ["first password", "second password", "третий пароль"] {
            let ours = h.hash(pw).unwrap();
            stock
                .verify_password(pw.as_bytes(), &PasswordHash::new(&ours).unwrap())
                .unwrap();
            let salt = SaltString::generate(&mut OsRng);
            let theirs = stock
                .hash_password(pw.as_bytes(), &salt)
                .unwrap()
                .to_string();
            assert!(h.verify(pw, &theirs).unwrap());
            assert!(!h.verify("not it", &theirs).unwrap());
        }
        // Other parameters (a smaller, older hash) still verify, from the same buffer.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 3, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut OsRng);
        let old = small
            .hash_password(b"old params", &salt)
            .unwrap()
            .to_string();
        assert!(h.verify("old params", &old).unwrap());
        let huge = old.replace("m=4096", "m=4000000");
        assert!(matches!(
            h.verify("old params", &huge),
            Err(HashError::MalformedHash(_))
        ));
    }

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
