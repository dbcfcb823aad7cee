//! The data service's guarantees, each tried: typed errors that corrupt nothing, exactly one
//! winner of a registration race, avatars and scene state rules, export → import.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, Barrier};

use tessera_persistence::schema::{META, META_SCHEMA_VERSION};
use tessera_persistence::*;

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.redb");
    (dir, path)
}

fn assert_sound(store: &mut Store) {
    let report = store.check().unwrap();
    assert!(report.is_sound(), "{:#?}", report.problems);
}

const PW: &str = "correct horse battery";

#[test]
fn concurrent_registration_of_one_email_has_exactly_one_winner() {
    let (_dir, path) = temp();
    let store = Arc::new(Store::open(&path).unwrap());
    let n = 12;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            // The same address in different letter cases and padding.
            let email = if i % 2 == 0 {
                "Race@Example.com".to_string()
            } else {
                format!(" race@EXAMPLE.COM{}", " ".repeat(i % 3))
            };
            std::thread::spawn(move || {
                barrier.wait();
                store.register(&email, PW, Some(&format!("racer{i}")))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    for r in &results {
        match r {
            Ok(_) => {}
            Err(RegisterError::DuplicateEmail { email }) => assert_eq!(email, "race@example.com"),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let mut store = Arc::try_unwrap(store).unwrap();
    assert_eq!(store.stats().unwrap().accounts, 1);
    assert_sound(&mut store);
}

#[test]
fn login_errors_are_typed_and_change_nothing() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    let id = store.register("Ann@Example.com", PW, None).unwrap();
    assert_eq!(store.account(id).unwrap().unwrap().nickname, "ann");

    assert!(matches!(
        store.verify_password("ann@example.com", "wrong password"),
        Err(LoginError::WrongPassword)
    ));
    assert!(matches!(
        store.verify_password("nobody@example.com", PW),
        Err(LoginError::UnknownEmail)
    ));
    assert!(matches!(
        store.verify_password("not an email", PW),
        Err(LoginError::InvalidEmail(_))
    ));
    assert!(matches!(
        store.verify_password("ann@example.com", &"x".repeat(10_000)),
        Err(LoginError::InvalidPassword(PasswordError::TooLong { .. }))
    ));
    assert!(matches!(
        store.login("ann@example.com", PW, &"9".repeat(65)),
        Err(LoginError::InvalidAddress(_))
    ));
    let a = store
        .login("  ANN@example.com", PW, "10.0.0.1:5000")
        .unwrap();
    assert_eq!(a.last_login.as_ref().unwrap().address, "10.0.0.1:5000");

    store.lock_account(id).unwrap();
    assert!(matches!(
        store.verify_password("ann@example.com", PW),
        Err(LoginError::Locked)
    ));
    // The status is only revealed to someone who knows the password.
    assert!(matches!(
        store.verify_password("ann@example.com", "wrong password"),
        Err(LoginError::WrongPassword)
    ));
    store.unlock_account(id).unwrap();
    store.verify_password("ann@example.com", PW).unwrap();

    store.delete_account(id).unwrap();
    assert!(matches!(
        store.verify_password("ann@example.com", PW),
        Err(LoginError::Deleted)
    ));
    assert!(matches!(
        store.unlock_account(id),
        Err(AccountUpdateError::Deleted(_))
    ));
    assert!(matches!(
        store.lock_account(id),
        Err(AccountUpdateError::Deleted(_))
    ));
    assert!(matches!(
        store.record_login(id, "x"),
        Err(AccountUpdateError::Deleted(_))
    ));
    // The email of a deleted account stays taken.
    assert!(matches!(
        store.register("ann@example.com", PW, None),
        Err(RegisterError::DuplicateEmail { .. })
    ));
    assert!(matches!(
        store.lock_account(999),
        Err(AccountUpdateError::UnknownAccount(999))
    ));

    let account = store.account(id).unwrap().unwrap();
    assert_eq!(account.status, AccountStatus::Deleted);
    assert_eq!(account.history.len(), 1);
    assert_eq!(store.stats().unwrap().accounts, 1);
    assert_sound(&mut store);
}

#[test]
fn duplicate_email_in_any_letter_case_is_refused() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    store.register("bob@example.com", PW, None).unwrap();
    for email in ["BOB@example.com", " Bob@Example.Com ", "bob@EXAMPLE.COM"] {
        match store.register(email, PW, None) {
            Err(RegisterError::DuplicateEmail { email }) => assert_eq!(email, "bob@example.com"),
            other => panic!("{email}: {other:?}"),
        }
    }
    let other = store.register("carol@example.com", PW, None).unwrap();
    assert!(matches!(
        store.change_email(other, "BOB@example.com"),
        Err(ChangeEmailError::DuplicateEmail { .. })
    ));
    assert_eq!(store.stats().unwrap().accounts, 2);
    assert_sound(&mut store);
}

#[test]
fn malformed_and_oversized_fields_are_refused_before_storing() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    let long_email = format!("{}@example.com", "a".repeat(300));
    assert!(matches!(
        store.register(&long_email, PW, None),
        Err(RegisterError::InvalidEmail(EmailError::TooLong { .. }))
    ));
    assert!(matches!(
        store.register("a@@b.com", PW, None),
        Err(RegisterError::InvalidEmail(_))
    ));
    assert!(matches!(
        store.register("", PW, None),
        Err(RegisterError::InvalidEmail(EmailError::Empty))
    ));
    assert!(matches!(
        store.register("a@b.com", "short", None),
        Err(RegisterError::InvalidPassword(
            PasswordError::TooShort { .. }
        ))
    ));
    assert!(matches!(
        store.register("a@b.com", &"p".repeat(129), None),
        Err(RegisterError::InvalidPassword(
            PasswordError::TooLong { .. }
        ))
    ));
    assert!(matches!(
        store.register("a@b.com", PW, Some(&"n".repeat(33))),
        Err(RegisterError::InvalidNickname(NameError::TooLong { .. }))
    ));
    assert!(matches!(
        store.register("a@b.com", PW, Some("tab\there")),
        Err(RegisterError::InvalidNickname(_))
    ));
    assert_eq!(store.stats().unwrap().accounts, 0);

    let account = store.register("a@b.com", PW, None).unwrap();
    let scene = store.create_scene("town").unwrap();
    assert!(matches!(
        store.create_scene("bad name!"),
        Err(CreateSceneError::InvalidName(_))
    ));
    assert!(matches!(
        store.create_scene("town"),
        Err(CreateSceneError::DuplicateName { .. })
    ));
    let new = |name: &str, figure: &str| NewAvatar {
        name: name.into(),
        figure: figure.into(),
        scene,
    };
    assert!(matches!(
        store.create_avatar(account, &new(&"a".repeat(17), "")),
        Err(CreateAvatarError::InvalidName(_))
    ));
    assert!(matches!(
        store.create_avatar(account, &new("ok_name", &"f".repeat(65))),
        Err(CreateAvatarError::InvalidFigure(_))
    ));
    assert!(matches!(
        store.create_avatar(account, &new("1abc", "")),
        Err(CreateAvatarError::InvalidName(_))
    ));
    assert!(matches!(
        store.create_avatar(
            account,
            &NewAvatar {
                scene: 77,
                ..new("Nomad", "")
            }
        ),
        Err(CreateAvatarError::UnknownScene(77))
    ));
    assert!(matches!(
        store.create_avatar(404, &new("Nomad", "")),
        Err(CreateAvatarError::UnknownAccount(404))
    ));
    let s = store.stats().unwrap();
    assert_eq!((s.accounts, s.avatars, s.scenes), (1, 0, 1));
    assert_sound(&mut store);
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let (dir, path) = temp();
    let junk: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &junk).unwrap();
    match Store::open(&path) {
        Err(OpenError::NotADatabase { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), junk, "the file was modified");

    let text = dir.path().join("text.redb");
    std::fs::write(&text, "hello, I am a text file\n").unwrap();
    assert!(matches!(
        Store::open(&text),
        Err(OpenError::NotADatabase { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        "hello, I am a text file\n"
    );

    assert!(matches!(
        Store::open(dir.path()),
        Err(OpenError::NotADatabase { .. })
    ));
    assert!(matches!(
        Store::open_existing(dir.path().join("missing.redb")),
        Err(OpenError::NotFound { .. })
    ));

    // A database another handle (here, or another process) has open.
    let busy = dir.path().join("busy.redb");
    let first = Store::open(&busy).unwrap();
    assert!(matches!(
        Store::open(&busy),
        Err(OpenError::AlreadyOpen { .. })
    ));
    drop(first);
    Store::open(&busy).unwrap();

    // A redb database of some other program.
    let foreign = dir.path().join("foreign.redb");
    {
        let db = redb::Database::create(&foreign).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("other"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    assert!(matches!(
        Store::open(&foreign),
        Err(OpenError::NotADatabase { .. })
    ));
}

#[test]
fn a_database_from_a_newer_schema_is_refused_untouched() {
    let (_dir, path) = temp();
    {
        let store = Store::open(&path).unwrap();
        store.register("future@example.com", PW, None).unwrap();
    }
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_SCHEMA_VERSION, 99)
            .unwrap();
        txn.commit().unwrap();
    }
    match Store::open(&path) {
        Err(OpenError::NewerSchema {
            found: 99,
            supported,
            ..
        }) => {
            assert_eq!(supported, schema::SCHEMA_VERSION);
        }
        other => panic!("{other:?}"),
    }
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db = redb::Database::open(&path).unwrap();
    let read = db.begin_read().unwrap();
    assert_eq!(
        read.open_table(META)
            .unwrap()
            .get(META_SCHEMA_VERSION)
            .unwrap()
            .unwrap()
            .value(),
        99
    );
    assert_eq!(read.open_table(schema::ACCOUNTS).unwrap().len().unwrap(), 1);
}

#[test]
fn password_and_email_changes() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    let id = store.register("dan@example.com", PW, None).unwrap();
    assert!(matches!(
        store.change_password(id, "not it at all", "new password 1"),
        Err(ChangePasswordError::WrongPassword)
    ));
    assert!(matches!(
        store.change_password(id, PW, "short"),
        Err(ChangePasswordError::InvalidPassword(_))
    ));
    store.change_password(id, PW, "new password 1").unwrap();
    assert!(matches!(
        store.verify_password("dan@example.com", PW),
        Err(LoginError::WrongPassword)
    ));
    store
        .verify_password("dan@example.com", "new password 1")
        .unwrap();

    store.change_email(id, "Daniel@Example.com").unwrap();
    assert!(matches!(
        store.verify_password("dan@example.com", "new password 1"),
        Err(LoginError::UnknownEmail)
    ));
    assert_eq!(
        store
            .verify_password("daniel@example.com", "new password 1")
            .unwrap()
            .id,
        id
    );
    // The old email is free again.
    store.register("dan@example.com", PW, None).unwrap();
    assert_sound(&mut store);
}

#[test]
fn login_history_is_bounded() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let id = store.register("eve@example.com", PW, None).unwrap();
    for i in 0..40 {
        store.record_login(id, &format!("10.0.0.{i}:1")).unwrap();
    }
    let a = store.account(id).unwrap().unwrap();
    assert_eq!(a.history.len(), schema::LOGIN_HISTORY_LEN);
    assert_eq!(a.history.last().unwrap().address, "10.0.0.39:1");
    assert_eq!(a.history.first().unwrap().address, "10.0.0.24:1");
    assert_eq!(a.last_login.unwrap().address, "10.0.0.39:1");
}

fn state(scene: SceneId, avatar: AvatarId, tick: u64) -> PcState {
    PcState {
        game: Vec::new(),
        avatar,
        scene,
        position: [1.5, -2.25],
        heading: 0.1,
        action: 2,
        mount: 1,
        online: true,
        tick,
    }
}

#[test]
fn avatars_names_scenes_and_scene_state() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    let acc = store.register("fay@example.com", PW, None).unwrap();
    let town = store.create_scene("town").unwrap();
    let field = store.ensure_scene("field").unwrap();
    assert_eq!(store.ensure_scene("field").unwrap(), field);
    let new = |name: &str| NewAvatar {
        name: name.into(),
        figure: "elf".into(),
        scene: town,
    };
    let a = store.create_avatar(acc, &new("Aria")).unwrap();
    assert!(matches!(
        store.create_avatar(acc, &new("ARIA")),
        Err(CreateAvatarError::DuplicateName { .. })
    ));
    let mut ids = vec![a];
    for i in 1..validate::MAX_AVATARS_PER_ACCOUNT {
        ids.push(store.create_avatar(acc, &new(&format!("Alt{i}"))).unwrap());
    }
    assert!(matches!(
        store.create_avatar(acc, &new("OneTooMany")),
        Err(CreateAvatarError::TooManyAvatars { .. })
    ));
    let listed = store.list_avatars(acc).unwrap();
    assert_eq!(listed.iter().map(|a| a.id).collect::<Vec<_>>(), ids);
    assert!(
        listed
            .iter()
            .all(|a| a.scene == town && a.status == AvatarStatus::Open)
    );

    // Scene state: only avatars in the scene, only finite states, are written.
    let mut bad = state(town, ids[2], 5);
    bad.position[0] = f32::NAN;
    let report = store
        .save_batch(&SaveBatch {
            objects: Vec::new(),
            scene: town,
            states: vec![
                state(town, ids[0], 5),
                state(town, ids[1], 5),
                bad,
                state(field, ids[3], 5),
                state(town, 12345, 5),
            ],
        })
        .unwrap();
    assert_eq!(
        report,
        SaveReport {
            objects: 0,
            written: 2,
            refused: 3
        }
    );
    assert_eq!(
        store.load_scene(town).unwrap(),
        vec![state(town, ids[0], 5), state(town, ids[1], 5)]
    );
    assert!(matches!(
        store.load_scene(999),
        Err(LoadError::UnknownScene(999))
    ));
    assert!(matches!(
        store.save_batch(&SaveBatch {
            objects: Vec::new(),
            scene: 999,
            states: vec![]
        }),
        Err(SaveError::UnknownScene(999))
    ));

    // A transfer moves the avatar; its old scene state goes; the old scene can't write it.
    store.set_avatar_scene(ids[0], field).unwrap();
    assert_eq!(store.avatar(ids[0]).unwrap().unwrap().scene, field);
    assert_eq!(store.load_scene(town).unwrap().len(), 1);
    let r = store
        .save_batch(&SaveBatch {
            objects: Vec::new(),
            scene: town,
            states: vec![state(town, ids[0], 6)],
        })
        .unwrap();
    assert_eq!(r.refused, 1);
    store
        .save_batch(&SaveBatch {
            objects: Vec::new(),
            scene: field,
            states: vec![state(field, ids[0], 6)],
        })
        .unwrap();

    // Soft delete: the name stays taken, the avatar leaves its scene, a slot frees up.
    store.delete_avatar(ids[1]).unwrap();
    let deleted = store.avatar(ids[1]).unwrap().unwrap();
    assert_eq!(deleted.status, AvatarStatus::Deleted);
    assert!(store.load_scene(town).unwrap().is_empty());
    assert!(matches!(
        store.set_avatar_scene(ids[1], town),
        Err(AvatarUpdateError::Deleted(_))
    ));
    assert!(matches!(
        store.create_avatar(acc, &new("alt1")),
        Err(CreateAvatarError::DuplicateName { .. })
    ));
    store.create_avatar(acc, &new("Fresh")).unwrap();
    assert!(matches!(
        store.delete_avatar(1),
        Err(AvatarUpdateError::UnknownAvatar(1))
    ));

    store.lock_account(acc).unwrap();
    assert!(matches!(
        store.provision_avatars(acc, &[new("Locked1")]),
        Err(CreateAvatarError::AccountNotOpen(_))
    ));
    assert_sound(&mut store);
}

fn export_lines(store: &Store) -> Vec<String> {
    let mut lines = Vec::new();
    store
        .export(|r| -> Result<(), std::io::Error> {
            lines.push(serde_json::to_string(r).map_err(std::io::Error::other)?);
            Ok(())
        })
        .unwrap();
    lines
}

fn populate(store: &Store) {
    let a = store
        .register("gus@example.com", PW, Some("Gus 🐙"))
        .unwrap();
    let b = store.register("hal@example.com", PW, None).unwrap();
    let c = store.register("ida@example.com", PW, None).unwrap();
    for i in 0..20 {
        store.record_login(a, &format!("[::1]:{i}")).unwrap();
    }
    store.lock_account(b).unwrap();
    store.delete_account(c).unwrap();
    let town = store.create_scene("town").unwrap();
    let cave = store.create_scene("cave/deep-1").unwrap();
    let ids = store
        .provision_avatars(
            a,
            &(0..50)
                .map(|i| NewAvatar {
                    name: format!("Gus{i}"),
                    figure: format!("fig {i}"),
                    scene: if i % 2 == 0 { town } else { cave },
                })
                .collect::<Vec<_>>(),
        )
        .unwrap();
    store.delete_avatar(ids[7]).unwrap();
    for scene in [town, cave] {
        let states = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| PcState {
                game: Vec::new(),
                avatar: id,
                scene,
                // Awkward floats: they must survive JSON exactly.
                position: [0.1 + i as f32 / 3.0, -1.0e-7 * i as f32],
                heading: std::f32::consts::PI * i as f32,
                action: i as u8,
                mount: (i % 3) as u8,
                online: i % 2 == 0,
                tick: 1_000_000 + i as u64,
            })
            .collect();
        store
            .save_batch(&SaveBatch {
                objects: Vec::new(),
                scene,
                states,
            })
            .unwrap();
    }
}

