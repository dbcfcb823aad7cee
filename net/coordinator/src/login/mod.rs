//! Login admission: connect tokens for the least-loaded gate, single-use
//! session nonces, resume keys, and the first-come-first-served queue when
//! the cluster is at its population cap. Pure bookkeeping behind the core's
//! lock; the HTTP handlers (`http.rs`) do the password check off the async
//! threads and the rate limiting before they get here.
//!
//! Tokens, resume keys and queue places are kept in maps with an expiry
//! each and at most one of each per account: a call looks its key up and
//! drops only what has expired, oldest first (`expiring.rs`, `queue.rs`);
//! nothing sweeps or scans a whole map.
//!
//! **Invariant:** an account holds at most one unused connect token, one
//! resume key and one place in the queue. A newer login replaces the older
//! token; a resume key is spent by its use (the token it buys comes with a
//! new one); `Logins::revoke` takes all three back (a ban).

mod config;
mod expiring;
mod queue;

use std::collections::BTreeSet;
use std::time::Duration;

use tessera_gate::token::{IssueError, Nonce, TokenIssuer, to_hex, unix_now, write_standard};
use tessera_proto::client::NETCODE_PROTOCOL_ID;

pub use self::config::LoginConfig;
use self::expiring::{Entry, Expiring};
use self::queue::Queue;
use crate::ids::{NoRandomness, new_session_id, random_hex};

/// What a login got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    Token {
        account: u64,
        token: String,
        gate: String,
        expires_in_s: u64,
        resume_key: String,
    },
    Queued {
        ticket: String,
        position: u64,
    },
}

/// Why a login could not be admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AdmitError {
    #[error("no gate is available")]
    NoGate,
    #[error("the login queue is full")]
    QueueFull,
    #[error("unknown or expired ticket")]
    UnknownTicket,
    #[error("unknown, used or expired resume key")]
    UnknownResumeKey,
    #[error("cannot issue a token: {0}")]
    Issue(String),
    #[error(transparent)]
    NoRandomness(#[from] NoRandomness),
}

/// Why a gate's session could not be opened from its token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BurnError {
    #[error("the connect token was already used, or never issued")]
    Unknown,
    #[error("the connect token expired")]
    Expired,
    #[error("the connect token is for another account or client")]
    Mismatch,
}

/// Counts of what happened to tokens, resume keys and queue places.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LoginCounts {
    pub(crate) tokens_issued: u64,
    pub(crate) tokens_burnt: u64,
    pub(crate) tokens_refused: u64,
    /// Unused tokens replaced by the account's newer login, or revoked.
    pub(crate) tokens_revoked: u64,
    /// Unused tokens that expired.
    pub(crate) tokens_expired: u64,
    pub(crate) resume_issued: u64,
    /// Resume keys spent on a login.
    pub(crate) resume_used: u64,
    /// Resume keys replaced by a newer one or revoked.
    pub(crate) resume_revoked: u64,
    pub(crate) resume_expired: u64,
    /// Resume keys dropped, oldest first, to stay within the cap.
    pub(crate) resume_evicted: u64,
    /// Queue places dropped because their ticket stopped polling.
    pub(crate) queue_timed_out: u64,
    /// Queue places revoked.
    pub(crate) queue_revoked: u64,
}

/// Admission's bookkeeping: tokens in flight, resume keys, the queue.
pub(crate) struct Logins {
    config: LoginConfig,
    issuer: TokenIssuer,
    /// Unused tokens by nonce; the value is the token's client id.
    pending: Expiring<Nonce, u64>,
    /// The client ids of `pending`, so a new one is checked in O(log n).
    pending_clients: BTreeSet<u64>,
    resume: Expiring<String, ()>,
    queue: Queue,
    next_gate_addr: usize,
    pub(crate) counts: LoginCounts,
}

/// Most issued-but-unused tokens kept (each expires in ≤ 30 s anyway).
const MAX_PENDING: usize = 200_000;
/// Most resume keys kept.
const MAX_RESUME: usize = 200_000;

