//! The datagram screen: every inbound datagram passes through [`classify`]
//! before netcode sees it.
//!
//! renetcode 2.0.0 trusts the framing of a datagram once it comes from the
//! address of a connected or pending client: a sequence-length nibble above 8
//! indexes past an 8-byte array, and a datagram too short to hold its
//! sequence and MAC underflows a length — both panic inside
//! `NetcodeServer::process_packet` (and `NetcodeClient::process_packet`). The
//! screen checks, from the plaintext header alone, everything netcode's
//! `Packet::decode` assumes, so that a datagram that passes cannot reach those
//! paths. It also refuses cheaply what netcode would refuse expensively (a
//! connection request for another protocol, or already expired, costs no
//! XChaCha20 decryption).
//!
//! The rules, from renetcode's `packet.rs` (netcode 1.02):
//!
//! * byte 0 is the prefix: packet type in the low nibble, the number of
//!   sequence bytes in the high nibble;
//! * a **connection request** (type 0) is sent in clear, with prefix `0x00`,
//!   exactly [`CONNECTION_REQUEST_BYTES`] bytes: version info
//!   `"NETCODE 1.02\0"`, protocol id (u64 LE), expire timestamp (u64 LE),
//!   24-byte nonce, 1024-byte encrypted private token;
//! * every other packet is `prefix, sequence (0..=8 bytes LE), ciphertext,
//!   16-byte MAC`, and its plaintext has a fixed size per type: challenge and
//!   response 308, keep-alive 8, denied and disconnect 0, payload 1..=1300.
//!
//! Which types may arrive depends on the [`Direction`]: a server only ever
//! receives requests, responses, keep-alives, payloads and disconnects; a
//! client only denials, challenges, keep-alives, payloads and disconnects.
//!
//! **Invariant:** the screen never panics, on any input (property-tested),
//! and every rejection is counted by reason in [`ScreenStats`].
//!
//! **Invariant:** a datagram that passes the screen cannot panic renetcode's
//! `process_packet` (property-tested against a real server with a connected
//! client; a test shows the unscreened hazard does panic).

use std::sync::atomic::{AtomicU64, Ordering};

use renetcode::{NETCODE_MAX_PACKET_BYTES, NETCODE_MAX_PAYLOAD_BYTES};

/// netcode's MAC (Poly1305 tag) length; private in renetcode.
pub const MAC_BYTES: usize = 16;
/// netcode's version string, private in renetcode.
pub const VERSION_INFO: &[u8; 13] = b"NETCODE 1.02\0";
/// The exact size of a connection request datagram.
pub const CONNECTION_REQUEST_BYTES: usize = 1 + 13 + 8 + 8 + 24 + 1024;
/// The smallest datagram netcode reads at all.
pub const MIN_DATAGRAM_BYTES: usize = 2 + MAC_BYTES;
/// Plaintext of a challenge or response: token sequence + 300-byte token.
const CHALLENGE_BODY_BYTES: usize = 8 + 300;
/// Plaintext of a keep-alive: client index + max clients.
const KEEP_ALIVE_BODY_BYTES: usize = 4 + 4;
/// Sequences at or above this are refused: no real peer gets there, and
/// renetcode's replay window computes `sequence + 256` unchecked.
pub const MAX_SEQUENCE: u64 = 1 << 62;

/// Which end of a connection is receiving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A gate listener receiving from clients.
    ToServer,
    /// A client receiving from its gate.
    ToClient,
}

/// The netcode packet types (low nibble of the prefix byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    ConnectionRequest,
    ConnectionDenied,
    Challenge,
    Response,
    KeepAlive,
    Payload,
    Disconnect,
}

impl PacketKind {
    fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::ConnectionRequest,
            1 => Self::ConnectionDenied,
            2 => Self::Challenge,
            3 => Self::Response,
            4 => Self::KeepAlive,
            5 => Self::Payload,
            6 => Self::Disconnect,
            _ => return None,
        })
    }

    fn allowed(self, direction: Direction) -> bool {
        use PacketKind::*;
        match direction {
            Direction::ToServer => matches!(
                self,
                ConnectionRequest | Response | KeepAlive | Payload | Disconnect
            ),
            Direction::ToClient => matches!(
                self,
                ConnectionDenied | Challenge | KeepAlive | Payload | Disconnect
            ),
        }
    }
}