#[test]
fn export_then_import_loses_nothing() {
    let (dir, path) = temp();
    let source = Store::open(&path).unwrap();
    populate(&source);
    let lines = export_lines(&source);
    assert!(lines.len() > 100);

    let target_path = dir.path().join("copy.redb");
    let mut target = Store::open(&target_path).unwrap();
    let mut importer = target.begin_import().unwrap();
    for line in &lines {
        importer.push(serde_json::from_str(line).unwrap()).unwrap();
    }
    let imported = importer.finish().unwrap();
    assert_sound(&mut target);

    // The full contents, record by record, are the same; so are the counts and counters.
    assert_eq!(export_lines(&target), lines);
    let (s, t) = (source.stats().unwrap(), target.stats().unwrap());
    assert_eq!(
        (s.accounts, s.avatars, s.scenes, s.pc_states),
        (t.accounts, t.avatars, t.scenes, t.pc_states)
    );
    assert_eq!(
        (
            imported.accounts,
            imported.avatars,
            imported.scenes,
            imported.pc_states
        ),
        (t.accounts, t.avatars, t.scenes, t.pc_states)
    );
    for scene in source.list_scenes().unwrap() {
        assert_eq!(
            source.load_scene(scene.id).unwrap(),
            target.load_scene(scene.id).unwrap()
        );
    }
    // Password hashes came along; indexes were rebuilt.
    target.verify_password("GUS@example.com", PW).unwrap();
    assert!(matches!(
        target.verify_password("hal@example.com", PW),
        Err(LoginError::Locked)
    ));
    assert!(matches!(
        target.register("ida@example.com", PW, None),
        Err(RegisterError::DuplicateEmail { .. })
    ));
    // New ids continue after the imported ones.
    let next = target.register("new@example.com", PW, None).unwrap();
    assert_eq!(next, 4);

    // Importing into a database that is not empty is refused.
    assert!(matches!(
        target.begin_import(),
        Err(ImportError::NotEmpty(_))
    ));
}

