//! The gate's settings: [`GateConfig`] and the token buckets it sizes
//! ([`RateQuota`]).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use renetcode::NETCODE_KEY_BYTES;

use super::{GateError, MAX_CLIENTS_PER_LISTENER};

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateQuota {
    pub per_second: u32,
    pub burst: u32,
}

impl RateQuota {
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    pub(super) fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(Quota::per_second(rate).allow_burst(burst))
    }

    pub(super) fn limiter(self) -> DefaultDirectRateLimiter {
        // `GateConfig::validate` refused zero rates; 1/s is only a fallback.
        let quota = self
            .quota()
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        RateLimiter::direct(quota)
    }
}

/// Settings for a [`Gate`](super::Gate).
#[derive(Clone)]
pub struct GateConfig {
    /// netcode protocol id; tokens for another id are refused by the screen.
    pub protocol_id: u64,
    /// The key shared with the token issuer. Never logged.
    pub private_key: [u8; NETCODE_KEY_BYTES],
    /// Clients per listener, 1..=1024. Default 1024.
    pub max_clients_per_listener: usize,
    /// How often each listener updates netcode and renet: time-outs,
    /// keep-alives, resends and acks (messages are sent and received as they
    /// come, not at updates). Default 50 ms.
    pub update_interval: Duration,
    /// Largest message a client may send, in bytes. Default 1024.
    pub max_message_bytes: usize,
    /// Inbound datagrams per connected client. Default 300/s, burst 600.
    pub client_datagrams: RateQuota,
    /// Inbound messages per connected client. Default 200/s, burst 400.
    pub client_messages: RateQuota,
    /// Inbound datagrams from addresses not connected (handshakes), per
    /// listener. Default 2000/s, burst 4000.
    pub handshake_datagrams: RateQuota,
    /// Handshake datagrams per source address (IPv6: per /64), per
    /// listener, checked before `handshake_datagrams` so a few sources
    /// cannot spend it all. A netcode client sends a few per connect.
    /// Default 20/s, burst 40.
    pub handshake_per_source: RateQuota,
    /// Most sources with a handshake bucket per listener; past it they
    /// share one. Default 4096.
    pub handshake_sources: usize,
    /// Sources exempt from `handshake_per_source` (bots, a local proxy).
    /// Default none.
    pub handshake_exempt: Vec<std::net::IpAddr>,
    /// Renet memory per channel per client for messages being sent. Default 256 KiB.
    pub server_channel_memory: usize,
    /// Renet memory per channel per client for messages being received. Default 32 KiB.
    pub client_channel_memory: usize,
    /// Capacity of the event queue (all listeners). Default 8192.
    pub event_queue: usize,
    /// Capacity of each listener's command queue. Default 8192. Unreliable
    /// messages may fill three quarters of it; the rest is kept for reliable
    /// messages and disconnects, which a burst of state must not crowd out.
    pub command_queue: usize,
    /// Datagrams read per wake-up before other work gets a turn. Default 256.
    pub max_datagrams_per_wake: usize,
    /// Commands applied per wake-up before their messages are sent and other
    /// work gets a turn. Default 1024.
    pub max_commands_per_wake: usize,
    /// Kernel receive and send buffer asked for on each listener socket.
    /// Default 4 MiB. The kernel's default (~208 KiB on Linux) holds a few
    /// hundred datagrams: a few milliseconds of a full listener, so a busy
    /// moment loses datagrams in the kernel (`RcvbufErrors` in
    /// `/proc/net/snmp`). Linux caps it at `net.core.rmem_max` / `wmem_max`.
    /// 0 keeps the kernel's default.
    pub socket_buffer_bytes: usize,
}

