//! Connect tokens and single-use nonces.
//!
//! The login service issues a netcode [`ConnectToken`] with a
//! [`TokenIssuer`] and hands it out in the netcode standard's 2,048-byte
//! form ([`write_standard`], see [`standard`]) so that any netcode client
//! can use it; the client hands it to its transport and the gate's
//! netcode server checks it (encryption with the shared private key, protocol
//! id, expiry, the gate's address in the token's list). The token's 256-byte
//! user data carries [`TokenClaims`] — account, a random session nonce, the
//! issue time — in a small versioned layout, which the gate reads back when
//! the client connects.
//!
//! netcode itself lets a connect token be used again (from the same address,
//! or after its own small replay table forgets it), so the gate also *burns*
//! the nonce on connect: the issuer [`NonceBook::record`]s every nonce it
//! hands out, and the gate [`NonceBook::burn`]s it when the client connects;
//! a second burn is [`BurnError::Replayed`] and the connection is refused.
//! (netcode does refuse, silently, a token reused from *another* address
//! while its small table of recent tokens remembers it; the reuse it lets
//! through — same address, or once the table forgot — the book catches.)
//!
//! **Invariant:** a `NonceBook` is bounded (its capacity) and every refusal is
//! counted; it never panics. Time is passed in (`now`, since the Unix epoch),
//! so it is deterministic under test.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use renetcode::{ConnectToken, NETCODE_KEY_BYTES, NETCODE_USER_DATA_BYTES};

pub mod standard;

pub use standard::{CONNECT_TOKEN_BYTES, StandardTokenError, read_standard, write_standard};

/// A session nonce: 16 random bytes.
pub type Nonce = [u8; 16];

/// The current time as a duration since the Unix epoch (zero if the clock is
/// before it).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// What a connect token says about its holder, carried in the token's user
/// data (encrypted; only holders of the private key can read or forge it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    pub account: u64,
    pub nonce: Nonce,
    /// Issue time, seconds since the Unix epoch.
    pub issued_at: u64,
}

/// Layout version of [`TokenClaims`] in the user data.
pub const CLAIMS_VERSION: u8 = 1;
const CLAIMS_MAGIC: &[u8; 4] = b"TSGT";

/// Why user data does not hold claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("user data does not start with the claims magic")]
    BadMagic,
    #[error("claims layout version {0} is not supported (expected {CLAIMS_VERSION})")]
    UnsupportedVersion(u8),
}

impl TokenClaims {
    /// Layout: `"TSGT"`, version (u8), account (u64 LE), nonce (16 bytes),
    /// issued_at (u64 LE), zero padding to 256 bytes.
    pub fn encode(&self) -> [u8; NETCODE_USER_DATA_BYTES] {
        let mut out = [0u8; NETCODE_USER_DATA_BYTES];
        out[0..4].copy_from_slice(CLAIMS_MAGIC);
        out[4] = CLAIMS_VERSION;
        out[5..13].copy_from_slice(&self.account.to_le_bytes());
        out[13..29].copy_from_slice(&self.nonce);
        out[29..37].copy_from_slice(&self.issued_at.to_le_bytes());
        out
    }

    pub fn decode(data: &[u8; NETCODE_USER_DATA_BYTES]) -> Result<Self, ClaimsError> {
        if &data[0..4] != CLAIMS_MAGIC {
            return Err(ClaimsError::BadMagic);
        }
        if data[4] != CLAIMS_VERSION {
            return Err(ClaimsError::UnsupportedVersion(data[4]));
        }
        let mut account = [0u8; 8];
        account.copy_from_slice(&data[5..13]);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&data[13..29]);
        let mut issued_at = [0u8; 8];
        issued_at.copy_from_slice(&data[29..37]);
        Ok(Self {
            account: u64::from_le_bytes(account),
            nonce,
            issued_at: u64::from_le_bytes(issued_at),
        })
    }
}