#[test]
fn import_refuses_bad_input_and_writes_nothing() {
    let (dir, path) = temp();
    let source = Store::open(&path).unwrap();
    populate(&source);
    let lines = export_lines(&source);
    let records: Vec<ExportRecord> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let target_path = dir.path().join("copy.redb");
    let mut target = Store::open(&target_path).unwrap();
    // No header first.
    let mut imp = target.begin_import().unwrap();
    assert!(matches!(
        imp.push(records[1].clone()),
        Err(ImportError::MissingHeader)
    ));
    drop(imp);
    // A PC state whose avatar is not there, and a duplicate email.
    let mut imp = target.begin_import().unwrap();
    imp.push(records[0].clone()).unwrap();
    let pc = records
        .iter()
        .find(|r| matches!(r, ExportRecord::PcState(_)))
        .unwrap()
        .clone();
    assert!(matches!(imp.push(pc), Err(ImportError::Invalid(_))));
    let acc = records
        .iter()
        .find(|r| matches!(r, ExportRecord::Account(_)))
        .unwrap()
        .clone();
    imp.push(acc.clone()).unwrap();
    let ExportRecord::Account(mut dup) = acc else {
        unreachable!()
    };
    dup.id += 100;
    dup.email = dup.email.to_uppercase();
    assert!(matches!(
        imp.push(ExportRecord::Account(dup)),
        Err(ImportError::Invalid(_))
    ));
    drop(imp);
    let mut imp = target.begin_import().unwrap();
    assert!(matches!(
        imp.push(ExportRecord::Header {
            schema_version: 99,
            next_account: 1,
            next_avatar: 1,
            next_scene: 1
        }),
        Err(ImportError::NewerSchema { found: 99, .. })
    ));
    drop(imp);
    assert_eq!(
        target.stats().unwrap().accounts,
        0,
        "a failed import must leave nothing"
    );
    assert_sound(&mut target);
}

