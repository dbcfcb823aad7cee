//! A gate's sessions across its links, with a stand-in gate on a real link
//! to an in-process coordinator: a refused replay kicks the client with the
//! reason (never a silent refusal), a restarted gate's sessions that it
//! does not replay end, and a gate declared down leaves no session behind.

use std::path::Path;
use std::time::{Duration, Instant};

use tessera_cluster::{ClusterConfig, SessionId};
use tessera_coordinator::{AdminToken, Coordinator, CoordinatorConfig, DB_FILE};
use tessera_link::{Link, LinkConfig, Role, connect};
use tessera_persistence::Store;
use tessera_proto::AccountId;
use tessera_wire::{Heartbeat, LinkMsg, Register, Secret, SessionEvent};

const SECRET: &str = "replay-test-cluster-secret";
const PASSWORD: &str = "correct horse battery";

/// Runs `f` on a runtime and fails the test after `secs`.
fn bounded<F: std::future::Future<Output = ()>>(secs: u64, f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .expect("the test ran out of time");
    });
}

/// An account, and a stored epoch so that the coordinator starts as after
/// a restart (recovering, for `grace_ms`).
fn prepare(data: &Path) -> u64 {
    std::fs::create_dir_all(data).expect("data dir");
    let store = Store::open(data.join(DB_FILE)).expect("store");
    store.ensure_scene("field").expect("scene");
    store.set_scene_epoch("field", 1).expect("epoch");
    store
        .register("replay@example.com", PASSWORD, None)
        .expect("account")
}

async fn start(data: &Path, grace_ms: u64) -> Coordinator {
    Coordinator::start(
        CoordinatorConfig {
            listen: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            admin_token: AdminToken::new("replay-test-admin-token"),
            data: data.to_path_buf(),
            heartbeat_ms: 50,
            tick_ms: 20,
            ..CoordinatorConfig::default()
        },
        ClusterConfig {
            heartbeat_timeout_ms: 600,
            restart_grace_ms: grace_ms,
            ..ClusterConfig::default()
        },
        Secret::new(SECRET),
        vec!["field".into()],
    )
    .await
    .expect("coordinator starts")
}

/// A stand-in gate named `gate-1`, registered.
async fn gate(c: &Coordinator) -> Link {
    let cfg = LinkConfig::new(Role::Gate, "gate-1", Secret::new(SECRET));
    let link = connect(&c.link_addr().to_string(), &cfg)
        .await
        .expect("link");
    link.send(&LinkMsg::Register(Register {
        addr: "127.0.0.1:9".into(),
        capacity: 0,
        hosted: Vec::new(),
        game: String::new(),
    }))
    .await
    .expect("register");
    link
}

async fn heartbeat(link: &Link, online: u32) {
    let _ = link
        .send(&LinkMsg::Heartbeat(Heartbeat {
            seq: 0,
            scenes: Vec::new(),
            online,
            addrs: vec!["127.0.0.1:9".into()],
        }))
        .await;
}

/// A gate's replay of `session` for `account` (a zero nonce).
async fn replay(link: &Link, account: u64, session: u64) {
    link.send(&LinkMsg::OpenSession {
        request: 0,
        account: AccountId(account),
        client: SessionId(session),
        nonce: [0; 16],
    })
    .await
    .expect("replay");
}

/// The next session event on `link` (heartbeating meanwhile), within 5 s.
async fn session_event(link: &mut Link) -> (SessionId, SessionEvent) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no session event");
        heartbeat(link, 1).await;
        match tokio::time::timeout(Duration::from_millis(100), link.recv()).await {
            Ok(Some(LinkMsg::Session { session, event })) => return (session, event),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => panic!("link closed"),
        }
    }
}

