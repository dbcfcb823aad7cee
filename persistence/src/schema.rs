//! Every redb table and every stored record format, in one place.
//!
//! # Tables
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | name | `schema_version`, `next_account`, `next_avatar`, `next_scene`, `epoch/<scene>` |
//! | `accounts` | account id | versioned [`Account`] |
//! | `email_index` | normalised email | account id |
//! | `avatars` | avatar id | versioned [`AvatarRecord`] |
//! | `avatar_scene` | avatar id | scene id — the avatar's current scene |
//! | `account_avatars` | (account id, avatar id) | `()` |
//! | `avatar_names` | lower-cased avatar name | avatar id |
//! | `scenes` | scene id | versioned [`Scene`] |
//! | `scene_names` | scene name | scene id |
//! | `pc_states` | (scene id, avatar id) | versioned [`PcRecord`] |
//! | `scene_objects` | (scene id, object key) | versioned [`ObjectRecord`] |
//!
//! # Records
//!
//! Every value in a record table is `postcard((version: u16, record))`. [`SCHEMA_VERSION`]
//! is the version this build writes; the database's own version sits in `meta`. A record or
//! database from a newer version is refused; older ones are decoded and upgraded
//! (see `migrate.rs`).

use redb::TableDefinition;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::StoreError;
use crate::types::{
    Account, AccountId, AvatarStatus, GameField, ObjectState, PcState, Scene, SceneId,
};

/// The schema this build writes. History:
/// - 1: accounts without login address or history; PC states without mount and tick.
/// - 2: PC states without game fields; no `scene_objects` table.
/// - 3: the current layout.
pub const SCHEMA_VERSION: u16 = 3;

pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const ACCOUNTS: TableDefinition<u64, &[u8]> = TableDefinition::new("accounts");
pub const EMAIL_INDEX: TableDefinition<&str, u64> = TableDefinition::new("email_index");
pub const AVATARS: TableDefinition<u64, &[u8]> = TableDefinition::new("avatars");
pub const AVATAR_SCENE: TableDefinition<u64, u64> = TableDefinition::new("avatar_scene");
pub const ACCOUNT_AVATARS: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("account_avatars");
pub const AVATAR_NAMES: TableDefinition<&str, u64> = TableDefinition::new("avatar_names");
pub const SCENES: TableDefinition<u64, &[u8]> = TableDefinition::new("scenes");
pub const SCENE_NAMES: TableDefinition<&str, u64> = TableDefinition::new("scene_names");
pub const PC_STATES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("pc_states");
pub const SCENE_OBJECTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("scene_objects");

/// `meta` keys.
pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_NEXT_ACCOUNT: &str = "next_account";
pub const META_NEXT_AVATAR: &str = "next_avatar";
pub const META_NEXT_SCENE: &str = "next_scene";
/// `epoch/<scene name>` → the scene's latest placement epoch (the coordinator's).
pub const META_EPOCH_PREFIX: &str = "epoch/";

pub const FIRST_ACCOUNT_ID: u64 = 1;
pub const FIRST_AVATAR_ID: u64 = 1_000_000_000;
pub const FIRST_SCENE_ID: u64 = 1;
/// The `avatar_scene` value of a deleted avatar: in no scene.
pub const NO_SCENE: u64 = 0;

/// How many logins an account's history keeps.
pub const LOGIN_HISTORY_LEN: usize = 16;

/// An avatar as stored: its current scene lives in `avatar_scene`, so `save_batch` can check
/// membership without decoding this record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarRecord {
    pub id: u64,
    pub account: AccountId,
    pub name: String,
    pub figure: String,
    pub status: AvatarStatus,
    pub created_ms: u64,
}

/// A PC state as stored under `(scene, avatar)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcRecord {
    pub position: [f32; 2],
    pub heading: f32,
    pub action: u8,
    pub mount: u8,
    pub online: bool,
    pub tick: u64,
    pub game: Vec<GameField>,
}

impl PcRecord {
    pub fn from_state(state: &PcState) -> Self {
        Self {
            position: state.position,
            heading: state.heading,
            action: state.action,
            mount: state.mount,
            online: state.online,
            tick: state.tick,
            game: state.game.clone(),
        }
    }

    pub fn into_state(self, scene: SceneId, avatar: u64) -> PcState {
        PcState {
            avatar,
            scene,
            position: self.position,
            heading: self.heading,
            action: self.action,
            mount: self.mount,
            online: self.online,
            tick: self.tick,
            game: self.game,
        }
    }
}