#[test]
fn reopen_keeps_everything() {
    let (_dir, path) = temp();
    let before = {
        let store = Store::open(&path).unwrap();
        populate(&store);
        export_lines(&store)
    };
    let store = Store::open_existing(&path).unwrap();
    assert!(!store.was_repaired());
    assert_eq!(export_lines(&store), before);
}

#[test]
fn scene_epochs_are_durable_and_only_go_up() {
    let (_dir, path) = temp();
    {
        let store = Store::open(&path).expect("open");
        assert!(store.scene_epochs().expect("epochs").is_empty());
        store.set_scene_epoch("field", 3).expect("set");
        store.set_scene_epoch("town", 1).expect("set");
        store.set_scene_epoch("field", 2).expect("lower is ignored");
        assert!(store.set_scene_epoch("", 9).is_err(), "empty scene name");
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(
        store.scene_epochs().expect("epochs"),
        vec![("field".to_owned(), 3), ("town".to_owned(), 1)]
    );
}

/// A portal's two writes — the avatar's new scene and the state it arrives
/// with — are one transaction: both land, or (a refused state) neither.
#[test]
fn a_move_and_its_arrival_state_land_together_or_not_at_all() {
    let (_dir, path) = temp();
    let mut store = Store::open(&path).unwrap();
    let acc = store
        .register("mover@example.com", "mover password", None)
        .unwrap();
    let town = store.create_scene("town").unwrap();
    let field = store.create_scene("field").unwrap();
    let avatar = store
        .create_avatar(
            acc,
            &NewAvatar {
                name: "Mover".into(),
                figure: String::new(),
                scene: town,
            },
        )
        .unwrap();
    store
        .save_batch(&SaveBatch {
            objects: Vec::new(),
            scene: town,
            states: vec![state(town, avatar, 7)],
        })
        .unwrap();

    // A state that cannot be written: the avatar stays in town, with its state there.
    let mut bad = state(field, avatar, 8);
    bad.heading = f32::INFINITY;
    assert!(matches!(
        store.move_avatar(avatar, field, Some(&bad)),
        Err(AvatarUpdateError::BadState(_))
    ));
    assert_eq!(store.avatar(avatar).unwrap().unwrap().scene, town);
    assert_eq!(
        store.load_scene(town).unwrap(),
        vec![state(town, avatar, 7)]
    );
    assert!(store.load_scene(field).unwrap().is_empty());

    // A good one: the avatar is in field with exactly that state, town's row is gone.
    let arrival = state(field, avatar, 8);
    store.move_avatar(avatar, field, Some(&arrival)).unwrap();
    assert_eq!(store.avatar(avatar).unwrap().unwrap().scene, field);
    assert_eq!(store.load_scene(field).unwrap(), vec![arrival]);
    assert!(store.load_scene(town).unwrap().is_empty());
    assert_sound(&mut store);
}

fn field(name: &str, bytes: &[u8]) -> GameField {
    GameField {
        name: name.into(),
        version: 1,
        bytes: bytes.to_vec(),
    }
}

/// A PC's game fields and a scene's objects are stored with the batch and
/// read back as given; an empty object erases it; a portal's arrival state
/// keeps the PC's fields.
#[test]
fn game_fields_and_scene_objects_round_trip() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let acc = store.register("gus@example.com", PW, None).unwrap();
    let town = store.create_scene("town").unwrap();
    let field_scene = store.create_scene("field").unwrap();
    let a = store
        .create_avatar(
            acc,
            &NewAvatar {
                name: "Gus".into(),
                figure: "elf".into(),
                scene: town,
            },
        )
        .unwrap();
    let mut s = state(town, a, 5);
    s.game = vec![field("hp", &[42]), field("xp", &[1, 2, 3])];
    let door = ObjectState {
        key: 7,
        tick: 5,
        game: vec![field("open", &[1])],
    };
    let boss = ObjectState {
        key: 9,
        tick: 5,
        game: vec![field("hp", &[200, 1])],
    };
    let report = store
        .save_batch(&SaveBatch {
            scene: town,
            states: vec![s.clone()],
            objects: vec![door.clone(), boss.clone()],
        })
        .unwrap();
    assert_eq!((report.written, report.objects, report.refused), (1, 2, 0));
    assert_eq!(store.load_scene(town).unwrap(), vec![s.clone()]);
    assert_eq!(
        store.load_scene_objects(town).unwrap(),
        vec![door.clone(), boss.clone()]
    );
    assert!(store.load_scene_objects(field_scene).unwrap().is_empty());

    // An empty object erases it.
    store
        .save_batch(&SaveBatch {
            scene: town,
            states: vec![],
            objects: vec![ObjectState {
                key: 7,
                tick: 6,
                game: vec![],
            }],
        })
        .unwrap();
    assert_eq!(store.load_scene_objects(town).unwrap(), vec![boss]);

    // Too large: refused.
    let mut huge = state(town, a, 7);
    huge.game = vec![field("blob", &vec![0; validate::MAX_GAME_BYTES + 1])];
    let r = store
        .save_batch(&SaveBatch {
            scene: town,
            states: vec![huge],
            objects: vec![],
        })
        .unwrap();
    assert_eq!(r.refused, 1);
    assert_eq!(store.load_scene(town).unwrap(), vec![s.clone()]);

    // A portal: the arrival state carries the fields into the new scene.
    let mut arrival = state(field_scene, a, 1);
    arrival.game = s.game.clone();
    store.move_avatar(a, field_scene, Some(&arrival)).unwrap();
    assert_eq!(store.load_scene(field_scene).unwrap(), vec![arrival]);
    assert!(store.load_scene(town).unwrap().is_empty());

    // The export carries them, and an import brings them back.
    let mut records = Vec::new();
    store
        .export(|r| {
            records.push(r.clone());
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    assert!(
        records
            .iter()
            .any(|r| matches!(r, ExportRecord::SceneObject { object, .. } if object.key == 9))
    );
    let (_dir2, path2) = temp();
    let copy = Store::open(&path2).unwrap();
    let mut import = copy.begin_import().unwrap();
    for r in records {
        import.push(r).unwrap();
    }
    import.finish().unwrap();
    assert_eq!(
        copy.load_scene_objects(town).unwrap(),
        store.load_scene_objects(town).unwrap()
    );
    assert_eq!(
        copy.load_scene(field_scene).unwrap(),
        store.load_scene(field_scene).unwrap()
    );
}

/// Batches are one transaction: PC states and objects land together or
/// not at all.
#[test]
fn states_and_objects_are_written_in_one_transaction() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let acc = store.register("hal@example.com", PW, None).unwrap();
    let town = store.create_scene("town").unwrap();
    let a = store
        .create_avatar(
            acc,
            &NewAvatar {
                name: "Hal".into(),
                figure: "elf".into(),
                scene: town,
            },
        )
        .unwrap();
    let mut s = state(town, a, 5);
    s.game = vec![field("hp", &[42])];
    let good = SaveBatch {
        scene: town,
        states: vec![s],
        objects: vec![ObjectState {
            key: 1,
            tick: 5,
            game: vec![field("hp", &[1])],
        }],
    };
    let bad = SaveBatch {
        scene: 999,
        ..SaveBatch::default()
    };
    assert!(store.save_batches(&[good.clone(), bad]).is_err());
    assert!(store.load_scene(town).unwrap().is_empty());
    assert!(store.load_scene_objects(town).unwrap().is_empty());
    store.save_batches(std::slice::from_ref(&good)).unwrap();
    assert_eq!(store.load_scene(town).unwrap(), good.states);
    assert_eq!(store.load_scene_objects(town).unwrap(), good.objects);
}
