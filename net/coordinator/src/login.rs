//! Login admission: connect tokens for the least-loaded gate, single-use
//! session nonces, resume keys, and the first-come-first-served queue when
//! the cluster is at its population cap. Pure bookkeeping behind the core's
//! lock; the HTTP handlers (`http.rs`) do the password check off the async
//! threads and the rate limiting before they get here.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tessera_gate::token::{Nonce, TokenIssuer, to_hex, unix_now, write_standard};
use tessera_proto::client::NETCODE_PROTOCOL_ID;

use crate::ids::{NoRandomness, new_session_id, random_hex};

/// The `[coordinator.login]` section of `tessera.toml`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Players online (and admitted, not yet connected) before logins queue.
    /// Default 5000.
    pub max_online: u32,
    /// Connect token lifetime, seconds (≤ 30). Default 20.
    pub token_expiry_s: u64,
    /// How long a resume key logs in without a password, seconds. Default 300.
    pub resume_grace_s: u64,
    /// Logins and registrations per client IP: sustained per second, and burst.
    /// Defaults 2/s, burst 10.
    pub per_ip_per_s: u32,
    pub per_ip_burst: u32,
    /// Logins per account (email): sustained per second, and burst. Defaults 1/s, burst 5.
    pub per_account_per_s: u32,
    pub per_account_burst: u32,
    /// Client IPs exempt from the per-IP limit (load tests on loopback).
    /// Default `["127.0.0.1", "::1"]`.
    pub trusted_ips: Vec<String>,
    /// Reverse proxies in front of the login API: from these peers the
    /// client's address is read from `client_ip_header`. Default none.
    pub proxies: Vec<String>,
    /// The header a proxy sets to the client's address; its last entry is
    /// used (proxies append to `X-Forwarded-For`). Default `x-forwarded-for`.
    pub client_ip_header: String,
    /// Polls of queued logins per client IP: sustained per second, and burst.
    /// Defaults 10/s, burst 20 (a queued client polls every 500 ms).
    pub poll_per_ip_per_s: u32,
    pub poll_per_ip_burst: u32,
    /// The scene new avatars start in. Default `field`.
    pub start_scene: String,
    /// Most logins waiting in the queue. Default 100000.
    pub queue_capacity: usize,
    /// A queued login that has not polled for this long loses its place, ms.
    /// Default 30000.
    pub queue_timeout_ms: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            max_online: 5000,
            token_expiry_s: 20,
            resume_grace_s: 300,
            per_ip_per_s: 2,
            per_ip_burst: 10,
            per_account_per_s: 1,
            per_account_burst: 5,
            trusted_ips: vec!["127.0.0.1".into(), "::1".into()],
            proxies: Vec::new(),
            client_ip_header: "x-forwarded-for".into(),
            poll_per_ip_per_s: 10,
            poll_per_ip_burst: 20,
            start_scene: "field".into(),
            queue_capacity: 100_000,
            queue_timeout_ms: 30_000,
        }
    }
}

impl LoginConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_online == 0 {
            return Err("coordinator.login.max_online must be greater than 0".into());
        }
        if !(1..=30).contains(&self.token_expiry_s) {
            return Err("coordinator.login.token_expiry_s must be between 1 and 30".into());
        }
        if self.per_ip_per_s == 0 || self.per_ip_burst == 0 {
            return Err("coordinator.login.per_ip_per_s and per_ip_burst must be > 0".into());
        }
        if self.per_account_per_s == 0 || self.per_account_burst == 0 {
            return Err(
                "coordinator.login.per_account_per_s and per_account_burst must be > 0".into(),
            );
        }
        if self.poll_per_ip_per_s == 0 || self.poll_per_ip_burst == 0 {
            return Err(
                "coordinator.login.poll_per_ip_per_s and poll_per_ip_burst must be > 0".into(),
            );
        }
        for (field, ips) in [
            ("trusted_ips", &self.trusted_ips),
            ("proxies", &self.proxies),
        ] {
            for ip in ips {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(format!("coordinator.login.{field}: {ip:?} is not an IP"));
                }
            }
        }
        let header = &self.client_ip_header;
        if header.is_empty()
            || !header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "coordinator.login.client_ip_header {header:?} must be a lower-case header name"
            ));
        }
        if self.queue_capacity == 0 {
            return Err("coordinator.login.queue_capacity must be greater than 0".into());
        }
        Ok(())
    }
}

