//! Hostile input is counted, not logged one line per datagram: a connected
//! client floods the gate with datagrams netcode refuses (mutated, so
//! undecryptable, and replayed), and the gate counts every one while its
//! log, captured here, gets at most a summary line a second and nothing
//! from renetcode. On 127.0.0.1, bounded by a timeout, everything started
//! is stopped.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use renetcode::{ClientAuthentication, NetcodeClient};
use tessera_gate::{GateEvent, GateStats, NetcodeRefusal, RateQuota};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use common::{GateFixture as Fixture, LIMIT};

const PROTOCOL: u64 = 0x7E55_E7A0_0000_0016;
const KEY: [u8; 32] = *b"a key for the refusal tests 32b!";

/// Datagrams of each kind in the flood.
const FLOOD: u64 = 1000;
/// Datagrams sent before waiting for the gate to count them (well inside a
/// socket buffer, so loopback drops none).
const BURST: u64 = 100;

/// The log lines of this test binary (its only subscriber).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The sum of the `refused=N` fields of the summary lines.
fn summed(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.split(" refused=").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the gate has counted `n` refusals.
async fn counted(stats: &GateStats, n: u64) {
    let wait = async {
        while stats.netcode.total() < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    timeout(LIMIT, wait)
        .await
        .expect("the gate counts every refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_datagrams_is_counted_and_summed_up_in_few_lines() {
    let captured = Captured::default();
    // Also installs the `log` bridge: renetcode's records land here too.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(captured.clone())
        .with_ansi(false)
        .try_init()
        .unwrap();
    let test = async {
        let mut fx = Fixture::bind(PROTOCOL, KEY, 64, |c| {
            // Let the flood through to netcode rather than kick the client.
            c.client_datagrams = RateQuota::new(1_000_000, 1_000_000);
        })
        .await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut client = NetcodeClient::new(
            Duration::ZERO,
            ClientAuthentication::Secure {
                connect_token: fx.token(7, 7),
            },
        )
        .unwrap();
        let mut last = Instant::now();
        let mut buf = [0u8; 2048];
        while !client.is_connected() {
            let now = Instant::now();
            if let Some((packet, to)) = client.update(now - last) {
                socket.send_to(packet, to).await.unwrap();
            }
            last = now;
            if let Ok(Ok((len, _))) =
                timeout(Duration::from_millis(10), socket.recv_from(&mut buf)).await
            {
                client.process_packet(&mut buf[..len]);
            }
        }
        fx.expect("connected", |e| matches!(e, GateEvent::Connected { .. }))
            .await;
        let stats = fx.gate.stats().clone();
        let start = Instant::now();

        // Mutated: each a fresh sequence whose MAC no longer matches.
        let mut sent = 0;
        while sent < FLOOD {
            for _ in 0..BURST {
                let (to, packet) = client.generate_payload_packet(&[1, 2, 3]).unwrap();
                *packet.last_mut().unwrap() ^= 0x5A;
                socket.send_to(packet, to).await.unwrap();
            }
            sent += BURST;
            counted(&stats, sent).await;
        }
        // Replayed: a valid keep-alive (accepted once), then again and again.
        let (keep_alive, to) = client.update(Duration::from_millis(300)).unwrap();
        let keep_alive = keep_alive.to_vec();
        socket.send_to(&keep_alive, to).await.unwrap();
        while sent < 2 * FLOOD {
            for _ in 0..BURST {
                socket.send_to(&keep_alive, to).await.unwrap();
            }
            sent += BURST;
            counted(&stats, sent).await;
        }
        assert_eq!(stats.netcode.count(NetcodeRefusal::Undecryptable), FLOOD);
        assert_eq!(stats.netcode.count(NetcodeRefusal::Duplicate), FLOOD);
        assert_eq!(stats.netcode.total(), 2 * FLOOD);
        assert_eq!(stats.snapshot().netcode_refused, 2 * FLOOD);

        // The summaries, at most one a second, add up to the flood.
        let logged = async {
            while summed(&captured.lines()) < 2 * FLOOD {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        timeout(LIMIT, logged)
            .await
            .expect("the flood is summed up");
        let elapsed = start.elapsed();
        let lines = captured.lines();
        assert_eq!(summed(&lines), 2 * FLOOD, "{lines:#?}");
        let summaries = lines
            .iter()
            .filter(|l| l.contains("netcode refused"))
            .count() as u64;
        assert!(
            summaries <= 2 + elapsed.as_secs(),
            "{summaries} summaries in {elapsed:?}: {lines:#?}"
        );
        assert!(
            lines.iter().all(|l| !l.contains("renetcode")),
            "renetcode logged: {lines:#?}"
        );
        assert!(
            lines.iter().all(|l| !l.contains("ERROR")),
            "an ERROR: {lines:#?}"
        );
        fx.stop().await;
    };
    timeout(Duration::from_secs(60), test)
        .await
        .expect("test exceeded its time bound");
}
