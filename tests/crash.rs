//! SIGKILL torture: a writer child process commits batches of PC states (and now and then
//! registers an account with an avatar) and is killed at random moments, again and again.
//! After every kill the database must open, pass `check`, hold in every scene states from
//! one whole batch only, hold at least every batch the child reported committed, and hold
//! every account and avatar the child reported created.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_persistence::{Store, torture_state};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// Kills the child if the test panics before it does.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkilled_writer_loses_nothing_committed_and_never_mixes_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.redb");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);

    let started = Instant::now();
    let budget = Duration::from_secs(45);
    let mut committed: BTreeMap<u64, u64> = BTreeMap::new(); // scene → newest reported tick
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new(); // scene → tick found after last kill
    let mut accounts: Vec<(u64, u64)> = Vec::new();
    let (mut kills, mut commits_reported, mut prev_avatars) = (0, 0, 0);

    while kills < 30 && started.elapsed() < budget {
        let child = Command::new(BIN)
            .arg("db")
            .arg("--data")
            .arg(dir.path())
            .args([
                "writer", "--prefix", "torture", "--scenes", "2", "--pcs", "150",
            ])
            .args([
                "--accounts-every",
                "15",
                "--interval-ms",
                "2",
                "--capacity",
                "2",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = Killed(child);
        let stdout = child.0.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        kills += 1;
        for line in reader.join().unwrap() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["COMMITTED", scene, tick] => {
                    let (scene, tick) = (scene.parse().unwrap(), tick.parse().unwrap());
                    let e = committed.entry(scene).or_insert(0);
                    *e = (*e).max(tick);
                    commits_reported += 1;
                }
                ["ACCOUNT", account, avatar] => {
                    accounts.push((account.parse().unwrap(), avatar.parse().unwrap()));
                }
                _ => {} // READY, or a line cut by the kill
            }
        }
        if !path.exists() {
            continue;
        }

        let mut store = Store::open_existing(&path).unwrap();
        let report = store.check().unwrap();
        assert!(
            report.is_sound(),
            "after kill {kills}: {:#?}",
            report.problems
        );
        for scene in store.list_scenes().unwrap() {
            let states = store.load_scene(scene.id).unwrap();
            let Some(first) = states.first() else {
                assert!(
                    !committed.contains_key(&scene.id),
                    "scene {} lost every state",
                    scene.id
                );
                continue;
            };
            let k = first.tick;
            for s in &states {
                assert_eq!(
                    *s,
                    torture_state(scene.id, s.avatar, k),
                    "scene {} mixes batches after kill {kills}",
                    scene.id
                );
            }
            let reported = committed.get(&scene.id).copied().unwrap_or(0);
            assert!(
                k >= reported,
                "scene {}: batch {reported} was reported committed, found {k}",
                scene.id
            );
            let before = seen.insert(scene.id, k).unwrap_or(0);
            assert!(
                k >= before,
                "scene {} went back from batch {before} to {k}",
                scene.id
            );
        }
        for &(account, avatar) in &accounts {
            assert!(
                store.account(account).unwrap().is_some(),
                "account {account} lost"
            );
            let a = store
                .avatar(avatar)
                .unwrap()
                .unwrap_or_else(|| panic!("avatar {avatar} lost"));
            assert_eq!(a.account, account);
        }
        let stats = store.stats().unwrap();
        assert!(
            stats.avatars >= prev_avatars,
            "avatars went from {prev_avatars} to {}",
            stats.avatars
        );
        prev_avatars = stats.avatars;
    }
    println!(
        "{kills} kills in {:?}: {commits_reported} commits and {} accounts reported, newest batches {committed:?}",
        started.elapsed(),
        accounts.len()
    );
    assert!(kills >= 10, "only {kills} kills in the time budget");
    // The test must have tried something: commits and registrations happened between kills.
    assert!(commits_reported > 0 && !committed.is_empty());
    assert!(
        !accounts.is_empty(),
        "no account was registered before a kill"
    );
}
