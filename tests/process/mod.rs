//! Helpers for tests that run the real `tessera` binary (or a game's, such
//! as `arena`: its tests include this file) as child processes (`map.rs`,
//! `metrics.rs`): start one and read its first line, read a field out of
//! that line, speak plain HTTP/1.1 to it, bound a test's time.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `tessera.toml` for the multi-process tests: fast heartbeats, a
/// failover within 1.5 s, and a restart grace that covers the links'
/// reconnect backoff.
#[allow(dead_code)] // Not every multi-process test writes a config.
pub const CONFIG: &str = r#"
[coordinator]
heartbeat_ms = 200
tick_ms = 50

[cluster]
heartbeat_timeout_ms = 1500
restart_grace_ms = 1500

[links]
# A restarted coordinator is found within 0.5 s: the grace covers it.
reconnect_max_ms = 500

[scene]
heartbeat_ms = 200
"#;

/// A child process, killed and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub first_line: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tessera ARGS` in `dir` with `env` set, logging to `dir/NAME.log`,
/// and returns it with the first line it printed (within 60 s).
#[allow(dead_code)] // Not every includer builds the `tessera` binary.
pub fn spawn(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let Some(exe) = option_env!("CARGO_BIN_EXE_tessera") else {
        panic!("this test package does not build the tessera binary: use spawn_exe");
    };
    spawn_exe(Path::new(exe), dir, name, args, env)
}

/// [`spawn`] of another binary of the `tessera` command line (a game's).
pub fn spawn_exe(exe: &Path, dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut child = Command::new(exe)
        .args(args)
        .current_dir(dir)
        .env("TESSERA_ASSETS", assets())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = BufReader::new(out);
        let mut first = String::new();
        let _ = out.read_line(&mut first);
        let _ = tx.send(first);
        // Keep draining stdout so the child never blocks on a full pipe.
        for _ in out.lines() {}
    });
    let mut proc = Proc {
        child,
        first_line: String::new(),
    };
    proc.first_line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(
        !proc.first_line.is_empty(),
        "{name} printed nothing within 60 s; see {name}.log"
    );
    proc
}

/// The repository's `assets/`, from the including package's directory
/// (the root package, or `examples/arena`).
pub fn assets() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("assets"))
        .find(|a| a.join("scenes").is_dir())
        .expect("an assets/scenes folder above the package")
}

/// The text after `marker` in `line`, up to the next `,`, `;` or space.
pub fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    line.split(marker)
        .nth(1)
        .and_then(|s| s.split([',', ';', ' ']).next())
        .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"))
}

/// `GET path` from `base` (`http://host:port`), with `headers` (each line
/// ending in `\r\n`): status code (0 when unreachable), head and body.
pub fn request(base: &str, path: &str, headers: &str) -> (u16, String, String) {
    let addr = base.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new(), String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    if s.write_all(head.as_bytes()).is_err() {
        return (0, String::new(), String::new());
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (code, head.to_owned(), body.to_owned())
}

/// Runs `f` on a thread with a deadline: a hung test fails instead of hanging CI.
pub fn bounded(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test exceeded {secs} s"),
    }
}
