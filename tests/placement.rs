//! Placement by load and planned moves, with real processes on loopback: a
//! coordinator, scene servers, a gate, and `tessera bots` playing through
//! it. Two scene servers started together split the scenes; a third that
//! joins takes at least one while the bots stay connected; `tessera admin
//! drain` empties a server and `move-scene` moves the bots' own scene with
//! nobody dropped, and every bot's view still matches its scene.
//!
//! Every test bounds its own run time, uses ports chosen by the OS, waits
//! on the status rather than for fixed times, and kills every process it
//! started (also when it fails).
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod process;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use process::{CONFIG, Proc, after, bounded, spawn};
use tessera_cluster::ClusterStatus;

const SECRET: &str = "placement-test-secret-0123456789";
/// The bots' avatars start in this scene (`start_scene`).
const START: &str = "field";
const BOTS: u64 = 8;
/// How long the bots play once in: far longer than the moves take (a
/// second or two), so every move happens while they play, and the view
/// check at the end sees each bot's view as the scene's new host sends it.
const BOT_SECONDS: u64 = 20;

/// A coordinator, a gate and scene servers in a temporary directory.
struct Cluster {
    dir: tempfile::TempDir,
    link: String,
    http: String,
    procs: Vec<Proc>,
}

impl Cluster {
    /// The coordinator and a gate.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tessera.toml"), CONFIG).unwrap();
        let data = dir.path().join("data");
        let coord = spawn(
            dir.path(),
            "coordinator",
            &[
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
            ],
            &[("TESSERA_SECRET", SECRET)],
        );
        // "coordinator: links on A, HTTP on http://B"
        let link = after(&coord.first_line, "links on ").to_owned();
        let http = format!("http://{}", after(&coord.first_line, "HTTP on http://"));
        let gate = spawn(
            dir.path(),
            "gate",
            &[
                "gate",
                "--coordinator",
                &link,
                "--listen",
                "127.0.0.1:0",
                "--name",
                "gate-1",
            ],
            &[("TESSERA_SECRET", SECRET)],
        );
        Self {
            dir,
            link,
            http,
            procs: vec![coord, gate],
        }
    }

    fn scene_server(&mut self, name: &str) {
        let p = spawn(
            self.dir.path(),
            name,
            &["scene", "--coordinator", &self.link, "--name", name],
            &[("TESSERA_SECRET", SECRET)],
        );
        self.procs.push(p);
    }

    /// `tessera ARGS` against this cluster, to completion (at most 30 s).
    fn tessera(&self, args: &[&str]) -> Output {
        let child = tessera(self.dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, Duration::from_secs(30), &format!("tessera {args:?}"))
    }

    /// `tessera admin ARGS --http …`; returns whether it succeeded, its
    /// stdout and its stderr.
    fn admin(&self, args: &[&str]) -> (bool, String, String) {
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--http", &self.http]);
        let out = self.tessera(&all);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            err,
        )
    }

    fn status(&self) -> Option<ClusterStatus> {
        let out = self.tessera(&["status", "--http", &self.http, "--json"]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        serde_json::from_str(text.lines().last()?).ok()
    }

    /// Polls the status until `ok`, at most `secs`.
    fn until(&self, secs: u64, what: &str, ok: impl Fn(&ClusterStatus) -> bool) -> ClusterStatus {
        let start = Instant::now();
        loop {
            let s = self.status();
            if let Some(s) = s.as_ref().filter(|s| ok(s)) {
                return s.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}: {s:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `tessera bots` playing for [`BOT_SECONDS`], then checking each
    /// bot's view against the scenes' snapshots ([`Bots::finish`]).
    fn bots(&self) -> Bots {
        let mut child = tessera(self.dir.path())
            .args([
                "bots",
                "--count",
                &BOTS.to_string(),
                "--duration",
                &BOT_SECONDS.to_string(),
                "--warmup",
                "0",
                "--report",
                "json",
                "--login",
                &self.http,
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.path().join("bots.log")).unwrap())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(out.lines().map_while(Result::ok).collect::<Vec<_>>());
        });
        Bots { child, out: rx }
    }
}

/// The `tessera` binary, run in `dir` with the cluster's secret.
fn tessera(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.current_dir(dir)
        .env("TESSERA_SECRET", SECRET)
        .env(
            "TESSERA_ASSETS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
        )
        .env("RUST_LOG", "info");
    c
}

fn wait_output(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

/// A running `tessera bots`, killed on drop.
struct Bots {
    child: Child,
    out: mpsc::Receiver<Vec<String>>,
}

impl Bots {
    /// The bots are still playing: what the test did happened meanwhile.
    fn still_playing(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the bots stopped before the test was done; raise BOT_SECONDS"
        );
    }

    /// Waits for the bots to finish their run and returns the JSON report.
    fn finish(mut self) -> serde_json::Value {
        let lines = self
            .out
            .recv_timeout(Duration::from_secs(BOT_SECONDS + 90))
            .expect("the bots reported");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "bots exited with {status}");
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

fn alive_servers(s: &ClusterStatus) -> usize {
    s.scene_servers.iter().filter(|r| r.alive).count()
}

fn settled(s: &ClusterStatus) -> bool {
    s.scenes
        .iter()
        .all(|r| !r.server.is_empty() && r.moving_to.is_none())
}

fn count_on(s: &ClusterStatus, server: &str) -> usize {
    s.scenes.iter().filter(|r| r.server == server).count()
}

fn host_of(s: &ClusterStatus, scene: &str) -> String {
    s.scenes
        .iter()
        .find(|r| r.name == scene)
        .map(|r| r.server.clone())
        .unwrap_or_default()
}

fn online(s: &ClusterStatus) -> u32 {
    s.scenes.iter().map(|r| r.online).sum()
}

/// Every bot got in, none was dropped or failed, and at the end each
/// bot's view matched its scene's truth: replication reached every bot
/// from the scene's new host.
fn assert_nobody_dropped(report: &serde_json::Value) {
    assert_eq!(report["bots"], BOTS, "{report}");
    assert_eq!(report["connected"], BOTS, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
    let v = &report["view"];
    assert_eq!(v["bots"], BOTS, "{report}");
    assert_eq!(v["bots_unchecked"], 0, "{report}");
    assert!(v["checked"].as_u64().unwrap() > 0, "{report}");
    for what in ["missing", "ghosts", "stale"] {
        assert_eq!(v[what], 0, "{what}: {report}");
    }
}

#[test]
fn two_servers_split_the_scenes_and_a_third_that_joins_takes_one() {
    bounded(240, || {
        let mut c = Cluster::start();
        c.scene_server("scene-a");
        c.scene_server("scene-b");
        let split = c.until(60, "two servers splitting the scenes", |s| {
            alive_servers(s) == 2
                && settled(s)
                && count_on(s, "scene-a").abs_diff(count_on(s, "scene-b")) <= 1
        });
        let n = split.scenes.len();
        assert!(n >= 4, "{split:#?}");
        assert!(count_on(&split, "scene-a") >= 1 && count_on(&split, "scene-b") >= 1);

        let mut bots = c.bots();
        c.until(90, "every bot in the world", |s| online(s) == BOTS as u32);

        c.scene_server("scene-c");
        let joined = c.until(60, "scene-c taking a scene", |s| {
            alive_servers(s) == 3 && settled(s) && count_on(s, "scene-c") >= 1
        });
        // Planned hand-offs, not failovers: every scene is placed, each
        // server within one scene of the others, and the bots stayed online.
        let counts: Vec<usize> = ["scene-a", "scene-b", "scene-c"]
            .iter()
            .map(|name| count_on(&joined, name))
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), n);
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{counts:?}"
        );
        assert_eq!(online(&joined), BOTS as u32, "{joined:#?}");
        let (code, _, metrics) = process::request(&c.http, "/metrics", "");
        assert_eq!(code, 200);
        assert!(
            metrics
                .lines()
                .any(|l| l == "tessera_coordinator_failovers_total 0"),
            "{metrics}"
        );
        // Nothing more moves once the gap is at most one.
        let later = c.until(10, "status", |_| true);
        assert_eq!(
            later
                .scenes
                .iter()
                .map(|r| (&r.name, &r.server, r.epoch))
                .collect::<Vec<_>>(),
            joined
                .scenes
                .iter()
                .map(|r| (&r.name, &r.server, r.epoch))
                .collect::<Vec<_>>()
        );
        bots.still_playing();
        assert_nobody_dropped(&bots.finish());
    });
}