/// Why a datagram was refused. Each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[repr(usize)]
pub enum Reject {
    #[error("datagram shorter than the smallest netcode packet")]
    TooShort = 0,
    #[error("datagram longer than netcode's maximum packet size")]
    TooLong,
    #[error("unknown packet type")]
    UnknownType,
    #[error("packet type never sent in this direction")]
    WrongDirection,
    #[error("sequence length nibble above 8")]
    SequenceTooLong,
    #[error("sequence number out of range")]
    SequenceOutOfRange,
    #[error("wrong size for its packet type")]
    BadSize,
    #[error("connection request with a nonzero prefix")]
    BadRequestPrefix,
    #[error("connection request of the wrong size")]
    BadRequestSize,
    #[error("connection request with the wrong version info")]
    BadVersion,
    #[error("connection request for another protocol id")]
    WrongProtocol,
    #[error("connection request with an expired token")]
    ExpiredToken,
}

impl Reject {
    /// Every reason, in counter order.
    pub const ALL: [Reject; 12] = [
        Reject::TooShort,
        Reject::TooLong,
        Reject::UnknownType,
        Reject::WrongDirection,
        Reject::SequenceTooLong,
        Reject::SequenceOutOfRange,
        Reject::BadSize,
        Reject::BadRequestPrefix,
        Reject::BadRequestSize,
        Reject::BadVersion,
        Reject::WrongProtocol,
        Reject::ExpiredToken,
    ];

    /// A short stable name, for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reject::TooShort => "too_short",
            Reject::TooLong => "too_long",
            Reject::UnknownType => "unknown_type",
            Reject::WrongDirection => "wrong_direction",
            Reject::SequenceTooLong => "sequence_too_long",
            Reject::SequenceOutOfRange => "sequence_out_of_range",
            Reject::BadSize => "bad_size",
            Reject::BadRequestPrefix => "bad_request_prefix",
            Reject::BadRequestSize => "bad_request_size",
            Reject::BadVersion => "bad_version",
            Reject::WrongProtocol => "wrong_protocol",
            Reject::ExpiredToken => "expired_token",
        }
    }
}

/// Checks one datagram's framing. Pure; never panics.
///
/// `now_secs` is the receiver's netcode clock (Unix seconds); a connection
/// request whose token expires at or before it is refused, as netcode would.
pub fn classify(
    datagram: &[u8],
    direction: Direction,
    protocol_id: u64,
    now_secs: u64,
) -> Result<PacketKind, Reject> {
    if datagram.len() > NETCODE_MAX_PACKET_BYTES {
        return Err(Reject::TooLong);
    }
    let Some((&prefix, rest)) = datagram.split_first() else {
        return Err(Reject::TooShort);
    };
    if datagram.len() < MIN_DATAGRAM_BYTES {
        return Err(Reject::TooShort);
    }
    let kind = PacketKind::from_nibble(prefix & 0x0F).ok_or(Reject::UnknownType)?;
    if !kind.allowed(direction) {
        return Err(Reject::WrongDirection);
    }
    let sequence_len = usize::from(prefix >> 4);

    if kind == PacketKind::ConnectionRequest {
        if sequence_len != 0 {
            return Err(Reject::BadRequestPrefix);
        }
        if datagram.len() != CONNECTION_REQUEST_BYTES {
            return Err(Reject::BadRequestSize);
        }
        let (version, rest) = rest.split_at(VERSION_INFO.len());
        if version != VERSION_INFO {
            return Err(Reject::BadVersion);
        }
        if read_u64(&rest[0..8]) != protocol_id {
            return Err(Reject::WrongProtocol);
        }
        if now_secs >= read_u64(&rest[8..16]) {
            return Err(Reject::ExpiredToken);
        }
        return Ok(kind);
    }

    if sequence_len > 8 {
        return Err(Reject::SequenceTooLong);
    }
    // Header + MAC must fit before any plaintext can be measured.
    let Some(body) = datagram.len().checked_sub(1 + sequence_len + MAC_BYTES) else {
        return Err(Reject::TooShort);
    };
    if read_u64(&rest[..sequence_len]) >= MAX_SEQUENCE {
        return Err(Reject::SequenceOutOfRange);
    }
    let size_ok = match kind {
        PacketKind::Challenge | PacketKind::Response => body == CHALLENGE_BODY_BYTES,
        PacketKind::KeepAlive => body == KEEP_ALIVE_BODY_BYTES,
        PacketKind::ConnectionDenied | PacketKind::Disconnect => body == 0,
        PacketKind::Payload => (1..=NETCODE_MAX_PAYLOAD_BYTES).contains(&body),
        PacketKind::ConnectionRequest => false, // handled above
    };
    if !size_ok {
        return Err(Reject::BadSize);
    }
    Ok(kind)
}

