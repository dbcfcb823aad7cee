//! The gate's UDP transport end to end on 127.0.0.1: real sockets, a real
//! gate, real bot clients. Every test is bounded by a timeout and stops
//! everything it started.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_gate::pack::{DIRECT, PACKED, is_packed};
use tessera_gate::{
    Channel, ClientConfig, ClientConn, ClientDisconnect, ClientEvent, DisconnectReason, Gate,
    GateClient, GateConfig, GateEvent, NonceBook, RateQuota, Reject, TokenIssuer,
    connection_config, unix_now,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

use common::{GateFixture, LIMIT};

const PROTOCOL: u64 = 0x7E55_E7A0_0000_0001;
const KEY: [u8; 32] = *b"a test key that is 32 bytes long";

/// A gate, handing each token a client id of its own.
struct Fixture {
    base: GateFixture,
    next_client: u64,
}

impl std::ops::Deref for Fixture {
    type Target = GateFixture;
    fn deref(&self) -> &GateFixture {
        &self.base
    }
}

impl std::ops::DerefMut for Fixture {
    fn deref_mut(&mut self) -> &mut GateFixture {
        &mut self.base
    }
}

impl Fixture {
    async fn new(tweak: impl FnOnce(&mut GateConfig)) -> Self {
        Self {
            base: GateFixture::bind(PROTOCOL, KEY, 1024, tweak).await,
            next_client: 1,
        }
    }

    /// A token for the gate's listeners, with the next client id (which
    /// the standard form leaves out, restored).
    fn token(&mut self, account: u64) -> renetcode::ConnectToken {
        let client_id = self.next_client;
        self.next_client += 1;
        let mut token = self.base.token(account, client_id);
        token.client_id = client_id;
        token
    }

    /// Waits for `client`'s `Connected` event.
    async fn expect_connected(&mut self, client: u64) -> GateEvent {
        self.expect(
            &format!("client {client} connected"),
            |e| matches!(e, GateEvent::Connected { client: c, .. } if *c == client),
        )
        .await
    }

    /// Waits for `client`'s `Disconnected` event with `reason`.
    async fn expect_gone(&mut self, client: u64, reason: DisconnectReason) {
        self.expect(&format!("client {client} gone: {reason:?}"), |e| {
            *e == GateEvent::Disconnected { client, reason }
        })
        .await;
    }

    /// Connects a bot and waits for both ends to agree.
    async fn connect(&mut self, account: u64) -> GateClient {
        let token = self.token(account);
        let mut client = GateClient::connect(token, ClientConfig::default())
            .await
            .unwrap();
        let id = client.client_id();
        expect_client(&mut client, "connected", |e| *e == ClientEvent::Connected).await;
        let GateEvent::Connected { claims, .. } = self.expect_connected(id).await else {
            unreachable!()
        };
        assert_eq!(claims.account, account);
        client
    }

    async fn stop(self) {
        self.base.stop().await;
    }
}

async fn expect_client(
    client: &mut GateClient,
    what: &str,
    mut pred: impl FnMut(&ClientEvent) -> bool,
) -> ClientEvent {
    let wait = async {
        loop {
            let event = client.recv().await.expect("client event queue closed");
            if pred(&event) {
                return event;
            }
        }
    };
    timeout(LIMIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for client event: {what}"))
}

/// Polls `cond` every 10 ms until it holds (for counters, which have no event).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let wait = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(LIMIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

/// Repeats `act` (then a 10 ms pause) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool, mut act: impl AsyncFnMut()) {
    let wait = async {
        while !cond() {
            act().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(LIMIT, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(Duration::from_secs(60), f)
        .await
        .expect("test exceeded its time bound")
}

/// A reliable round trip and unreliable traffic both ways.
async fn exchange(fx: &mut Fixture, client: &mut GateClient, tag: &str) {
    let id = client.client_id();
    let ping = format!("ping {tag}");
    client
        .send(Channel::Reliable, ping.clone().into_bytes())
        .unwrap();
    let event = fx
        .expect("reliable message", |e| {
            matches!(e, GateEvent::Message { client, channel: Channel::Reliable, .. } if *client == id)
        })
        .await;
    let GateEvent::Message { payload, .. } = event else {
        unreachable!()
    };
    assert_eq!(&payload[..], ping.as_bytes());

    fx.gate
        .send(id, Channel::Reliable, format!("pong {tag}").into_bytes())
        .unwrap();
    let event = expect_client(client, "reliable reply", |e| {
        matches!(
            e,
            ClientEvent::Message {
                channel: Channel::Reliable,
                ..
            }
        )
    })
    .await;
    assert_eq!(
        event,
        ClientEvent::Message {
            channel: Channel::Reliable,
            payload: format!("pong {tag}").into_bytes().into(),
        }
    );

    // Unreliable: resend until one gets through (loopback rarely loses any).
    let mut got_server = false;
    let mut got_client = false;
    for _ in 0..200 {
        if !got_server {
            client
                .send(Channel::Unreliable, b"state up".to_vec())
                .unwrap();
        }
        if !got_client {
            fx.gate
                .send(id, Channel::Unreliable, b"state down".to_vec())
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(e) = fx.events.try_recv() {
            if let GateEvent::Message {
                client,
                channel: Channel::Unreliable,
                payload,
            } = e
                && client == id
            {
                // (Late copies from an earlier exchange of another client
                // may still arrive: unreliable messages were resent.)
                assert_eq!(&payload[..], b"state up");
                got_server = true;
            }
        }
        while let Some(e) = client.try_recv() {
            if let ClientEvent::Message {
                channel: Channel::Unreliable,
                payload,
            } = e
            {
                assert_eq!(&payload[..], b"state down");
                got_client = true;
            }
        }
        if got_server && got_client {
            return;
        }
    }
    panic!("unreliable messages never arrived (server {got_server}, client {got_client})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connects_and_exchanges_messages_on_both_channels() {
    bounded(async {
        let mut fx = Fixture::new(|_| {}).await;
        let mut client = fx.connect(1001).await;
        assert_eq!(fx.gate.connected(), 1);
        exchange(&mut fx, &mut client, "one").await;
        exchange(&mut fx, &mut client, "two").await;
        // Unreliable messages went outside renet both ways; reliable ones
        // through it.
        let s = fx.gate.stats().snapshot();
        assert!(s.messages_in_direct >= 2, "{s:?}");
        assert!(s.messages_in > s.messages_in_direct, "{s:?}");
        // Every datagram sent carried at least a netcode header's bytes.
        assert!(
            s.datagrams_out > 0 && s.bytes_out > s.datagrams_out,
            "{s:?}"
        );

        // A goodbye from the client is reported with its reason.
        let id = client.client_id();
        client.disconnect().unwrap();
        expect_client(&mut client, "disconnected", |e| {
            *e == ClientEvent::Disconnected(ClientDisconnect::ByUser)
        })
        .await;
        fx.expect_gone(id, DisconnectReason::ByClient).await;
        assert_eq!(fx.gate.connected(), 0);
        client.close().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicked_and_shutdown_clients_are_told() {
    bounded(async {
        let mut fx = Fixture::new(|_| {}).await;
        let mut a = fx.connect(1).await;
        let mut b = fx.connect(2).await;
        fx.gate.disconnect(a.client_id(), 7).unwrap();
        let a_id = a.client_id();
        fx.expect_gone(a_id, DisconnectReason::Kicked(7)).await;
        expect_client(&mut a, "kicked", |e| {
            matches!(e, ClientEvent::Disconnected(_))
        })
        .await;
        fx.stop().await;
        let event = expect_client(&mut b, "shutdown", |e| {
            matches!(e, ClientEvent::Disconnected(_))
        })
        .await;
        assert_eq!(
            event,
            ClientEvent::Disconnected(ClientDisconnect::Netcode(
                renetcode::DisconnectReason::DisconnectedByServer
            ))
        );
        a.close().await;
        b.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_token_is_refused() {
    bounded(async {
        let mut fx = Fixture::new(|_| {}).await;
        let token = fx.token(2002);
        let mut first = GateClient::connect(token.clone(), ClientConfig::default())
            .await
            .unwrap();
        expect_client(&mut first, "connected", |e| *e == ClientEvent::Connected).await;
        let id = first.client_id();
        fx.expect_connected(id).await;
        let local = first.local_addr();
        first.disconnect().unwrap();
        fx.expect(
            "disconnected",
            |e| matches!(e, GateEvent::Disconnected { client, .. } if *client == id),
        )
        .await;
        first.close().await;

        // Same token, same address: netcode lets it through, the nonce book
        // does not.
        let socket = UdpSocket::bind(local).await.unwrap();
        let mut replay = GateClient::start(token, socket, ClientConfig::default()).unwrap();
        let event = expect_client(&mut replay, "refused", |e| {
            matches!(e, ClientEvent::Disconnected(_))
        })
        .await;
        assert_eq!(
            event,
            ClientEvent::Disconnected(ClientDisconnect::Netcode(
                renetcode::DisconnectReason::DisconnectedByServer
            ))
        );
        assert_eq!(fx.gate.stats().snapshot().refused_replayed, 1);
        assert_eq!(fx.book.lock().unwrap().stats().replayed, 1);
        assert_eq!(fx.gate.connected(), 0);
        // The refused client never showed up as a gate event.
        assert!(
            !std::iter::from_fn(|| fx.events.try_recv().ok())
                .any(|e| matches!(e, GateEvent::Connected { .. }))
        );

        // A fresh token still works.
        let mut fresh = fx.connect(2002).await;
        exchange(&mut fx, &mut fresh, "fresh").await;
        replay.close().await;
        fresh.close().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refused() {
    bounded(async {
        let fx = Fixture::new(|_| {}).await;
        let past = unix_now() - Duration::from_secs(120);
        let issued = fx
            .issuer
            .issue(past, 3003, 99, &fx.gate.open_addresses())
            .unwrap();
        let mut client = GateClient::connect(issued.token, ClientConfig::default())
            .await
            .unwrap();
        let stats = fx.gate.stats().clone();
        eventually("expired token counted", || {
            stats.screen.rejected(Reject::ExpiredToken) >= 2
        })
        .await;
        assert!(
            client.try_recv().is_none(),
            "an expired token must not connect"
        );
        assert_eq!(fx.gate.connected(), 0);
        assert_eq!(stats.snapshot().admitted, 0);
        client.close().await;
        fx.stop().await;
    })
    .await;
}

/// A tiny deterministic generator for the junk datagrams.
fn junk(seed: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_are_counted_and_the_good_client_keeps_being_served() {
    bounded(async {
        let mut fx = Fixture::new(|c| {
            c.client_messages = RateQuota::new(100, 200);
            c.client_datagrams = RateQuota::new(200, 300);
            c.handshake_datagrams = RateQuota::new(50, 50);
        })
        .await;
        let gate_addr = fx.gate.local_addresses()[0];
        let mut good = fx.connect(1).await;
        let mut message_flooder = fx.connect(2).await;
        let mut datagram_flooder = fx.connect(3).await;
        exchange(&mut fx, &mut good, "before").await;
        let stats = fx.gate.stats().clone();

        // Everything below is paced or repeated until counted: a burst of
        // datagrams can overflow the gate socket's kernel buffer (the kernel
        // drops them before the gate sees them), which would make counts flaky.
        let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;

        // Oversized datagrams from a stranger.
        until(
            "oversized datagrams counted",
            || stats.screen.rejected(Reject::TooLong) >= 4,
            async || {
                for len in [1401usize, 1500, 4000, 9000] {
                    attacker.send_to(&vec![5u8; len], gate_addr).await.unwrap();
                }
            },
        )
        .await;

        // The renetcode panic datagrams, from the connected client's own address.
        until(
            "hazards counted",
            || {
                stats.screen.rejected(Reject::SequenceTooLong) >= 1
                    && stats.screen.rejected(Reject::TooShort) >= 1
            },
            async || {
                let mut hazard = vec![0u8; 40];
                hazard[0] = 0x95;
                good.send_raw(hazard).unwrap();
                let mut truncated = vec![0x85u8; 20];
                truncated[1..9].copy_from_slice(&1u64.to_le_bytes());
                good.send_raw(truncated).unwrap();
            },
        )
        .await;

        // Random junk from a stranger, paced.
        let before = stats.screen.rejected_total();
        for i in 0..300 {
            let len = (i * 7) % 1500;
            attacker
                .send_to(&junk(&mut seed, len), gate_addr)
                .await
                .unwrap();
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        eventually("junk counted", || {
            stats.screen.rejected_total() >= before + 150
        })
        .await;

        // A handshake flood: well-framed connection requests, junk tokens;
        // from one source, its own bucket stops it first.
        let expire = unix_now().as_secs() + 30;
        until(
            "handshake flood throttled",
            || stats.snapshot().handshake_source_throttled > 0,
            async || {
                for _ in 0..20 {
                    let mut r = junk(&mut seed, 1078);
                    r[0] = 0;
                    r[1..14].copy_from_slice(b"NETCODE 1.02\0");
                    r[14..22].copy_from_slice(&PROTOCOL.to_le_bytes());
                    r[22..30].copy_from_slice(&expire.to_le_bytes());
                    attacker.send_to(&r, gate_addr).await.unwrap();
                }
            },
        )
        .await;

        // A message flood: kicked for it.
        let mf = message_flooder.client_id();
        let mut i = 0u32;
        until(
            "message flooder kicked",
            || stats.snapshot().kicked_message_flood >= 1,
            async || {
                for _ in 0..200 {
                    i += 1;
                    let _ = message_flooder.send(Channel::Unreliable, i.to_le_bytes().to_vec());
                }
            },
        )
        .await;
        fx.expect_gone(mf, DisconnectReason::MessageFlood).await;

        // A datagram flood (framed like payloads, junk inside): kicked for it.
        let df = datagram_flooder.client_id();
        until(
            "datagram flooder kicked",
            || stats.snapshot().kicked_datagram_flood >= 1,
            async || {
                for _ in 0..100 {
                    let mut d = junk(&mut seed, 1 + 2 + 100 + 16);
                    d[0] = 0x25;
                    d[1] = 1;
                    d[2] = 0;
                    let _ = datagram_flooder.send_raw(d);
                }
            },
        )
        .await;
        fx.expect_gone(df, DisconnectReason::DatagramFlood).await;
        let s = stats.snapshot();
        assert_eq!(s.kicked_message_flood, 1);
        assert_eq!(s.kicked_datagram_flood, 1);
        expect_client(&mut message_flooder, "flooder told", |e| {
            matches!(e, ClientEvent::Disconnected(_))
        })
        .await;
        expect_client(&mut datagram_flooder, "flooder told", |e| {
            matches!(e, ClientEvent::Disconnected(_))
        })
        .await;

        // The good client is still served, both ways, on both channels.
        assert_eq!(fx.gate.connected(), 1);
        exchange(&mut fx, &mut good, "after").await;

        // An oversized message from a real client: kicked for that.
        let big = fx.connect(4).await;
        let big_id = big.client_id();
        big.send(Channel::Reliable, vec![1u8; 4000]).unwrap();
        fx.expect_gone(big_id, DisconnectReason::MessageTooLarge)
            .await;
        // The same, outside renet: an unreliable message that fits a
        // payload but not the gate's limit.
        let big_direct = fx.connect(5).await;
        let big_direct_id = big_direct.client_id();
        big_direct
            .send(Channel::Unreliable, vec![2u8; 1100])
            .unwrap();
        fx.expect_gone(big_direct_id, DisconnectReason::MessageTooLarge)
            .await;
        assert_eq!(stats.snapshot().kicked_message_too_large, 2);
        exchange(&mut fx, &mut good, "last").await;

        for c in [good, message_flooder, datagram_flooder, big, big_direct] {
            c.close().await;
        }
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_is_not_advertised() {
    bounded(async {
        let mut config = GateConfig::new(PROTOCOL, KEY);
        config.max_clients_per_listener = 1;
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let book = Arc::new(Mutex::new(NonceBook::new(16, Duration::from_secs(30))));
        let (gate, events) = Gate::bind(config, &[addr, addr], book.clone())
            .await
            .unwrap();
        let issuer = TokenIssuer::new(PROTOCOL, KEY, Duration::from_secs(30), 5).unwrap();
        let mut fx = Fixture {
            base: GateFixture {
                gate,
                events,
                issuer,
                book,
            },
            next_client: 1,
        };
        let all = fx.gate.addresses();
        assert_eq!(fx.gate.open_addresses(), all);
        let mut first = fx.connect(1).await;
        assert_eq!(fx.gate.connected_per_listener(), vec![1, 0]);
        assert_eq!(fx.gate.open_addresses(), vec![all[1]]);
        let mut second = fx.connect(2).await;
        assert_eq!(fx.gate.connected_per_listener(), vec![1, 1]);
        assert!(fx.gate.open_addresses().is_empty());
        // Routing reaches the client on the second listener.
        exchange(&mut fx, &mut second, "second").await;
        exchange(&mut fx, &mut first, "first").await;
        first.close().await;
        second.close().await;
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_bots_connect_and_echo() {
    bounded(async {
        const BOTS: usize = 200;
        // 200 bots on one host: exempt from the per-source handshake limit,
        // as `[gate.limits] trusted_ips` exempts loopback.
        let mut fx = Fixture::new(|c| {
            c.handshake_exempt = vec![std::net::Ipv4Addr::LOCALHOST.into()];
        })
        .await;
        let mut bots = Vec::with_capacity(BOTS);
        for i in 0..BOTS {
            let token = fx.token(10_000 + i as u64);
            bots.push(
                GateClient::connect(token, ClientConfig::default())
                    .await
                    .unwrap(),
            );
        }
        // Each bot, once connected, sends its id reliably; the test echoes it.
        let mut tasks = Vec::with_capacity(BOTS);
        for mut bot in bots {
            tasks.push(tokio::spawn(async move {
                expect_client(&mut bot, "connected", |e| *e == ClientEvent::Connected).await;
                let id = bot.client_id();
                bot.send(Channel::Reliable, id.to_le_bytes().to_vec())
                    .unwrap();
                let echo = expect_client(&mut bot, "echo", |e| {
                    matches!(e, ClientEvent::Message { .. })
                })
                .await;
                assert_eq!(
                    echo,
                    ClientEvent::Message {
                        channel: Channel::Reliable,
                        payload: id.to_le_bytes().to_vec().into(),
                    }
                );
                bot
            }));
        }
        let mut echoed = 0;
        while echoed < BOTS {
            let event = fx
                .expect("bot message", |e| matches!(e, GateEvent::Message { .. }))
                .await;
            if let GateEvent::Message {
                client, payload, ..
            } = event
            {
                assert_eq!(&payload[..], &client.to_le_bytes());
                fx.gate.send(client, Channel::Reliable, payload).unwrap();
                echoed += 1;
            }
        }
        for task in tasks {
            let bot = task.await.unwrap();
            bot.close().await;
        }
        assert_eq!(fx.gate.stats().snapshot().admitted, BOTS as u64);
        fx.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_continues_during_a_junk_flood() {
    bounded(async {
        let mut fx = Fixture::new(|_| {}).await;
        let gate_addr = fx.gate.local_addresses()[0];
        let mut good = fx.connect(1).await;
        let stats = fx.gate.stats().clone();
        let before = stats.screen.rejected_total();
        let flood = tokio::spawn(async move {
            let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut seed = 0x1234_5678_9ABC_DEF1u64;
            loop {
                for _ in 0..64 {
                    let d = junk(&mut seed, 24);
                    let _ = attacker.send_to(&d, gate_addr).await;
                }
                tokio::task::yield_now().await;
            }
        });
        eventually("flood under way", || {
            stats.screen.rejected_total() > before + 1000
        })
        .await;
        for round in 0..3 {
            exchange(&mut fx, &mut good, &format!("during {round}")).await;
        }
        flood.abort();
        let _ = flood.await;
        assert!(stats.screen.rejected_total() > before + 1000);
        assert_eq!(fx.gate.connected(), 1);
        good.close().await;
        fx.stop().await;
    })
    .await;
}

/// A stock renet + renetcode client, driven as renet_netcode's transport
/// drives them (plain payloads, never packed), gets the gate's unreliable
/// messages as renet packets: the gate sends packed payloads, and state
/// outside renet, only to clients that pack. A packing client next to it is
/// served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_renet_client_gets_plain_packets() {
    bounded(async {
        let mut fx = Fixture::new(|_| {}).await;
        let token = fx.token(7);
        let server = token.server_addresses[0].unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut netcode = netcode_client(token);
        let id = netcode.client_id();
        let mut renet = renet::RenetClient::new(connection_config(256 * 1024, 32 * 1024));
        let mut buf = [0u8; 2048];
        let mut last = std::time::Instant::now();
        let (mut payloads, mut packed) = (0u32, 0u32);
        let mut got = Vec::new();
        for _ in 0..1000 {
            while let Ok((len, from)) = socket.try_recv_from(&mut buf) {
                if from != server {
                    continue;
                }
                if let Some(payload) = netcode.process_packet(&mut buf[..len]) {
                    payloads += 1;
                    packed += u32::from(is_packed(payload));
                    renet.process_packet(payload);
                }
            }
            let now = std::time::Instant::now();
            let dt = now - last;
            last = now;
            if let Some((packet, addr)) = netcode.update(dt) {
                socket.send_to(packet, addr).await.unwrap();
            }
            renet.update(dt);
            if netcode.is_connected() {
                renet.set_connected();
                for packet in renet.get_packets_to_send() {
                    let (addr, datagram) = netcode.generate_payload_packet(&packet).unwrap();
                    socket.send_to(datagram, addr).await.unwrap();
                }
                // Unknown to the gate until its handshake is through: retried.
                let _ = fx.gate.send(id, Channel::Unreliable, b"state".to_vec());
            } else if netcode.is_connecting() {
                renet.set_connecting();
            }
            while let Some(m) = renet.receive_message(Channel::Unreliable.id()) {
                got.push(m);
            }
            while fx.events.try_recv().is_ok() {}
            if got.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            got.len() >= 3,
            "the stock client got {} messages",
            got.len()
        );
        assert!(got.iter().all(|m| &m[..] == b"state"));
        assert!(payloads > 0);
        assert_eq!(packed, 0, "a stock client was sent packed payloads");

        // A packing client on the same gate still exchanges both ways.
        let mut bot = fx.connect(8).await;
        exchange(&mut fx, &mut bot, "next to a stock client").await;
        bot.close().await;
        fx.stop().await;
    })
    .await;
}

/// A bare netcode client, connected and admitted: it sends whatever payloads
/// a test makes (the gate's framing checks are what is tested).
struct RawClient {
    socket: UdpSocket,
    netcode: renetcode::NetcodeClient,
    id: u64,
}

impl RawClient {
    async fn connect(fx: &mut Fixture, account: u64) -> Self {
        let token = fx.token(account);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut netcode = netcode_client(token);
        let id = netcode.client_id();
        let mut buf = [0u8; 2048];
        let mut last = std::time::Instant::now();
        let wait = async {
            while !netcode.is_connected() {
                while let Ok((len, _)) = socket.try_recv_from(&mut buf) {
                    let _ = netcode.process_packet(&mut buf[..len]);
                }
                let now = std::time::Instant::now();
                if let Some((packet, addr)) = netcode.update(now - last) {
                    socket.send_to(packet, addr).await.unwrap();
                }
                last = now;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        timeout(LIMIT, wait).await.expect("raw client connects");
        fx.expect_connected(id).await;
        Self {
            socket,
            netcode,
            id,
        }
    }

    async fn send(&mut self, payload: &[u8]) {
        let (addr, datagram) = self.netcode.generate_payload_packet(payload).unwrap();
        self.socket.send_to(datagram, addr).await.unwrap();
    }
}

/// A bare netcode client for `token` (the stock client, not ours).
fn netcode_client(token: renetcode::ConnectToken) -> renetcode::NetcodeClient {
    renetcode::NetcodeClient::new(
        Duration::ZERO,
        renetcode::ClientAuthentication::Secure {
            connect_token: token,
        },
    )
    .unwrap()
}

/// One packed entry of `body` with the given length flags.
fn entry(flags: u16, body: &[u8]) -> Vec<u8> {
    let mut e = (body.len() as u16 | flags).to_be_bytes().to_vec();
    e.extend_from_slice(body);
    e
}

/// What a client's packed payloads may carry, checked by the gate: renet
/// packets, and unreliable messages outside renet (delivered as messages,
/// held to the message size limit); bad framing gets the client kicked and
/// costs nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_payloads_outside_renet_are_delivered_and_checked() {
    bounded(async {
        let mut fx = Fixture::new(|_| {}).await;
        let stats = fx.gate.stats().clone();
        let mut good = fx.connect(1).await;

        // Two messages outside renet in one payload: two message events.
        let mut raw = RawClient::connect(&mut fx, 2).await;
        let mut payload = vec![PACKED];
        payload.extend(entry(DIRECT, b"first"));
        payload.extend(entry(DIRECT, b"second"));
        raw.send(&payload).await;
        for want in [&b"first"[..], b"second"] {
            let id = raw.id;
            let event = fx
                .expect("a message outside renet", |e| {
                    matches!(e, GateEvent::Message { client, .. } if *client == id)
                })
                .await;
            assert_eq!(
                event,
                GateEvent::Message {
                    client: raw.id,
                    channel: Channel::Unreliable,
                    payload: want.to_vec().into(),
                }
            );
        }
        assert_eq!(stats.snapshot().messages_in_direct, 2);

        // Framing that does not add up (an entry longer than the rest):
        // kicked, nothing of the payload delivered.
        let mut bad = vec![PACKED];
        bad.extend(entry(DIRECT, b"lost"));
        bad.extend([0x80, 9, 1]);
        raw.send(&bad).await;
        let id = raw.id;
        let event = fx
            .expect("malformed payload kicked", |e| {
                matches!(e, GateEvent::Message { client, .. } | GateEvent::Disconnected { client, .. } if *client == id)
            })
            .await;
        assert_eq!(
            event,
            GateEvent::Disconnected {
                client: raw.id,
                reason: DisconnectReason::MalformedPayload,
            }
        );
        assert_eq!(stats.snapshot().kicked_malformed, 1);

        // A message outside renet over `max_message_bytes`: kicked for size.
        let mut raw = RawClient::connect(&mut fx, 3).await;
        let mut payload = vec![PACKED];
        payload.extend(entry(DIRECT, &[7u8; 1100]));
        raw.send(&payload).await;
        let id = raw.id;
        fx.expect_gone(id, DisconnectReason::MessageTooLarge).await;
        assert_eq!(stats.snapshot().messages_in_direct, 2);

        exchange(&mut fx, &mut good, "after bad payloads").await;
        assert_eq!(fx.gate.connected(), 1);
        good.close().await;
        fx.stop().await;
    })
    .await;
}

/// A [`ClientConn`] (no task of its own) driven from a `select!` loop that
/// keeps cancelling its `recv` loses nothing: every reliable message
/// arrives, in order, and unreliable traffic flows both ways; a goodbye
/// ends it with `Disconnected(ByUser)` and then `None`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_conn_driven_from_a_select_loop_loses_nothing() {
    bounded(async {
        let mut fx = Fixture::new(|_| {}).await;
        let token = fx.token(11);
        let mut conn = ClientConn::connect(token, ClientConfig::default())
            .await
            .unwrap();
        let id = conn.client_id();
        let mut connected = false;
        while !connected {
            tokio::select! {
                e = conn.recv() => connected = e == Some(ClientEvent::Connected),
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        fx.expect_connected(id).await;

        const N: u32 = 200;
        for i in 0..N {
            fx.gate
                .send(id, Channel::Reliable, i.to_le_bytes().to_vec())
                .unwrap();
        }
        conn.send(Channel::Reliable, b"up reliable".to_vec())
            .unwrap();
        let (mut reliable, mut unreliable_down, mut cancelled) = (Vec::new(), 0, 0);
        let mut unreliable_up = false;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        while reliable.len() < N as usize || unreliable_down == 0 || !unreliable_up {
            tokio::select! {
                e = conn.recv() => match e.expect("conn still open") {
                    ClientEvent::Message { channel: Channel::Reliable, payload } => {
                        reliable.push(u32::from_le_bytes(payload[..].try_into().unwrap()));
                    }
                    ClientEvent::Message { channel: Channel::Unreliable, payload } => {
                        assert_eq!(&payload[..], b"down");
                        unreliable_down += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                },
                _ = tick.tick() => {
                    cancelled += 1;
                    conn.send(Channel::Unreliable, b"up".to_vec()).unwrap();
                    let _ = fx.gate.send(id, Channel::Unreliable, b"down".to_vec());
                }
            }
            while let Ok(e) = fx.events.try_recv() {
                if let GateEvent::Message {
                    client,
                    channel,
                    payload,
                } = e
                    && client == id
                    && channel == Channel::Unreliable
                {
                    assert_eq!(&payload[..], b"up");
                    unreliable_up = true;
                }
            }
        }
        assert_eq!(reliable, (0..N).collect::<Vec<_>>());
        assert!(cancelled > 0, "recv was never cancelled");
        let s = fx.gate.stats().snapshot();
        assert!(s.messages_in_direct >= 1, "{s:?}");

        conn.disconnect().unwrap();
        assert!(conn.send(Channel::Reliable, b"late".to_vec()).is_err());
        let mut last = None;
        while let Some(e) = conn.recv().await {
            last = Some(e);
        }
        assert_eq!(
            last,
            Some(ClientEvent::Disconnected(ClientDisconnect::ByUser))
        );
        fx.expect_gone(id, DisconnectReason::ByClient).await;
        fx.stop().await;
    })
    .await;
}