#[test]
fn drain_empties_a_server_and_move_scene_moves_players_with_nobody_dropped() {
    bounded(240, || {
        let mut c = Cluster::start();
        c.scene_server("scene-a");
        c.scene_server("scene-b");
        let split = c.until(60, "two servers splitting the scenes", |s| {
            alive_servers(s) == 2
                && settled(s)
                && count_on(s, "scene-a") >= 1
                && count_on(s, "scene-b") >= 1
        });
        let mut bots = c.bots();
        c.until(90, "every bot in the world", |s| online(s) == BOTS as u32);

        // Drain the server the bots play on: their scene moves with them.
        let busy = host_of(&split, START);
        let other = if busy == "scene-a" {
            "scene-b"
        } else {
            "scene-a"
        };
        let (ok, out, err) = c.admin(&["drain", &busy]);
        assert!(ok, "{err}");
        assert!(out.contains(&format!("draining {busy}")), "{out}");
        let drained = c.until(60, "the drained server empty", |s| {
            settled(s) && count_on(s, &busy) == 0
        });
        assert_eq!(count_on(&drained, other), drained.scenes.len());
        assert!(
            drained
                .scene_servers
                .iter()
                .any(|r| r.name == busy && r.alive && r.draining),
            "{drained:#?}"
        );
        assert_eq!(online(&drained), BOTS as u32, "{drained:#?}");
        let text = c.tessera(&["status", "--http", &c.http]);
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(
            text.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() == 3 && cols == [busy.as_str(), "yes", "yes"]
            }),
            "status shows it alive, draining, with no scene:\n{text}"
        );

        // Nothing goes to a draining server, and bad requests say why.
        for (args, expect) in [
            (vec!["move-scene", START, "--to", busy.as_str()], "draining"),
            (vec!["move-scene", "atlantis", "--to", other], "atlantis"),
            (vec!["move-scene", START, "--to", "nobody"], "nobody"),
            (vec!["move-scene", START, "--to", other], "already on"),
            (vec!["drain", "nobody"], "nobody"),
        ] {
            let (ok, _, err) = c.admin(&args);
            assert!(!ok, "{args:?} succeeded");
            assert!(err.contains(expect), "{args:?}: {err}");
        }

        // Back in service: the bots' scene moves back on an operator's word.
        let (ok, out, err) = c.admin(&["drain", &busy, "--cancel"]);
        assert!(ok && out.contains("takes scenes again"), "{out}{err}");
        let (ok, out, err) = c.admin(&["move-scene", START, "--to", &busy]);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("moving scene {START} to {busy}")),
            "{out}"
        );
        let back = c.until(60, "the start scene back", |s| {
            settled(s) && host_of(s, START) == busy
        });
        assert!(
            back.scenes.iter().find(|r| r.name == START).unwrap().epoch
                > drained
                    .scenes
                    .iter()
                    .find(|r| r.name == START)
                    .unwrap()
                    .epoch
        );
        c.until(30, "every bot online after the moves", |s| {
            online(s) == BOTS as u32
        });
        let (_, _, metrics) = process::request(&c.http, "/metrics", "");
        assert!(
            metrics
                .lines()
                .any(|l| l == "tessera_coordinator_failovers_total 0"),
            "{metrics}"
        );
        bots.still_playing();
        assert_nobody_dropped(&bots.finish());
    });
}
