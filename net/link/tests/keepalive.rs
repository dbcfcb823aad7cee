//! Keepalives and idle timeouts on real loopback links: a quiet, healthy
//! link stays up on keepalives alone, and a peer that falls silent (a
//! stopped process, a vanished host) is noticed from either end. Every test
//! is bounded by a timeout and stops what it starts.

use std::{sync::Arc, time::Duration};

use tessera_link::{CloseReason, Link, LinkConfig, LinkStats, Role, connect, serve};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;

/// Upper bound on any one test.
const T: Duration = Duration::from_secs(20);
const SECRET: &str = "keepalive-secret";

fn cfg(role: Role, node: &str, idle: Duration, keepalive: Option<Duration>) -> LinkConfig {
    let mut c = LinkConfig::new(role, node, SECRET);
    c.idle_timeout = Some(idle);
    c.keepalive = keepalive;
    c
}

/// Serves `cfg`; each accepted link is handed to `links`.
async fn server(cfg: LinkConfig, links: mpsc::Sender<Link>, stop: CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(serve(
        listener,
        cfg,
        move |link| {
            let links = links.clone();
            async move {
                let _ = links.send(link).await;
            }
        },
        stop.cancelled_owned(),
    ));
    addr
}

/// Polls until `pred` holds on `stats` (the test's timeout bounds it).
async fn until(stats: &Arc<LinkStats>, pred: impl Fn(&tessera_link::LinkStatsSnapshot) -> bool) {
    while !pred(&stats.snapshot()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Neither side sends a message for many idle periods: keepalives alone
/// keep the link up on both ends, and the application never sees them.
#[tokio::test]
async fn a_quiet_link_stays_up_on_keepalives() {
    tokio::time::timeout(T, async {
        // Generous against a loaded machine: twenty keepalives per timeout.
        let idle = Duration::from_millis(1000);
        let beat = Some(Duration::from_millis(50));
        let stop = CancellationToken::new();
        let (tx, mut accepted) = mpsc::channel(1);
        let server_cfg = cfg(Role::Coordinator, "coord", idle, beat);
        let server_stats = Arc::clone(&server_cfg.stats);
        let addr = server(server_cfg, tx, stop.clone()).await;
        let client_cfg = cfg(Role::SceneServer, "scene-1", idle, beat);
        let client_stats = Arc::clone(&client_cfg.stats);
        let mut client = connect(&addr, &client_cfg).await.expect("connect");
        let mut served = accepted.recv().await.expect("accepted");
        // Three idle periods' worth of keepalives each way.
        until(&server_stats, |s| s.keepalives_in >= 60).await;
        until(&client_stats, |s| s.keepalives_in >= 60).await;
        assert!(!client.is_closed() && !served.is_closed());
        for s in [server_stats.snapshot(), client_stats.snapshot()] {
            assert_eq!(s.idle_timeouts, 0, "{s:?}");
            assert_eq!(
                (s.frames_in, s.frames_out),
                (0, 0),
                "keepalives are not messages"
            );
        }
        // No keepalive reaches the application.
        assert!(
            tokio::time::timeout(Duration::from_millis(1), client.recv())
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(1), served.recv())
                .await
                .is_err()
        );
        stop.cancel();
    })
    .await
    .expect("test timed out");
}

/// The accepting side stops sending anything (as a SIGSTOPped process
/// would): the connecting side closes its link for silence.
#[tokio::test]
async fn a_connector_notices_a_silent_acceptor() {
    tokio::time::timeout(T, async {
        let stop = CancellationToken::new();
        let (tx, mut accepted) = mpsc::channel(1);
        let silent = cfg(Role::Coordinator, "coord", Duration::from_secs(60), None);
        let addr = server(silent, tx, stop.clone()).await;
        let client_cfg = cfg(
            Role::Gate,
            "gate-1",
            Duration::from_millis(500),
            Some(Duration::from_millis(50)),
        );
        let client = connect(&addr, &client_cfg).await.expect("connect");
        let _served = accepted.recv().await.expect("accepted");
        assert_eq!(
            client.closed().await,
            CloseReason::Idle(Duration::from_millis(500))
        );
        assert_eq!(client_cfg.stats.snapshot().idle_timeouts, 1);
        stop.cancel();
    })
    .await
    .expect("test timed out");
}

/// A receiver can tell when the peer's last message arrived, before it
/// reads it; keepalives do not count.
#[tokio::test]
async fn the_last_message_is_stamped_on_arrival() {
    tokio::time::timeout(T, async {
        let beat = Some(Duration::from_millis(20));
        let idle = Duration::from_secs(2);
        let stop = CancellationToken::new();
        let (tx, mut accepted) = mpsc::channel(1);
        let server_cfg = cfg(Role::Coordinator, "coord", idle, beat);
        let server_stats = Arc::clone(&server_cfg.stats);
        let addr = server(server_cfg, tx, stop.clone()).await;
        let client = connect(&addr, &cfg(Role::SceneServer, "scene-1", idle, beat))
            .await
            .expect("connect");
        let mut served = accepted.recv().await.expect("accepted");
        until(&server_stats, |s| s.keepalives_in >= 3).await;
        assert_eq!(served.sender().last_message_at(), None, "keepalives only");
        let before = std::time::Instant::now();
        client
            .send(&tessera_link::LinkMsg::Refused {
                reason: "hello".into(),
            })
            .await
            .expect("send");
        until(&server_stats, |s| s.frames_in == 1).await;
        // Not read by the application yet, already stamped.
        let at = served.sender().last_message_at().expect("stamped");
        assert!(at + Duration::from_millis(1) >= before && at <= std::time::Instant::now());
        assert!(served.recv().await.is_some());
        stop.cancel();
    })
    .await
    .expect("test timed out");
}
