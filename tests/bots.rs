//! `tessera bots` as a user runs it: bad arguments refused with clear
//! messages, 20 bots through the real login API and gate of a
//! `tessera up` child process, twice (the second run reuses the accounts),
//! and 20 churning bots coming back with their resume keys.
//!
//! Every test bounds its own run time, uses ports chosen by the OS, and kills
//! every process it started (also when it fails).
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process, killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tessera() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env(
        "TESSERA_ASSETS",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
    );
    c
}

/// Runs `tessera args…` to completion, killing it after `limit`.
fn run_bounded(args: &[&str], limit: Duration) -> Output {
    let child = tessera()
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
            panic!("tessera {args:?} did not finish within {limit:?}");
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let limit = Duration::from_secs(20);
    for (args, expect) in [
        (vec!["bots", "--count", "0"], "--count"),
        (vec!["bots", "--count", "10001"], "--count"),
        (
            vec!["bots", "--count", "1", "--duration", "0"],
            "--duration",
        ),
        (
            vec!["bots", "--count", "1", "--duration", "3601"],
            "--duration",
        ),
        (vec!["bots", "--count", "1", "--warmup", "3601"], "--warmup"),
        (vec!["bots", "--count", "1", "--warmup", "-1"], "-1"),
        (vec!["bots", "--count", "1", "--seed", "-1"], "-1"),
        (vec!["bots", "--count", "1", "--seed", "x"], "x"),
        (
            vec!["bots", "--count", "1", "--login", "ftp://127.0.0.1:1"],
            "http://",
        ),
        (
            vec!["bots", "--count", "1", "--login", "http://h:1/v1/login"],
            "base URL",
        ),
        (
            vec!["bots", "--count", "1", "--behaviour", "dance"],
            "dance",
        ),
        (vec!["bots", "--count", "many"], "many"),
        // Nothing listens on port 1: refused at once, before any bot starts.
        (
            vec!["bots", "--count", "3", "--login", "http://127.0.0.1:1"],
            "does not answer",
        ),
    ] {
        let out = run_bounded(&args, limit);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    }
}

/// `tessera up` in a temporary directory with OS-chosen ports and its gate on
/// an OS-chosen UDP port; returns it and its HTTP base URL.
fn up(dir: &Path) -> (Proc, String) {
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("up.log")).unwrap();
    let mut child = tessera()
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--gate-listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ])
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(out);
        let mut first = String::new();
        let _ = out.read_line(&mut first);
        let _ = tx.send(first);
        // Keep draining stdout so the child never blocks on a full pipe.
        for _ in out.lines() {}
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("tessera up printed no first line within 60 s; see up.log");
    // "tessera up: coordinator on A, 1 scene server(s), status at http://H/v1/status, data in D"
    let http = first
        .split("status at ")
        .nth(1)
        .and_then(|s| s.split("/v1/status").next())
        .unwrap_or_else(|| panic!("unexpected first line of tessera up: {first:?}"))
        .trim()
        .to_owned();
    assert!(http.starts_with("http://"), "{first:?}");
    (proc, http)
}