impl std::fmt::Debug for GateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateConfig")
            .field("protocol_id", &self.protocol_id)
            .field("max_clients_per_listener", &self.max_clients_per_listener)
            .field("update_interval", &self.update_interval)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("client_datagrams", &self.client_datagrams)
            .field("client_messages", &self.client_messages)
            .field("handshake_datagrams", &self.handshake_datagrams)
            .field("handshake_per_source", &self.handshake_per_source)
            .field("handshake_sources", &self.handshake_sources)
            .field("event_queue", &self.event_queue)
            .field("command_queue", &self.command_queue)
            .finish_non_exhaustive()
    }
}

impl GateConfig {
    /// Defaults for everything but the protocol id and the key.
    pub fn new(protocol_id: u64, private_key: [u8; NETCODE_KEY_BYTES]) -> Self {
        Self {
            protocol_id,
            private_key,
            max_clients_per_listener: MAX_CLIENTS_PER_LISTENER,
            update_interval: Duration::from_millis(50),
            max_message_bytes: 1024,
            client_datagrams: RateQuota::new(300, 600),
            client_messages: RateQuota::new(200, 400),
            handshake_datagrams: RateQuota::new(2000, 4000),
            handshake_per_source: RateQuota::new(20, 40),
            handshake_sources: 4096,
            handshake_exempt: Vec::new(),
            server_channel_memory: 256 * 1024,
            client_channel_memory: 32 * 1024,
            event_queue: 8192,
            command_queue: 8192,
            max_datagrams_per_wake: 256,
            max_commands_per_wake: 1024,
            socket_buffer_bytes: 4 << 20,
        }
    }

    /// Checks every field; the message names the field.
    pub fn validate(&self) -> Result<(), GateError> {
        let bad = |m: &str| Err(GateError::Config(m.to_owned()));
        if !(1..=MAX_CLIENTS_PER_LISTENER).contains(&self.max_clients_per_listener) {
            return bad("max_clients_per_listener must be 1..=1024");
        }
        if self.update_interval.is_zero() {
            return bad("update_interval must be above zero");
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > self.client_channel_memory {
            return bad("max_message_bytes must be 1..=client_channel_memory");
        }
        for (name, q) in [
            ("client_datagrams", self.client_datagrams),
            ("client_messages", self.client_messages),
            ("handshake_datagrams", self.handshake_datagrams),
            ("handshake_per_source", self.handshake_per_source),
        ] {
            if q.quota().is_none() {
                return Err(GateError::Config(format!(
                    "{name}: rate and burst must be above zero"
                )));
            }
        }
        if self.handshake_sources == 0 {
            return bad("handshake_sources must be above zero");
        }
        if self.event_queue == 0
            || self.command_queue == 0
            || self.max_datagrams_per_wake == 0
            || self.max_commands_per_wake == 0
        {
            return bad(
                "event_queue, command_queue, max_datagrams_per_wake and max_commands_per_wake must be above zero",
            );
        }
        if self.server_channel_memory == 0 || self.client_channel_memory == 0 {
            return bad("channel memories must be above zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_the_field() {
        let ok = GateConfig::new(1, [0; 32]);
        assert!(ok.validate().is_ok());
        let cases: [(&str, fn(&mut GateConfig)); 6] = [
            ("max_clients_per_listener", |c| {
                c.max_clients_per_listener = 1025
            }),
            ("update_interval", |c| c.update_interval = Duration::ZERO),
            ("max_message_bytes", |c| c.max_message_bytes = 0),
            ("client_messages", |c| {
                c.client_messages = RateQuota::new(0, 1)
            }),
            ("handshake_datagrams", |c| {
                c.handshake_datagrams = RateQuota::new(1, 0)
            }),
            ("event_queue", |c| c.event_queue = 0),
        ];
        for (field, tweak) in cases {
            let mut c = ok.clone();
            tweak(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        // The key never shows in Debug output.
        let c = GateConfig::new(1, [0xAB; 32]);
        assert!(!format!("{c:?}").contains("171"));
    }

    #[test]
    fn quotas_refuse_past_the_burst() {
        let limiter = RateQuota::new(1, 3).limiter();
        assert!((0..3).all(|_| limiter.check().is_ok()));
        assert!(limiter.check().is_err());
    }
}
