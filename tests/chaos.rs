//! Chaos with real processes on loopback: a coordinator, three scene
//! servers, a gate and two runs of `tessera bots`. A scene server, the gate
//! and the coordinator are killed (-9) in turn and restarted. After each
//! restart the online counts must agree everywhere: the coordinator's
//! session table, the gates' counts and each scene's online count; at the
//! end every avatar is in exactly one scene with its last state saved,
//! and every bot is connected or was told why.
//!
//! The bots of the first run play through the scene server's kill and are
//! cut off by the gate's (each must say why); a second run, on other
//! accounts, plays through the coordinator's restart and must lose nobody.
//!
//! Bounded in time, ports chosen by the OS, waits on the status rather
//! than for fixed times, and kills every process it started.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod process;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use process::{CONFIG, Proc, after, bounded, spawn};
use tessera_cluster::ClusterStatus;
use tessera_persistence::Store;

const SECRET: &str = "chaos-test-secret-0123456789";
/// Bots per run.
const BOTS: usize = 6;
const SERVERS: [&str; 3] = ["scene-a", "scene-b", "scene-c"];
/// How long the coordinator stays down: long enough that the other
/// processes' reconnect backoff has grown past the restart grace unless
/// the grace covers it.
const OUTAGE: Duration = Duration::from_secs(5);

/// The cluster's processes in a temporary directory; the coordinator keeps
/// its link and HTTP addresses across restarts.
struct Cluster {
    dir: tempfile::TempDir,
    link: String,
    http: String,
    coordinator: Option<Proc>,
    gate: Option<Proc>,
    servers: BTreeMap<String, Proc>,
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tessera.toml"), CONFIG).unwrap();
        let mut c = Self {
            dir,
            link: "127.0.0.1:0".into(),
            http: "http://127.0.0.1:0".into(),
            coordinator: None,
            gate: None,
            servers: BTreeMap::new(),
        };
        c.start_coordinator();
        for name in SERVERS {
            c.start_server(name);
        }
        c.start_gate();
        c
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        spawn(self.dir.path(), name, args, &[("TESSERA_SECRET", SECRET)])
    }

    /// (Re)starts the coordinator on the same addresses.
    fn start_coordinator(&mut self) {
        let data = self.dir.path().join("data");
        let http = self.http.trim_start_matches("http://").to_owned();
        let p = self.spawn(
            "coordinator",
            &[
                "coordinator",
                "--listen",
                &self.link,
                "--http",
                &http,
                "--data",
                data.to_str().unwrap(),
            ],
        );
        // "coordinator: links on A, HTTP on http://B"
        self.link = after(&p.first_line, "links on ").to_owned();
        self.http = format!("http://{}", after(&p.first_line, "HTTP on http://"));
        self.coordinator = Some(p);
    }

    fn start_server(&mut self, name: &str) {
        let p = self.spawn(
            name,
            &["scene", "--coordinator", &self.link, "--name", name],
        );
        self.servers.insert(name.to_owned(), p);
    }

    fn start_gate(&mut self) {
        let p = self.spawn(
            "gate",
            &[
                "gate",
                "--coordinator",
                &self.link,
                "--listen",
                "127.0.0.1:0",
                "--name",
                "gate-1",
            ],
        );
        self.gate = Some(p);
    }

    fn status(&self) -> Option<ClusterStatus> {
        let (code, _, body) = process::request(&self.http, "/v1/status", "");
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The coordinator's session table and directory, from `/metrics`.
    fn sessions(&self) -> Option<(u64, u64)> {
        let (code, _, body) = process::request(&self.http, "/metrics", "");
        if code != 200 {
            return None;
        }
        let gauge = |table: &str| {
            let name = format!("tessera_coordinator_sessions_open{{table=\"{table}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(name.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| v as u64)
        };
        Some((gauge("links")?, gauge("directory")?))
    }

    /// Polls until `ok`, at most `secs`; returns the status that passed.
    fn until(&self, secs: u64, what: &str, ok: impl Fn(&ClusterStatus) -> bool) -> ClusterStatus {
        let start = Instant::now();
        loop {
            let s = self.status();
            if let Some(s) = s.as_ref().filter(|s| ok(s)) {
                return s.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}: {s:#?}\nsessions {:?}",
                self.sessions(),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every server is alive, every scene placed and settled,
    /// the gate alive, and `online` players counted alike by the gate, the
    /// directory (each scene's online count) and the coordinator's session
    /// table; checks that these stay so for a while (a grace period's end
    /// or a late expiry must not change them); then that the scene servers
    /// agree too (each scene's population, which their heartbeats report a
    /// moment late).
    fn agree(&self, secs: u64, online: u32, what: &str) {
        let counts = |s: &ClusterStatus| {
            gate_online(s) == online
                && scene_online(s) == online
                && self.sessions() == Some((u64::from(online), u64::from(online)))
        };
        self.until(secs, what, |s| healthy(s) && counts(s));
        // Past any grace period or expiry still pending (1.5 s each here);
        // scenes may move meanwhile (a hand-off), the counts may not.
        let settle = Instant::now() + Duration::from_secs(2);
        while Instant::now() < settle {
            let s = self.status();
            assert!(
                s.as_ref().is_some_and(counts),
                "{what}: counts drifted apart: {s:#?}, sessions {:?}",
                self.sessions()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.until(10, &format!("{what}: the scenes' populations"), |s| {
            healthy(s) && counts(s) && s.scenes.iter().all(|r| r.population == r.online)
        });
    }

    fn bots(&self, first: usize, seconds: u64, view_check: bool) -> Bots {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
        cmd.current_dir(self.dir.path())
            .env("TESSERA_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .args([
                "bots",
                "--count",
                &BOTS.to_string(),
                "--first",
                &first.to_string(),
                "--duration",
                &seconds.to_string(),
                "--warmup",
                "0",
                "--report",
                "json",
                "--login",
                &self.http,
            ]);
        if !view_check {
            cmd.arg("--no-view-check");
        }
        let log = std::fs::File::create(self.dir.path().join(format!("bots-{first}.log"))).unwrap();
        let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(out.lines().map_while(Result::ok).collect::<Vec<_>>());
        });
        Bots { child, out: rx }
    }
}

impl Drop for Cluster {
    /// A failed run keeps its directory (logs, data) for a look, as does
    /// any run with `TESSERA_KEEP_TEST_DIR` set.
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("TESSERA_KEEP_TEST_DIR").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("chaos: logs kept in {}", dir.keep().display());
        }
    }
}

/// A running `tessera bots`, killed on drop.
struct Bots {
    child: Child,
    out: mpsc::Receiver<Vec<String>>,
}

impl Bots {
    /// The run is not over: what the test did happened while it played.
    fn still_playing(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the bots stopped before the test was done"
        );
    }

    /// Waits (at most `secs`) for the run's JSON report.
    fn finish(mut self, secs: u64) -> serde_json::Value {
        let lines = self
            .out
            .recv_timeout(Duration::from_secs(secs))
            .expect("the bots reported");
        let _ = self.child.wait();
        let last = lines.last().cloned().unwrap_or_default();
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("not a JSON report ({e}): {lines:?}"))
    }
}

