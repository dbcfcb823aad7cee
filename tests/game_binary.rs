//! A game's own binary: this test's executable is one. Run with
//! `TESSERA_TEST_GAME` set, its `main` is a game crate's —
//! `tessera::run(Arena)` — so every subcommand runs the arena; without, it
//! runs the tests below, which start it as that game and check that `sim`
//! and the scene servers of `up` carry the arena's plugin, that reports and
//! `tessera status` name the game, and that a game that does not build is a
//! clear error, not a panic.
//!
//! The tests bound their run time, use ports chosen by the OS, and kill
//! every process they start.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)] // Not every helper of the multi-process tests is used here.
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use process::{after, bounded, request, spawn_exe};
use tessera::bevy_app::{App, Plugin, PluginGroup};
use tessera::bevy_ecs::prelude::*;
use tessera::sim::TesseraPlugins;
use tessera::sim::components::Pc;
use tessera::sim::metrics::TimedSystemsExt;
use tessera::sim::replicate::ReplicatePlugin;
use tessera::{Game, GameSystems, SceneWorldBuilder};

/// Set to the game this executable runs as (`arena`, `broken`).
const GAME_VAR: &str = "TESSERA_TEST_GAME";
/// The figure the arena dresses every player in.
const FIGURE: u64 = 77;

/// Dresses every PC in figure [`FIGURE`], in a timed system.
struct Tailor;

fn arena_dress(mut q: Query<&mut Pc>) {
    for mut pc in &mut q {
        pc.figure = FIGURE as u32;
    }
}

impl Plugin for Tailor {
    fn build(&self, app: &mut App) {
        app.add_timed_system(GameSystems::AfterSimulate, arena_dress);
    }
}

struct Arena;

impl Game for Arena {
    fn name(&self) -> &'static str {
        "arena"
    }
    fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
        world.add_plugins(Tailor)
    }
}

/// A game that leaves out an engine plugin every scene needs.
struct Broken;

impl Game for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
        world.with_engine(TesseraPlugins.build().disable::<ReplicatePlugin>())
    }
}

fn main() -> ExitCode {
    match std::env::var(GAME_VAR).as_deref() {
        Ok("arena") => return tessera::run(Arena),
        Ok("broken") => return tessera::run(Broken),
        _ => {}
    }
    let tests: [(&str, fn()); 3] = [
        ("sim_runs_the_games_plugins", sim_runs_the_games_plugins),
        (
            "up_hosts_the_games_scenes_and_status_names_it",
            up_hosts_the_games_scenes_and_status_names_it,
        ),
        (
            "a_game_that_does_not_build_is_an_error_not_a_panic",
            a_game_that_does_not_build_is_an_error_not_a_panic,
        ),
    ];
    // `cargo test -- NAME` runs the tests whose name holds NAME.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// Runs this executable as `game` (or the stock `tessera` binary when
/// `None`) with `args` in `dir`: exit code, stdout, stderr.
fn run(game: Option<&str>, dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let exe = match game {
        Some(_) => std::env::current_exe().unwrap(),
        None => PathBuf::from(env!("CARGO_BIN_EXE_tessera")),
    };
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(dir)
        .env("TESSERA_ASSETS", assets())
        .env_remove(GAME_VAR)
        .stdin(Stdio::null());
    if let Some(game) = game {
        cmd.env(GAME_VAR, game);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `sim --report json`'s report.
fn sim_report(game: Option<&str>, dir: &Path) -> serde_json::Value {
    let args = [
        "sim",
        "--entities",
        "20",
        "--ticks",
        "10",
        "--report",
        "json",
    ];
    let (code, stdout, stderr) = run(game, dir, &args);
    assert_eq!(code, Some(0), "{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn sim_runs_the_games_plugins() {
    bounded(120, || {
        let dir = tempfile::tempdir().unwrap();
        let arena = sim_report(Some("arena"), dir.path());
        assert_eq!(arena["game"], "arena");
        assert!(
            arena["systems"]["arena_dress"]["mean_us"].is_number(),
            "{}",
            arena["systems"]
        );
        let stock = sim_report(None, dir.path());
        assert_eq!(stock["game"], "default");
        assert!(stock["systems"].get("arena_dress").is_none());
        assert!(stock["systems"]["integrate"]["mean_us"].is_number());
    });
}

fn up_hosts_the_games_scenes_and_status_names_it() {
    bounded(180, || {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let data = d.join("data");
        let exe = std::env::current_exe().unwrap();
        let assets = assets();
        let token = "game-binary-test-admin-token";
        let up = spawn_exe(
            &exe,
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
                "--walkers",
                "3",
                "--data",
                data.to_str().unwrap(),
            ],
            &[
                (GAME_VAR, "arena"),
                ("TESSERA_ASSETS", assets.to_str().unwrap()),
                ("TESSERA_ADMIN_TOKEN", token),
            ],
        );
        let http = format!(
            "http://{}",
            after(&up.first_line, "status at http://").trim_end_matches("/v1/status")
        );
        // The scene server registered as the arena, and the field's walkers
        // wear the arena's figure: its world has the arena's plugin.
        let auth = format!("Authorization: Bearer {token}\r\n");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, _, body) = request(&http, "/v1/status", "");
            let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let games: Vec<_> = status["scene_servers"]
                .as_array()
                .map(|s| s.iter().map(|s| s["game"].clone()).collect())
                .unwrap_or_default();
            let (code, _, body) = request(&http, "/v1/scenes/field/snapshot", &auth);
            let snapshot: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let players: Vec<u64> = snapshot["entities"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter(|e| e["kind"] == 0)
                        .filter_map(|e| e["figure"].as_u64())
                        .collect()
                })
                .unwrap_or_default();
            if games == ["arena"] && code == 200 && players.len() == 3 {
                assert_eq!(players, [FIGURE; 3], "{snapshot}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no arena scene server with 3 walkers: games {games:?}, snapshot {code}; see up.log"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // `tessera status` (any binary's) names the game the servers run.
        let (code, stdout, stderr) = run(None, d, &["status", "--http", &http]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            stdout.lines().any(|l| l == "scene servers (game arena):"),
            "{stdout}"
        );
        drop(up);
    });
}

fn a_game_that_does_not_build_is_an_error_not_a_panic() {
    bounded(120, || {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, stderr) = run(Some("broken"), dir.path(), &["sim", "--ticks", "1"]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(r#"game "broken" cannot build scene "field""#)
                && stderr.contains("ReplicatePlugin"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        // A scene server checks its game before it joins a cluster.
        let args = ["scene", "--coordinator", "127.0.0.1:9", "--name", "scene-b"];
        let (code, _, stderr) = run(Some("broken"), dir.path(), &args);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(r#"game "broken" cannot build a scene world"#)
                && stderr.contains("ReplicatePlugin"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    });
}
