//! Export to and import from a stream of [`ExportRecord`]s (the CLI writes them as JSON
//! lines). An export is one read transaction, so it is a consistent snapshot; an import is
//! one write transaction into an empty database, so it lands whole or not at all, and
//! rebuilds every index from the records.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::accounts::put_account;
use crate::avatars::insert_avatar;
use crate::error::*;
use crate::scenes::insert_scene;
use crate::schema::{self, *};
use crate::store::{Store, bump_counter};
use crate::types::{Account, Avatar, AvatarStatus, ObjectState, PcState, Scene, SceneId, Stats};
use crate::validate;

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExportRecord {
    /// Always first.
    Header {
        schema_version: u16,
        next_account: u64,
        next_avatar: u64,
        next_scene: u64,
    },
    Scene(Scene),
    Account(Account),
    Avatar(Avatar),
    PcState(PcState),
    /// A scene's saved object (a game's keyed scene entity).
    SceneObject {
        scene: SceneId,
        object: ObjectState,
    },
}

/// Exporting failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError<E: std::error::Error + 'static> {
    #[error("writing the export")]
    Sink(#[source] E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E: std::error::Error + 'static> From<redb::TransactionError> for ExportError<E> {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::from(redb::Error::from(e)).into()
    }
}
impl<E: std::error::Error + 'static> From<redb::TableError> for ExportError<E> {
    fn from(e: redb::TableError) -> Self {
        StoreError::from(redb::Error::from(e)).into()
    }
}
impl<E: std::error::Error + 'static> From<redb::StorageError> for ExportError<E> {
    fn from(e: redb::StorageError) -> Self {
        StoreError::from(redb::Error::from(e)).into()
    }
}

impl Store {
    /// Hands every record to `sink`: the header, scenes, accounts, avatars, PC states, each
    /// by id. Returns how many records were written.
    pub fn export<E: std::error::Error + 'static>(
        &self,
        mut sink: impl FnMut(&ExportRecord) -> Result<(), E>,
    ) -> Result<u64, ExportError<E>> {
        let read = self.db.begin_read()?;
        let meta = read.open_table(META)?;
        let counter = |key, first| -> Result<u64, redb::StorageError> {
            Ok(meta.get(key)?.map_or(first, |g| g.value()))
        };
        let mut n = 1;
        sink(&ExportRecord::Header {
            schema_version: SCHEMA_VERSION,
            next_account: counter(META_NEXT_ACCOUNT, FIRST_ACCOUNT_ID)?,
            next_avatar: counter(META_NEXT_AVATAR, FIRST_AVATAR_ID)?,
            next_scene: counter(META_NEXT_SCENE, FIRST_SCENE_ID)?,
        })
        .map_err(ExportError::Sink)?;
        for row in read.open_table(SCENES)?.iter()? {
            let scene = schema::decode_scene(row?.1.value())?;
            sink(&ExportRecord::Scene(scene)).map_err(ExportError::Sink)?;
            n += 1;
        }
        for row in read.open_table(ACCOUNTS)?.iter()? {
            let account = schema::decode_account(row?.1.value())?;
            sink(&ExportRecord::Account(account)).map_err(ExportError::Sink)?;
            n += 1;
        }
        let avatar_scene = read.open_table(AVATAR_SCENE)?;
        for row in read.open_table(AVATARS)?.iter()? {
            let r = schema::decode_avatar(row?.1.value())?;
            let scene = avatar_scene.get(r.id)?.map_or(NO_SCENE, |g| g.value());
            sink(&ExportRecord::Avatar(Avatar {
                id: r.id,
                account: r.account,
                name: r.name,
                figure: r.figure,
                scene,
                status: r.status,
                created_ms: r.created_ms,
            }))
            .map_err(ExportError::Sink)?;
            n += 1;
        }
        for row in read.open_table(PC_STATES)?.iter()? {
            let (k, v) = row?;
            let (scene, avatar) = k.value();
            let state = schema::decode_pc(v.value())?.into_state(scene, avatar);
            sink(&ExportRecord::PcState(state)).map_err(ExportError::Sink)?;
            n += 1;
        }
        for row in read.open_table(SCENE_OBJECTS)?.iter()? {
            let (k, v) = row?;
            let (scene, key) = k.value();
            let object = schema::decode_object(v.value())?.into_state(key);
            sink(&ExportRecord::SceneObject { scene, object }).map_err(ExportError::Sink)?;
            n += 1;
        }
        Ok(n)
    }

    /// Starts an import into this database, which must be empty.
    pub fn begin_import(&self) -> Result<Importer, ImportError> {
        if let Some(reason) = self.empty_reason()? {
            return Err(ImportError::NotEmpty(reason));
        }
        Ok(Importer {
            txn: self.write_txn()?,
            header: false,
            stats: Stats::default(),
        })
    }
}

/// An import in progress: [`Importer::push`] each record in export order, then
/// [`Importer::finish`]. Dropping it without finishing imports nothing.
pub struct Importer {
    txn: WriteTransaction,
    header: bool,
    stats: Stats,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("stats", &self.stats)
            .finish()
    }
}

fn invalid(e: impl std::fmt::Display) -> ImportError {
    ImportError::Invalid(e.to_string())
}