impl Drop for Bots {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kill_9(p: Proc) {
    let mut p = p;
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
}

/// Every scene server and the gate alive, every scene placed and not
/// moving, and every server hosting one (the scenes are split).
fn healthy(s: &ClusterStatus) -> bool {
    s.scene_servers
        .iter()
        .filter(|r| r.alive && !r.scenes.is_empty())
        .count()
        == SERVERS.len()
        && s.gates.iter().any(|g| g.alive)
        && !s.scenes.is_empty()
        && s.scenes
            .iter()
            .all(|r| !r.server.is_empty() && r.moving_to.is_none())
}

fn gate_online(s: &ClusterStatus) -> u32 {
    s.gates.iter().filter(|g| g.alive).map(|g| g.online).sum()
}

fn scene_online(s: &ClusterStatus) -> u32 {
    s.scenes.iter().map(|r| r.online).sum()
}

/// Every bot of the run entered, and every one that is not connected at
/// the end was told why: each failure and drop has a reason.
fn assert_told_why(report: &serde_json::Value) {
    assert_eq!(report["bots"], BOTS as u64, "{report}");
    let tally = |key: &str| -> u64 {
        report[key]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum())
    };
    assert_eq!(
        report["failed"].as_u64(),
        Some(tally("failures")),
        "{report}"
    );
    assert_eq!(report["dropped"].as_u64(), Some(tally("drops")), "{report}");
}

