//! The arena's saved state through a crash: `arena coordinator` and `arena
//! scene` as real processes; a player is struck and the shrine taken; the
//! scene server is killed with SIGKILL; another takes the scenes over
//! (failover) from the database. The struck player's hit points and the
//! shrine's owner are what the game had saved before the kill, and the
//! new server keeps them (a lost restore would save the defaults over
//! them: full hit points, nobody's shrine).
//!
//! The test bounds its time, uses ports from the OS, and kills every
//! process it started.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod support;
use support::{action, provision, saved};
#[allow(dead_code)]
#[path = "../../../tests/process/mod.rs"]
mod process;
use process::{Proc, after, request, spawn_exe};

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tessera_arena::{Attack, Capture};
use tessera_bots::tool::{SceneClient, SessionClient};
use tessera_proto::AccountId;
use tessera_sim::game::ClientAction;
use tessera_wire::Secret;

const SECRET: &str = "arena-crash-test-secret-0123456789";

/// `arena ARGS` in `dir`, logging to `dir/NAME.log`, with the test's
/// cluster secret; with its first line.
fn spawn(dir: &Path, name: &str, args: &[&str]) -> Proc {
    spawn_exe(
        Path::new(env!("CARGO_BIN_EXE_arena")),
        dir,
        name,
        args,
        &[("TESSERA_SECRET", SECRET)],
    )
}

/// `/v1/status` of the coordinator at `http` (host:port), if it answers.
fn status(http: &str) -> Option<serde_json::Value> {
    let (code, _, body) = request(&format!("http://{http}"), "/v1/status", "");
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Waits (at most `secs`) until `field` is placed on scene server `server`.
fn until_field_on(http: &str, server: &str, secs: u64) {
    let start = Instant::now();
    loop {
        let placed = status(http).is_some_and(|s| {
            s["scenes"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r["name"] == "field" && r["server"].as_str() == Some(server))
            })
        });
        if placed {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "field not placed on {server} within {secs} s: {:?}",
            status(http)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hit_points_and_the_shrine_survive_a_killed_scene_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("tessera.toml"), process::CONFIG).unwrap();
    let data = d.join("data");
    let ids = provision(
        &data,
        &[
            ("ann", [500.0, 510.0]),
            ("bob", [504.0, 510.0]),
            ("cid", [500.0, 503.0]),
        ],
    );
    let (done, finished) = mpsc::channel();
    let players = ids.clone();
    let handle = std::thread::spawn(move || {
        let coord = spawn(
            &d,
            "coordinator",
            &[
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--data",
                "data",
            ],
        );
        // "coordinator: links on A, HTTP on http://B"
        let link = after(&coord.first_line, "links on ").to_owned();
        let http = after(&coord.first_line, "HTTP on http://").to_owned();
        let scene_a = spawn(
            &d,
            "scene-a",
            &["scene", "--coordinator", &link, "--name", "scene-a"],
        );
        until_field_on(&http, "scene-a", 30);

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tool = SessionClient::connect(&link, "tool-1", Secret::new(SECRET))
                .await
                .unwrap();
            let mut at = Vec::new();
            for &(account, avatar) in &players {
                let s = tool.open_session(AccountId(account)).await.unwrap();
                at.push((s, tool.attach(s, avatar).await.unwrap()));
            }
            let scene = SceneClient::connect(&at[0].1.addr, "tool-1", Secret::new(SECRET))
                .await
                .unwrap();
            let send = |who: usize, kind: u16, payload: Vec<u8>| {
                let (s, a) = &at[who];
                scene.action(&a.scene, a.epoch, s.0, kind, payload)
            };
            let mut strike = Vec::new();
            Attack {
                target: at[1].1.net_id,
            }
            .encode(&mut strike);
            for _ in 0..3 {
                send(0, action("Attack"), strike.clone()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            let mut take = Vec::new();
            Capture.encode(&mut take);
            send(2, action("Capture"), take).await.unwrap();
            // Past two flushes (one a second): saved before the kill.
            tokio::time::sleep(Duration::from_millis(2500)).await;
        });
        // SIGKILL: no final flush.
        drop(scene_a);
        let scene_b = spawn(
            &d,
            "scene-b",
            &["scene", "--coordinator", &link, "--name", "scene-b"],
        );
        until_field_on(&http, "scene-b", 30);
        // Long enough for the new host's flushes: defaults would be saved.
        std::thread::sleep(Duration::from_millis(2500));
        drop(scene_b);
        drop(coord);
        let _ = done.send(());
    });
    // The processes die with the thread's `Proc`s, also when it fails.
    match finished.recv_timeout(Duration::from_secs(150)) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(e) = handle.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the crash test exceeded 150 s"),
    }
    let data = dir.path().join("data");
    let (hp, owner) = saved(&data, "field", ids[1].1);
    let hp = hp.expect("Bob's hit points were saved");
    assert!(
        (40..=70).contains(&hp),
        "three blows of 10 to 20 leave 40 to 70, not {hp}"
    );
    assert_eq!(owner, Some(ids[2].1), "Cid holds the shrine");
}