impl Logins {
    pub(crate) fn new(config: LoginConfig, key: [u8; 32]) -> Result<Self, String> {
        config.validate()?;
        let issuer = TokenIssuer::new(
            NETCODE_PROTOCOL_ID,
            key,
            Duration::from_secs(config.token_expiry_s),
            10,
        )
        .map_err(|e| e.to_string())?;
        let queue = Queue::new(config.queue_capacity, config.queue_timeout_ms);
        Ok(Self {
            config,
            issuer,
            pending: Expiring::default(),
            pending_clients: BTreeSet::new(),
            resume: Expiring::default(),
            queue,
            next_gate_addr: 0,
            counts: LoginCounts::default(),
        })
    }

    pub(crate) fn config(&self) -> &LoginConfig {
        &self.config
    }

    /// Tokens issued and not yet used (they count toward the population cap).
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Resume keys held.
    pub(crate) fn resume_keys(&self) -> usize {
        self.resume.len()
    }

    /// Drops what has expired: costs only what it drops.
    fn expire(&mut self, now_ms: u64) {
        let now = unix_now();
        let (clients, counts) = (&mut self.pending_clients, &mut self.counts);
        self.pending.expire(now, |_, e| {
            clients.remove(&e.value);
            counts.tokens_expired += 1;
        });
        self.resume.expire(now, |_, _| counts.resume_expired += 1);
        self.queue.expire(now_ms, |_| counts.queue_timed_out += 1);
    }

    /// The account behind a resume key still in its grace period (the key
    /// is not spent: see [`Logins::admit_resumed`]).
    pub(crate) fn resume_account(&self, key: &str) -> Option<u64> {
        self.resume
            .get(key)
            .filter(|e| e.expires > unix_now())
            .map(|e| e.account)
    }

    /// A login for `account` with `online` players on the gates: a token at
    /// once if there is room and nobody waits, else a place in the queue.
    /// `gates` are client addresses of the least-loaded gate, `unique` says
    /// whether a client id is free.
    pub(crate) fn admit(
        &mut self,
        account: u64,
        online: u64,
        now_ms: u64,
        gates: &[String],
        unique: impl Fn(u64) -> bool,
    ) -> Result<Admission, AdmitError> {
        self.expire(now_ms);
        let room = self.room(online);
        if self.queue.is_empty() && room > 0 {
            return self.issue(account, gates, unique);
        }
        let ticket = random_hex(16)?;
        let position = self
            .queue
            .push(account, ticket.clone(), now_ms)
            .ok_or(AdmitError::QueueFull)?;
        Ok(Admission::Queued { ticket, position })
    }

    /// A login with resume key `key`, checked to be `account`'s: the key is
    /// spent (a token comes with a new one), then the login is admitted as
    /// [`Logins::admit`] does. A refused login leaves the key as it was; a
    /// queued one has spent it (the token from the queue brings a new one).
    pub(crate) fn admit_resumed(
        &mut self,
        key: &str,
        account: u64,
        online: u64,
        now_ms: u64,
        gates: &[String],
        unique: impl Fn(u64) -> bool,
    ) -> Result<Admission, AdmitError> {
        let key = key.to_owned();
        let spent = match self.resume.remove(&key) {
            Some(e) if e.account == account && e.expires > unix_now() => e,
            Some(e) => {
                // Not this login's key after all: put it back untouched.
                self.resume.insert(key, e);
                return Err(AdmitError::UnknownResumeKey);
            }
            None => return Err(AdmitError::UnknownResumeKey),
        };
        match self.admit(account, online, now_ms, gates, unique) {
            Ok(a) => {
                self.counts.resume_used += 1;
                Ok(a)
            }
            Err(e) => {
                // Nothing was issued, so no newer key was made: the key
                // goes back as it was.
                self.resume.insert(key, spent);
                Err(e)
            }
        }
    }