/// The expire timestamp (Unix seconds) of a connection request that passed
/// the screen; `None` if the datagram is too short to hold one.
pub fn request_expire_timestamp(datagram: &[u8]) -> Option<u64> {
    // Prefix, version info, protocol id, then the expire timestamp.
    const AT: usize = 1 + VERSION_INFO.len() + 8;
    datagram.get(AT..AT + 8).map(read_u64)
}

/// Little-endian u64 from up to 8 bytes (missing high bytes are zero).
fn read_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    for (dst, src) in buf.iter_mut().zip(bytes) {
        *dst = *src;
    }
    u64::from_le_bytes(buf)
}

/// Counters for one screen: passes and rejections by [`Reject`] reason.
#[derive(Debug, Default)]
pub struct ScreenStats {
    passed: AtomicU64,
    rejected: [AtomicU64; Reject::ALL.len()],
}

impl ScreenStats {
    /// Counts one outcome.
    pub fn record(&self, outcome: Result<PacketKind, Reject>) {
        match outcome {
            Ok(_) => self.passed.fetch_add(1, Ordering::Relaxed),
            Err(r) => self.rejected[r as usize].fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Datagrams that passed.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Relaxed)
    }

    /// Datagrams refused for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    /// Datagrams refused for any reason.
    pub fn rejected_total(&self) -> u64 {
        Reject::ALL.iter().map(|&r| self.rejected(r)).sum()
    }

    /// `(name, count)` for every reason, in [`Reject::ALL`] order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Reject::ALL
            .iter()
            .map(|&r| (r.name(), self.rejected(r)))
            .collect()
    }
}

/// A screen with its counters: [`classify`] plus [`ScreenStats::record`].
#[derive(Debug)]
pub struct Screen {
    direction: Direction,
    protocol_id: u64,
    stats: ScreenStats,
}

impl Screen {
    pub fn new(direction: Direction, protocol_id: u64) -> Self {
        Self {
            direction,
            protocol_id,
            stats: ScreenStats::default(),
        }
    }

    /// Classifies and counts one datagram.
    pub fn check(&self, datagram: &[u8], now_secs: u64) -> Result<PacketKind, Reject> {
        let outcome = classify(datagram, self.direction, self.protocol_id, now_secs);
        self.stats.record(outcome);
        outcome
    }

