//! `/metrics`, `/livez` and `/readyz` of real processes: a coordinator, a
//! scene server and a gate started apart (each scene server and gate with
//! `--metrics`), and `tessera up`, whose coordinator scrape covers every
//! role. Each exposition is scraped over HTTP and must pass
//! `promtool check metrics` (Debian's `prometheus` package; `.ci/run`
//! installs it).
//!
//! Every test bounds its own run time, uses ports chosen by the OS, and
//! kills every process it started (also when it fails).
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod process;
use process::{after, bounded, request, spawn};

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `base/path` until it answers 200, at most 60 s; `what` names the
/// wait. Returns the last body.
fn until_ok(base: &str, path: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get(base, path);
        if code == 200 {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {base}{path} still answers {code}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `promtool check metrics` on `text`; fails the test with promtool's
/// findings, or with how to install it when it is missing.
fn promtool_check(role: &str, text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}): install Debian's `prometheus` package \
             (`apt-get update && apt-get install -y prometheus`), as .ci/run does"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed for the {role}:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// `GET path` from `base`: status code and body.
fn get(base: &str, path: &str) -> (u16, String) {
    let (code, _, body) = request(base, path, "");
    (code, body)
}

/// A sample line of `text` that starts with `prefix`, if any.
fn has(text: &str, prefix: &str) -> bool {
    text.lines().any(|l| l.starts_with(prefix))
}

#[test]
fn every_role_serves_metrics_that_promtool_accepts_and_probes_that_answer() {
    bounded(240, || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let data = d.join("data");
        // A scene server whose coordinator is not there yet: alive, not ready.
        let lonely = spawn(
            d,
            "lonely",
            &[
                "scene",
                "--coordinator",
                "127.0.0.1:1",
                "--name",
                "lonely",
                "--metrics",
                "127.0.0.1:0",
            ],
            &[],
        );
        let lonely_http = format!("http://{}", after(&lonely.first_line, "metrics on http://"));
        assert_eq!(get(&lonely_http, "/livez"), (200, "ok\n".into()));
        let (code, why) = get(&lonely_http, "/readyz");
        assert_eq!(code, 503, "{why}");
        assert_eq!(why, "lonely: not registered with the coordinator\n");
        drop(lonely);

        let coord = spawn(
            d,
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
            &[],
        );
        // "coordinator: links on A, HTTP on http://B"
        let link = after(&coord.first_line, "links on ").to_owned();
        let coord_http = format!("http://{}", after(&coord.first_line, "HTTP on http://"));
        let scene = spawn(
            d,
            "scene",
            &[
                "scene",
                "--coordinator",
                &link,
                "--name",
                "scene-1",
                "--metrics",
                "127.0.0.1:0",
            ],
            &[],
        );
        let scene_http = format!("http://{}", after(&scene.first_line, "metrics on http://"));
        let gate = spawn(
            d,
            "gate",
            &[
                "gate",
                "--coordinator",
                &link,
                "--listen",
                "127.0.0.1:0",
                "--name",
                "gate-1",
                "--metrics",
                "127.0.0.1:0",
            ],
            &[],
        );
        let gate_http = format!("http://{}", after(&gate.first_line, "metrics on http://"));

        for (role, base) in [
            ("coordinator", &coord_http),
            ("scene server", &scene_http),
            ("gate", &gate_http),
        ] {
            assert_eq!(until_ok(base, "/readyz", role), "ok\n");
            assert_eq!(until_ok(base, "/livez", role), "ok\n");
        }
        // A login that fails, so an outcome other than zero is exposed.
        let _ = post_login(&coord_http);
        let scrape = |base: &str, what: &str, want: &str| {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (code, text) = get(base, "/metrics");
                if code == 200 && has(&text, want) {
                    return text;
                }
                assert!(Instant::now() < deadline, "{what}: no {want:?} in\n{text}");
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let c = scrape(
            &coord_http,
            "coordinator",
            "tessera_login_requests_total{outcome=\"bad_credentials\"} 1",
        );
        assert!(
            has(&c, "tessera_password_hash_duration_seconds_count 1"),
            "{c}"
        );
        assert!(has(&c, "tessera_coordinator_placements_total "), "{c}");
        assert!(
            has(
                &c,
                "tessera_link_open{node=\"coordinator\",link=\"listener\"} 2"
            ),
            "{c}"
        );
        assert!(!has(&c, "tessera_scene_tick_duration_seconds"), "{c}");
        promtool_check("coordinator", &c);

        let s = scrape(
            &scene_http,
            "scene server",
            "tessera_scene_tick_duration_seconds_bucket{server=\"scene-1\",scene=\"field\",le=\"0.05\"}",
        );
        assert!(
            has(&s, "tessera_scene_server_registered{server=\"scene-1\"} 1"),
            "{s}"
        );
        assert!(
            has(
                &s,
                "tessera_scene_stage_duration_seconds_count{server=\"scene-1\",scene=\"field\",stage=\"replicate\"}"
            ),
            "{s}"
        );
        promtool_check("scene server", &s);

        let g = scrape(
            &gate_http,
            "gate",
            "tessera_gate_clients{gate=\"gate-1\"} 0",
        );
        assert!(has(&g, "tessera_gate_registered{gate=\"gate-1\"} 1"), "{g}");
        assert!(
            has(
                &g,
                "tessera_gate_screen_rejected_total{gate=\"gate-1\",reason=\"too_short\"} 0"
            ),
            "{g}"
        );
        promtool_check("gate", &g);
    });
}

#[test]
fn under_tessera_up_the_coordinator_scrape_covers_every_role() {
    bounded(240, || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let data = d.join("data");
        let up = spawn(
            d,
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
        let http = format!(
            "http://{}",
            after(&up.first_line, "status at http://").trim_end_matches("/v1/status")
        );
        assert_eq!(until_ok(&http, "/readyz", "tessera up"), "ok\n");
        assert_eq!(until_ok(&http, "/livez", "tessera up"), "ok\n");
        let deadline = Instant::now() + Duration::from_secs(60);
        let text = loop {
            let (_, text) = get(&http, "/metrics");
            let whole = has(&text, "tessera_login_requests_total{outcome=\"ok\"}")
                && has(&text, "tessera_gate_clients{gate=\"gate-1\"}")
                && has(
                    &text,
                    "tessera_scene_tick_duration_seconds_count{server=\"scene-1\",scene=\"field\"}",
                );
            if whole {
                break text;
            }
            assert!(Instant::now() < deadline, "not every role in\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        };
        promtool_check("tessera up", &text);
    });
}

/// A password login for an account that does not exist: 401.
fn post_login(base: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let body = format!(
        r#"{{"email":"nobody@example.com","password":"not-the-password","client_version":{}}}"#,
        tessera_proto::CLIENT_PROTOCOL
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert_eq!(code, 401, "{answer}");
    code
}

/// Runs `tessera ARGS` in `dir` to completion: success and stderr.
fn tessera(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .current_dir(dir)
        .env(
            "TESSERA_ASSETS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_metrics_address_is_an_error_naming_the_setting() {
    bounded(120, || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (role, setting) in [("scene", "scene.metrics"), ("gate", "gate.metrics")] {
            let (ok, err) = tessera(d, &[role, "--metrics", "nowhere"]);
            assert!(!ok, "{role} started with --metrics nowhere");
            assert!(err.contains(setting), "{role}: {err}");
            assert!(!err.contains("panicked"), "{role}: {err}");
        }
        std::fs::write(d.join("bad.toml"), "[gate]\nmetrics = \"nowhere:x\"\n").unwrap();
        let (ok, err) = tessera(d, &["gate", "--config", "bad.toml"]);
        assert!(!ok);
        assert!(err.contains("gate.metrics"), "{err}");
    });
}
