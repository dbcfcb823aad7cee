//! The cluster as separate processes on loopback: `tessera coordinator` and
//! `tessera scene` children, killed (-9), paused (SIGSTOP / SIGCONT) and
//! restarted, with a tool client attaching an avatar and moving it; plus
//! malformed, oversized and unauthenticated links against the coordinator.
//!
//! Every test bounds its own run time, uses ports chosen by the OS, and kills
//! every process it started (also when it fails).
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client protocol version logins announce.
const V: u32 = tessera_proto::CLIENT_PROTOCOL;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tessera_bots::tool::{SceneClient, SessionClient};
use tessera_cluster::ClusterStatus;
use tessera_link::{
    ConnectError, FrameCodec, Handshake, HandshakeError, LinkConfig, PROTOCOL_VERSION, RefuseCode,
    Role, Secret, connect,
};
use tessera_persistence::{self as db, NewAvatar, Store};
use tessera_proto::AccountId;
use tessera_wire::{Hello, Input, NONCE_LEN, Response, Side, Transcript};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const SECRET: &str = "process-test-secret-0123456789";
const CONFIG: &str = r#"
[coordinator]
heartbeat_ms = 200
tick_ms = 50

[cluster]
heartbeat_timeout_ms = 1500
restart_grace_ms = 1500
# Every scene starts on scene-a and scene-b waits as the survivor: no
# hand-off to it (tests/placement.rs tests that).
rebalance = false

[links]
# A restarted coordinator is found within 0.5 s: the grace covers it.
reconnect_max_ms = 500

[scene]
heartbeat_ms = 200
"#;

/// A child process, killed and reaped on drop.
struct Proc {
    name: String,
    child: Child,
    /// Lines of stdout after the first.
    first_line: String,
}