/// Waits until `/v1/status` lists a placed scene (the gate can route logins).
fn wait_ready(http: &str) {
    let start = Instant::now();
    loop {
        let out = run_bounded(
            &["status", "--http", http, "--json"],
            Duration::from_secs(20),
        );
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(v) = text
                .lines()
                .last()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            {
                let placed = v["scenes"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["server"].as_str() != Some("")));
                if placed {
                    return;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "cluster not ready within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bots(http: &str, extra: &[&str]) -> serde_json::Value {
    bots_for(http, "5", extra)
}

/// 20 bots measured for `duration` seconds: the JSON report.
fn bots_for(http: &str, duration: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bots",
        "--count",
        "20",
        "--duration",
        duration,
        "--warmup",
        "1",
        "--report",
        "json",
        "--login",
        http,
    ];
    args.extend_from_slice(extra);
    let out = run_bounded(&args, Duration::from_secs(120));
    let err = stderr(&out);
    assert!(out.status.success(), "tessera bots failed: {err}");
    let text = String::from_utf8(out.stdout).unwrap();
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {text}"))
}

#[test]
fn twenty_bots_enter_play_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, http) = up(dir.path());
    wait_ready(&http);

    let first = bots(&http, &[]);
    assert_eq!(first["bots"], 20, "{first}");
    assert_eq!(first["connected"], 20, "{first}");
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(first["dropped"], 0, "{first}");
    assert!(first["rtt_ms"]["p99"].as_f64().unwrap() > 0.0, "{first}");
    assert!(first["rtt_ms"]["p50"].as_f64().unwrap() > 0.0, "{first}");
    assert!(
        first["bytes_per_s_per_client"]["up"].as_f64().unwrap() > 0.0,
        "{first}"
    );
    assert!(
        first["bytes_per_s_per_client"]["down"].as_f64().unwrap() > 0.0,
        "{first}"
    );
    assert!(first["server_tick_p99_ms"].is_number(), "{first}");
    assert!(first["server_tick_p99_ms_ramp_up"].is_number(), "{first}");
    assert_eq!(first["registered"], 20, "{first}");
    // The warm-up is measured apart: 20 bots send ~10 inputs/s each.
    assert_eq!(first["warmup_s"], 1.0, "{first}");
    assert!(
        first["rtt_ms_warmup"]["p50"].as_f64().unwrap() > 0.0,
        "{first}"
    );

    // Same accounts, same avatars: logged in, nothing registered, nothing failed.
    let second = bots(&http, &["--seed", "42"]);
    assert_eq!(second["connected"], 20, "{second}");
    assert_eq!(second["failed"], 0, "{second}");
    assert_eq!(second["dropped"], 0, "{second}");
    assert_eq!(second["registered"], 0, "{second}");
    // A given seed is used and reported; without one each run draws its own.
    assert_eq!(second["seed"], 42, "{second}");
    assert!(first["seed"].is_u64() && first["seed"] != 42, "{first}");
    assert!(
        second["failures"].as_object().unwrap().is_empty(),
        "{second}"
    );
    assert!(second["rtt_ms"]["p99"].as_f64().unwrap() > 0.0, "{second}");
    assert_views_converged(&first);
    assert_views_converged(&second);

    // Lossy networks: once the loss stops, every view converges all the same.
    for loss in ["0.05", "0.2"] {
        let lossy = bots(&http, &["--loss", loss]);
        assert_eq!(lossy["connected"], 20, "{lossy}");
        assert_eq!(lossy["dropped"], 0, "{lossy}");
        assert!(lossy["loss_dropped"].as_u64().unwrap() > 0, "{lossy}");
        // Idle while settling, the bots acknowledged alone.
        assert!(lossy["acks_sent"].as_u64().unwrap() > 0, "{lossy}");
        assert_views_converged(&lossy);
    }
}

/// Churn bots come back with their resume keys, each key used once (the
/// server would refuse it again), so each account hashes its password once;
/// and every bot gets in before any leaves.
#[test]
fn churn_bots_come_back_with_their_resume_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, http) = up(dir.path());
    wait_ready(&http);

    let report = bots_for(&http, "12", &["--behaviour", "churn"]);
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
    assert_eq!(report["churn_failed"], 0, "{report}");
    let cycles = report["churn_cycles"].as_u64().unwrap();
    assert!(cycles > 0, "{report}");
    let logins = &report["logins"];
    assert_eq!(logins["password"], 20, "{report}");
    assert_eq!(logins["resume_refused"], 0, "{report}");
    // Each cycle logs in again with the key; the run may stop a bot
    // between its leave and its login.
    let resumed = logins["resume"].as_u64().unwrap();
    assert!(resumed > 0 && resumed <= cycles, "{report}");
    assert!(logins["per_s"].as_f64().unwrap() > 0.0, "{report}");
    // A bot between two stays when the truth is taken is left unchecked.
    let v = &report["view"];
    assert!(v["checked"].as_u64().unwrap() > 0, "{report}");
    for what in ["missing", "ghosts", "stale"] {
        assert_eq!(v[what], 0, "{what}: {report}");
    }
}

/// The report's view check ran for every bot and found each view equal to
/// the server's truth.
fn assert_views_converged(report: &serde_json::Value) {
    let v = &report["view"];
    assert_eq!(v["bots"], 20, "{report}");
    assert_eq!(v["bots_unchecked"], 0, "{report}");
    assert!(v["checked"].as_u64().unwrap() > 0, "{report}");
    for what in ["missing", "ghosts", "stale"] {
        assert_eq!(v[what], 0, "{what}: {report}");
    }
}
