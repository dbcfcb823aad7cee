//! The `[coordinator.login]` settings and their checks.

/// The largest `queue_capacity`: the queue's index takes up to 16 bytes
/// per place, allocated at start.
const MAX_QUEUE_CAPACITY: usize = 1_000_000;

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
    /// Most logins waiting in the queue (at most 1000000). Default 100000.
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
        if !(1..=MAX_QUEUE_CAPACITY).contains(&self.queue_capacity) {
            return Err(format!(
                "coordinator.login.queue_capacity must be between 1 and {MAX_QUEUE_CAPACITY}"
            ));
        }
        Ok(())
    }
}