impl Importer {
    /// Adds one record, checking it as the live operations would (names, uniqueness,
    /// references to records already imported).
    pub fn push(&mut self, record: ExportRecord) -> Result<(), ImportError> {
        let txn = &self.txn;
        if !self.header && !matches!(record, ExportRecord::Header { .. }) {
            return Err(ImportError::MissingHeader);
        }
        match record {
            ExportRecord::Header {
                schema_version,
                next_account,
                next_avatar,
                next_scene,
            } => {
                if self.header {
                    return Err(invalid("a second header"));
                }
                if schema_version > SCHEMA_VERSION {
                    return Err(ImportError::NewerSchema {
                        found: schema_version,
                        supported: SCHEMA_VERSION,
                    });
                }
                let mut meta = txn.open_table(META)?;
                meta.insert(META_NEXT_ACCOUNT, next_account)?;
                meta.insert(META_NEXT_AVATAR, next_avatar)?;
                meta.insert(META_NEXT_SCENE, next_scene)?;
                self.header = true;
            }
            ExportRecord::Scene(scene) => {
                if scene.id < FIRST_SCENE_ID || txn.open_table(SCENES)?.get(scene.id)?.is_some() {
                    return Err(invalid(format!(
                        "scene id {} invalid or repeated",
                        scene.id
                    )));
                }
                insert_scene(txn, &scene).map_err(|e| invalid(error_chain(&e)))?;
                bump_counter(
                    &mut txn.open_table(META)?,
                    META_NEXT_SCENE,
                    FIRST_SCENE_ID,
                    scene.id,
                )?;
                self.stats.scenes += 1;
            }
            ExportRecord::Account(account) => {
                let email = validate::normalize_email(&account.email)
                    .map_err(|e| invalid(error_chain(&e)))?;
                if email != account.email {
                    return Err(invalid(format!(
                        "account {}: email not normalised",
                        account.id
                    )));
                }
                if account.history.len() > LOGIN_HISTORY_LEN {
                    return Err(invalid(format!("account {}: history too long", account.id)));
                }
                let mut accounts = txn.open_table(ACCOUNTS)?;
                let mut emails = txn.open_table(EMAIL_INDEX)?;
                if account.id < FIRST_ACCOUNT_ID || accounts.get(account.id)?.is_some() {
                    return Err(invalid(format!(
                        "account id {} invalid or repeated",
                        account.id
                    )));
                }
                if emails.get(email.as_str())?.is_some() {
                    return Err(invalid(format!("duplicate email {email}")));
                }
                put_account(&mut accounts, &account)?;
                emails.insert(email.as_str(), account.id)?;
                bump_counter(
                    &mut txn.open_table(META)?,
                    META_NEXT_ACCOUNT,
                    FIRST_ACCOUNT_ID,
                    account.id,
                )?;
                self.stats.accounts += 1;
            }
            ExportRecord::Avatar(avatar) => {
                if txn.open_table(ACCOUNTS)?.get(avatar.account)?.is_none() {
                    return Err(invalid(format!(
                        "avatar {}: no account {}",
                        avatar.id, avatar.account
                    )));
                }
                if avatar.id < FIRST_AVATAR_ID || txn.open_table(AVATARS)?.get(avatar.id)?.is_some()
                {
                    return Err(invalid(format!(
                        "avatar id {} invalid or repeated",
                        avatar.id
                    )));
                }
                if avatar.status == AvatarStatus::Deleted && avatar.scene != NO_SCENE {
                    return Err(invalid(format!(
                        "deleted avatar {} is in a scene",
                        avatar.id
                    )));
                }
                insert_avatar(txn, &avatar).map_err(|e| invalid(error_chain(&e)))?;
                bump_counter(
                    &mut txn.open_table(META)?,
                    META_NEXT_AVATAR,
                    FIRST_AVATAR_ID,
                    avatar.id,
                )?;
                self.stats.avatars += 1;
            }
            ExportRecord::PcState(state) => {
                let in_scene = txn
                    .open_table(AVATAR_SCENE)?
                    .get(state.avatar)?
                    .map(|g| g.value());
                if in_scene != Some(state.scene) || state.scene == NO_SCENE {
                    return Err(invalid(format!(
                        "pc state of avatar {} in scene {}: the avatar is not in that scene",
                        state.avatar, state.scene
                    )));
                }
                if !state.position.iter().all(|c| c.is_finite()) || !state.heading.is_finite() {
                    return Err(invalid(format!(
                        "pc state of avatar {}: not finite",
                        state.avatar
                    )));
                }
                let mut pcs = txn.open_table(PC_STATES)?;
                let record = PcRecord::from_state(&state);
                if pcs
                    .insert(
                        (state.scene, state.avatar),
                        schema::encode(&record)?.as_slice(),
                    )?
                    .is_some()
                {
                    return Err(invalid(format!(
                        "pc state of avatar {} repeated",
                        state.avatar
                    )));
                }
                self.stats.pc_states += 1;
            }
            ExportRecord::SceneObject { scene, object } => {
                if txn.open_table(SCENES)?.get(scene)?.is_none() {
                    return Err(invalid(format!(
                        "object {} of scene {scene}: no such scene",
                        object.key
                    )));
                }
                if object.game.is_empty() || !validate::game_fits(&object.game) {
                    return Err(invalid(format!(
                        "object {} of scene {scene}: empty or too large",
                        object.key
                    )));
                }
                let record = ObjectRecord {
                    tick: object.tick,
                    game: object.game,
                };
                if txn
                    .open_table(SCENE_OBJECTS)?
                    .insert((scene, object.key), schema::encode(&record)?.as_slice())?
                    .is_some()
                {
                    return Err(invalid(format!(
                        "object {} of scene {scene} repeated",
                        object.key
                    )));
                }
            }
        }
        Ok(())
    }

    /// Commits the import; returns what it held (file size not included).
    pub fn finish(self) -> Result<Stats, ImportError> {
        if !self.header {
            return Err(ImportError::MissingHeader);
        }
        self.txn.commit()?;
        Ok(self.stats)
    }
}
