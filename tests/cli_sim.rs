//! `tessera sim`, `tessera aoi` and `tessera aoi-trace` as a user runs them.

#![allow(clippy::unwrap_used)] // tests and benches: a failed unwrap is a failed run

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// Runs the binary with a time limit (the test fails rather than hangs).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tessera");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tessera {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {line}"))
}

/// A file path in a fresh directory removed when the guard drops.
fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

#[test]
fn sim_json_report_has_every_field_and_is_deterministic() {
    let args = [
        "sim",
        "--entities",
        "300",
        "--ticks",
        "60",
        "--seed",
        "7",
        "--report",
        "json",
    ];
    let a = run(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let j = last_json(&a);
    for key in [
        "scene",
        "entities",
        "ticks",
        "seed",
        "tick_hz",
        "tick_ms",
        "systems",
        "aoi",
        "replication",
        "state_hash",
    ] {
        assert!(j.get(key).is_some(), "missing {key} in {j}");
    }
    for key in ["mean", "p50", "p99", "max"] {
        assert!(j["tick_ms"][key].is_number(), "tick_ms.{key}");
    }
    for stage in [
        "ingest",
        "simulate",
        "spatial",
        "interest",
        "replicate",
        "persist",
    ] {
        assert!(j["stages"][stage]["mean_us"].is_number(), "stages.{stage}");
        assert!(j["stages"][stage]["p99_us"].is_number(), "stages.{stage}");
    }
    for system in [
        "apply_inputs",
        "integrate",
        "rebuild_index",
        "update_interest",
        "build_packets",
        "flush",
    ] {
        assert!(
            j["systems"][system]["mean_us"].is_number(),
            "systems.{system}"
        );
        assert!(
            j["systems"][system]["p99_us"].as_f64().unwrap() >= 0.0,
            "systems.{system}"
        );
    }
    // A stage's time covers its systems.
    let interest = j["stages"]["interest"]["mean_us"].as_f64().unwrap();
    let update = j["systems"]["update_interest"]["mean_us"].as_f64().unwrap();
    assert!(
        update <= interest * 1.01 + 1.0,
        "update_interest {update} > interest stage {interest}"
    );
    assert_eq!(j["scene"], "field");
    assert_eq!(j["entities"], 300);
    assert!(j["aoi"]["enter"].as_u64().unwrap() > 0);
    assert!(j["replication"]["max_packet_bytes"].as_u64().unwrap() <= 1200);
    let hash = j["state_hash"].as_str().unwrap().to_owned();
    assert!(u64::from_str_radix(&hash, 16).is_ok());

    let b = last_json(&run(&args));
    assert_eq!(b["state_hash"], j["state_hash"], "same seed, same hash");
    let c = last_json(&run(&[
        "sim",
        "--entities",
        "300",
        "--ticks",
        "60",
        "--seed",
        "8",
        "--report",
        "json",
    ]));
    assert_ne!(c["state_hash"], j["state_hash"], "other seed, other hash");
}

#[test]
fn sim_text_report_and_trace_out() {
    let (_dir, trace) = tmp("trace.json");
    let out = run(&[
        "sim",
        "--scene",
        "town",
        "--entities",
        "50",
        "--ticks",
        "20",
        "--trace-out",
        trace.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("whole tick") && text.contains("interest") && text.contains("% budget"),
        "{text}"
    );
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    // The whole tick, 6 stages and 17 systems, for each of 20 ticks.
    assert_eq!(events.len(), 20 * (1 + 6 + 17));
    assert!(events.iter().any(|e| e["name"] == "build_packets"));
    assert!(
        events
            .iter()
            .all(|e| e["ph"] == "X" && e["dur"].is_number() && e["ts"].is_number())
    );
}

#[test]
fn sim_rejects_bad_arguments_and_bad_scenes() {
    let out = run(&["sim", "--radius=-3", "--ticks", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--radius"));
    let out = run(&["sim", "--scene", "no_such_scene"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_scene"));
    let (_dir, bad) = tmp("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\nsize = [10.0, 10.0]\n[[spawn]]\npos = [50.0, 5.0]\n",
    )
    .unwrap();
    let out = run(&["sim", "--scene", bad.to_str().unwrap(), "--ticks", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("spawn[0].pos"),
        "{err}"
    );
    let out = run(&["sim", "--ticks", "0"]);
    assert!(!out.status.success());
}

#[test]
fn aoi_over_a_generated_trace_matches_brute_force_counts() {
    let (_dir, trace) = tmp("walk.bin");
    let g = run(&[
        "aoi-trace",
        "--out",
        trace.to_str().unwrap(),
        "--entities",
        "300",
        "--ticks",
        "30",
        "--size",
        "300",
        "--speed",
        "5",
        "--seed",
        "3",
    ]);
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let out = run(&[
        "aoi",
        "--trace",
        trace.to_str().unwrap(),
        "--entities",
        "300",
        "--radius",
        "40",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = last_json(&out);
    assert_eq!(j["entities"], 300);
    assert_eq!(j["ticks"], 30);
    for key in ["mean", "p50", "p99", "max"] {
        assert!(j["ms_per_tick"][key].is_number());
    }

    // Recount with the all-pairs definition straight from the file.
    let bytes = std::fs::read(&trace).unwrap();
    let f: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let n = 300;
    let frame = |t: usize| &f[t * n * 2..(t + 1) * n * 2];
    let sees = |fr: &[f32], i: usize, k: usize| {
        let (dx, dy) = (fr[2 * k] - fr[2 * i], fr[2 * k + 1] - fr[2 * i + 1]);
        i != k && dx * dx + dy * dy <= 40.0 * 40.0
    };
    let (mut enter, mut leave, mut stay) = (0u64, 0u64, 0u64);
    for t in 1..=30 {
        let (a, b) = (frame(t - 1), frame(t));
        for i in 0..n {
            for k in 0..n {
                match (sees(a, i, k), sees(b, i, k)) {
                    (false, true) => enter += 1,
                    (true, false) => leave += 1,
                    (true, true) => stay += 1,
                    _ => {}
                }
            }
        }
    }
    assert_eq!(
        (
            j["enter"].as_u64().unwrap(),
            j["leave"].as_u64().unwrap(),
            j["stay"].as_u64().unwrap()
        ),
        (enter, leave, stay)
    );
    assert!(enter > 0 && leave > 0);
}

/// `tessera aoi` on a trace with the given entity count and radius 5.
fn run_aoi(trace: &std::path::Path, entities: &str) -> Output {
    run(&[
        "aoi",
        "--trace",
        trace.to_str().unwrap(),
        "--entities",
        entities,
        "--radius",
        "5",
    ])
}

#[test]
fn malformed_traces_are_clear_errors() {
    let (_dir, trace) = tmp("short.bin");
    // 10 entities need 80 bytes per frame; 200 bytes is 2.5 frames.
    std::fs::write(&trace, vec![0u8; 200]).unwrap();
    let out = run_aoi(&trace, "10");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a whole number of frames"), "{err}");

    std::fs::write(&trace, vec![0u8; 80]).unwrap();
    let out = run_aoi(&trace, "10");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 2"));

    let mut data = vec![0u8; 160];
    data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&trace, &data).unwrap();
    let out = run_aoi(&trace, "10");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not finite"), "{err}");

    let out = run_aoi(std::path::Path::new("/nonexistent/x.bin"), "10");
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot read trace")
    );
    let out = run_aoi(&trace, "0");
    assert!(!out.status.success());
}

#[test]
fn sim_views_converge_once_the_loss_stops() {
    let a = run(&[
        "sim",
        "--entities",
        "400",
        "--ticks",
        "80",
        "--loss",
        "0.2",
        "--loss-ticks",
        "60",
        "--check-views",
        "--report",
        "json",
    ]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let r = &last_json(&a)["replication"];
    assert!(r["packets_lost"].as_u64().unwrap() > 0, "{r}");
    assert!(r["items_resent"].as_u64().unwrap() > 0, "{r}");
    let v = &r["views"];
    assert_eq!(v["clients"], 400, "{r}");
    assert_eq!(v["unconverged_at_end"], 0, "{r}");
    // The sim's round trip is one tick: three round trips at most.
    assert!(v["converged_after_ticks"].as_u64().unwrap() <= 3, "{r}");
}