/// The longest a token may stay valid.
pub const MAX_TOKEN_EXPIRY: Duration = Duration::from_secs(30);

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("token expiry {0:?} is zero or above {MAX_TOKEN_EXPIRY:?}")]
    BadExpiry(Duration),
    #[error("a token lists 1 to 32 gate addresses, not {0}")]
    BadAddressCount(usize),
    #[error("no randomness for the nonce: {0}")]
    Random(getrandom::Error),
    #[error("netcode refused the token: {0}")]
    Netcode(#[from] renetcode::TokenGenerationError),
    #[error("encoding the token: {0}")]
    Io(#[from] io::Error),
}

/// Why bytes are not a connect token.
#[derive(Debug, thiserror::Error)]
pub enum TokenDecodeError {
    #[error("not a connect token: {0}")]
    Invalid(#[from] StandardTokenError),
    #[error("not hex")]
    BadHex,
}

/// Issues connect tokens for the gates that share its private key.
#[derive(Clone)]
pub struct TokenIssuer {
    protocol_id: u64,
    private_key: [u8; NETCODE_KEY_BYTES],
    expiry: Duration,
    timeout_seconds: i32,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TokenIssuer")
            .field("protocol_id", &self.protocol_id)
            .field("expiry", &self.expiry)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish_non_exhaustive()
    }
}

/// A freshly issued token with what the issuer must remember of it.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: ConnectToken,
    pub claims: TokenClaims,
    /// netcode client id (the gate's id for the connection).
    pub client_id: u64,
    /// When the token stops being accepted, since the Unix epoch.
    pub expires_at: Duration,
}

impl IssuedToken {
    /// The token as bytes for the client: the standard 2,048-byte form.
    pub fn to_bytes(&self) -> Vec<u8> {
        token_to_bytes(&self.token)
    }
}

impl TokenIssuer {
    /// `expiry` must be in `(0, 30 s]`; netcode counts it in whole seconds
    /// (rounded up). `timeout_seconds` is the idle timeout both ends apply
    /// once connected.
    pub fn new(
        protocol_id: u64,
        private_key: [u8; NETCODE_KEY_BYTES],
        expiry: Duration,
        timeout_seconds: i32,
    ) -> Result<Self, IssueError> {
        if expiry.is_zero() || expiry > MAX_TOKEN_EXPIRY {
            return Err(IssueError::BadExpiry(expiry));
        }
        Ok(Self {
            protocol_id,
            private_key,
            expiry,
            timeout_seconds,
        })
    }

    pub fn protocol_id(&self) -> u64 {
        self.protocol_id
    }

    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Issues a token for `account` valid on the `gates` (tried in order) from
    /// `now` (since the Unix epoch), with a fresh random nonce.
    pub fn issue(
        &self,
        now: Duration,
        account: u64,
        client_id: u64,
        gates: &[SocketAddr],
    ) -> Result<IssuedToken, IssueError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(IssueError::Random)?;
        self.issue_with_nonce(now, account, client_id, gates, nonce)
    }

    /// [`issue`](Self::issue) with a given nonce (tests, replays of a log).
    pub fn issue_with_nonce(
        &self,
        now: Duration,
        account: u64,
        client_id: u64,
        gates: &[SocketAddr],
        nonce: Nonce,
    ) -> Result<IssuedToken, IssueError> {
        if gates.is_empty() || gates.len() > 32 {
            return Err(IssueError::BadAddressCount(gates.len()));
        }
        let claims = TokenClaims {
            account,
            nonce,
            issued_at: now.as_secs(),
        };
        let expire_secs = self.expiry.as_secs() + u64::from(self.expiry.subsec_nanos() > 0);
        let token = ConnectToken::generate(
            now,
            self.protocol_id,
            expire_secs,
            client_id,
            self.timeout_seconds,
            gates.to_vec(),
            Some(&claims.encode()),
            &self.private_key,
        )?;
        let expires_at = Duration::from_secs(token.expire_timestamp);
        Ok(IssuedToken {
            token,
            claims,
            client_id,
            expires_at,
        })
    }
}

/// A token in the netcode standard's 2,048-byte form ([`write_standard`]),
/// as a `Vec`; send it as is, or in text with [`to_hex`].
pub fn token_to_bytes(token: &ConnectToken) -> Vec<u8> {
    write_standard(token).to_vec()
}

