//! `--log-format`: with `json`, every line a process writes to stderr is one
//! JSON object with a timestamp, level, target and fields (the message
//! among them), ready for a log shipper. Runs the real binary on
//! 127.0.0.1, bounded in time, and stops what it starts.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);
const SECRET: &str = "logs-test-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "logs-test-admin-token-0123456789";

/// `tessera` run in `dir` with the repository's assets and a secret.
fn tessera(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(dir).env("TESSERA_SECRET", SECRET).env(
        "TESSERA_ASSETS",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
    );
    cmd
}

/// An address nobody listens on (a port the OS just gave and took back).
fn closed_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// Every line `child` writes to stderr, as it comes, until it closes it.
fn stderr_lines(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, reader)
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    // An address nobody listens on: the gate logs its retries.
    let refused = closed_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["gate", "--log-format", "json", "--name", "gate-json"])
        .args(["--listen", "127.0.0.1:0", "--coordinator", &refused])
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (rx, reader) = stderr_lines(&mut child);
    let deadline = Instant::now() + LIMIT;
    let mut lines = Vec::new();
    let mut up = false;
    while !up {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(value.get(key).is_some(), "no {key}: {line}");
        }
        assert!(value["fields"]["message"].is_string(), "no message: {line}");
        up |= value["fields"]["message"] == "gate up" && value["fields"]["name"] == "gate-json";
        lines.push(line);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(rx);
    reader.join().unwrap();
    assert!(up, "no `gate up` line within {LIMIT:?}: {lines:#?}");
}

/// `log_format = "json"` in `tessera.toml` does the same for a cluster
/// role started without the flag.
#[test]
fn the_config_file_can_ask_for_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tessera.toml"), "log_format = \"json\"\n").unwrap();
    let refused = closed_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["gate", "--name", "gate-toml", "--listen", "127.0.0.1:0"])
        .args(["--coordinator", &refused])
        .env("RUST_LOG", "info")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (rx, reader) = stderr_lines(&mut child);
    let first = rx.recv_timeout(LIMIT);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let first = first.expect("a log line");
    let value: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not a JSON line ({e}): {first}"));
    assert!(value["level"].is_string(), "{first}");
}

#[test]
fn an_unknown_log_format_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--log-format", "xml", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--log-format"), "{stderr}");
    assert!(stderr.contains("json"), "{stderr}");
}

/// A scene server started before its coordinator says it is waiting, at
/// the default log level, rather than retrying in silence.
#[test]
fn a_scene_server_waiting_for_its_coordinator_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = closed_addr();
    let mut child = tessera(dir.path())
        .args(["scene", "--coordinator", &coordinator])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (rx, reader) = stderr_lines(&mut child);
    let deadline = Instant::now() + LIMIT;
    let said = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("waiting for") => break Some(line),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    // Stopped whatever the outcome.
    let _ = child.kill();
    let _ = child.wait();
    drop(rx);
    reader.join().unwrap();
    let line = said.expect("the scene server said it is waiting");
    assert!(
        line.contains("WARN") && line.contains(&coordinator),
        "{line}"
    );
}

/// Under `tessera up` every role logs in one process: each line names its
/// node, from start to the flush on Ctrl-C; no line holds the cluster
/// secret or the admin token.
#[test]
fn every_line_of_up_names_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tessera(dir.path())
        .args(["up", "--log-format", "json", "--data", "data"])
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--gate-listen", "127.0.0.1:0"])
        .env("TESSERA_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Up once it prints its banner; then Ctrl-C (every role flushes and logs).
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (up_tx, up_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.starts_with("tessera up:") {
                let _ = up_tx.send(());
            }
        }
    });
    let (errs, reader) = stderr_lines(&mut child);
    let up = up_rx.recv_timeout(LIMIT);
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    up.expect("tessera up started");
    reader.join().unwrap();
    let lines: Vec<String> = errs.try_iter().collect();
    let mut nodes = std::collections::BTreeSet::new();
    for line in &lines {
        assert!(
            !line.contains(SECRET) && !line.contains(ADMIN_TOKEN),
            "a credential in the log: {line}"
        );
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let node = value["span"]["node"]
            .as_str()
            .unwrap_or_else(|| panic!("no node: {line}"));
        nodes.insert(node.to_owned());
    }
    for role in ["coordinator", "scene-1", "gate-1"] {
        assert!(nodes.contains(role), "no line of {role}: {nodes:?}");
    }
}