#[test]
fn kill_9_of_a_scene_server_the_gate_and_the_coordinator_loses_nobody_silently() {
    bounded(180, || {
        let started = Instant::now();
        let mut c = Cluster::start();
        c.agree(60, 0, "the cluster up");

        // Run A: plays through a scene server's kill; the gate's cuts it off.
        let bots_a = c.bots(0, 60, false);
        c.agree(90, BOTS as u32, "run A in the world");
        let s = c.status().unwrap();
        let busy = s
            .scenes
            .iter()
            .find(|r| r.online > 0)
            .map(|r| r.server.clone())
            .unwrap();
        let hosted: Vec<(String, u64)> = s
            .scenes
            .iter()
            .filter(|r| r.server == busy)
            .map(|r| (r.name.clone(), r.epoch))
            .collect();
        kill_9(c.servers.remove(&busy).unwrap());
        c.start_server(&busy);
        // The cluster noticed: each of its scenes is placed anew.
        c.until(30, "the killed server's scenes placed again", |s| {
            hosted.iter().all(|(name, epoch)| {
                s.scenes
                    .iter()
                    .any(|r| &r.name == name && r.epoch > *epoch && !r.server.is_empty())
            })
        });
        c.agree(30, BOTS as u32, "run A back after the scene server's kill");
        println!("scene server killed and back at {:?}", started.elapsed());

        kill_9(c.gate.take().unwrap());
        c.start_gate();
        c.agree(30, 0, "run A's sessions gone with the gate");
        let a = bots_a.finish(60);
        println!("run A: drops {}, failures {}", a["drops"], a["failures"]);
        assert_told_why(&a);
        assert_eq!(a["connected"], BOTS as u64, "{a}");
        println!("gate killed and back at {:?}", started.elapsed());

        // Run B, on other accounts: plays through the coordinator's restart.
        // It plays well past the restart (about 10 s here), so the view
        // check at its end sees the restarted cluster.
        let mut bots_b = c.bots(BOTS, 25, true);
        c.agree(90, BOTS as u32, "run B in the world");
        kill_9(c.coordinator.take().unwrap());
        // Down as long as a restart takes: the links back off meanwhile.
        std::thread::sleep(OUTAGE);
        c.start_coordinator();
        c.agree(
            30,
            BOTS as u32,
            "run B back after the coordinator's restart",
        );
        println!("coordinator killed and back at {:?}", started.elapsed());
        bots_b.still_playing();
        let b = bots_b.finish(90);
        assert_told_why(&b);
        assert_eq!(b["connected"], BOTS as u64, "{b}");
        for key in ["failed", "dropped"] {
            assert_eq!(b[key], 0, "{key}: {b}");
        }
        let v = &b["view"];
        for key in ["missing", "ghosts", "stale", "bots_unchecked"] {
            assert_eq!(v[key], 0, "view {key}: {b}");
        }
        c.agree(30, 0, "run B logged out");

        // Every avatar in exactly one scene, saved offline: the detach
        // after its last move was written. Kill -9 first, so that no final
        // flush at shutdown can hide a lost save.
        for p in std::mem::take(&mut c.servers).into_values() {
            kill_9(p);
        }
        kill_9(c.gate.take().unwrap());
        kill_9(c.coordinator.take().unwrap());
        let store = Store::open_existing(c.dir.path().join("data/tessera.redb")).unwrap();
        let mut found: BTreeMap<u64, Vec<(String, bool)>> = BTreeMap::new();
        for scene in store.list_scenes().unwrap() {
            for st in store.load_scene(scene.id).unwrap() {
                found
                    .entry(st.avatar)
                    .or_default()
                    .push((scene.name.clone(), st.online));
            }
        }
        let avatars = store.stats().unwrap().avatars;
        assert_eq!(avatars, 2 * BOTS as u64, "one avatar per bot");
        assert_eq!(found.len(), 2 * BOTS, "{found:?}");
        for (avatar, at) in &found {
            assert_eq!(at.len(), 1, "avatar {avatar} in {at:?}");
            assert!(!at[0].1, "avatar {avatar} saved online in {}", at[0].0);
            let rec = store.avatar(*avatar).unwrap().unwrap();
            let home = store.scene(rec.scene).unwrap().unwrap();
            assert_eq!(home.name, at[0].0, "avatar {avatar}");
        }
        println!("done in {:?}", started.elapsed());
    });
}
