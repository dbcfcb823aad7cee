//! The live map (`GET /map`) in a real browser: `tessera up` with walkers,
//! the page opened in headless Chromium (Debian's `chromium`; `.ci/run`
//! installs it), and the number of entities it drew (`#entity-count` in the
//! dumped DOM) compared with the scene's admin snapshot. The admin API
//! listens on its own address (`--admin-http`) and takes its own token.
//!
//! The test bounds its own run time, uses ports chosen by the OS, and kills
//! every process it started, Chromium's whole process group included.
#![allow(clippy::unwrap_used)]
#![cfg(unix)]

mod process;
use process::{after, bounded, request, spawn};

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "map-test-secret-not-the-development-one";
const ADMIN_TOKEN: &str = "map-test-admin-token-of-its-own";
const WALKERS: usize = 30;

/// The scene's snapshot (admin API): its entities' kinds (0 player, 1 NPC).
fn snapshot_kinds(base: &str, scene: &str) -> Option<Vec<u64>> {
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
    let (code, _, body) = request(base, &format!("/v1/scenes/{scene}/snapshot"), &auth);
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["entities"]
        .as_array()?
        .iter()
        .map(|e| e["kind"].as_u64())
        .collect()
}

/// Opens `url` in headless Chromium (in its own process group, killed
/// afterwards) and returns the DOM it dumped after 5 s of virtual time.
fn chromium_dom(dir: &Path, url: &str) -> String {
    let out = dir.join("dom.html");
    let err = dir.join("chromium.log");
    let profile = dir.join("chromium-profile");
    let spawned = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            // Containers often have a tiny /dev/shm.
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            url,
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run chromium ({e}): install Debian's `chromium` package \
             (`apt-get update && apt-get install -y chromium`), as .ci/run does"
        ),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Chromium forks helpers (zygote, renderer): end its whole group.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("chromium ran over 60 s:\n{log}"));
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    std::fs::read_to_string(&out).unwrap()
}

/// The text of the element with `id` in `dom` (no nested tags).
fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[start..];
    let text = &rest[rest.find('>')? + 1..];
    Some(&text[..text.find('<')?])
}

#[test]
fn the_map_in_chromium_draws_every_entity_of_the_snapshot() {
    bounded(240, || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let data = d.join("data");
        let walkers = WALKERS.to_string();
        let up = spawn(
            d,
            "up",
            &[
                "up",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--admin-http",
                "127.0.0.1:0",
                "--gate-listen",
                "127.0.0.1:0",
                "--walkers",
                &walkers,
                "--data",
                data.to_str().unwrap(),
            ],
            &[
                ("TESSERA_SECRET", SECRET),
                ("TESSERA_ADMIN_TOKEN", ADMIN_TOKEN),
            ],
        );
        // "tessera up: coordinator on A, 1 scene server(s), status at http://H/v1/status, …"
        let http = format!(
            "http://{}",
            after(&up.first_line, "status at http://").trim_end_matches("/v1/status")
        );
        // "…, admin API on http://A"
        let admin = format!("http://{}", after(&up.first_line, "admin API on http://"));

        // The field scene, once its walkers (players) and wanderers (NPCs)
        // are all in: both kinds are present, and nothing spawns or leaves
        // after that (no churn), so any two reads agree.
        let deadline = Instant::now() + Duration::from_secs(60);
        let before = loop {
            if let Some(kinds) = snapshot_kinds(&admin, "field") {
                let players = kinds.iter().filter(|&&k| k == 0).count();
                if players == WALKERS && kinds.contains(&1) {
                    break kinds.len();
                }
            }
            assert!(
                Instant::now() < deadline,
                "field never showed {WALKERS} walkers and some NPCs; see up.log"
            );
            std::thread::sleep(Duration::from_millis(100));
        };

        // Neither the map nor the snapshot is on the public listener, and
        // the cluster secret opens neither.
        let (code, _, _) = request(&http, "/map?scene=field", "");
        assert_eq!(code, 404, "the map on the public listener");
        let (code, _, _) = request(&http, "/v1/scenes/field/snapshot", "");
        assert_eq!(code, 404, "the snapshot on the public listener");
        let secret = format!("Authorization: Bearer {SECRET}\r\n");
        let (code, _, _) = request(&admin, "/v1/scenes/field/snapshot", &secret);
        assert_eq!(code, 401, "the cluster secret as the admin token");

        // The page itself: served without a credential, for placed scenes.
        let (code, head, body) = request(&admin, "/map?scene=field", "");
        assert_eq!(code, 200, "{head}");
        assert!(head.contains("text/html"), "{head}");
        assert!(body.contains("id=\"entity-count\""));
        let (code, _, body) = request(&admin, "/map?scene=nowhere", "");
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("\"nowhere\" is not placed"), "{body}");
        assert!(body.contains("field"), "{body}");
        let (code, _, body) = request(&admin, "/map", "");
        assert_eq!(code, 400, "{body}");

        let dom = chromium_dom(d, &format!("{admin}/map?scene=field#token={ADMIN_TOKEN}"));
        let after_count = snapshot_kinds(&admin, "field").unwrap().len();
        assert_eq!(before, after_count, "the field scene churned");
        let status = element_text(&dom, "status").unwrap_or("");
        assert!(status.trim().is_empty(), "the page reports: {status}");
        let drawn: usize = element_text(&dom, "entity-count")
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no #entity-count in the page:\n{dom}"));
        assert_eq!(
            drawn, before,
            "the map drew {drawn}, the snapshot holds {before}"
        );

        // Without the token, the page draws nothing and asks for it.
        let dom = chromium_dom(d, &format!("{admin}/map?scene=field"));
        assert_eq!(element_text(&dom, "entity-count"), Some("0"));

        // `tessera admin` reaches the same listener with the token from
        // TESSERA_ADMIN_TOKEN; with the cluster secret it is refused.
        let admin_kick = |token: &str| {
            let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
                .args(["admin", "kick", "--email", "nobody@example.com"])
                .args(["--http", &admin])
                .current_dir(d)
                .env("TESSERA_ADMIN_TOKEN", token)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let err = admin_kick(ADMIN_TOKEN);
        assert!(
            err.contains("HTTP 404"),
            "past the token, no such account: {err}"
        );
        let err = admin_kick(SECRET);
        assert!(err.contains("HTTP 401"), "{err}");
        drop(up);
    });
}