impl Proc {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.name);
    }

    /// SIGTERM, then waits (at most 20 s) for a clean exit.
    fn terminate(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tessera.toml"), CONFIG).unwrap();
        Self { dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .current_dir(self.dir.path())
            .env("TESSERA_SECRET", SECRET)
            .env(
                "TESSERA_ASSETS",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first_line = String::new();
        out.read_line(&mut first_line).unwrap();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        assert!(
            !first_line.is_empty(),
            "{name} printed nothing; see its log"
        );
        Proc {
            name: name.into(),
            child,
            first_line,
        }
    }

    /// `tessera coordinator` on `listen`; returns it, its link and HTTP addresses.
    fn coordinator(&self, listen: &str) -> (Proc, String, String) {
        let data = self.data();
        let p = self.spawn(
            "coordinator",
            &[
                "coordinator",
                "--listen",
                listen,
                "--http",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
            ],
        );
        // "coordinator: links on A, HTTP on http://B"
        let line = p.first_line.trim().to_owned();
        let link = line
            .split("links on ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap()
            .to_owned();
        let http = line.split("HTTP on ").nth(1).unwrap().to_owned();
        (p, link, http)
    }

    fn scene(&self, coordinator: &str, name: &str) -> Proc {
        self.spawn(
            name,
            &["scene", "--coordinator", coordinator, "--name", name],
        )
    }

    fn status(&self, http: &str) -> Option<ClusterStatus> {
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["status", "--http", http, "--json"])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        serde_json::from_str(text.lines().last()?).ok()
    }

    /// Polls the status until `ok`, at most `secs`; returns it and the time it took.
    fn until(
        &self,
        http: &str,
        secs: u64,
        what: &str,
        ok: impl Fn(&ClusterStatus) -> bool,
    ) -> (ClusterStatus, Duration) {
        let start = Instant::now();
        loop {
            let s = self.status(http);
            if let Some(s) = s.as_ref().filter(|s| ok(s)) {
                return (s.clone(), start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}: {s:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One account and one avatar saved in `scene` at `pos`.
    fn provision(&self, scene: &str, pos: [f32; 2]) -> (u64, u64) {
        std::fs::create_dir_all(self.data()).unwrap();
        let store = Store::open(self.data().join("tessera.redb")).unwrap();
        let scene_id = store.ensure_scene(scene).unwrap();
        let account = store
            .register("walker@example.com", "correct horse battery", None)
            .unwrap();
        let avatar = store
            .provision_avatars(
                account,
                &[NewAvatar {
                    name: "Walker".into(),
                    figure: "f".into(),
                    scene: scene_id,
                }],
            )
            .unwrap()[0];
        store
            .save_batch(&db::SaveBatch {
                objects: Vec::new(),
                scene: scene_id,
                states: vec![db::PcState {
                    game: Vec::new(),
                    avatar,
                    scene: scene_id,
                    position: pos,
                    heading: 0.0,
                    action: 0,
                    mount: 0,
                    online: false,
                    tick: 1,
                }],
            })
            .unwrap();
        (account, avatar)
    }

    /// The avatar's saved scenes and position (every process stopped).
    fn saved(&self, avatar: u64) -> Vec<(String, [f32; 2])> {
        let store = Store::open(self.data().join("tessera.redb")).unwrap();
        let mut out = Vec::new();
        for scene in store.list_scenes().unwrap() {
            for s in store.load_scene(scene.id).unwrap() {
                if s.avatar == avatar {
                    out.push((scene.name.clone(), s.position));
                }
            }
        }
        out
    }
}

fn secret() -> Secret {
    Secret::new(SECRET)
}

fn all_on(s: &ClusterStatus, server: &str) -> bool {
    !s.scenes.is_empty() && s.scenes.iter().all(|r| r.server == server)
}

fn epochs(s: &ClusterStatus) -> Vec<(String, String, u64)> {
    s.scenes
        .iter()
        .map(|r| (r.name.clone(), r.server.clone(), r.epoch))
        .collect()
}

/// Walks the session's avatar along `dir` for `ms` (20 inputs per second),
/// stops it, and keeps reading replication for `settle_ms`. Returns the last
/// own position the scene replicated (the field is 1000 × 1000).
async fn walk(
    scene: &mut SceneClient,
    at: &tessera_bots::tool::Attachment,
    session: u64,
    dir: [f32; 2],
    ms: u64,
    settle_ms: u64,
    seq: &mut u32,
) -> Option<[f32; 2]> {
    let q = tessera_sim::protocol::Quantizer::new([1000.0, 1000.0]);
    let mut last = None;
    let start = Instant::now();
    let mut stopped = false;
    loop {
        let t = start.elapsed();
        if t >= Duration::from_millis(ms + settle_ms) {
            break;
        }
        let moving = t < Duration::from_millis(ms);
        if moving || !stopped {
            *seq += 1;
            let input = Input {
                seq: *seq,
                dir: if moving { dir } else { [0.0, 0.0] },
                ..Input::default()
            };
            scene
                .input(&at.scene, at.epoch, session, input)
                .await
                .unwrap();
            stopped = !moving;
        }
        let until = Instant::now() + Duration::from_millis(50);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match scene.replication(left).await {
                Ok((client, bytes)) if client == session => {
                    let p = tessera_sim::StatePacket::decode(&bytes).unwrap();
                    if let Some(you) = p.you {
                        last = Some(q.position(&you.q));
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    last
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a thread with a deadline: a hung test fails instead of hanging CI.
fn bounded(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("test exceeded {secs} s"),
    }
}

#[test]
fn kill_9_of_a_scene_server_moves_its_scenes_to_a_survivor_within_5_s() {
    bounded(90, || {
        let c = Cluster::new();
        let (account, avatar) = c.provision("field", [500.0, 500.0]);
        let (coord, link, http) = c.coordinator("127.0.0.1:0");
        let a = c.scene(&link, "scene-a");
        let (before, _) = c.until(&http, 15, "placement on a", |s| all_on(s, "scene-a"));
        let b = c.scene(&link, "scene-b");
        c.until(&http, 15, "b registered", |s| {
            s.scene_servers
                .iter()
                .any(|r| r.name == "scene-b" && r.alive)
        });

        let rt = rt();
        let (mut tool, session, moved_to) = rt.block_on(async {
            let mut tool = SessionClient::connect(&link, "tool-1", secret())
                .await
                .unwrap();
            let session = tool.open_session(AccountId(account)).await.unwrap();
            let at = tool.attach(session, avatar).await.unwrap();
            assert_eq!(at.server, "scene-a");
            let mut scene = SceneClient::connect(&at.addr, "tool-1", secret())
                .await
                .unwrap();
            let mut seq = 0;
            // 2 s north at walking speed (4 units/s), then still for 1.5 s:
            // at least one flush (every 1 s) holds the final position.
            let last = walk(&mut scene, &at, session.0, [0.0, 1.0], 2000, 1500, &mut seq).await;
            let last = last.expect("the scene replicated the avatar's own position");
            assert!(last[1] > 505.0, "it moved: {last:?}");
            (tool, session, last[1])
        });

        a.signal("KILL");
        let (after, took) = c.until(&http, 15, "failover to b", |s| all_on(s, "scene-b"));
        assert!(took <= Duration::from_secs(5), "failover took {took:?}");
        for (x, y) in before.scenes.iter().zip(&after.scenes) {
            assert_eq!(x.name, y.name);
            assert!(
                y.epoch > x.epoch,
                "{} epoch {} -> {}",
                x.name,
                x.epoch,
                y.epoch
            );
        }
        // Every scene was placed twice, the second time as a failover. The
        // status shows a placement as soon as it is decided; it is counted
        // once its states are read and it is sent, a moment later.
        let n = before.scenes.len();
        let wants = [
            format!("tessera_coordinator_placements_total {}", 2 * n),
            format!("tessera_coordinator_failovers_total {n}"),
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (code, metrics) = get(&http, "/metrics");
            assert_eq!(code, 200, "{metrics}");
            if wants.iter().all(|w| metrics.lines().any(|l| l == w)) {
                break;
            }
            assert!(Instant::now() < deadline, "not {wants:?} in\n{metrics}");
            std::thread::sleep(Duration::from_millis(50));
        }
        rt.block_on(async {
            // The online avatar is attached again at the new host.
            let again = tool.wait_attached(session).await.unwrap();
            assert_eq!(again.server, "scene-b");
            tool.detach(session).await.unwrap();
        });
        drop(a);
        b.terminate();
        coord.terminate();
        let saved = c.saved(avatar);
        assert_eq!(saved.len(), 1, "in exactly one scene: {saved:?}");
        let (scene, pos) = &saved[0];
        assert_eq!(scene, "field");
        // The avatar stood still for 1.5 s before the kill: the last flush
        // (every 1 s) holds where it stopped. (At most one flush interval of
        // movement may be lost; here none was in flight.)
        assert!(
            (pos[1] - moved_to).abs() < 0.1,
            "saved at {pos:?}, stopped at y={moved_to}"
        );
    });
}

#[test]
fn a_paused_scene_server_loses_its_scenes_and_drops_them_stale_on_resume() {
    bounded(90, || {
        let c = Cluster::new();
        let (account, avatar) = c.provision("field", [500.0, 500.0]);
        let (coord, link, http) = c.coordinator("127.0.0.1:0");
        let a = c.scene(&link, "scene-a");
        let (before, _) = c.until(&http, 15, "placement on a", |s| all_on(s, "scene-a"));
        let b = c.scene(&link, "scene-b");
        c.until(&http, 15, "b registered", |s| {
            s.scene_servers
                .iter()
                .any(|r| r.name == "scene-b" && r.alive)
        });
        let rt = rt();
        let (mut tool, session, north, mut on_a) = rt.block_on(async {
            let mut tool = SessionClient::connect(&link, "tool-1", secret())
                .await
                .unwrap();
            let session = tool.open_session(AccountId(account)).await.unwrap();
            let at = tool.attach(session, avatar).await.unwrap();
            let mut scene = SceneClient::connect(&at.addr, "tool-1", secret())
                .await
                .unwrap();
            let mut seq = 0;
            let north = walk(&mut scene, &at, session.0, [0.0, 1.0], 1000, 0, &mut seq).await;
            (tool, session, north.expect("replicated")[1], scene)
        });

        // a stops answering mid-flight: its last positions are still queued in it.
        a.signal("STOP");
        let (after, _) = c.until(&http, 15, "failover to b", |s| all_on(s, "scene-b"));
        // Declared down for its silence, not for a closed link. (The status
        // shows the new placements as decided; each is counted once its
        // epoch is stored and it is sent, off the coordinator's lock.)
        let n = before.scenes.len();
        let wants = [
            "tessera_coordinator_nodes_down_total 1".to_owned(),
            format!("tessera_coordinator_failovers_total {n}"),
        ];
        let start = Instant::now();
        loop {
            let (_, metrics) = get(&http, "/metrics");
            let missing = wants
                .iter()
                .find(|want| !metrics.lines().any(|l| l == want.as_str()));
            let Some(want) = missing else {
                break;
            };
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no {want:?} in\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The client's view now belongs to b's placement.
        let mut view = tessera_proto::WorldView::new();
        let south = rt.block_on(async {
            let at = tool.wait_attached(session).await.unwrap();
            assert_eq!(at.server, "scene-b");
            assert!(at.epoch > before.scenes[0].epoch);
            view.enter(
                tessera_proto::state::scene_tag(&at.scene),
                at.epoch,
                at.net_id,
            );
            // Walk south on b, stop, and let b flush.
            let mut scene = SceneClient::connect(&at.addr, "tool-1", secret())
                .await
                .unwrap();
            let mut seq = 100;
            let south = walk(
                &mut scene,
                &at,
                session.0,
                [0.0, -1.0],
                2000,
                1500,
                &mut seq,
            )
            .await;
            south.expect("replicated")[1]
        });
        assert!(south < north - 4.0, "b moved it south: {north} -> {south}");
        // a resumes: it learns its epochs are stale and drops its scenes
        // without writing; the scenes stay on b.
        a.signal("CONT");
        c.until(&http, 15, "a alive again, hosting nothing", |s| {
            s.scene_servers
                .iter()
                .any(|r| r.name == "scene-a" && r.alive && r.scenes.is_empty())
        });
        // Whatever a sent after it resumed (its queued ticks) is of the
        // placement the client left: never applied to its view.
        let from_a = rt.block_on(async {
            let mut n = 0;
            let until = Instant::now() + Duration::from_millis(1500);
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match on_a.replication(left).await {
                    Ok((client, bytes)) if client == session.0 => {
                        n += 1;
                        assert_ne!(
                            view.apply_bytes(&bytes).unwrap(),
                            tessera_proto::view::Applied::Applied,
                            "a packet of the old placement was applied"
                        );
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            n
        });
        // (a flushes a few queued ticks when it resumes: 4 in the run this
        // was written with.)
        assert_eq!(view.counters.applied, 0, "{from_a} packets from a");
        assert_eq!(view.counters.foreign, from_a, "each refused as foreign");
        let (now, _) = c.until(&http, 5, "status", |_| true);
        assert_eq!(epochs(&now), epochs(&after), "the scenes stayed on b");
        rt.block_on(async { tool.detach(session).await.unwrap() });
        a.terminate();
        b.terminate();
        coord.terminate();
        let saved = c.saved(avatar);
        assert_eq!(saved.len(), 1, "{saved:?}");
        // b's final flush holds where b stopped the avatar; a's queued state
        // (further north) must not have overwritten it.
        let y = saved[0].1[1];
        assert!(
            (y - south).abs() < 0.1,
            "saved y={y}: not where b left it ({south}); a was at {north}"
        );
        let log = std::fs::read_to_string(c.dir.path().join("scene-a.log")).unwrap();
        assert!(log.contains("stale"), "scene-a logged its stale drop");
    });
}

#[test]
fn a_coordinator_restart_keeps_every_scene_where_it_is() {
    bounded(90, || {
        let c = Cluster::new();
        c.provision("town", [200.0, 200.0]);
        let (coord, link, http) = c.coordinator("127.0.0.1:0");
        let a = c.scene(&link, "scene-a");
        let b = c.scene(&link, "scene-b");
        // Every scene where it is: placed, and reported ticking by its host
        // (a placement's epoch is stored and sent after the decision the
        // status shows, off the coordinator's lock).
        let (before, _) = c.until(&http, 15, "placement", |s| {
            s.scenes
                .iter()
                .all(|r| !r.server.is_empty() && r.tick_p99_ms > 0.0)
                && s.scene_servers.iter().filter(|r| r.alive).count() == 2
        });
        coord.signal("KILL");
        drop(coord);
        // Same link address, so the scene servers find it again.
        let (coord, _, http) = c.coordinator(&link);
        let (after, _) = c.until(&http, 15, "re-registration", |s| {
            s.scene_servers.iter().filter(|r| r.alive).count() == 2
                && s.scenes.iter().all(|r| !r.server.is_empty())
        });
        assert_eq!(epochs(&before), epochs(&after));
        // Past the grace period: nothing moved, no scene on two servers.
        std::thread::sleep(Duration::from_millis(2500));
        let (later, _) = c.until(&http, 5, "status", |_| true);
        assert_eq!(epochs(&before), epochs(&later));
        let mut hosted: Vec<&String> = later.scene_servers.iter().flat_map(|r| &r.scenes).collect();
        hosted.sort();
        let n = hosted.len();
        hosted.dedup();
        assert_eq!(hosted.len(), n, "a scene listed on two servers");
        a.terminate();
        b.terminate();
        coord.terminate();
    });
}

#[test]
fn bad_links_are_refused_and_the_coordinator_keeps_serving() {
    bounded(60, || {
        let c = Cluster::new();
        let (account, avatar) = c.provision("field", [500.0, 500.0]);
        let (coord, link, http) = c.coordinator("127.0.0.1:0");
        let a = c.scene(&link, "scene-a");
        c.until(&http, 15, "placement", |s| all_on(s, "scene-a"));
        let rt = rt();
        rt.block_on(async {
            // Garbage instead of a handshake.
            let mut s = TcpStream::connect(&link).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            // An oversized frame header.
            let mut s2 = TcpStream::connect(&link).await.unwrap();
            s2.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
            // A wrong secret.
            let bad = LinkConfig::new(Role::Tool, "intruder", "not-the-cluster-secret-at-all");
            let err = connect(&link, &bad).await.expect_err("wrong secret");
            assert!(
                // The coordinator proves the secret first; the intruder
                // cannot check that proof and gives up.
                matches!(&err, ConnectError::Handshake(HandshakeError::Secret)),
                "{err}"
            );
            // A peer that skips checking the coordinator's proof and answers
            // with a proof made from a wrong secret is refused, with a reason.
            let mut f = Framed::new(
                TcpStream::connect(&link).await.unwrap(),
                FrameCodec::new(tessera_link::DEFAULT_MAX_FRAME),
            );
            let hello = Hello {
                role: Role::Tool,
                node: "forger".into(),
                nonce: [9; NONCE_LEN],
            };
            f.send(Bytes::from(Handshake::Hello(hello.clone()).encode()))
                .await
                .unwrap();
            let frame = f.next().await.unwrap().unwrap();
            let Ok(Handshake::Challenge(ch)) = Handshake::decode(&frame) else {
                panic!("expected a challenge");
            };
            let t = Transcript {
                connecting_role: hello.role,
                connecting_node: &hello.node,
                connecting_nonce: &hello.nonce,
                accepting_role: ch.role,
                accepting_node: &ch.node,
                accepting_nonce: &ch.nonce,
            };
            let proof = Secret::new("a-forged-secret-of-some-length").proof(Side::Connecting, &t);
            f.send(Bytes::from(
                Handshake::Response(Response { proof }).encode(),
            ))
            .await
            .unwrap();
            let frame = f.next().await.unwrap().unwrap();
            let Ok(Handshake::Refused { code, .. }) = Handshake::decode(&frame) else {
                panic!("expected a refusal");
            };
            assert_eq!(code, RefuseCode::Secret);
            // A wrong protocol version.
            let mut f = Framed::new(
                TcpStream::connect(&link).await.unwrap(),
                FrameCodec::new(tessera_link::DEFAULT_MAX_FRAME),
            );
            let hello = Handshake::Hello(Hello {
                role: Role::Tool,
                node: "future".into(),
                nonce: [7; NONCE_LEN],
            });
            f.send(Bytes::from(hello.encode_versioned(PROTOCOL_VERSION + 1)))
                .await
                .unwrap();
            let frame = tokio::time::timeout(Duration::from_secs(5), f.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Ok(Handshake::Refused { code, reason }) = Handshake::decode(&frame) else {
                panic!("expected a refusal");
            };
            assert_eq!(code, RefuseCode::Version);
            assert!(reason.contains("version"), "{reason}");
            // A good link that then sends an undecodable frame is closed.
            let cfg = LinkConfig::new(Role::Tool, "clumsy", secret());
            let good = connect(&link, &cfg).await.unwrap();
            let (tx, _rx) = good.split();
            let _ = tx.send_encoded(Bytes::from_static(&[0xff; 64])).await;
            let closed = tokio::time::timeout(Duration::from_secs(5), tx.closed()).await;
            assert!(closed.is_ok(), "the coordinator closed the bad link");

            // Meanwhile everyone else is served.
            let mut tool = SessionClient::connect(&link, "tool-1", secret())
                .await
                .unwrap();
            let session = tool.open_session(AccountId(account)).await.unwrap();
            let at = tool.attach(session, avatar).await.unwrap();
            assert_eq!(at.server, "scene-a");
            tool.detach(session).await.unwrap();
        });
        c.until(&http, 5, "status still served", |s| all_on(s, "scene-a"));
        let log = std::fs::read_to_string(c.dir.path().join("coordinator.log")).unwrap();
        assert!(
            log.contains("refus") || log.contains("malformed") || log.contains("closed"),
            "the coordinator logged the refusals"
        );
        a.terminate();
        coord.terminate();
    });
}

/// Runs the binary in `dir` with `args`; returns (success, stdout, stderr).
fn tessera(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(dir)
        .env_remove("TESSERA_SECRET")
        .env(
            "TESSERA_ASSETS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
        )
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_and_unreachable_coordinator_are_clear_errors() {
    bounded(60, || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Nothing listens there (a port the OS just gave and took back).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let (ok, _, err) = tessera(d, &["status", "--http", &url]);
        assert!(!ok);
        assert!(err.contains("cannot reach"), "{err}");
        let (ok, _, err) = tessera(d, &["status", "--http", "not a url"]);
        assert!(!ok);
        assert!(err.contains("not a URL"), "{err}");

        std::fs::write(d.join("bad.toml"), "[scene]\nwalkerz = 5\n").unwrap();
        let (ok, _, err) = tessera(d, &["scene", "--config", "bad.toml"]);
        assert!(!ok);
        assert!(err.contains("bad.toml") && err.contains("walkerz"), "{err}");

        std::fs::write(d.join("bad2.toml"), "[cluster]\nheartbeat_timeout_ms = 0\n").unwrap();
        let (ok, _, err) = tessera(d, &["coordinator", "--config", "bad2.toml"]);
        assert!(!ok);
        assert!(err.contains("heartbeat_timeout_ms"), "{err}");

        let (ok, _, err) = tessera(
            d,
            &[
                "coordinator",
                "--listen",
                "0.0.0.0:0",
                "--http",
                "127.0.0.1:0",
            ],
        );
        assert!(!ok);
        assert!(err.contains("secret"), "{err}");

        let (ok, _, err) = tessera(d, &["scene", "--listen", "nowhere"]);
        assert!(!ok);
        assert!(err.contains("scene.listen"), "{err}");

        let (ok, _, err) = tessera(d, &["coordinator", "--config", "missing.toml"]);
        assert!(!ok);
        assert!(err.contains("missing.toml"), "{err}");

        // A port in use is named once, with its cause once.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let args = [
            "up",
            "--data",
            "data",
            "--listen",
            &addr,
            "--http",
            "127.0.0.1:0",
            "--gate-listen",
            "127.0.0.1:0",
        ];
        let (ok, _, err) = tessera(d, &args);
        assert!(!ok);
        assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
        assert_eq!(err.matches("in use").count(), 1, "{err}");
    });
}

/// Sends one HTTP/1.1 POST with `body` to `http` (`http://host:port`) and
/// returns the status code and the response body. Writing may fail once
/// the server has answered and closed; the answer is still read.
fn post(http: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = http.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

/// `GET path` from `http` (`http://host:port`): status code and body.
fn get(http: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = http.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (code, body)
}

/// A number field of `/proc/PID/status` (`VmRSS` in KiB, `Threads`, …).
fn proc_status(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_flood_of_huge_login_bodies_keeps_memory_bounded_and_logins_working() {
    bounded(120, || {
        let c = Cluster::new();
        c.provision("field", [500.0, 500.0]);
        let (coord, link, http) = c.coordinator("127.0.0.1:0");
        let _scene = c.scene(&link, "scene-a");
        let _gate = c.spawn(
            "gate",
            &[
                "gate",
                "--coordinator",
                &link,
                "--listen",
                "127.0.0.1:0",
                "--name",
                "gate-a",
            ],
        );
        c.until(&http, 15, "a gate and placement", |s| {
            all_on(s, "scene-a") && s.gates.iter().any(|g| g.alive)
        });
        let login = format!(
            r#"{{"email":"Walker@Example.com","password":"correct horse battery","client_version":{V}}}"#
        );
        let (code, body) = post(&http, "/v1/login", login.as_bytes());
        assert_eq!(code, 200, "{body}");
        let idle = proc_status(coord.pid(), "VmRSS");

        // 1,000 different 500 KB garbage emails (loopback is exempt from
        // the per-IP limit, as a proxy in front would be).
        let garbage = "a".repeat(500_000);
        for i in 0..1_000 {
            let huge =
                format!(r#"{{"email":"{i:06}{garbage}","password":"x","client_version":{V}}}"#);
            let (code, body) = post(&http, "/v1/login", huge.as_bytes());
            assert_eq!(code, 413, "{body}");
        }
        // Under the body limit, an invalid email is refused before any
        // limiter keys on it or any hash is spent: the same one 1,000 times
        // is never rate limited.
        let junk = format!(
            r#"{{"email":"{}","password":"x","client_version":{V}}}"#,
            "b".repeat(3_000)
        );
        for _ in 0..1_000 {
            let (code, body) = post(&http, "/v1/login", junk.as_bytes());
            assert_eq!(code, 400, "{body}");
            assert!(body.contains("invalid"), "{body}");
        }
        let after = proc_status(coord.pid(), "VmRSS");
        assert!(
            after <= idle + 50 * 1024,
            "resident memory grew from {idle} KiB to {after} KiB"
        );
        let (code, body) = post(&http, "/v1/login", login.as_bytes());
        assert_eq!(code, 200, "a real login after the flood: {body}");
        assert!(body.contains(r#""status":"ok""#), "{body}");
    });
}

#[test]
fn a_login_flood_waits_for_the_hasher_without_parking_threads() {
    bounded(120, || {
        let c = Cluster::new();
        let (coord, _link, http) = c.coordinator("127.0.0.1:0");
        c.until(&http, 15, "status", |_| true);
        let pid = coord.pid();
        let before = proc_status(pid, "Threads");
        let flood: Vec<_> = (0..200)
            .map(|i| {
                let http = http.clone();
                std::thread::spawn(move || {
                    let body = format!(
                        r#"{{"email":"nobody{i}@example.com","password":"wrong horse","client_version":{V}}}"#
                    );
                    post(&http, "/v1/login", body.as_bytes())
                })
            })
            .collect();
        let mut peak = before;
        while !flood.iter().all(|t| t.is_finished()) {
            peak = peak.max(proc_status(pid, "Threads"));
            std::thread::sleep(Duration::from_millis(5));
        }
        for t in flood {
            let (code, body) = t.join().unwrap();
            assert_eq!(code, 401, "{body}");
        }
        // Every unknown email still costs a (dummy) hash; the hasher runs
        // one or two at once here, and the rest wait as tasks.
        assert!(
            peak <= before + 8,
            "threads went from {before} to {peak} during 200 concurrent logins"
        );
    });
}