/// The coordinator's open sessions: (link table, directory).
fn sessions(c: &Coordinator) -> (f64, f64) {
    let text = c.metrics().render();
    let read = |table: &str| {
        tessera_metrics::read_sample(
            &text,
            &format!("tessera_coordinator_sessions_open{{table=\"{table}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    (read("links"), read("directory"))
}

/// Heartbeats on `link` until `ok` holds of the coordinator, within 5 s.
async fn until(c: &Coordinator, link: &Link, what: &str, ok: impl Fn(&Coordinator) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok(c) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: sessions {:?}",
            sessions(c)
        );
        heartbeat(link, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kicked(event: &SessionEvent) -> &str {
    match event {
        SessionEvent::Kicked { reason } => reason,
        other => panic!("not a kick: {other:?}"),
    }
}

#[test]
fn a_refused_replay_kicks_the_client_with_the_reason() {
    bounded(30, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let account = prepare(&data);
        let c = start(&data, 60_000).await;
        let mut link = gate(&c).await;

        // Recovering: a replay for an account the data service does not
        // have is refused, and the gate is told to kick that client.
        replay(&link, account + 100, 41).await;
        let (session, event) = session_event(&mut link).await;
        assert_eq!(session, SessionId(41));
        assert!(kicked(&event).contains("no account"), "{event:?}");

        // A good replay opens; the same id for another account is in use.
        replay(&link, account, 42).await;
        let (session, event) = session_event(&mut link).await;
        assert_eq!(session, SessionId(42));
        assert!(matches!(event, SessionEvent::Opened { .. }), "{event:?}");
        replay(&link, account + 1, 42).await;
        let (session, event) = session_event(&mut link).await;
        assert_eq!(session, SessionId(42));
        assert!(kicked(&event).contains("in use"), "{event:?}");
        assert_eq!(sessions(&c), (1.0, 1.0));
        c.shutdown().await;
    });
}

#[test]
fn a_replay_after_the_grace_period_kicks_the_client() {
    bounded(30, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let account = prepare(&data);
        let c = start(&data, 100).await;
        let mut link = gate(&c).await;
        // Replays open sessions until the grace period ends; the first one
        // after it is refused, and the gate told to kick that client.
        for id in 100.. {
            replay(&link, account, id).await;
            // (Each replay ends the one before: one session per account.)
            let event = loop {
                match session_event(&mut link).await {
                    (s, e) if s == SessionId(id) => break e,
                    _ => {}
                }
            };
            if matches!(event, SessionEvent::Opened { .. }) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            assert!(kicked(&event).contains("log in again"), "{event:?}");
            break;
        }
        c.shutdown().await;
    });
}

#[test]
fn a_restarted_gate_that_does_not_replay_a_session_ends_it() {
    bounded(30, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let account = prepare(&data);
        let c = start(&data, 60_000).await;
        let mut link = gate(&c).await;
        replay(&link, account, 44).await;
        let (_, event) = session_event(&mut link).await;
        assert!(matches!(event, SessionEvent::Opened { .. }), "{event:?}");
        assert_eq!(sessions(&c), (1.0, 1.0));

        // Killed and back within the heartbeat timeout, with no sessions:
        // the node never went down, and nothing replays session 44.
        drop(link);
        let mut link = gate(&c).await;
        let (session, event) = session_event(&mut link).await;
        assert_eq!(session, SessionId(44));
        assert!(kicked(&event).contains("log in again"), "{event:?}");
        until(&c, &link, "the session ended", |c| {
            sessions(c) == (0.0, 0.0)
        })
        .await;
        c.shutdown().await;
    });
}

#[test]
fn a_gate_declared_down_leaves_no_session_and_its_replay_is_told_why() {
    bounded(30, async {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let account = prepare(&data);
        let c = start(&data, 300).await;
        let mut link = gate(&c).await;
        replay(&link, account, 45).await;
        let (_, event) = session_event(&mut link).await;
        assert!(matches!(event, SessionEvent::Opened { .. }), "{event:?}");

        // Silent past the heartbeat timeout (a pause, not a restart): the
        // gate is declared down and its session ends, in both tables.
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.status().gates.iter().any(|g| g.alive) {
            assert!(Instant::now() < deadline, "the gate never went down");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(sessions(&c), (0.0, 0.0));

        // It comes back and replays: told the session is lost.
        drop(link);
        let mut link = gate(&c).await;
        replay(&link, account, 45).await;
        let (session, event) = session_event(&mut link).await;
        assert_eq!(session, SessionId(45));
        assert!(kicked(&event).contains("log in again"), "{event:?}");
        c.shutdown().await;
    });
}