/// Reads a token in the standard form ([`read_standard`]); its `client_id`
/// is 0, as the standard form does not carry it.
pub fn token_from_bytes(bytes: &[u8]) -> Result<ConnectToken, TokenDecodeError> {
    Ok(read_standard(bytes)?)
}

/// Lower-case hex, for carrying a token in text.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    s
}

/// Parses [`to_hex`] output (either case).
pub fn from_hex(s: &str) -> Result<Vec<u8>, TokenDecodeError> {
    fn digit(c: u8) -> Result<u8, TokenDecodeError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(TokenDecodeError::BadHex),
        }
    }
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(TokenDecodeError::BadHex);
    }
    bytes
        .chunks_exact(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Why a nonce could not be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("nonce book is full")]
    Full,
    #[error("nonce already recorded")]
    Duplicate,
}

/// Why a nonce could not be burned. Each outcome refuses the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BurnError {
    #[error("token already used")]
    Replayed,
    #[error("token expired")]
    Expired,
    #[error("token not issued here (or forgotten)")]
    Unknown,
}

#[derive(Clone, Copy, Debug)]
struct NonceEntry {
    expires_at: Duration,
    burned: bool,
}

/// Counters of a [`NonceBook`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonceBookStats {
    pub recorded: u64,
    pub burned: u64,
    pub refused_full: u64,
    pub refused_duplicate: u64,
    pub replayed: u64,
    pub expired: u64,
    pub unknown: u64,
    pub purged: u64,
}

/// Single-use nonces with a capacity and an expiry.
///
/// An entry lives until `expires_at + retention` so that a late replay is
/// still told apart from an unknown nonce; past that it is purged (lazily, on
/// any call) and a burn says [`BurnError::Unknown`] — by then the token itself
/// has long expired at the gate. A plain struct: share it behind a `Mutex`.
#[derive(Debug)]
pub struct NonceBook {
    capacity: usize,
    ttl: Duration,
    retention: Duration,
    entries: BTreeMap<Nonce, NonceEntry>,
    /// `(expires_at, nonce)` for purging in time order.
    by_expiry: BTreeSet<(Duration, Nonce)>,
    stats: NonceBookStats,
}

