//! A handshake flood from a few source addresses spends only those
//! sources' buckets: a client from another address still connects.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tessera_gate::{ClientConfig, ClientEvent, GateClient, GateEvent, RateQuota, unix_now};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use common::{GateFixture, LIMIT};

const PROTOCOL: u64 = 0x7E55_E7A0_0000_0002;
const KEY: [u8; 32] = *b"another key, also 32 bytes long!";

/// A well-framed connection request with a junk token: what anyone can
/// forge without a key.
fn forged_request(seed: &mut u64) -> Vec<u8> {
    let mut r: Vec<u8> = (0..1078)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect();
    r[0] = 0;
    r[1..14].copy_from_slice(b"NETCODE 1.02\0");
    r[14..22].copy_from_slice(&PROTOCOL.to_le_bytes());
    r[22..30].copy_from_slice(&(unix_now().as_secs() + 30).to_le_bytes());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_a_few_sources_does_not_lock_out_a_client() {
    timeout(Duration::from_secs(60), async {
        let mut fx = GateFixture::bind(PROTOCOL, KEY, 64, |c| {
            // The listener's bucket is well above what four sources may
            // spend, far below what they send.
            c.handshake_datagrams = RateQuota::new(100, 100);
            c.handshake_per_source = RateQuota::new(10, 20);
        })
        .await;
        let gate_addr = fx.gate.local_addresses()[0];
        let stats = fx.gate.stats().clone();

        // Four flooding sources on other loopback addresses, until told.
        let stop = Arc::new(AtomicBool::new(false));
        let mut flooders = Vec::new();
        for n in 2..6u8 {
            let socket = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, n), 0))
                .await
                .unwrap();
            let stop = stop.clone();
            flooders.push(tokio::spawn(async move {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(n);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..50 {
                        let _ = socket.send_to(&forged_request(&mut seed), gate_addr).await;
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        let flooding = async {
            while stats.snapshot().handshake_source_throttled < 1000 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        timeout(LIMIT, flooding)
            .await
            .expect("the flood is throttled");

        // A client from 127.0.0.1 connects through it.
        let mut token = fx.token(1, 7);
        token.client_id = 7;
        let mut client = GateClient::connect(token, ClientConfig::default())
            .await
            .unwrap();
        let first = timeout(LIMIT, client.recv()).await.expect("client event");
        assert_eq!(first, Some(ClientEvent::Connected), "the client connects");
        fx.expect("client 7 connected", |e| {
            matches!(e, GateEvent::Connected { client: 7, .. })
        })
        .await;

        stop.store(true, Ordering::Relaxed);
        for f in flooders {
            f.await.unwrap();
        }
        let s = stats.snapshot();
        assert!(s.handshake_source_throttled >= 1000, "{s:?}");
        client.close().await;
        fx.stop().await;
    })
    .await
    .expect("test exceeded its time bound");
}
