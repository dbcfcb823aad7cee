//! [`Store`]: opening, schema checks and migration, counters, stats, integrity check.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableHandle, WriteTransaction,
};

use crate::error::{OpenError, StoreError};
use crate::password::PasswordHasher;
use crate::schema::{self, *};
use crate::types::{AccountStatus, AvatarStatus, Stats};
use crate::validate;

/// Cache redb may use; the rest of the machine belongs to the scenes.
const CACHE_BYTES: usize = 256 * 1024 * 1024;

/// The data service's database: one redb file.
///
/// All methods take `&self` except [`Store::check`]; share a `Store` between threads with an
/// `Arc`. Writes are serialised by redb (one write transaction at a time) and every commit is
/// durable (`Durability::Immediate`) with quick repair on.
#[derive(Debug)]
pub struct Store {
    pub(crate) db: Database,
    path: PathBuf,
    pub(crate) hasher: Arc<PasswordHasher>,
    repaired: bool,
    migrated_from: Option<u64>,
    /// A hash to verify against when the email is unknown, so "unknown email" and "wrong
    /// password" take the same time.
    pub(crate) dummy_hash: OnceLock<String>,
}

/// The guard of [`Store::hold_writes`]: dropping it aborts its empty
/// transaction and lets writes go on.
pub struct WriteHold(#[allow(dead_code)] WriteTransaction);

impl std::fmt::Debug for WriteHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteHold")
    }
}

/// The result of [`Store::check`]: empty `problems` means sound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub problems: Vec<String>,
    pub records: u64,
}

impl CheckReport {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, p: String) {
        const MAX: usize = 100;
        if self.problems.len() < MAX {
            self.problems.push(p);
        } else if self.problems.len() == MAX {
            self.problems.push("… more problems not listed".to_string());
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Takes the next id from a `meta` counter.
pub(crate) fn next_id(
    meta: &mut Table<&str, u64>,
    key: &'static str,
    first: u64,
) -> Result<u64, StoreError> {
    let id = meta.get(key)?.map_or(first, |g| g.value());
    let next = id.checked_add(1).ok_or(StoreError::IdsExhausted(key))?;
    meta.insert(key, next)?;
    Ok(id)
}

/// Raises a `meta` counter past `id` (import).
pub(crate) fn bump_counter(
    meta: &mut Table<&str, u64>,
    key: &'static str,
    first: u64,
    id: u64,
) -> Result<(), StoreError> {
    let next = meta.get(key)?.map_or(first, |g| g.value());
    if id >= next {
        let raised = id.checked_add(1).ok_or(StoreError::IdsExhausted(key))?;
        meta.insert(key, raised)?;
    }
    Ok(())
}

fn map_open_error(path: &Path, e: DatabaseError) -> OpenError {
    let path = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen => OpenError::AlreadyOpen { path },
        DatabaseError::UpgradeRequired(v) => OpenError::NotADatabase {
            path,
            reason: format!("redb file format {v} needs an upgrade this build cannot do"),
        },
        DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            OpenError::NotADatabase { path, reason }
        }
        DatabaseError::Storage(redb::StorageError::Io(source)) => {
            if source.kind() == std::io::ErrorKind::InvalidData
                || source.kind() == std::io::ErrorKind::UnexpectedEof
            {
                OpenError::NotADatabase {
                    path,
                    reason: source.to_string(),
                }
            } else {
                OpenError::Io { path, source }
            }
        }
        other => OpenError::Store(StoreError::Db(other.into())),
    }
}

