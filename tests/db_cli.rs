//! `tessera db` end to end: the real binary on temp directories.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

fn db(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("db")
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn account_commands_and_duplicate_email_in_any_case() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&db(
        d,
        &[
            "account",
            "create",
            "--email",
            "Zoe@Example.com",
            "--password",
            "zoe password 1",
            "--nickname",
            "Zoe",
        ],
    ));
    let dup = db(
        d,
        &[
            "account",
            "create",
            "--email",
            "zoe@EXAMPLE.com",
            "--password",
            "another password",
        ],
    );
    assert!(!dup.status.success());
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(
        err.contains("already exists") && err.contains("zoe@example.com"),
        "{err}"
    );

    let bad = db(
        d,
        &[
            "account",
            "create",
            "--email",
            "nope",
            "--password",
            "zoe password 1",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid email"));

    let shown = ok(&db(d, &["account", "show", "--email", "ZOE@example.com"]));
    assert!(
        shown.contains("zoe@example.com") && shown.contains("Open"),
        "{shown}"
    );
    assert!(!shown.contains("argon2"), "show must not print the hash");
    ok(&db(d, &["account", "lock", "--email", "zoe@example.com"]));
    assert!(ok(&db(d, &["account", "show", "--email", "zoe@example.com"])).contains("Locked"));
    ok(&db(d, &["account", "unlock", "--email", "zoe@example.com"]));
    assert!(ok(&db(d, &["account", "show", "--email", "zoe@example.com"])).contains("Open"));
    let missing = db(d, &["account", "show", "--email", "who@example.com"]);
    assert!(!missing.status.success());

    let stats = last_json(&ok(&db(d, &["stats", "--json"])));
    assert_eq!(stats["accounts"], 1);
    for key in ["accounts", "avatars", "scenes", "pc_states", "file_bytes"] {
        assert!(stats[key].is_u64(), "{key} in {stats}");
    }
    ok(&db(d, &["check"]));
}

#[test]
fn check_fails_on_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tessera.redb"),
        b"definitely not redb, just some bytes",
    )
    .unwrap();
    let out = db(dir.path(), &["check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Tessera database"));
    // Nothing was created or changed.
    assert_eq!(
        std::fs::read(dir.path().join("tessera.redb")).unwrap(),
        b"definitely not redb, just some bytes"
    );
    let missing = tempfile::tempdir().unwrap();
    let out = db(missing.path(), &["stats"]);
    assert!(!out.status.success());
    assert!(!missing.path().join("tessera.redb").exists());
}

#[test]
fn export_import_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    ok(&db(
        &a,
        &[
            "account",
            "create",
            "--email",
            "one@example.com",
            "--password",
            "password one",
        ],
    ));
    ok(&db(&a, &["account", "lock", "--email", "one@example.com"]));
    // The bench leaves scenes, avatars and PC states behind.
    ok(&db(&a, &["bench", "--pcs", "300", "--batches", "3"]));
    let exported = ok(&db(&a, &["export"]));
    assert!(exported.lines().count() > 600);

    let mut child = Command::new(BIN)
        .args(["db", "--data"])
        .arg(&b)
        .arg("import")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exported.as_bytes())
        .unwrap();
    ok(&child.wait_with_output().unwrap());
    ok(&db(&b, &["check"]));
    assert_eq!(
        ok(&db(&b, &["export"])),
        exported,
        "the round trip changed the contents"
    );
    let (sa, sb) = (
        last_json(&ok(&db(&a, &["stats", "--json"]))),
        last_json(&ok(&db(&b, &["stats", "--json"]))),
    );
    for key in ["accounts", "avatars", "scenes", "pc_states"] {
        assert_eq!(sa[key], sb[key], "{key}");
    }
    // A second import into the now non-empty database is refused.
    let mut child = Command::new(BIN)
        .args(["db", "--data"])
        .arg(&b)
        .arg("import")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It refuses before reading its input, so the pipe may break under us.
    let _ = child.stdin.take().unwrap().write_all(exported.as_bytes());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn bench_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&db(
        dir.path(),
        &["bench", "--pcs", "200", "--batches", "4", "--json"],
    ));
    let j = last_json(&out);
    assert_eq!(j["pcs"], 200);
    assert_eq!(j["batches"], 4);
    for key in ["p50", "p99", "max"] {
        assert!(j["save_batch_ms"][key].is_f64(), "{key} in {j}");
    }
    assert!(j["reopen_ms"].is_f64());
    assert!(j["file_bytes"].as_u64().unwrap() > 0);
    ok(&db(dir.path(), &["check"]));

    let out = ok(&db(dir.path(), &["bench", "--verify", "4", "--json"]));
    let j = last_json(&out);
    assert_eq!(j["verify"], 4);
    assert!(j["peak_in_flight"].as_u64().unwrap() <= j["cap"].as_u64().unwrap());
}
