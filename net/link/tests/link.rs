//! Links over real loopback sockets: handshakes, every message, bad input,
//! back-pressure, reconnects. Every test is bounded by a timeout and stops
//! every server and task it starts.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tessera_link::{
    CloseReason, ConnectError, Connector, FrameCodec, Handshake, HandshakeError, Link, LinkConfig,
    LinkMsg, LinkStats, LinkStatsSnapshot, PROTOCOL_VERSION, RefuseCode, Role, SendError, connect,
    connect_with_backoff, serve,
};
use tessera_wire::{Challenge, Heartbeat, Hello, NONCE_LEN, Response, Side, Transcript};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::codec::Framed;

mod variants;
use variants::every_variant;

/// Upper bound on any one test.
const T: Duration = Duration::from_secs(20);
const SECRET: &str = "cluster-secret";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

fn cfg(role: Role, node: &str) -> LinkConfig {
    let mut c = LinkConfig::new(role, node, SECRET);
    c.handshake_timeout = Duration::from_secs(2);
    c.linger = Duration::from_secs(2);
    c.backoff.initial = Duration::from_millis(20);
    c.backoff.max = Duration::from_millis(200);
    c
}

/// A running `serve` and the means to stop it.
struct Server {
    addr: SocketAddr,
    stats: Arc<LinkStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start<H, Fut>(cfg: LinkConfig, handler: H) -> Self
    where
        H: Fn(Link) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), cfg, handler).await
    }

    async fn start_on<H, Fut>(addr: SocketAddr, cfg: LinkConfig, handler: H) -> Self
    where
        H: Fn(Link) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let stats = cfg.stats.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, cfg, handler, async {
                let _ = stopped.await;
            })
            .await
            .expect("valid config");
        });
        Self {
            addr,
            stats,
            stop: Some(stop),
            task,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn stats(&self) -> LinkStatsSnapshot {
        self.stats.snapshot()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(T, &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task did not panic");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave the server running.
        self.task.abort();
    }
}

/// Greets with the peer's identity, then echoes everything back.
async fn echo(mut link: Link) {
    let peer = link.peer().clone();
    let greeting = LinkMsg::Refused {
        reason: format!("hello {} {}", peer.role, peer.node),
    };
    if link.send(&greeting).await.is_err() {
        return;
    }
    while let Some(m) = link.recv().await {
        if link.send(&m).await.is_err() {
            break;
        }
    }
}

/// Reports each link's close reason on `tx`, reading and discarding messages.
fn reporter(
    tx: mpsc::Sender<CloseReason>,
) -> impl Fn(Link) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static {
    move |mut link: Link| {
        let tx = tx.clone();
        Box::pin(async move {
            while link.recv().await.is_some() {}
            let reason = link.closed().await;
            let _ = tx.send(reason).await;
        })
    }
}

/// Polls `stats` until `pred` holds (or the test's timeout fires).
async fn wait_for(
    stats: &LinkStats,
    pred: impl Fn(&LinkStatsSnapshot) -> bool,
) -> LinkStatsSnapshot {
    loop {
        let s = stats.snapshot();
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A raw connection, for speaking the protocol badly on purpose.
async fn raw(addr: &str) -> Framed<TcpStream, FrameCodec> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    Framed::new(stream, FrameCodec::new(tessera_link::DEFAULT_MAX_FRAME))
}

fn hello(role: Role, node: &str) -> Hello {
    Hello {
        role,
        node: node.into(),
        nonce: [5; NONCE_LEN],
    }
}

/// Reads the next handshake frame.
async fn next_handshake(f: &mut Framed<TcpStream, FrameCodec>) -> Handshake {
    let frame = f.next().await.expect("a reply").expect("a frame");
    Handshake::decode(&frame).expect("a handshake frame")
}

/// Runs the connecting side of a handshake by hand, proving `secret`, and
/// returns the response frame it would send (not sent yet).
async fn raw_hello_and_challenge(
    f: &mut Framed<TcpStream, FrameCodec>,
    node: &str,
    secret: &str,
) -> Bytes {
    let h = hello(Role::Tool, node);
    f.send(Bytes::from(Handshake::Hello(h.clone()).encode()))
        .await
        .expect("send hello");
    let Handshake::Challenge(c) = next_handshake(f).await else {
        panic!("expected a challenge");
    };
    let t = Transcript {
        connecting_role: h.role,
        connecting_node: &h.node,
        connecting_nonce: &h.nonce,
        accepting_role: c.role,
        accepting_node: &c.node,
        accepting_nonce: &c.nonce,
    };
    assert!(
        tessera_wire::Secret::from(SECRET).verify(Side::Accepting, &t, &c.proof),
        "the server proves it holds the secret"
    );
    let proof = tessera_wire::Secret::from(secret).proof(Side::Connecting, &t);
    Bytes::from(Handshake::Response(Response { proof }).encode())
}

/// A raw connection past a good handshake.
async fn raw_established(addr: &str) -> Framed<TcpStream, FrameCodec> {
    let mut f = raw(addr).await;
    let response = raw_hello_and_challenge(&mut f, "raw", SECRET).await;
    f.send(response).await.expect("send response");
    assert_eq!(next_handshake(&mut f).await, Handshake::Welcome);
    f
}

/// The next handshake frame on a raw connection, then the end of the stream.
async fn refusal(f: &mut Framed<TcpStream, FrameCodec>) -> (RefuseCode, String) {
    let frame = f.next().await.expect("a reply").expect("a frame");
    let Ok(Handshake::Refused { code, reason }) = Handshake::decode(&frame) else {
        panic!("expected a refusal, got {frame:?}");
    };
    assert!(
        f.next().await.is_none(),
        "the server hangs up after refusing"
    );
    (code, reason)
}

/// Connects a good client; against an [`echo`] server, checks a round trip.
async fn assert_serves(addr: &str, echoes: bool) {
    let mut link = connect(addr, &cfg(Role::Tool, "probe"))
        .await
        .expect("connect");
    assert_eq!(link.peer().node, "coord");
    if echoes {
        let greeting = link.recv().await.expect("greeting");
        assert_eq!(
            greeting,
            LinkMsg::Refused {
                reason: "hello tool probe".into()
            }
        );
        let ping = LinkMsg::Registered { heartbeat_ms: 1 };
        link.send(&ping).await.expect("send");
        assert_eq!(link.recv().await, Some(ping));
    }
    assert_eq!(link.close().await, CloseReason::Local);
}

#[tokio::test]
async fn handshake_and_every_message_round_trip() {
    init_tracing();
    tokio::time::timeout(T, async {
        let server = Server::start(cfg(Role::Coordinator, "coord"), echo).await;
        let client_cfg = cfg(Role::SceneServer, "scene-1");
        let mut link = connect(&server.addr(), &client_cfg).await.expect("connect");
        assert_eq!(link.peer().role, Role::Coordinator);
        assert_eq!(link.peer().node, "coord");
        assert_eq!(
            link.recv().await,
            Some(LinkMsg::Refused {
                reason: "hello scene-server scene-1".into()
            })
        );
        let msgs = every_variant();
        for m in &msgs {
            link.send(m).await.expect("send");
        }
        for m in &msgs {
            assert_eq!(link.recv().await.as_ref(), Some(m), "{}", m.kind());
        }
        // try_send round-trips too when there is room.
        link.try_send(&msgs[0]).expect("room");
        assert_eq!(link.recv().await.as_ref(), Some(&msgs[0]));

        let c = client_cfg.stats.snapshot();
        assert_eq!(c.frames_out, msgs.len() as u64 + 1);
        assert_eq!(c.frames_in, msgs.len() as u64 + 2);
        assert_eq!(
            (c.decode_errors, c.oversized, c.queue_full_drops),
            (0, 0, 0)
        );
        assert_eq!(link.close().await, CloseReason::Local);
        let s = wait_for(&server.stats, |s| s.links_closed == 1).await;
        assert_eq!(s.links_opened, 1);
        assert_eq!(s.frames_in, msgs.len() as u64 + 1);
        assert_eq!(s.handshakes_refused, 0);
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn close_flushes_everything_queued() {
    init_tracing();
    tokio::time::timeout(T, async {
        let (tx, mut rx) = mpsc::channel(1);
        let server = Server::start(cfg(Role::Coordinator, "coord"), move |mut link: Link| {
            let tx = tx.clone();
            async move {
                let mut n = 0u32;
                while link.recv().await.is_some() {
                    n += 1;
                }
                let _ = tx.send((n, link.closed().await)).await;
            }
        })
        .await;
        let link = connect(&server.addr(), &cfg(Role::Gate, "gate-1"))
            .await
            .expect("connect");
        let msg = LinkMsg::Replication {
            client: 9,
            bytes: vec![7; 1024],
        };
        for _ in 0..500 {
            link.try_send(&msg).expect("500 KiB fits the default queue");
        }
        assert_eq!(link.close().await, CloseReason::Local);
        assert_eq!(rx.recv().await, Some((500, CloseReason::PeerClosed)));
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn wrong_secret_is_refused_and_the_server_keeps_serving() {
    init_tracing();
    tokio::time::timeout(T, async {
        let server = Server::start(cfg(Role::Coordinator, "coord"), echo).await;
        let mut bad = cfg(Role::SceneServer, "intruder");
        bad.secret = "guess".into();
        // The server proves itself first; the client sees the proof fail
        // (its secret differs) and hangs up without proving anything.
        let err = connect(&server.addr(), &bad).await.expect_err("refused");
        assert!(
            matches!(err, ConnectError::Handshake(HandshakeError::Secret)),
            "{err}"
        );
        assert!(!err.to_string().contains(SECRET));
        // A permanent refusal is not retried.
        let err = connect_with_backoff(server.addr(), &bad)
            .await
            .expect_err("refused again");
        assert!(!err.is_transient(), "{err}");
        assert_eq!(bad.stats.snapshot().handshakes_refused, 2);

        // A peer that answers the challenge with a proof made from the wrong
        // secret is refused with a reason.
        let mut f = raw(&server.addr()).await;
        let response = raw_hello_and_challenge(&mut f, "intruder", "guess").await;
        f.send(response).await.expect("send response");
        let (code, reason) = refusal(&mut f).await;
        assert_eq!(code, RefuseCode::Secret);
        assert!(reason.contains("secret"), "{reason}");

        assert_serves(&server.addr(), true).await;
        let s = server.stats();
        assert_eq!((s.handshakes_refused, s.links_opened), (3, 1));
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_server_without_the_secret_learns_nothing() {
    init_tracing();
    tokio::time::timeout(T, async {
        // A rogue acceptor: reads the hello, answers a challenge with a
        // made-up proof, and records everything the client sends.
        let rogue = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = rogue.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let (stream, _) = rogue.accept().await.expect("accept");
            let mut f = Framed::new(stream, FrameCodec::new(tessera_link::DEFAULT_MAX_FRAME));
            let challenge = Handshake::Challenge(Challenge {
                role: Role::Coordinator,
                node: "coord".into(),
                nonce: [1; NONCE_LEN],
                proof: [0; 32],
            });
            let mut seen = Vec::new();
            while let Some(Ok(frame)) = f.next().await {
                let h = Handshake::decode(&frame).expect("a handshake frame");
                seen.push(h);
                if seen.len() == 1 {
                    f.send(Bytes::from(challenge.encode())).await.expect("send");
                }
            }
            seen
        });
        let c = cfg(Role::SceneServer, "scene-1");
        let err = connect(&addr, &c).await.expect_err("rogue server");
        assert!(
            matches!(err, ConnectError::Handshake(HandshakeError::Secret)),
            "{err}"
        );
        assert!(!err.is_transient());
        let seen = task.await.expect("rogue task");
        // A hello, then a refusal: never a response carrying a proof.
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(matches!(seen[0], Handshake::Hello(_)));
        assert!(
            matches!(
                seen[1],
                Handshake::Refused {
                    code: RefuseCode::Secret,
                    ..
                }
            ),
            "{seen:?}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn wrong_version_is_refused_with_a_reason() {
    init_tracing();
    tokio::time::timeout(T, async {
        let server = Server::start(cfg(Role::Coordinator, "coord"), echo).await;
        let mut f = raw(&server.addr()).await;
        let h = Handshake::Hello(hello(Role::SceneServer, "future"));
        f.send(Bytes::from(h.encode_versioned(PROTOCOL_VERSION + 1)))
            .await
            .expect("send");
        let (code, reason) = refusal(&mut f).await;
        assert_eq!(code, RefuseCode::Version);
        assert!(
            reason.contains(&format!("protocol version {PROTOCOL_VERSION}")),
            "{reason}"
        );
        assert_eq!(server.stats().handshakes_refused, 1);
        assert_serves(&server.addr(), true).await;
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn roles_are_checked_on_both_sides() {
    init_tracing();
    tokio::time::timeout(T, async {
        let mut only_scenes = cfg(Role::Coordinator, "coord");
        only_scenes.accept_roles = vec![Role::SceneServer, Role::Tool];
        let server = Server::start(only_scenes, echo).await;
        let err = connect(&server.addr(), &cfg(Role::Gate, "gate-1"))
            .await
            .expect_err("gates are not accepted");
        assert!(
            matches!(
                &err,
                ConnectError::Handshake(HandshakeError::Refused {
                    code: RefuseCode::Role,
                    ..
                })
            ),
            "{err}"
        );
        // A client that wants a scene server refuses a coordinator.
        let mut picky = cfg(Role::Tool, "tool-2");
        picky.accept_roles = vec![Role::SceneServer];
        let err = connect(&server.addr(), &picky)
            .await
            .expect_err("wrong peer role");
        assert!(
            matches!(
                &err,
                ConnectError::Handshake(HandshakeError::Role(Role::Coordinator))
            ),
            "{err}"
        );
        assert_serves(&server.addr(), true).await;
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn oversized_frames_close_the_link_and_are_counted() {
    init_tracing();
    tokio::time::timeout(T, async {
        let (tx, mut reasons) = mpsc::channel(8);
        let mut server_cfg = cfg(Role::Coordinator, "coord");
        server_cfg.max_frame = 4096;
        server_cfg.send_queue_bytes = 4096;
        let server = Server::start(server_cfg, reporter(tx)).await;

        // Before the handshake: refused as malformed.
        let mut f = raw(&server.addr()).await;
        f.get_mut()
            .write_all(&u32::MAX.to_be_bytes())
            .await
            .expect("write");
        let (code, reason) = refusal(&mut f).await;
        assert_eq!(code, RefuseCode::Malformed);
        assert!(reason.contains("4294967295"), "{reason}");

        // After the handshake: the link closes with the declared length.
        let mut f = raw_established(&server.addr()).await;
        f.get_mut()
            .write_all(&4097u32.to_be_bytes())
            .await
            .expect("write");
        assert_eq!(
            reasons.recv().await,
            Some(CloseReason::Oversized {
                len: 4097,
                max: 4096
            })
        );
        assert!(f.next().await.is_none(), "the server hung up");
        let s = server.stats();
        assert_eq!((s.oversized, s.links_opened, s.links_closed), (2, 1, 1));

        // On the sending side nothing oversized is ever written.
        let mut small = cfg(Role::Tool, "tool");
        small.max_frame = 4096;
        small.send_queue_bytes = 4096;
        let link = connect(&server.addr(), &small).await.expect("connect");
        // Noise: bitcode packs low-entropy bytes, which would shrink the message.
        let big = LinkMsg::Replication {
            client: 1,
            bytes: noise(5, 5000),
        };
        assert!(matches!(
            link.try_send(&big),
            Err(SendError::TooLarge { max: 4096, .. })
        ));
        assert!(matches!(
            link.send(&big).await,
            Err(SendError::TooLarge { .. })
        ));
        assert_eq!(small.stats.snapshot().send_too_large, 2);
        link.send(&LinkMsg::Registered { heartbeat_ms: 1 })
            .await
            .expect("the link is still up");
        assert_eq!(link.close().await, CloseReason::Local);
        assert_eq!(reasons.recv().await, Some(CloseReason::PeerClosed));
        assert_eq!(server.stats().oversized, 2);
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

/// A deterministic byte generator (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_and_truncated_frames_close_links_without_panic() {
    init_tracing();
    tokio::time::timeout(T, async {
        let (tx, mut reasons) = mpsc::channel(8);
        let server = Server::start(cfg(Role::Coordinator, "coord"), reporter(tx)).await;

        // Random streams in place of a handshake: each connection ends, none
        // is established, the server lives on.
        for seed in 0..24u64 {
            let len = (seed as usize * 97) % 3000;
            let mut s = TcpStream::connect(server.addr).await.expect("connect");
            let mut bytes = noise(seed, len);
            if seed % 3 == 0 && bytes.len() >= 4 {
                // A plausible small length prefix, then garbage.
                bytes[..4].copy_from_slice(&(len as u32 - 4).to_be_bytes());
            }
            // The server may hang up before reading everything.
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        }
        let s = wait_for(&server.stats, |s| {
            s.links_opened == 0 && s.handshakes_refused + s.decode_errors > 0
        })
        .await;
        assert_eq!(s.links_opened, 0);

        // A valid length with an undecodable payload.
        let mut f = raw_established(&server.addr()).await;
        f.send(Bytes::from_static(&[0xff; 16])).await.expect("send");
        let reason = reasons.recv().await.expect("closed");
        assert!(matches!(reason, CloseReason::Decode(_)), "{reason}");

        // A frame cut short by the end of the stream.
        let mut f = raw_established(&server.addr()).await;
        f.get_mut()
            .write_all(&[0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
            .await
            .expect("write");
        f.get_mut().shutdown().await.expect("shutdown");
        assert_eq!(reasons.recv().await, Some(CloseReason::Truncated));

        // Garbage right behind a good response, in the same write.
        let mut f = raw(&server.addr()).await;
        let response = raw_hello_and_challenge(&mut f, "eager", SECRET).await;
        let mut codec = FrameCodec::new(tessera_link::DEFAULT_MAX_FRAME);
        let mut out = BytesMut::new();
        tokio_util::codec::Encoder::encode(&mut codec, response, &mut out).expect("encode");
        tokio_util::codec::Encoder::encode(&mut codec, Bytes::from(noise(99, 64)), &mut out)
            .expect("encode");
        f.get_mut().write_all(&out).await.expect("write");
        let reason = reasons.recv().await.expect("closed");
        assert!(matches!(reason, CloseReason::Decode(_)), "{reason}");

        let s = server.stats();
        assert_eq!(s.links_opened, 3);
        assert!(s.decode_errors >= 3, "{s:?}");
        assert_serves(&server.addr(), false).await;
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_fills_the_bounded_queue_and_drops_are_counted() {
    init_tracing();
    tokio::time::timeout(T, async {
        // The server does not read: its inbound queue fills, then TCP's
        // buffers. When asked, it reports how much it holds.
        const RECV_BUDGET: usize = 64 << 10;
        let mut server_cfg = cfg(Role::Coordinator, "coord");
        server_cfg.recv_queue = 1024;
        server_cfg.max_frame = 64 << 10;
        // 16 messages of 4 KiB: the byte budget, not the count, stops it.
        server_cfg.recv_queue_bytes = RECV_BUDGET;
        let (ask, asked) = mpsc::channel::<oneshot::Sender<usize>>(1);
        let asked = Arc::new(tokio::sync::Mutex::new(asked));
        let server = Server::start(server_cfg, move |link: Link| {
            let asked = asked.clone();
            async move {
                let mut asked = asked.lock().await;
                loop {
                    tokio::select! {
                        _ = link.closed() => break,
                        reply = asked.recv() => match reply {
                            Some(reply) => { let _ = reply.send(link.queued_in_bytes()); }
                            None => break,
                        },
                    }
                }
            }
        })
        .await;

        const BUDGET: usize = 256 << 10;
        let mut client_cfg = cfg(Role::SceneServer, "flooder");
        client_cfg.send_queue = 64;
        client_cfg.max_frame = 64 << 10;
        client_cfg.send_queue_bytes = BUDGET;
        let link = connect(&server.addr(), &client_cfg).await.expect("connect");
        let msg = LinkMsg::Replication {
            client: 1,
            bytes: noise(7, 4096),
        };
        let (mut ok, mut dropped, mut max_queued) = (0u64, 0u64, 0usize);
        for i in 0..200_000u32 {
            match link.try_send(&msg) {
                Ok(()) => ok += 1,
                Err(SendError::QueueFull) => dropped += 1,
                Err(e) => panic!("unexpected {e}"),
            }
            max_queued = max_queued.max(link.sender().queued_bytes());
            if dropped >= 2_000 {
                break;
            }
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        assert!(dropped >= 2_000, "queue never filled: {ok} sent");
        assert!(max_queued <= BUDGET, "{max_queued} bytes queued");
        let c = client_cfg.stats.snapshot();
        assert_eq!(c.queue_full_drops, dropped);
        // Everything accepted is written or still queued: nothing vanished.
        assert!(c.frames_out <= ok, "{c:?}");
        // The reader fills its byte budget of unread messages, and no more.
        loop {
            let (reply, held) = oneshot::channel();
            ask.send(reply).await.expect("ask");
            let held = held.await.expect("reply");
            assert!(held <= RECV_BUDGET, "{held} bytes held");
            if held > RECV_BUDGET / 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // Saturate: refill the queue until it stays full while the writer has
        // had time to drain it, i.e. the writer is stuck on a full socket.
        loop {
            while link.try_send(&msg).is_ok() {
                ok += 1;
            }
            dropped += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            match link.try_send(&msg) {
                Ok(()) => ok += 1,
                Err(SendError::QueueFull) => {
                    dropped += 1;
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(link.queued_out_bytes() <= BUDGET);
        let c = client_cfg.stats.snapshot();
        assert_eq!(c.queue_full_drops, dropped);
        assert!(c.frames_out <= ok, "{c:?}");

        // `send` waits for room instead of dropping.
        let waited = tokio::time::timeout(Duration::from_millis(200), link.send(&msg)).await;
        assert!(waited.is_err(), "send should wait while the queue is full");
        assert_eq!(client_cfg.stats.snapshot().queue_full_drops, dropped);

        server.stop().await;
        let reason = link.closed().await;
        assert!(
            matches!(reason, CloseReason::PeerClosed | CloseReason::Io(_)),
            "{reason}"
        );
        assert_eq!(link.try_send(&msg), Err(SendError::Closed));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn client_reconnects_with_backoff_after_the_server_restarts_on_the_same_port() {
    init_tracing();
    tokio::time::timeout(T, async {
        let first = Server::start(cfg(Role::Coordinator, "coord-a"), echo).await;
        let addr = first.addr;
        let client_cfg = cfg(Role::SceneServer, "scene-1");
        let mut connector = Connector::new(addr.to_string(), client_cfg.clone());
        let mut link = connector.connect().await.expect("connect");
        assert_eq!(link.peer().node, "coord-a");
        assert!(link.recv().await.is_some());

        first.stop().await;
        assert_eq!(link.closed().await, CloseReason::PeerClosed);
        assert!(link.recv().await.is_none());

        let reconnect = tokio::spawn(async move {
            let link = connector.connect().await;
            (connector, link)
        });
        // The server is down: attempts fail and back off.
        wait_for(&client_cfg.stats, |s| s.connect_failures >= 2).await;
        let second = Server::start_on(addr, cfg(Role::Coordinator, "coord-b"), echo).await;
        let (_connector, link) = reconnect.await.expect("reconnect task");
        let mut link = link.expect("reconnected");
        assert_eq!(link.peer().node, "coord-b");
        assert!(link.recv().await.is_some());
        let m = LinkMsg::Registered { heartbeat_ms: 2 };
        link.send(&m).await.expect("send");
        assert_eq!(link.recv().await, Some(m));
        let c = client_cfg.stats.snapshot();
        assert_eq!(c.links_opened, 2);
        assert!(c.connect_failures >= 2);
        link.close().await;
        second.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn connect_with_backoff_gives_up_after_max_attempts() {
    init_tracing();
    tokio::time::timeout(T, async {
        // A port with nothing behind it: bind, note, close.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind")
            .local_addr()
            .expect("addr");
        let mut c = cfg(Role::Tool, "tool");
        c.backoff.max_attempts = Some(3);
        let err = connect_with_backoff(addr.to_string(), &c)
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(err, ConnectError::GaveUp { attempts: 3, .. }),
            "{err}"
        );
        assert_eq!(c.stats.snapshot().connect_failures, 3);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_silent_peer_is_dropped_at_the_handshake_timeout() {
    init_tracing();
    tokio::time::timeout(T, async {
        let mut server_cfg = cfg(Role::Coordinator, "coord");
        // Long enough for a good client's two round trips on a loaded machine.
        server_cfg.handshake_timeout = Duration::from_millis(500);
        let server = Server::start(server_cfg, echo).await;
        // Connects and says nothing: the server refuses with a reason, then hangs up.
        let mut f = raw(&server.addr()).await;
        let (code, _) = refusal(&mut f).await;
        assert_eq!(code, RefuseCode::Timeout);
        assert_eq!(server.stats().handshake_timeouts, 1);
        assert_serves(&server.addr(), true).await;
        server.stop().await;

        // The other way round: a server that accepts and never answers.
        let mute = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mute_addr = mute.local_addr().expect("addr").to_string();
        let hold = tokio::spawn(async move {
            let (conn, _) = mute.accept().await.expect("accept");
            // Keep the connection open until the test ends.
            tokio::time::sleep(T).await;
            drop(conn);
        });
        let mut c = cfg(Role::Tool, "tool");
        c.handshake_timeout = Duration::from_millis(200);
        let err = connect(&mute_addr, &c).await.expect_err("no welcome");
        assert!(
            matches!(err, ConnectError::Handshake(HandshakeError::Timeout(_))),
            "{err}"
        );
        assert!(err.is_transient());
        assert_eq!(c.stats.snapshot().handshake_timeouts, 1);
        hold.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_link_that_goes_silent_closes_at_the_idle_timeout() {
    init_tracing();
    tokio::time::timeout(T, async {
        let (tx, mut reasons) = mpsc::channel(4);
        let mut server_cfg = cfg(Role::Coordinator, "coord");
        // Generous against a loaded machine: beats come every 100 ms.
        server_cfg.idle_timeout = Some(Duration::from_millis(600));
        server_cfg.keepalive = Some(Duration::from_millis(100));
        let server = Server::start(server_cfg, reporter(tx)).await;
        // A peer that sends no keepalives: only its heartbeats keep it up.
        let mut client_cfg = cfg(Role::SceneServer, "scene-1");
        client_cfg.keepalive = None;
        let link = connect(&server.addr(), &client_cfg).await.expect("connect");
        // Heartbeats keep it open well past the timeout...
        let beat = LinkMsg::Heartbeat(Heartbeat::default());
        for _ in 0..8 {
            link.send(&beat).await.expect("send");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!link.is_closed());
        assert_eq!(server.stats().idle_timeouts, 0);
        // ...and silence closes it, on the server's side, with a reason.
        assert_eq!(
            reasons.recv().await,
            Some(CloseReason::Idle(Duration::from_millis(600)))
        );
        assert_eq!(link.closed().await, CloseReason::PeerClosed);
        let s = server.stats();
        assert_eq!((s.idle_timeouts, s.frames_in), (1, 8));
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn the_link_cap_holds_extra_peers_in_the_backlog() {
    init_tracing();
    tokio::time::timeout(T, async {
        let mut server_cfg = cfg(Role::Coordinator, "coord");
        server_cfg.max_links = 1;
        let server = Server::start(server_cfg, echo).await;
        let first = connect(&server.addr(), &cfg(Role::Tool, "first"))
            .await
            .expect("first");
        let mut c = cfg(Role::Tool, "second");
        c.handshake_timeout = Duration::from_millis(200);
        let err = connect(&server.addr(), &c).await.expect_err("over the cap");
        assert!(
            matches!(err, ConnectError::Handshake(HandshakeError::Timeout(_))),
            "{err}"
        );
        first.close().await;
        // The second peer, still in the backlog, may be served (and see its
        // closed socket) right after: count at least one close.
        wait_for(&server.stats, |s| s.links_closed >= 1).await;
        assert_serves(&server.addr(), true).await;
        server.stop().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn shutdown_closes_every_link_and_serve_returns() {
    init_tracing();
    tokio::time::timeout(T, async {
        let server = Server::start(cfg(Role::Coordinator, "coord"), echo).await;
        let mut links = Vec::new();
        for i in 0..5 {
            let link = connect(&server.addr(), &cfg(Role::Gate, &format!("gate-{i}")))
                .await
                .expect("connect");
            links.push(link);
        }
        wait_for(&server.stats, |s| s.links_opened == 5).await;
        server.stop().await;
        for link in &links {
            assert_eq!(link.closed().await, CloseReason::PeerClosed);
        }
    })
    .await
    .expect("test timed out");
}

/// Captures log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    // A current-thread runtime: every task logs through this thread's
    // default subscriber.
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::time::timeout(T, async {
        let server = Server::start(cfg(Role::Coordinator, "coord"), echo).await;
        let mut bad = cfg(Role::SceneServer, "intruder");
        bad.secret = "hunter2-guess".into();
        connect(&server.addr(), &bad).await.expect_err("refused");
        let good = cfg(Role::SceneServer, "scene-1");
        let link = connect(&server.addr(), &good).await.expect("connect");
        // Config and handshake types print redacted.
        tracing::debug!(config = ?good, "client config");
        link.close().await;
        server.stop().await;
    })
    .await
    .expect("test timed out");
    let text = String::from_utf8_lossy(&logs.0.lock().expect("log buffer")).into_owned();
    assert!(text.contains("link refused"), "{text}");
    assert!(text.contains("redacted"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