impl Store {
    /// Opens the database at `path`, creating it if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path.as_ref(), true, Arc::new(PasswordHasher::default()))
    }

    /// Opens an existing database; a missing file is [`OpenError::NotFound`].
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path.as_ref(), false, Arc::new(PasswordHasher::default()))
    }

    /// Opens with a given password hasher (to share one cap between stores, or set the cap).
    pub fn open_with(
        path: &Path,
        create: bool,
        hasher: Arc<PasswordHasher>,
    ) -> Result<Self, OpenError> {
        let exists = path.exists();
        if !exists && !create {
            return Err(OpenError::NotFound {
                path: path.to_path_buf(),
            });
        }
        if exists && path.is_dir() {
            return Err(OpenError::NotADatabase {
                path: path.to_path_buf(),
                reason: "it is a directory".to_string(),
            });
        }
        let repaired = Arc::new(AtomicBool::new(false));
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        let flag = Arc::clone(&repaired);
        builder.set_repair_callback(move |session| {
            if !flag.swap(true, Ordering::Relaxed) {
                tracing::warn!("database was not closed cleanly; repairing");
            }
            tracing::debug!(progress = session.progress(), "repairing");
        });
        // `create` opens an existing database too, and initialises an empty file.
        let db = if create {
            builder.create(path)
        } else {
            builder.open(path)
        }
        .map_err(|e| map_open_error(path, e))?;

        let mut store = Self {
            db,
            path: path.to_path_buf(),
            hasher,
            repaired: repaired.load(Ordering::Relaxed),
            migrated_from: None,
            dummy_hash: OnceLock::new(),
        };
        store.migrated_from = store.prepare_schema()?;
        Ok(store)
    }

    /// Checks the schema version, initialises a new database, migrates an old one.
    /// Returns the version migrated from, if any.
    fn prepare_schema(&self) -> Result<Option<u64>, OpenError> {
        let path = self.path.clone();
        let read = self.db.begin_read().map_err(StoreError::from)?;
        let tables: Vec<String> = read
            .list_tables()
            .map_err(StoreError::from)?
            .map(|t| t.name().to_string())
            .collect();
        let version = if tables.iter().any(|t| t == META.name()) {
            let meta = read.open_table(META).map_err(StoreError::from)?;
            let v = meta
                .get(META_SCHEMA_VERSION)
                .map_err(StoreError::from)?
                .map(|g| g.value());
            match v {
                Some(v) => Some(v),
                None => {
                    return Err(OpenError::NotADatabase {
                        path,
                        reason: "no schema version in `meta`".to_string(),
                    });
                }
            }
        } else if tables.is_empty() {
            None
        } else {
            return Err(OpenError::NotADatabase {
                path,
                reason: format!("a redb database with foreign tables {tables:?}"),
            });
        };
        drop(read);

        if let Some(found) = version
            && found > u64::from(SCHEMA_VERSION)
        {
            return Err(OpenError::NewerSchema {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if version == Some(u64::from(SCHEMA_VERSION)) {
            return Ok(None);
        }
        let txn = self.write_txn()?;
        create_tables(&txn)?;
        match version {
            None => {
                let mut meta = txn.open_table(META).map_err(StoreError::from)?;
                meta.insert(META_SCHEMA_VERSION, u64::from(SCHEMA_VERSION))
                    .map_err(StoreError::from)?;
            }
            Some(from) => {
                tracing::info!(from, to = SCHEMA_VERSION, "migrating database schema");
                crate::migrate::migrate(&txn, from).map_err(|source| OpenError::Migration {
                    path: path.clone(),
                    from,
                    source,
                })?;
            }
        }
        txn.commit().map_err(StoreError::from)?;
        Ok(version)
    }

    /// A durable write transaction with quick repair on.
    pub(crate) fn write_txn(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        Ok(txn)
    }

    /// Holds the database's one write transaction until the returned guard
    /// drops (nothing is written): meanwhile every other write, and every
    /// writer commit, waits. What a stuck disk does to callers, on demand:
    /// for tests and drills, never for serving.
    pub fn hold_writes(&self) -> Result<WriteHold, StoreError> {
        Ok(WriteHold(self.db.begin_write()?))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether opening had to repair the file (it was not closed cleanly and the last commit
    /// did not record its allocator state). With quick repair on this should stay false.
    pub fn was_repaired(&self) -> bool {
        self.repaired
    }

    /// The schema version this open migrated from, if it migrated.
    pub fn migrated_from(&self) -> Option<u64> {
        self.migrated_from
    }

    pub fn hasher(&self) -> &Arc<PasswordHasher> {
        &self.hasher
    }

    /// Row counts and the file size.
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let read = self.db.begin_read()?;
        let file_bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        Ok(Stats {
            accounts: read.open_table(ACCOUNTS)?.len()?,
            avatars: read.open_table(AVATARS)?.len()?,
            scenes: read.open_table(SCENES)?.len()?,
            pc_states: read.open_table(PC_STATES)?.len()?,
            file_bytes,
        })
    }

    /// Checks the file (redb's checksums and tree structure) and then every record and
    /// index: records decode, ids match keys, every index entry points at a record that
    /// agrees with it and every record has its index entries, every PC state belongs to an
    /// existing avatar that is in that scene, counters are past every id.
    pub fn check(&mut self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        match self.db.check_integrity() {
            Ok(true) => {}
            Ok(false) => {
                report.problem("redb integrity check failed (the file was repaired)".into())
            }
            Err(e) => report.problem(format!("redb integrity check: {e}")),
        }
        let read = self.db.begin_read()?;
        let meta = read.open_table(META)?;
        let counter = |key: &'static str, first: u64| -> Result<u64, StoreError> {
            Ok(meta.get(key)?.map_or(first, |g| g.value()))
        };
        match meta.get(META_SCHEMA_VERSION)?.map(|g| g.value()) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            other => report.problem(format!(
                "schema version {other:?}, expected {SCHEMA_VERSION}"
            )),
        }
        let next_account = counter(META_NEXT_ACCOUNT, FIRST_ACCOUNT_ID)?;
        let next_avatar = counter(META_NEXT_AVATAR, FIRST_AVATAR_ID)?;
        let next_scene = counter(META_NEXT_SCENE, FIRST_SCENE_ID)?;

        let accounts = read.open_table(ACCOUNTS)?;
        let emails = read.open_table(EMAIL_INDEX)?;
        let avatars = read.open_table(AVATARS)?;
        let avatar_scene = read.open_table(AVATAR_SCENE)?;
        let account_avatars = read.open_table(ACCOUNT_AVATARS)?;
        let names = read.open_table(AVATAR_NAMES)?;
        let scenes = read.open_table(SCENES)?;
        let scene_names = read.open_table(SCENE_NAMES)?;
        let pcs = read.open_table(PC_STATES)?;

        for row in accounts.iter()? {
            let (k, v) = row?;
            report.records += 1;
            let id = k.value();
            let a = match schema::decode_account(v.value()) {
                Ok(a) => a,
                Err(e) => {
                    report.problem(format!("account {id}: {e}"));
                    continue;
                }
            };
            if a.id != id {
                report.problem(format!("account {id}: record says id {}", a.id));
            }
            if id >= next_account {
                report.problem(format!("account {id}: not below counter {next_account}"));
            }
            if validate::normalize_email(&a.email).as_deref() != Ok(a.email.as_str()) {
                report.problem(format!(
                    "account {id}: email {:?} is not normalised",
                    a.email
                ));
            }
            if emails.get(a.email.as_str())?.map(|g| g.value()) != Some(id) {
                report.problem(format!("account {id}: email index does not point at it"));
            }
            if a.history.len() > LOGIN_HISTORY_LEN {
                report.problem(format!(
                    "account {id}: login history longer than {LOGIN_HISTORY_LEN}"
                ));
            }
        }
        for row in emails.iter()? {
            let (k, v) = row?;
            let owner = accounts
                .get(v.value())?
                .map(|g| schema::decode_account(g.value()));
            match owner {
                Some(Ok(a)) if a.email == k.value() => {}
                _ => report.problem(format!(
                    "email index {:?}: account {} does not have it",
                    k.value(),
                    v.value()
                )),
            }
        }
        for row in scenes.iter()? {
            let (k, v) = row?;
            report.records += 1;
            let id = k.value();
            match schema::decode_scene(v.value()) {
                Ok(s) => {
                    if s.id != id {
                        report.problem(format!("scene {id}: record says id {}", s.id));
                    }
                    if id >= next_scene {
                        report.problem(format!("scene {id}: not below counter {next_scene}"));
                    }
                    if scene_names.get(s.name.as_str())?.map(|g| g.value()) != Some(id) {
                        report.problem(format!("scene {id}: name index does not point at it"));
                    }
                }
                Err(e) => report.problem(format!("scene {id}: {e}")),
            }
        }
        for row in scene_names.iter()? {
            let (k, v) = row?;
            let ok = scenes
                .get(v.value())?
                .map(|g| schema::decode_scene(g.value()))
                .is_some_and(|s| s.is_ok_and(|s| s.name == k.value()));
            if !ok {
                report.problem(format!(
                    "scene name {:?}: scene {} does not have it",
                    k.value(),
                    v.value()
                ));
            }
        }
        for row in avatars.iter()? {
            let (k, v) = row?;
            report.records += 1;
            let id = k.value();
            let a = match schema::decode_avatar(v.value()) {
                Ok(a) => a,
                Err(e) => {
                    report.problem(format!("avatar {id}: {e}"));
                    continue;
                }
            };
            if a.id != id {
                report.problem(format!("avatar {id}: record says id {}", a.id));
            }
            if id >= next_avatar {
                report.problem(format!("avatar {id}: not below counter {next_avatar}"));
            }
            if accounts.get(a.account)?.is_none() {
                report.problem(format!("avatar {id}: account {} does not exist", a.account));
            }
            if account_avatars.get((a.account, id))?.is_none() {
                report.problem(format!(
                    "avatar {id}: missing from account {}'s list",
                    a.account
                ));
            }
            if names
                .get(validate::avatar_name_key(&a.name).as_str())?
                .map(|g| g.value())
                != Some(id)
            {
                report.problem(format!("avatar {id}: name index does not point at it"));
            }
            let scene = avatar_scene.get(id)?.map(|g| g.value());
            match (a.status, scene) {
                (AvatarStatus::Open, Some(s)) if scenes.get(s)?.is_some() => {}
                (AvatarStatus::Deleted, Some(NO_SCENE)) => {}
                (status, s) => report.problem(format!(
                    "avatar {id} ({status:?}): current scene {s:?} invalid"
                )),
            }
        }
        for row in avatar_scene.iter()? {
            let (k, _) = row?;
            if avatars.get(k.value())?.is_none() {
                report.problem(format!("avatar_scene {}: no such avatar", k.value()));
            }
        }
        for row in account_avatars.iter()? {
            let (k, _) = row?;
            let (account, avatar) = k.value();
            let ok = avatars
                .get(avatar)?
                .map(|g| schema::decode_avatar(g.value()))
                .is_some_and(|a| a.is_ok_and(|a| a.account == account));
            if !ok {
                report.problem(format!(
                    "account_avatars ({account}, {avatar}): avatar not of that account"
                ));
            }
        }
        for row in names.iter()? {
            let (k, v) = row?;
            let ok = avatars
                .get(v.value())?
                .map(|g| schema::decode_avatar(g.value()))
                .is_some_and(|a| a.is_ok_and(|a| validate::avatar_name_key(&a.name) == k.value()));
            if !ok {
                report.problem(format!(
                    "avatar name {:?}: avatar {} does not have it",
                    k.value(),
                    v.value()
                ));
            }
        }
        for row in pcs.iter()? {
            let (k, v) = row?;
            report.records += 1;
            let (scene, avatar) = k.value();
            match schema::decode_pc(v.value()) {
                Ok(pc) => {
                    if !pc.position.iter().all(|c| c.is_finite()) || !pc.heading.is_finite() {
                        report.problem(format!("pc state ({scene}, {avatar}): not finite"));
                    }
                }
                Err(e) => report.problem(format!("pc state ({scene}, {avatar}): {e}")),
            }
            if avatar_scene.get(avatar)?.map(|g| g.value()) != Some(scene) {
                report.problem(format!(
                    "pc state ({scene}, {avatar}): avatar is not in that scene"
                ));
            }
        }
        Ok(report)
    }

    /// Whether the database holds no accounts, avatars, scenes or PC states.
    pub(crate) fn empty_reason(&self) -> Result<Option<String>, StoreError> {
        let s = self.stats()?;
        Ok(
            (s.accounts + s.avatars + s.scenes + s.pc_states > 0).then(|| {
                format!(
                    "{} accounts, {} avatars, {} scenes, {} pc states",
                    s.accounts, s.avatars, s.scenes, s.pc_states
                )
            }),
        )
    }
}

/// Creates every table, so readers never meet a missing one.
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(ACCOUNTS)?;
    txn.open_table(EMAIL_INDEX)?;
    txn.open_table(AVATARS)?;
    txn.open_table(AVATAR_SCENE)?;
    txn.open_table(ACCOUNT_AVATARS)?;
    txn.open_table(AVATAR_NAMES)?;
    txn.open_table(SCENE_OBJECTS)?;
    txn.open_table(SCENES)?;
    txn.open_table(SCENE_NAMES)?;
    txn.open_table(PC_STATES)?;
    Ok(())
}

/// Whether an account may be changed.
pub(crate) fn is_deleted(status: AccountStatus) -> bool {
    status == AccountStatus::Deleted
}
