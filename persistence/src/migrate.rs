//! Schema migrations, run inside the open's write transaction: all or nothing.

use redb::{ReadableTable, WriteTransaction};

use crate::error::StoreError;
use crate::schema::{self, *};

/// Upgrades every record to [`SCHEMA_VERSION`] and stamps the new version.
pub(crate) fn migrate(txn: &WriteTransaction, from: u64) -> Result<(), StoreError> {
    if from < 1 {
        return Err(StoreError::corrupt(
            "meta",
            format!("schema version {from}"),
        ));
    }
    if from < 2 {
        v1_to_v2(txn)?;
    }
    // v2 → v3: PC states gain game fields (the decoder reads v2 records as
    // without any) and the `scene_objects` table is new (created on open):
    // nothing to rewrite.
    txn.open_table(META)?
        .insert(META_SCHEMA_VERSION, u64::from(SCHEMA_VERSION))?;
    Ok(())
}

/// v1 → v2: accounts gain a login address and history, PC states gain mount and tick.
/// The decoders already read v1; this rewrites each record in the v2 layout.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut accounts = txn.open_table(ACCOUNTS)?;
    let mut old = Vec::new();
    for row in accounts.iter()? {
        let (k, v) = row?;
        if schema::record_version("accounts", v.value())? < 2 {
            old.push((k.value(), schema::decode_account(v.value())?));
        }
    }
    for (id, account) in old {
        accounts.insert(id, schema::encode(&account)?.as_slice())?;
    }
    let mut pcs = txn.open_table(PC_STATES)?;
    let mut old = Vec::new();
    for row in pcs.iter()? {
        let (k, v) = row?;
        if schema::record_version("pc_states", v.value())? < 2 {
            old.push((k.value(), schema::decode_pc(v.value())?));
        }
    }
    for (key, pc) in old {
        pcs.insert(key, schema::encode(&pc)?.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableDatabase, ReadableTable};

    use super::*;
    use crate::schema::v1::{AccountV1, PcRecordV1};
    use crate::types::{AccountStatus, AvatarStatus, SaveBatch};
    use crate::{PasswordHasher, Store};

    /// Writes a database the way schema version 1 did.
    fn write_v1(path: &std::path::Path, password_hash: &str) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        crate::store::create_tables(&txn).unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_SCHEMA_VERSION, 1).unwrap();
            meta.insert(META_NEXT_ACCOUNT, 2).unwrap();
            meta.insert(META_NEXT_AVATAR, FIRST_AVATAR_ID + 1).unwrap();
            meta.insert(META_NEXT_SCENE, 2).unwrap();
            let account = AccountV1 {
                id: 1,
                email: "old@example.com".into(),
                password_hash: password_hash.into(),
                nickname: "old".into(),
                status: AccountStatus::Open,
                created_ms: 5,
                last_login_ms: Some(7),
            };
            txn.open_table(ACCOUNTS)
                .unwrap()
                .insert(1, schema::encode_version(1, &account).unwrap().as_slice())
                .unwrap();
            txn.open_table(EMAIL_INDEX)
                .unwrap()
                .insert("old@example.com", 1)
                .unwrap();
            let scene = crate::types::Scene {
                id: 1,
                name: "town".into(),
                status: crate::types::SceneStatus::Open,
                created_ms: 5,
            };
            txn.open_table(SCENES)
                .unwrap()
                .insert(1, schema::encode_version(1, &scene).unwrap().as_slice())
                .unwrap();
            txn.open_table(SCENE_NAMES)
                .unwrap()
                .insert("town", 1)
                .unwrap();
            let avatar = AvatarRecord {
                id: FIRST_AVATAR_ID,
                account: 1,
                name: "Oldie".into(),
                figure: "f".into(),
                status: AvatarStatus::Open,
                created_ms: 5,
            };
            txn.open_table(AVATARS)
                .unwrap()
                .insert(
                    FIRST_AVATAR_ID,
                    schema::encode_version(1, &avatar).unwrap().as_slice(),
                )
                .unwrap();
            txn.open_table(AVATAR_NAMES)
                .unwrap()
                .insert("oldie", FIRST_AVATAR_ID)
                .unwrap();
            txn.open_table(ACCOUNT_AVATARS)
                .unwrap()
                .insert((1, FIRST_AVATAR_ID), ())
                .unwrap();
            txn.open_table(AVATAR_SCENE)
                .unwrap()
                .insert(FIRST_AVATAR_ID, 1)
                .unwrap();
            let pc = PcRecordV1 {
                position: [3.5, -2.0],
                heading: 1.25,
                action: 4,
                online: false,
            };
            txn.open_table(PC_STATES)
                .unwrap()
                .insert(
                    (1, FIRST_AVATAR_ID),
                    schema::encode_version(1, &pc).unwrap().as_slice(),
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn v1_database_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.redb");
        let hasher = std::sync::Arc::new(PasswordHasher::new(1));
        write_v1(&path, &hasher.hash("old password").unwrap());

        let mut store = Store::open_with(&path, false, hasher).unwrap();
        assert_eq!(store.migrated_from(), Some(1));
        let report = store.check().unwrap();
        assert!(report.is_sound(), "{:?}", report.problems);

        // Every record now carries the current version.
        {
            let read = store.db.begin_read().unwrap();
            let meta = read.open_table(META).unwrap();
            assert_eq!(
                meta.get(META_SCHEMA_VERSION).unwrap().unwrap().value(),
                u64::from(SCHEMA_VERSION)
            );
            for row in read.open_table(ACCOUNTS).unwrap().iter().unwrap() {
                let (_, v) = row.unwrap();
                assert_eq!(
                    schema::record_version("accounts", v.value()).unwrap(),
                    SCHEMA_VERSION
                );
            }
            for row in read.open_table(PC_STATES).unwrap().iter().unwrap() {
                let (_, v) = row.unwrap();
                assert_eq!(
                    schema::record_version("pc_states", v.value()).unwrap(),
                    SCHEMA_VERSION
                );
            }
        }
        let account = store.account(1).unwrap().unwrap();
        assert_eq!(account.last_login.as_ref().map(|l| l.time_ms), Some(7));
        assert!(account.history.is_empty());
        // The v1 password hash still verifies, and the migrated account can log in.
        let logged = store
            .login("OLD@example.com", "old password", "127.0.0.1:9")
            .unwrap();
        assert_eq!(logged.history.len(), 1);
        let states = store.load_scene(1).unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].position, [3.5, -2.0]);
        assert_eq!(
            (states[0].mount, states[0].tick, states[0].action),
            (0, 0, 4)
        );
        // And it is writable in the new layout.
        let mut s = states[0].clone();
        s.mount = 3;
        s.tick = 10;
        store
            .save_batch(&SaveBatch {
                objects: Vec::new(),
                scene: 1,
                states: vec![s],
            })
            .unwrap();
        drop(store);
        let store = Store::open_existing(&path).unwrap();
        assert_eq!(store.migrated_from(), None);
        assert_eq!(store.load_scene(1).unwrap()[0].mount, 3);
    }

    /// A PC record of schema version 2 (before game fields) still loads, with
    /// none; a version 2 database opens as the current one.
    #[test]
    fn a_v2_pc_record_loads_without_game_fields() {
        use crate::schema::v2::PcRecordV2;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.redb");
        write_v1(
            &path,
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
        );
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_SCHEMA_VERSION, 2)
                .unwrap();
            let pc = PcRecordV2 {
                position: [3.5, -2.0],
                heading: 1.25,
                action: 4,
                mount: 2,
                online: true,
                tick: 77,
            };
            txn.open_table(PC_STATES)
                .unwrap()
                .insert(
                    (1, FIRST_AVATAR_ID),
                    schema::encode_version(2, &pc).unwrap().as_slice(),
                )
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open_existing(&path).unwrap();
        assert_eq!(store.migrated_from(), Some(2));
        let states = store.load_scene(1).unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(
            (states[0].mount, states[0].tick, states[0].online),
            (2, 77, true)
        );
        assert!(states[0].game.is_empty());
        assert!(store.load_scene_objects(1).unwrap().is_empty());
    }
}
