//! The gate as a standard netcode 1.02 client sees it, on 127.0.0.1: the
//! token comes the way a login hands it out (standard form, hex), the
//! handshake is driven step by step, and every datagram from the gate is
//! held to the standard's receive rules, as the C reference applies them.
//! Every test is bounded by a timeout and stops everything it started.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use renetcode::{ClientAuthentication, NetcodeClient};
use tessera_gate::{DisconnectReason, GateEvent};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use common::{GateFixture as Fixture, LIMIT};

const PROTOCOL: u64 = 0x7E55_E7A0_0000_0002;
const KEY: [u8; 32] = *b"another test key of 32 bytes...!";

/// netcode packet types (low nibble of the prefix byte).
const REQUEST: u8 = 0;
const CHALLENGE: u8 = 2;
const RESPONSE: u8 = 3;
const KEEP_ALIVE: u8 = 4;

/// Whether a netcode 1.02 client reads `datagram` at all: the standard
/// ignores an encrypted packet whose sequence takes fewer than 1 or more
/// than 8 bytes (STANDARD.md, "If the high 4 bits of the prefix byte
/// (sequence bytes) are outside the range [1,8], ignore the packet"), and
/// so does the C reference (`netcode_read_packet`). renetcode does not
/// check it, so it is applied here before renetcode's client sees a packet.
fn standard_reads(datagram: &[u8]) -> bool {
    let Some(&prefix) = datagram.first() else {
        return false;
    };
    prefix & 0x0F == REQUEST || (1..=8).contains(&(prefix >> 4))
}

fn kind(datagram: &[u8]) -> u8 {
    datagram.first().map_or(0xFF, |p| p & 0x0F)
}

/// A client that follows the standard: renetcode's client for the crypto
/// and state, fed only what a standard client reads.
struct StandardClient {
    socket: UdpSocket,
    netcode: NetcodeClient,
    last: Instant,
    buf: [u8; 2048],
    /// Datagrams from the gate a standard client ignores.
    unreadable: u64,
}

impl StandardClient {
    async fn new(token: renetcode::ConnectToken) -> Self {
        let netcode = NetcodeClient::new(
            Duration::ZERO,
            ClientAuthentication::Secure {
                connect_token: token,
            },
        )
        .unwrap();
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            netcode,
            last: Instant::now(),
            buf: [0; 2048],
            unreadable: 0,
        }
    }

    /// The next datagram from the gate (its length), or `None` if none
    /// came within `wait`.
    async fn recv(&mut self, wait: Duration) -> Option<usize> {
        match timeout(wait, self.socket.recv_from(&mut self.buf)).await {
            Ok(Ok((len, _))) => Some(len),
            _ => None,
        }
    }

    /// Hands datagram `buf[..len]` to netcode if a standard client reads it.
    fn process(&mut self, len: usize) {
        let datagram = &mut self.buf[..len];
        if standard_reads(datagram) {
            let _ = self.netcode.process_packet(datagram);
        } else {
            self.unreadable += 1;
        }
    }

    /// Sends connection requests (at netcode's pace) until a challenge is
    /// read, and returns the challenge response netcode then makes.
    async fn until_response(&mut self) -> (Vec<u8>, SocketAddr) {
        loop {
            let now = Instant::now();
            let packet = self.netcode.update(now - self.last);
            self.last = now;
            if let Some((packet, to)) = packet {
                if kind(packet) == RESPONSE {
                    return (packet.to_vec(), to);
                }
                self.socket.send_to(packet, to).await.unwrap();
            }
            if let Some(len) = self.recv(Duration::from_millis(10)).await {
                self.process(len);
            }
        }
    }
}

/// A standard client that sends its challenge response once is connected
/// by the gate's very next datagram: a keep-alive it can read. (renetcode
/// 2.0.0 wrote sequence number 0 in zero bytes, which standard clients
/// ignore, so the keep-alive answering the response was lost on them and
/// they waited for the next one — which the gate's payloads kept
/// postponing, 1 to 5 s.) Not a timed test: it counts datagrams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_client_is_connected_by_the_next_datagram() {
    let test = async {
        let mut fx = Fixture::bind(PROTOCOL, KEY, 64, |_| {}).await;
        // The gate's first client: its challenge has sequence number 0.
        let mut client = StandardClient::new(fx.token(1, 41)).await;
        let (response, gate) = client.until_response().await;
        client.socket.send_to(&response, gate).await.unwrap();

        let first = loop {
            let len = client.recv(LIMIT).await.expect("the gate answers");
            // A challenge still on its way (an answer to a resent request)
            // is ignored by a client past that stage.
            if kind(&client.buf[..len]) != CHALLENGE {
                break len;
            }
        };
        assert_eq!(kind(&client.buf[..first]), KEEP_ALIVE, "a keep-alive first");
        client.process(first);
        assert!(
            client.netcode.is_connected(),
            "the keep-alive connects a standard client"
        );
        assert_eq!(
            client.unreadable, 0,
            "every datagram from the gate is readable"
        );
        fx.expect(
            "connected",
            |e| matches!(e, GateEvent::Connected { client, .. } if *client == 41),
        )
        .await;
        fx.stop().await;
    };
    timeout(Duration::from_secs(60), test)
        .await
        .expect("test exceeded its time bound");
}

/// The errors of renetcode's server, counted (renetcode logs through
/// `log`).
struct ErrorCount(AtomicU64);

impl log::Log for ErrorCount {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Error && metadata.target() == "renetcode::server"
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

static RENETCODE_ERRORS: ErrorCount = ErrorCount(AtomicU64::new(0));

/// A standard client's goodbye is ten disconnect packets (loss-proof);
/// netcode forgets the client at the first, and the other nine come from an
/// address it has no key for. The gate drops and counts them before netcode
/// sees them, so a normal disconnect logs no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_goodbye_is_not_an_error() {
    // The only logger of this test binary.
    log::set_logger(&RENETCODE_ERRORS).unwrap();
    log::set_max_level(log::LevelFilter::Error);
    let test = async {
        let mut fx = Fixture::bind(PROTOCOL, KEY, 64, |_| {}).await;
        let mut client = StandardClient::new(fx.token(2, 42)).await;
        let (response, gate) = client.until_response().await;
        client.socket.send_to(&response, gate).await.unwrap();
        while !client.netcode.is_connected() {
            let len = client.recv(LIMIT).await.expect("the gate answers");
            client.process(len);
        }
        fx.expect(
            "connected",
            |e| matches!(e, GateEvent::Connected { client, .. } if *client == 42),
        )
        .await;
        let errors_before = RENETCODE_ERRORS.0.load(Ordering::Relaxed);

        let (to, goodbye) = client.netcode.disconnect().unwrap();
        let goodbye = goodbye.to_vec();
        for _ in 0..10 {
            client.socket.send_to(&goodbye, to).await.unwrap();
        }
        fx.expect("gone by the client", |e| {
            *e == GateEvent::Disconnected {
                client: 42,
                reason: DisconnectReason::ByClient,
            }
        })
        .await;
        let stats = fx.gate.stats().clone();
        let counted = async {
            while stats.snapshot().stray_dropped < 9 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        timeout(LIMIT, counted).await.expect("nine strays counted");
        assert_eq!(stats.snapshot().stray_dropped, 9);
        assert_eq!(
            RENETCODE_ERRORS.0.load(Ordering::Relaxed),
            errors_before,
            "renetcode saw no stray"
        );
        fx.stop().await;
    };
    timeout(Duration::from_secs(60), test)
        .await
        .expect("test exceeded its time bound");
}
