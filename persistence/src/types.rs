//! The public data model: what callers read and write.

use serde::{Deserialize, Serialize};

/// An account's id. Account ids count up from [`crate::schema::FIRST_ACCOUNT_ID`].
pub type AccountId = u64;
/// An avatar's id. Avatar ids count up from [`crate::schema::FIRST_AVATAR_ID`], far from
/// account ids, so a human never mistakes one for the other (as in the seed schema).
pub type AvatarId = u64;
/// A scene's id. Scene ids count up from [`crate::schema::FIRST_SCENE_ID`].
pub type SceneId = u64;

/// Whether an account may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Open,
    Locked,
    /// Soft-deleted: the record and its email stay, logins are refused.
    Deleted,
}

/// One login: when (unix milliseconds) and from where (a peer address as text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRecord {
    pub time_ms: u64,
    pub address: String,
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    /// Normalised: trimmed and lower-cased.
    pub email: String,
    /// argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
    pub password_hash: String,
    pub nickname: String,
    pub status: AccountStatus,
    pub created_ms: u64,
    pub last_login: Option<LoginRecord>,
    /// The newest [`crate::schema::LOGIN_HISTORY_LEN`] logins, oldest first.
    pub history: Vec<LoginRecord>,
}

/// Whether an avatar is playable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AvatarStatus {
    Open,
    /// Soft-deleted: the record and its name stay reserved.
    Deleted,
}

/// An avatar (a player character) of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Avatar {
    pub id: AvatarId,
    pub account: AccountId,
    pub name: String,
    pub figure: String,
    /// The scene that owns this avatar's position (the seed: position belongs to the scene).
    pub scene: SceneId,
    pub status: AvatarStatus,
    pub created_ms: u64,
}

/// Whether a scene accepts avatars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SceneStatus {
    Open,
    Closed,
}

/// A scene of the world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    pub id: SceneId,
    pub name: String,
    pub status: SceneStatus,
    pub created_ms: u64,
}

/// One persistent component of a game, encoded by the scene core: the
/// store keeps it as given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GameField {
    pub name: String,
    pub version: u16,
    pub bytes: Vec<u8>,
}

/// One PC's state in its scene, as the scene core saves it.
///
/// The scene is the key of the row, not part of the stored value; `scene` here must equal
/// the scene of the batch that carries the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcState {
    pub avatar: AvatarId,
    pub scene: SceneId,
    pub position: [f32; 2],
    pub heading: f32,
    pub action: u8,
    /// 0 = not mounted.
    pub mount: u8,
    /// Offline PCs stay in their scene, detached (the seed's attach / detach).
    pub online: bool,
    /// The scene tick this state was taken at.
    pub tick: u64,
    /// The game's persistent components of the PC (absent in older exports).
    #[serde(default)]
    pub game: Vec<GameField>,
}

/// The saved state of one keyed object of a scene (a game's door, node,
/// boss): stored under `(scene, key)`. An empty `game` erases it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObjectState {
    pub key: u64,
    /// The scene tick this state was taken at.
    pub tick: u64,
    pub game: Vec<GameField>,
}

/// All PC states and changed objects one scene hands over in one flush.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SaveBatch {
    pub scene: SceneId,
    pub states: Vec<PcState>,
    pub objects: Vec<ObjectState>,
}

/// What one `save_batch` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaveReport {
    /// States written.
    pub written: usize,
    /// States refused: the avatar does not exist, is not in this scene, its `scene` field
    /// disagrees with the batch, its position or heading is not finite, or its game fields
    /// are over [`crate::validate::MAX_GAME_BYTES`]; objects refused for their size.
    pub refused: usize,
    /// Objects written (erasures included).
    pub objects: usize,
}

/// Row counts and file size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    pub accounts: u64,
    pub avatars: u64,
    pub scenes: u64,
    pub pc_states: u64,
    pub file_bytes: u64,
}