/// A scene object's state as stored under `(scene, key)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub tick: u64,
    pub game: Vec<GameField>,
}

impl ObjectRecord {
    pub fn into_state(self, key: u64) -> ObjectState {
        ObjectState {
            key,
            tick: self.tick,
            game: self.game,
        }
    }
}

/// The layouts of schema version 2, kept to read old records.
pub mod v2 {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    pub struct PcRecordV2 {
        pub position: [f32; 2],
        pub heading: f32,
        pub action: u8,
        pub mount: u8,
        pub online: bool,
        pub tick: u64,
    }
}

/// The layouts of schema version 1, kept to read and migrate old databases.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::types::AccountStatus;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct AccountV1 {
        pub id: u64,
        pub email: String,
        pub password_hash: String,
        pub nickname: String,
        pub status: AccountStatus,
        pub created_ms: u64,
        pub last_login_ms: Option<u64>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    pub struct PcRecordV1 {
        pub position: [f32; 2],
        pub heading: f32,
        pub action: u8,
        pub online: bool,
    }
}

/// Encodes a record of the current schema.
pub fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    encode_version(SCHEMA_VERSION, record)
}

pub(crate) fn encode_version<T: Serialize>(
    version: u16,
    record: &T,
) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(&(version, record)).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Splits a stored value into its version and body.
fn split<'b>(table: &'static str, bytes: &'b [u8]) -> Result<(u16, &'b [u8]), StoreError> {
    let (version, rest) = postcard::take_from_bytes::<u16>(bytes)
        .map_err(|e| StoreError::corrupt(table, format!("no version: {e}")))?;
    if version == 0 || version > SCHEMA_VERSION {
        return Err(StoreError::corrupt(
            table,
            format!("record version {version}, this build knows 1..={SCHEMA_VERSION}"),
        ));
    }
    Ok((version, rest))
}

fn body<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| StoreError::corrupt(table, e.to_string()))?;
    if !rest.is_empty() {
        return Err(StoreError::corrupt(
            table,
            format!("{} trailing bytes", rest.len()),
        ));
    }
    Ok(value)
}

/// A record that is the same in every schema version so far.
fn decode_plain<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let (_, rest) = split(table, bytes)?;
    body(table, rest)
}

pub fn decode_account(bytes: &[u8]) -> Result<Account, StoreError> {
    let (version, rest) = split("accounts", bytes)?;
    if version == 1 {
        let old: v1::AccountV1 = body("accounts", rest)?;
        return Ok(Account {
            id: old.id,
            email: old.email,
            password_hash: old.password_hash,
            nickname: old.nickname,
            status: old.status,
            created_ms: old.created_ms,
            last_login: old.last_login_ms.map(|time_ms| crate::types::LoginRecord {
                time_ms,
                address: String::new(),
            }),
            history: Vec::new(),
        });
    }
    body("accounts", rest)
}

pub fn decode_avatar(bytes: &[u8]) -> Result<AvatarRecord, StoreError> {
    decode_plain("avatars", bytes)
}

pub fn decode_scene(bytes: &[u8]) -> Result<Scene, StoreError> {
    decode_plain("scenes", bytes)
}

pub fn decode_pc(bytes: &[u8]) -> Result<PcRecord, StoreError> {
    let (version, rest) = split("pc_states", bytes)?;
    if version == 1 {
        let old: v1::PcRecordV1 = body("pc_states", rest)?;
        return Ok(PcRecord {
            position: old.position,
            heading: old.heading,
            action: old.action,
            mount: 0,
            online: old.online,
            tick: 0,
            game: Vec::new(),
        });
    }
    if version == 2 {
        let old: v2::PcRecordV2 = body("pc_states", rest)?;
        return Ok(PcRecord {
            position: old.position,
            heading: old.heading,
            action: old.action,
            mount: old.mount,
            online: old.online,
            tick: old.tick,
            game: Vec::new(),
        });
    }
    body("pc_states", rest)
}

pub fn decode_object(bytes: &[u8]) -> Result<ObjectRecord, StoreError> {
    decode_plain("scene_objects", bytes)
}

/// The version of a stored record, for migration.
pub fn record_version(table: &'static str, bytes: &[u8]) -> Result<u16, StoreError> {
    split(table, bytes).map(|(v, _)| v)
}