/// An issued token whose nonce has not been burnt yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    account: u64,
    client: u64,
    expires: Duration,
}

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

#[derive(Debug)]
struct Queued {
    ticket: String,
    account: u64,
    last_poll_ms: u64,
}

/// Admission's bookkeeping: tokens in flight, resume keys, the queue.
pub(crate) struct Logins {
    config: LoginConfig,
    issuer: TokenIssuer,
    pending: BTreeMap<Nonce, Pending>,
    resume: BTreeMap<String, (u64, Duration)>,
    queue: VecDeque<Queued>,
    next_gate_addr: usize,
    pub(crate) issued: u64,
    pub(crate) burnt: u64,
    pub(crate) refused_tokens: u64,
    /// Unused tokens an account's newer login replaced.
    pub(crate) revoked_tokens: u64,
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
        Ok(Self {
            config,
            issuer,
            pending: BTreeMap::new(),
            resume: BTreeMap::new(),
            queue: VecDeque::new(),
            next_gate_addr: 0,
            issued: 0,
            revoked_tokens: 0,
            burnt: 0,
            refused_tokens: 0,
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

    fn expire(&mut self, now_ms: u64) {
        let now = unix_now();
        self.pending.retain(|_, p| p.expires > now);
        self.resume.retain(|_, (_, exp)| *exp > now);
        let timeout = self.config.queue_timeout_ms;
        self.queue
            .retain(|q| now_ms.saturating_sub(q.last_poll_ms) <= timeout);
    }

    /// The account behind a resume key still in its grace period.
    pub(crate) fn resume_account(&self, key: &str) -> Option<u64> {
        self.resume
            .get(key)
            .filter(|(_, exp)| *exp > unix_now())
            .map(|(a, _)| *a)
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
        if self.queue.len() >= self.config.queue_capacity {
            return Err(AdmitError::QueueFull);
        }
        let ticket = random_hex(16)?;
        self.queue.push_back(Queued {
            ticket: ticket.clone(),
            account,
            last_poll_ms: now_ms,
        });
        Ok(Admission::Queued {
            ticket,
            position: self.queue.len() as u64,
        })
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
        let Some(i) = self.queue.iter().position(|q| q.ticket == ticket) else {
            return Err(AdmitError::UnknownTicket);
        };
        self.queue[i].last_poll_ms = now_ms;
        // First come, first served: only the first `room` in line get in.
        if (i as u64) < self.room(online) {
            let account = self.queue[i].account;
            let admitted = self.issue(account, gates, unique)?;
            self.queue.remove(i);
            return Ok(admitted);
        }
        Ok(Admission::Queued {
            ticket: ticket.to_owned(),
            position: i as u64 + 1,
        })
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
            if unique(c) && !self.pending.values().any(|p| p.client == c) {
                break c;
            }
        };
        let now = unix_now();
        let issued = self
            .issuer
            .issue(now, account, client, &[addr])
            .map_err(|e| AdmitError::Issue(e.to_string()))?;
        // One pending token per account: a newer login revokes the older
        // token, so a client that logs in again and again holds one place.
        let before = self.pending.len();
        self.pending.retain(|_, p| p.account != account);
        self.revoked_tokens += (before - self.pending.len()) as u64;
        self.pending.insert(
            issued.claims.nonce,
            Pending {
                account,
                client,
                expires: now
                    + Duration::from_secs(self.config.token_expiry_s)
                    + Duration::from_secs(5),
            },
        );
        self.issued += 1;
        let resume_key = self.resume_key(account)?;
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

    /// The account's resume key, created or extended.
    fn resume_key(&mut self, account: u64) -> Result<String, NoRandomness> {
        let exp = unix_now() + Duration::from_secs(self.config.resume_grace_s);
        if let Some((k, v)) = self.resume.iter_mut().find(|(_, (a, _))| *a == account) {
            v.1 = exp;
            return Ok(k.clone());
        }
        if self.resume.len() >= MAX_RESUME
            && let Some(oldest) = self
                .resume
                .iter()
                .min_by_key(|(_, (_, e))| *e)
                .map(|(k, _)| k.clone())
        {
            self.resume.remove(&oldest);
        }
        let key = random_hex(24)?;
        self.resume.insert(key.clone(), (account, exp));
        Ok(key)
    }

    /// A gate presents a client's token claims: the nonce is burnt (a token
    /// connects once) and must match what was issued.
    pub(crate) fn burn(
        &mut self,
        nonce: &Nonce,
        account: u64,
        client: u64,
    ) -> Result<(), BurnError> {
        let r = match self.pending.remove(nonce) {
            None => Err(BurnError::Unknown),
            Some(p) if p.expires <= unix_now() => Err(BurnError::Expired),
            Some(p) if p.account != account || p.client != client => Err(BurnError::Mismatch),
            Some(_) => Ok(()),
        };
        match r {
            Ok(()) => self.burnt += 1,
            Err(_) => self.refused_tokens += 1,
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first pending token's nonce and record (there must be one).
    fn first_pending(l: &Logins) -> (Nonce, Pending) {
        let (n, p) = l.pending.iter().next().expect("pending");
        (*n, *p)
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
        let (nonce, p) = first_pending(&l);
        assert_eq!(l.burn(&nonce, 2, p.client), Err(BurnError::Mismatch));
        // A mismatch burns it too: the token is spent.
        assert_eq!(l.burn(&nonce, 1, p.client), Err(BurnError::Unknown));
        l.admit(1, 0, 0, &gates(), |_| true).expect("admitted");
        let (nonce, p) = first_pending(&l);
        assert_eq!(l.burn(&nonce, 1, p.client), Ok(()));
        assert_eq!(
            l.burn(&nonce, 1, p.client),
            Err(BurnError::Unknown),
            "replay"
        );
        assert_eq!((l.burnt, l.refused_tokens), (1, 3));
    }

    #[test]
    fn a_newer_login_revokes_the_accounts_unused_token() {
        let mut l = logins(10);
        l.admit(1, 0, 0, &gates(), |_| true).expect("admitted");
        let (first, p) = first_pending(&l);
        l.admit(2, 0, 0, &gates(), |_| true).expect("admitted");
        l.admit(1, 0, 0, &gates(), |_| true).expect("admitted");
        assert_eq!(l.pending(), 2, "one token per account");
        assert_eq!(l.revoked_tokens, 1);
        assert_eq!(l.burn(&first, 1, p.client), Err(BurnError::Unknown));
        let newer: Vec<_> = l
            .pending
            .iter()
            .filter(|(_, p)| p.account == 1)
            .map(|(n, p)| (*n, *p))
            .collect();
        let [(nonce, p)] = newer[..] else {
            panic!("one pending token of account 1: {newer:?}");
        };
        assert_eq!(l.burn(&nonce, 1, p.client), Ok(()));
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
        // A ticket that stops polling loses its place.
        let later = 10 + l.config.queue_timeout_ms + 1;
        assert_eq!(
            l.poll(&tickets[1], 0, later, &gates(), |_| true),
            Err(AdmitError::UnknownTicket)
        );
    }

    #[test]
    fn resume_keys_name_the_account_and_no_gate_is_an_error() {
        let mut l = logins(10);
        let Ok(Admission::Token { resume_key, .. }) = l.admit(42, 0, 0, &gates(), |_| true) else {
            panic!("expected a token");
        };
        assert_eq!(l.resume_account(&resume_key), Some(42));
        assert_eq!(l.resume_account("other"), None);
        assert_eq!(l.admit(42, 0, 0, &[], |_| true), Err(AdmitError::NoGate));
    }
}