    /// A queued login polls: admitted when its turn comes and there is room.
    pub(crate) fn poll(
        &mut self,
        ticket: &str,
        online: u64,
        now_ms: u64,
        gates: &[String],
        unique: impl Fn(u64) -> bool,
    ) -> Result<Admission, AdmitError> {
        self.expire(now_ms);
        let (place, ahead) = self
            .queue
            .poll(ticket, now_ms)
            .ok_or(AdmitError::UnknownTicket)?;
        // First come, first served: only the first `room` in line get in.
        if ahead < self.room(online) {
            let account = self.queue.account(place).ok_or(AdmitError::UnknownTicket)?;
            let admitted = self.issue(account, gates, unique)?;
            self.queue.remove(place);
            return Ok(admitted);
        }
        Ok(Admission::Queued {
            ticket: ticket.to_owned(),
            position: ahead + 1,
        })
    }

    /// Takes back everything `account` holds: its unused token, its resume
    /// key and its place in the queue. Called when the account is banned;
    /// a password change must call it too (the API has none yet).
    pub(crate) fn revoke(&mut self, account: u64) {
        if let Some((_, e)) = self.pending.remove_account(account) {
            self.pending_clients.remove(&e.value);
            self.counts.tokens_revoked += 1;
        }
        if self.resume.remove_account(account).is_some() {
            self.counts.resume_revoked += 1;
        }
        if self.queue.remove_account(account) {
            self.counts.queue_revoked += 1;
        }
    }

    fn room(&self, online: u64) -> u64 {
        u64::from(self.config.max_online).saturating_sub(online + self.pending.len() as u64)
    }

    fn issue(
        &mut self,
        account: u64,
        gates: &[String],
        unique: impl Fn(u64) -> bool,
    ) -> Result<Admission, AdmitError> {
        if gates.is_empty() {
            return Err(AdmitError::NoGate);
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(AdmitError::Issue("too many tokens in flight".into()));
        }
        // Round-robin over the gate's open listeners.
        let gate = gates[self.next_gate_addr % gates.len()].clone();
        self.next_gate_addr = self.next_gate_addr.wrapping_add(1);
        let addr: std::net::SocketAddr = gate
            .parse()
            .map_err(|_| AdmitError::Issue(format!("gate address {gate:?}")))?;
        let client = loop {
            let c = new_session_id()?;
            if unique(c) && !self.pending_clients.contains(&c) {
                break c;
            }
        };
        // Every random draw before anything is recorded: a failed random
        // source leaves no token half made.
        let resume_key = random_hex(24)?;
        let now = unix_now();
        let issued = self
            .issuer
            .issue(now, account, client, &[addr])
            .map_err(|e| match e {
                IssueError::Random(e) => AdmitError::NoRandomness(NoRandomness(e)),
                e => AdmitError::Issue(e.to_string()),
            })?;
        // One pending token per account: a newer login revokes the older
        // token, so a client that logs in again and again holds one place.
        let token = Entry {
            account,
            expires: now + Duration::from_secs(self.config.token_expiry_s) + Duration::from_secs(5),
            value: client,
        };
        if let Some((_, old)) = self.pending.insert(issued.claims.nonce, token) {
            self.pending_clients.remove(&old.value);
            self.counts.tokens_revoked += 1;
        }
        self.pending_clients.insert(client);
        self.counts.tokens_issued += 1;
        self.new_resume_key(account, resume_key.clone(), now);
        Ok(Admission::Token {
            account,
            // The netcode standard's 2,048 bytes, which any netcode client
            // reads (renetcode's own serialization is not the standard).
            token: to_hex(&write_standard(&issued.token)),
            gate,
            expires_in_s: self.config.token_expiry_s,
            resume_key,
        })
    }