impl NonceBook {
    /// `capacity` entries at most; a nonce is valid for `ttl` from
    /// [`record`](Self::record) (use the token expiry) and remembered for as
    /// long again.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            retention: ttl,
            entries: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            stats: NonceBookStats::default(),
        }
    }

    /// Records a nonce just issued at `now`.
    pub fn record(&mut self, nonce: Nonce, now: Duration) -> Result<(), RecordError> {
        self.purge(now);
        if self.entries.contains_key(&nonce) {
            self.stats.refused_duplicate += 1;
            return Err(RecordError::Duplicate);
        }
        if self.entries.len() >= self.capacity {
            self.stats.refused_full += 1;
            return Err(RecordError::Full);
        }
        let expires_at = now.saturating_add(self.ttl);
        self.entries.insert(
            nonce,
            NonceEntry {
                expires_at,
                burned: false,
            },
        );
        self.by_expiry.insert((expires_at, nonce));
        self.stats.recorded += 1;
        Ok(())
    }

    /// Uses up a nonce at `now`: succeeds once, while it is valid.
    pub fn burn(&mut self, nonce: &Nonce, now: Duration) -> Result<(), BurnError> {
        self.purge(now);
        let Some(entry) = self.entries.get_mut(nonce) else {
            self.stats.unknown += 1;
            return Err(BurnError::Unknown);
        };
        if entry.burned {
            self.stats.replayed += 1;
            return Err(BurnError::Replayed);
        }
        if now >= entry.expires_at {
            self.stats.expired += 1;
            return Err(BurnError::Expired);
        }
        entry.burned = true;
        self.stats.burned += 1;
        Ok(())
    }

    /// Forgets entries past their retention.
    pub fn purge(&mut self, now: Duration) {
        while let Some(&(expires_at, nonce)) = self.by_expiry.first() {
            if expires_at.saturating_add(self.retention) > now {
                break;
            }
            self.by_expiry.pop_first();
            self.entries.remove(&nonce);
            self.stats.purged += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> NonceBookStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [3; 32];

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(9, KEY, Duration::from_secs(20), 10).unwrap()
    }

    #[test]
    fn claims_round_trip_and_refuse_garbage() {
        let c = TokenClaims {
            account: 77,
            nonce: [5; 16],
            issued_at: 1_700_000_000,
        };
        assert_eq!(TokenClaims::decode(&c.encode()), Ok(c));
        assert_eq!(TokenClaims::decode(&[0; 256]), Err(ClaimsError::BadMagic));
        let mut bad = c.encode();
        bad[4] = 2;
        assert_eq!(
            TokenClaims::decode(&bad),
            Err(ClaimsError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn issue_encode_decode() {
        let now = Duration::from_secs(1_800_000_000);
        let gates: Vec<SocketAddr> = vec!["127.0.0.1:4000".parse().unwrap()];
        let issued = issuer().issue(now, 12, 34, &gates).unwrap();
        assert_eq!(issued.expires_at, now + Duration::from_secs(20));
        assert_eq!(issued.claims.account, 12);
        assert_eq!(issued.claims.issued_at, now.as_secs());
        let bytes = issued.to_bytes();
        assert_eq!(bytes.len(), CONNECT_TOKEN_BYTES);
        let back = token_from_bytes(&from_hex(&to_hex(&bytes)).unwrap()).unwrap();
        // The standard form leaves the client id in the encrypted part only.
        assert_eq!(back.client_id, 0);
        assert_eq!(
            back,
            ConnectToken {
                client_id: 0,
                ..issued.token
            }
        );
        assert!(token_from_bytes(&bytes[..100]).is_err());
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn issuer_limits() {
        assert!(TokenIssuer::new(1, KEY, Duration::from_secs(31), 5).is_err());
        assert!(TokenIssuer::new(1, KEY, Duration::ZERO, 5).is_err());
        let now = unix_now();
        assert!(matches!(
            issuer().issue(now, 1, 1, &[]),
            Err(IssueError::BadAddressCount(0))
        ));
        let many: Vec<SocketAddr> = (0..33)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 4000 + i)))
            .collect();
        assert!(issuer().issue(now, 1, 1, &many).is_err());
        assert!(!format!("{:?}", issuer()).contains("3, 3"));
    }

    #[test]
    fn nonce_book_single_use() {
        let t0 = Duration::from_secs(100);
        let mut book = NonceBook::new(2, Duration::from_secs(10));
        book.record([1; 16], t0).unwrap();
        assert_eq!(book.record([1; 16], t0), Err(RecordError::Duplicate));
        assert_eq!(book.burn(&[1; 16], t0 + Duration::from_secs(1)), Ok(()));
        assert_eq!(
            book.burn(&[1; 16], t0 + Duration::from_secs(2)),
            Err(BurnError::Replayed)
        );
        assert_eq!(book.burn(&[9; 16], t0), Err(BurnError::Unknown));
        book.record([2; 16], t0).unwrap();
        assert_eq!(book.record([3; 16], t0), Err(RecordError::Full));
        assert_eq!(
            book.burn(&[2; 16], t0 + Duration::from_secs(10)),
            Err(BurnError::Expired)
        );
        // Past retention both are purged: room again, and the nonce is unknown.
        let later = t0 + Duration::from_secs(20);
        book.record([3; 16], later).unwrap();
        assert_eq!(book.len(), 1);
        assert_eq!(book.burn(&[1; 16], later), Err(BurnError::Unknown));
        let s = book.stats();
        assert_eq!(
            (
                s.recorded,
                s.burned,
                s.replayed,
                s.expired,
                s.unknown,
                s.refused_full
            ),
            (3, 1, 1, 1, 2, 1)
        );
        assert_eq!(s.refused_duplicate, 1);
        assert_eq!(s.purged, 2);
    }
}