    pub fn stats(&self) -> &ScreenStats {
        &self.stats
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::time::Duration;

    use proptest::prelude::*;
    use renetcode::{
        ClientAuthentication, ConnectToken, NetcodeClient, NetcodeServer, ServerAuthentication,
        ServerConfig, ServerResult,
    };

    use super::*;

    const PROTOCOL: u64 = 0x7E55_E7A0;
    const KEY: [u8; 32] = [7; 32];
    /// Server clock in Unix seconds (any fixed value works: both ends use it).
    const NOW: Duration = Duration::from_secs(1_800_000_000);

    /// A real netcode server with one client connected through the whole
    /// handshake, in memory. Returns the server, the client and its address.
    pub(crate) fn connected_pair() -> (NetcodeServer, NetcodeClient, SocketAddr) {
        let server_addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let client_addr: SocketAddr = "127.0.0.1:6000".parse().unwrap();
        let mut server = NetcodeServer::new(ServerConfig {
            current_time: NOW,
            max_clients: 4,
            protocol_id: PROTOCOL,
            public_addresses: vec![server_addr],
            authentication: ServerAuthentication::Secure { private_key: KEY },
        });
        let token =
            ConnectToken::generate(NOW, PROTOCOL, 30, 42, 15, vec![server_addr], None, &KEY)
                .unwrap();
        let mut client = NetcodeClient::new(
            Duration::ZERO,
            ClientAuthentication::Secure {
                connect_token: token,
            },
        )
        .unwrap();
        for _ in 0..8 {
            if let Some((packet, _)) = client.update(Duration::from_millis(300)) {
                let mut packet = packet.to_vec();
                let mut reply = None;
                match server.process_packet(client_addr, &mut packet) {
                    ServerResult::PacketToSend { payload, .. }
                    | ServerResult::ClientConnected { payload, .. } => {
                        reply = Some(payload.to_vec())
                    }
                    _ => {}
                }
                if let Some(mut reply) = reply {
                    client.process_packet(&mut reply);
                }
            }
            if client.is_connected() {
                break;
            }
        }
        assert!(client.is_connected());
        assert!(server.is_client_connected(42));
        (server, client, client_addr)
    }

    fn hazard() -> Vec<u8> {
        // Payload type, sequence-length nibble 9, otherwise plausible.
        let mut d = vec![0u8; 40];
        d[0] = 0x95;
        d
    }

    #[test]
    fn unscreened_hazards_panic_netcode() {
        let (mut server, _client, addr) = connected_pair();
        let mut d = hazard();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _ = server.process_packet(addr, &mut d);
        }));
        assert!(outcome.is_err(), "sequence nibble 9 must panic renetcode");

        // Second path: sequence of 8 bytes but no room for the MAC.
        let (mut server, _client, addr) = connected_pair();
        let mut d = vec![0x85u8; 20];
        d[1..9].copy_from_slice(&1u64.to_le_bytes());
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _ = server.process_packet(addr, &mut d);
        }));
        assert!(outcome.is_err(), "a truncated MAC must panic renetcode");
    }

    #[test]
    fn screen_refuses_the_hazards() {
        let s = NOW.as_secs();
        assert_eq!(
            classify(&hazard(), Direction::ToServer, PROTOCOL, s),
            Err(Reject::SequenceTooLong)
        );
        let mut d = vec![0x85u8; 20];
        d[1..9].copy_from_slice(&1u64.to_le_bytes());
        assert_eq!(
            classify(&d, Direction::ToServer, PROTOCOL, s),
            Err(Reject::TooShort)
        );
        assert_eq!(
            classify(&d, Direction::ToClient, PROTOCOL, s),
            Err(Reject::TooShort)
        );
    }

    #[test]
    fn reasons() {
        let s = NOW.as_secs();
        let c = |d: &[u8]| classify(d, Direction::ToServer, PROTOCOL, s);
        assert_eq!(c(&[]), Err(Reject::TooShort));
        assert_eq!(c(&[5; 17]), Err(Reject::TooShort));
        assert_eq!(c(&[5; 1401]), Err(Reject::TooLong));
        assert_eq!(c(&[0x07; 40]), Err(Reject::UnknownType));
        assert_eq!(c(&[0x0F; 40]), Err(Reject::UnknownType));
        assert_eq!(c(&[0x02; 40]), Err(Reject::WrongDirection));
        assert_eq!(c(&[0x01; 40]), Err(Reject::WrongDirection));
        // keep-alive: prefix + 1 sequence byte + 8 + MAC
        let mut ka = vec![0x14u8; 1 + 1 + 8 + MAC_BYTES];
        ka[1] = 3;
        assert_eq!(c(&ka), Ok(PacketKind::KeepAlive));
        ka.push(0);
        assert_eq!(c(&ka), Err(Reject::BadSize));
        // disconnect with no sequence bytes
        assert_eq!(c(&[0x06; 17]), Err(Reject::TooShort));
        let mut disc = vec![0x06u8; 1 + MAC_BYTES + 1];
        assert_eq!(c(&disc), Err(Reject::BadSize));
        disc.pop();
        // 17 bytes < 18: netcode's minimum wins
        assert_eq!(c(&disc), Err(Reject::TooShort));
        let mut disc = vec![0u8; 1 + 1 + MAC_BYTES];
        disc[0] = 0x16;
        assert_eq!(c(&disc), Ok(PacketKind::Disconnect));
        // sequence out of range
        let mut big = vec![0u8; 1 + 8 + 8 + MAC_BYTES];
        big[0] = 0x84;
        big[1..9].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(c(&big), Err(Reject::SequenceOutOfRange));
        // payload bounds
        let mut p = vec![0u8; 1 + 2 + 1300 + MAC_BYTES];
        p[0] = 0x25;
        assert_eq!(c(&p), Ok(PacketKind::Payload));
        p.push(0);
        assert_eq!(c(&p), Err(Reject::BadSize));
        // ToClient: a response is the wrong direction, a challenge fits
        let mut ch = vec![0u8; 1 + 1 + 308 + MAC_BYTES];
        ch[0] = 0x12;
        assert_eq!(
            classify(&ch, Direction::ToClient, PROTOCOL, s),
            Ok(PacketKind::Challenge)
        );
        ch[0] = 0x13;
        assert_eq!(
            classify(&ch, Direction::ToClient, PROTOCOL, s),
            Err(Reject::WrongDirection)
        );
    }

    fn request(protocol: u64, expire: u64) -> Vec<u8> {
        let mut d = vec![0u8; CONNECTION_REQUEST_BYTES];
        d[1..14].copy_from_slice(VERSION_INFO);
        d[14..22].copy_from_slice(&protocol.to_le_bytes());
        d[22..30].copy_from_slice(&expire.to_le_bytes());
        d
    }

    #[test]
    fn connection_requests() {
        let s = NOW.as_secs();
        let c = |d: &[u8]| classify(d, Direction::ToServer, PROTOCOL, s);
        assert_eq!(
            c(&request(PROTOCOL, s + 10)),
            Ok(PacketKind::ConnectionRequest)
        );
        assert_eq!(
            c(&request(PROTOCOL + 1, s + 10)),
            Err(Reject::WrongProtocol)
        );
        assert_eq!(c(&request(PROTOCOL, s)), Err(Reject::ExpiredToken));
        let mut r = request(PROTOCOL, s + 10);
        r[5] = b'X';
        assert_eq!(c(&r), Err(Reject::BadVersion));
        let mut r = request(PROTOCOL, s + 10);
        r[0] = 0x10;
        assert_eq!(c(&r), Err(Reject::BadRequestPrefix));
        let mut r = request(PROTOCOL, s + 10);
        r.pop();
        assert_eq!(c(&r), Err(Reject::BadRequestSize));
        r.extend_from_slice(&[0, 0]);
        assert_eq!(c(&r), Err(Reject::BadRequestSize));
        assert_eq!(
            classify(&request(PROTOCOL, s + 10), Direction::ToClient, PROTOCOL, s),
            Err(Reject::WrongDirection)
        );
    }

    #[test]
    fn real_packets_pass() {
        // Everything a real client sends during a handshake passes.
        let server_addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let token = ConnectToken::generate(NOW, PROTOCOL, 30, 1, 15, vec![server_addr], None, &KEY)
            .unwrap();
        let mut client = NetcodeClient::new(
            Duration::ZERO,
            ClientAuthentication::Secure {
                connect_token: token,
            },
        )
        .unwrap();
        let (packet, _) = client.update(Duration::from_millis(300)).unwrap();
        assert_eq!(
            classify(packet, Direction::ToServer, PROTOCOL, NOW.as_secs()),
            Ok(PacketKind::ConnectionRequest)
        );
        let (_server, mut client, _) = connected_pair();
        for len in [1usize, 100, 1300] {
            let (_, packet) = client.generate_payload_packet(&vec![9u8; len]).unwrap();
            assert_eq!(
                classify(packet, Direction::ToServer, PROTOCOL, NOW.as_secs()),
                Ok(PacketKind::Payload)
            );
        }
    }

    #[test]
    fn stats_count_by_reason() {
        let screen = Screen::new(Direction::ToServer, PROTOCOL);
        let _ = screen.check(&hazard(), NOW.as_secs());
        let _ = screen.check(&[], NOW.as_secs());
        let _ = screen.check(&[], NOW.as_secs());
        assert_eq!(screen.stats().rejected(Reject::SequenceTooLong), 1);
        assert_eq!(screen.stats().rejected(Reject::TooShort), 2);
        assert_eq!(screen.stats().rejected_total(), 3);
        assert_eq!(screen.stats().passed(), 0);
    }

    /// Datagrams of two kinds: structured ones (a prefix with any type
    /// nibble 0..=7 and sequence nibble 0..=9, a size within 2 bytes of what
    /// that type needs, plausible sequence bytes, and for requests, often a
    /// correct header) and anything at all.
    fn datagram() -> impl Strategy<Value = Vec<u8>> {
        let structured = (
            0u8..8,
            0u8..10,
            -2i64..=2,
            1usize..=1300,
            any::<bool>(),
            any::<u64>(),
        )
            .prop_flat_map(|(ty, seq_len, delta, payload, good_header, seq)| {
                let body = match ty {
                    2 | 3 => CHALLENGE_BODY_BYTES,
                    4 => KEEP_ALIVE_BODY_BYTES,
                    5 => payload,
                    _ => 0,
                };
                let exact = if ty == 0 {
                    CONNECTION_REQUEST_BYTES
                } else {
                    1 + usize::from(seq_len) + body + MAC_BYTES
                };
                let len = usize::try_from((exact as i64 + delta).max(0)).unwrap_or(0);
                proptest::collection::vec(any::<u8>(), len).prop_map(move |mut d| {
                    if d.is_empty() {
                        return d;
                    }
                    d[0] = (seq_len << 4) | ty;
                    if ty == 0 && good_header && d.len() >= 30 {
                        d[1..14].copy_from_slice(VERSION_INFO);
                        d[14..22].copy_from_slice(&PROTOCOL.to_le_bytes());
                        d[22..30].copy_from_slice(&(NOW.as_secs() + 30).to_le_bytes());
                    } else {
                        for (i, b) in d.iter_mut().skip(1).take(8).enumerate() {
                            *b = (seq >> (8 * i)) as u8 & 0x3F;
                        }
                    }
                    d
                })
            });
        let anything = proptest::collection::vec(any::<u8>(), 0..1500);
        prop_oneof![3 => structured, 1 => anything]
    }

    /// The property below is only as good as the share of generated
    /// datagrams that pass the screen and so reach netcode.
    #[test]
    fn the_generator_reaches_netcode() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = datagram();
        let mut passed = [0usize; 2];
        for _ in 0..2000 {
            let d = strategy.new_tree(&mut runner).unwrap().current();
            for (i, dir) in [Direction::ToServer, Direction::ToClient]
                .into_iter()
                .enumerate()
            {
                if classify(&d, dir, PROTOCOL, NOW.as_secs()).is_ok() {
                    passed[i] += 1;
                }
            }
        }
        assert!(passed.iter().all(|&n| n >= 200), "passed: {passed:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn screened_datagrams_never_panic_netcode(batch in proptest::collection::vec(datagram(), 1..8)) {
            let (mut server, mut client, addr) = connected_pair();
            let other: SocketAddr = "127.0.0.1:7000".parse().unwrap();
            for d in batch {
                let to_server = classify(&d, Direction::ToServer, PROTOCOL, NOW.as_secs());
                if to_server.is_ok() {
                    for from in [addr, other] {
                        let mut copy = d.clone();
                        let outcome = catch_unwind(AssertUnwindSafe(|| {
                            let _ = server.process_packet(from, &mut copy);
                        }));
                        prop_assert!(outcome.is_ok(), "screened datagram panicked the server: {:?}", d);
                    }
                }
                if classify(&d, Direction::ToClient, PROTOCOL, NOW.as_secs()).is_ok() {
                    let mut copy = d.clone();
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        let _ = client.process_packet(&mut copy);
                    }));
                    prop_assert!(outcome.is_ok(), "screened datagram panicked the client: {:?}", d);
                }
            }
        }

        #[test]
        fn classify_never_panics(d in proptest::collection::vec(any::<u8>(), 0..2000), now in any::<u64>(), proto in any::<u64>()) {
            let _ = classify(&d, Direction::ToServer, proto, now);
            let _ = classify(&d, Direction::ToClient, proto, now);
        }
    }
}