    /// `key` becomes the account's resume key; its previous one stops
    /// working.
    fn new_resume_key(&mut self, account: u64, key: String, now: Duration) {
        if self.resume.len() >= MAX_RESUME && self.resume.pop_oldest().is_some() {
            self.counts.resume_evicted += 1;
        }
        let entry = Entry {
            account,
            expires: now + Duration::from_secs(self.config.resume_grace_s),
            value: (),
        };
        if self.resume.insert(key, entry).is_some() {
            self.counts.resume_revoked += 1;
        }
        self.counts.resume_issued += 1;
    }

    /// A gate presents a client's token claims: the nonce is burnt (a token
    /// connects once) and must match what was issued.
    pub(crate) fn burn(
        &mut self,
        nonce: &Nonce,
        account: u64,
        client: u64,
    ) -> Result<(), BurnError> {
        let found = self.pending.remove(nonce);
        if let Some(e) = &found {
            self.pending_clients.remove(&e.value);
        }
        let r = match found {
            None => Err(BurnError::Unknown),
            Some(e) if e.expires <= unix_now() => Err(BurnError::Expired),
            Some(e) if e.account != account || e.value != client => Err(BurnError::Mismatch),
            Some(_) => Ok(()),
        };
        match r {
            Ok(()) => self.counts.tokens_burnt += 1,
            Err(_) => self.counts.tokens_refused += 1,
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The account's pending token: its nonce and client id.
    fn pending_of(l: &Logins, account: u64) -> (Nonce, u64) {
        let (n, e) = l.pending.of_account(account).expect("pending");
        (*n, e.value)
    }

    fn logins(max_online: u32) -> Logins {
        Logins::new(
            LoginConfig {
                max_online,
                ..LoginConfig::default()
            },
            [7; 32],
        )
        .expect("valid")
    }

    fn gates() -> Vec<String> {
        vec!["127.0.0.1:7300".into()]
    }

    fn resume_key(a: Result<Admission, AdmitError>) -> String {
        match a {
            Ok(Admission::Token { resume_key, .. }) => resume_key,
            other => panic!("expected a token: {other:?}"),
        }
    }

    #[test]
    fn the_token_is_the_standard_2048_bytes_in_hex() {
        let mut l = logins(10);
        let Admission::Token { token, .. } =
            l.admit(1, 0, 0, &gates(), |_| true).expect("admitted")
        else {
            panic!("expected a token");
        };
        assert_eq!(token.len(), 2 * tessera_gate::token::CONNECT_TOKEN_BYTES);
        assert!(token.starts_with(&to_hex(b"NETCODE 1.02\0")));
        let bytes = tessera_gate::token::from_hex(&token).expect("hex");
        let t = tessera_gate::token::read_standard(&bytes).expect("standard token");
        assert_eq!(
            t.server_addresses[0],
            Some("127.0.0.1:7300".parse().expect("address"))
        );
    }

    #[test]
    fn tokens_are_single_use_and_bound_to_their_claims() {
        let mut l = logins(10);
        let Admission::Token { .. } = l.admit(1, 0, 0, &gates(), |_| true).expect("admitted")
        else {
            panic!("expected a token");
        };
        let (nonce, client) = pending_of(&l, 1);
        assert_eq!(l.burn(&nonce, 2, client), Err(BurnError::Mismatch));
        // A mismatch burns it too: the token is spent.
        assert_eq!(l.burn(&nonce, 1, client), Err(BurnError::Unknown));
        l.admit(1, 0, 0, &gates(), |_| true).expect("admitted");
        let (nonce, client) = pending_of(&l, 1);
        assert_eq!(l.burn(&nonce, 1, client), Ok(()));
        assert_eq!(l.burn(&nonce, 1, client), Err(BurnError::Unknown), "replay");
        assert_eq!((l.counts.tokens_burnt, l.counts.tokens_refused), (1, 3));
        assert!(l.pending_clients.is_empty());
    }

    #[test]
    fn a_newer_login_revokes_the_accounts_unused_token() {
        let mut l = logins(10);
        l.admit(1, 0, 0, &gates(), |_| true).expect("admitted");
        let (first, client) = pending_of(&l, 1);
        l.admit(2, 0, 0, &gates(), |_| true).expect("admitted");
        l.admit(1, 0, 0, &gates(), |_| true).expect("admitted");
        assert_eq!(l.pending(), 2, "one token per account");
        assert_eq!(l.pending_clients.len(), 2);
        assert_eq!(l.counts.tokens_revoked, 1);
        assert_eq!(l.burn(&first, 1, client), Err(BurnError::Unknown));
        let (nonce, client) = pending_of(&l, 1);
        assert_eq!(l.burn(&nonce, 1, client), Ok(()));
    }

    /// Logging in again and again holds one token, so one account can
    /// never fill the population cap with unused tokens.
    #[test]
    fn repeated_logins_hold_one_place_under_the_cap() {
        let mut l = logins(2);
        for _ in 0..5 {
            assert!(matches!(
                l.admit(1, 0, 0, &gates(), |_| true),
                Ok(Admission::Token { .. })
            ));
        }
        assert!(
            matches!(
                l.admit(2, 0, 0, &gates(), |_| true),
                Ok(Admission::Token { .. })
            ),
            "room is left for another account"
        );
    }

    #[test]
    fn the_queue_is_first_come_first_served() {
        let mut l = logins(2);
        // Two online already: everyone queues.
        let mut tickets = Vec::new();
        for account in 1..=3 {
            match l.admit(account, 2, 0, &gates(), |_| true).expect("queued") {
                Admission::Queued { ticket, position } => {
                    assert_eq!(position, account);
                    tickets.push(ticket);
                }
                other => panic!("{other:?}"),
            }
        }
        // One leaves: only the first in line gets in, even if the third polls first.
        let third = l
            .poll(&tickets[2], 1, 10, &gates(), |_| true)
            .expect("polled");
        assert_eq!(
            third,
            Admission::Queued {
                ticket: tickets[2].clone(),
                position: 3
            }
        );
        assert!(matches!(
            l.poll(&tickets[0], 1, 10, &gates(), |_| true),
            Ok(Admission::Token { .. })
        ));
        // The admitted token holds the slot until it is used or expires.
        assert!(matches!(
            l.poll(&tickets[1], 1, 10, &gates(), |_| true),
            Ok(Admission::Queued { position: 1, .. })
        ));
        assert_eq!(
            l.poll("nope", 0, 10, &gates(), |_| true),
            Err(AdmitError::UnknownTicket)
        );
        // A ticket that stops polling loses its place, and that is counted.
        let later = 10 + l.config.queue_timeout_ms + 1;
        assert_eq!(
            l.poll(&tickets[1], 0, later, &gates(), |_| true),
            Err(AdmitError::UnknownTicket)
        );
        assert_eq!(l.counts.queue_timed_out, 2);
        assert_eq!(l.queued(), 0);
    }

    /// Logging in again while queued keeps the account's one place (with a
    /// new ticket), so one account cannot fill the queue.
    #[test]
    fn an_account_holds_one_place_in_the_queue() {
        let mut l = logins(1);
        let ticket = |a| match a {
            Ok(Admission::Queued { ticket, position }) => (ticket, position),
            other => panic!("expected a place: {other:?}"),
        };
        let (first, _) = ticket(l.admit(1, 1, 0, &gates(), |_| true));
        ticket(l.admit(2, 1, 0, &gates(), |_| true));
        let (again, position) = ticket(l.admit(1, 1, 0, &gates(), |_| true));
        assert_eq!((l.queued(), position), (2, 1));
        assert_eq!(
            l.poll(&first, 0, 0, &gates(), |_| true),
            Err(AdmitError::UnknownTicket),
            "the older ticket stops working"
        );
        assert!(matches!(
            l.poll(&again, 0, 0, &gates(), |_| true),
            Ok(Admission::Token { .. })
        ));
    }

    #[test]
    fn resume_keys_name_the_account_and_no_gate_is_an_error() {
        let mut l = logins(10);
        let key = resume_key(l.admit(42, 0, 0, &gates(), |_| true));
        assert_eq!(l.resume_account(&key), Some(42));
        assert_eq!(l.resume_account("other"), None);
        assert_eq!(l.admit(42, 0, 0, &[], |_| true), Err(AdmitError::NoGate));
    }

    /// A resume key buys one token, which comes with a new key; the old
    /// one stops working, and so does the key a password login replaced.
    #[test]
    fn resume_keys_rotate_on_use_and_are_single_use() {
        let mut l = logins(10);
        let first = resume_key(l.admit(7, 0, 0, &gates(), |_| true));
        let second = resume_key(l.admit_resumed(&first, 7, 0, 0, &gates(), |_| true));
        assert_ne!(first, second, "rotated");
        assert_eq!(l.resume_account(&first), None);
        assert_eq!(
            l.admit_resumed(&first, 7, 0, 0, &gates(), |_| true),
            Err(AdmitError::UnknownResumeKey),
            "single use"
        );
        // A password login rotates it too: the previous key is dead.
        let third = resume_key(l.admit(7, 0, 0, &gates(), |_| true));
        assert_eq!(l.resume_account(&second), None);
        assert_eq!(l.resume_account(&third), Some(7));
        assert_eq!(l.resume_keys(), 1);
        // Another account's key does not log this one in, and is not spent.
        let other = resume_key(l.admit(8, 0, 0, &gates(), |_| true));
        assert_eq!(
            l.admit_resumed(&other, 7, 0, 0, &gates(), |_| true),
            Err(AdmitError::UnknownResumeKey)
        );
        assert_eq!(l.resume_account(&other), Some(8));
        // A refused login leaves the key good.
        assert_eq!(
            l.admit_resumed(&third, 7, 0, 0, &[], |_| true),
            Err(AdmitError::NoGate)
        );
        assert_eq!(l.resume_account(&third), Some(7));
        assert_eq!(
            (l.counts.resume_used, l.counts.resume_revoked),
            (1, 1),
            "{:?}",
            l.counts
        );
    }

    /// A ban takes back the account's unused token, resume key and place
    /// in the queue.
    #[test]
    fn revoking_an_account_takes_back_everything_it_holds() {
        let mut l = logins(1);
        let key = resume_key(l.admit(5, 0, 0, &gates(), |_| true));
        let (nonce, client) = pending_of(&l, 5);
        l.revoke(5);
        assert_eq!(l.resume_account(&key), None);
        assert_eq!(l.burn(&nonce, 5, client), Err(BurnError::Unknown));
        assert_eq!(l.pending(), 0);
        // Queued (one online, the cap is one): the place goes too.
        let Ok(Admission::Queued { ticket, .. }) = l.admit(5, 1, 0, &gates(), |_| true) else {
            panic!("expected a place");
        };
        l.revoke(5);
        assert_eq!(
            l.poll(&ticket, 0, 0, &gates(), |_| true),
            Err(AdmitError::UnknownTicket)
        );
        let c = l.counts;
        assert_eq!(
            (c.tokens_revoked, c.resume_revoked, c.queue_revoked),
            (1, 1, 1)
        );
    }

    /// Expired tokens and keys leave without anyone sweeping for them, and
    /// are counted.
    #[test]
    fn expired_tokens_and_keys_are_dropped_and_counted() {
        let mut l = Logins::new(
            LoginConfig {
                resume_grace_s: 0,
                ..LoginConfig::default()
            },
            [7; 32],
        )
        .expect("valid");
        let key = resume_key(l.admit(1, 0, 0, &gates(), |_| true));
        // A grace of 0 s: the key is dead at once, and the next call drops it.
        assert_eq!(l.resume_account(&key), None);
        l.admit(2, 0, 0, &gates(), |_| true).expect("admitted");
        assert_eq!(l.counts.resume_expired, 1);
        assert_eq!(l.resume_keys(), 1);
    }
}
