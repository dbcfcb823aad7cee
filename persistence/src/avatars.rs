//! Avatars: create (name rules, unique regardless of case), list per account, soft delete,
//! current scene.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::accounts::get_account;
use crate::error::*;
use crate::scenes::write_states;
use crate::schema::{self, *};
use crate::store::{Store, next_id, now_ms};
use crate::types::{
    AccountId, AccountStatus, Avatar, AvatarId, AvatarStatus, PcState, SaveBatch, SceneId,
};
use crate::validate;

/// What a new avatar is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAvatar {
    pub name: String,
    pub figure: String,
    /// The scene it starts in.
    pub scene: SceneId,
}

fn avatar_from(record: AvatarRecord, scene: SceneId) -> Avatar {
    Avatar {
        id: record.id,
        account: record.account,
        name: record.name,
        figure: record.figure,
        scene,
        status: record.status,
        created_ms: record.created_ms,
    }
}

fn avatar_record(
    avatars: &impl ReadableTable<u64, &'static [u8]>,
    id: AvatarId,
) -> Result<AvatarRecord, AvatarUpdateError> {
    let guard = avatars
        .get(id)?
        .ok_or(AvatarUpdateError::UnknownAvatar(id))?;
    Ok(schema::decode_avatar(guard.value())?)
}

/// Inserts one avatar with all its index rows. Used by creation and import.
pub(crate) fn insert_avatar(
    txn: &WriteTransaction,
    avatar: &Avatar,
) -> Result<(), CreateAvatarError> {
    validate::check_avatar_name(&avatar.name).map_err(CreateAvatarError::InvalidName)?;
    validate::check_figure(&avatar.figure).map_err(CreateAvatarError::InvalidFigure)?;
    let key = validate::avatar_name_key(&avatar.name);
    let mut names = txn.open_table(AVATAR_NAMES)?;
    if names.get(key.as_str())?.is_some() {
        return Err(CreateAvatarError::DuplicateName {
            name: avatar.name.clone(),
        });
    }
    let in_scene = avatar.status == AvatarStatus::Open;
    if in_scene && txn.open_table(SCENES)?.get(avatar.scene)?.is_none() {
        return Err(CreateAvatarError::UnknownScene(avatar.scene));
    }
    let record = AvatarRecord {
        id: avatar.id,
        account: avatar.account,
        name: avatar.name.clone(),
        figure: avatar.figure.clone(),
        status: avatar.status,
        created_ms: avatar.created_ms,
    };
    txn.open_table(AVATARS)?
        .insert(avatar.id, schema::encode(&record)?.as_slice())?;
    names.insert(key.as_str(), avatar.id)?;
    txn.open_table(ACCOUNT_AVATARS)?
        .insert((avatar.account, avatar.id), ())?;
    txn.open_table(AVATAR_SCENE)?
        .insert(avatar.id, if in_scene { avatar.scene } else { NO_SCENE })?;
    Ok(())
}

impl Store {
    /// Creates an avatar for an open account, at most
    /// [`validate::MAX_AVATARS_PER_ACCOUNT`] live avatars per account.
    pub fn create_avatar(
        &self,
        account: AccountId,
        new: &NewAvatar,
    ) -> Result<AvatarId, CreateAvatarError> {
        let mut ids = self.create_avatars(account, std::slice::from_ref(new), true)?;
        ids.pop()
            .ok_or_else(|| StoreError::corrupt("avatars", "no avatar was created").into())
    }

    /// Creates many avatars for one account in one transaction, without the per-account
    /// limit: for operators, bots and benches. All or nothing.
    pub fn provision_avatars(
        &self,
        account: AccountId,
        new: &[NewAvatar],
    ) -> Result<Vec<AvatarId>, CreateAvatarError> {
        self.create_avatars(account, new, false)
    }

    fn create_avatars(
        &self,
        account: AccountId,
        new: &[NewAvatar],
        limit: bool,
    ) -> Result<Vec<AvatarId>, CreateAvatarError> {
        let txn = self.write_txn()?;
        let owner = get_account(&txn.open_table(ACCOUNTS)?, account)?
            .ok_or(CreateAvatarError::UnknownAccount(account))?;
        if owner.status != AccountStatus::Open {
            return Err(CreateAvatarError::AccountNotOpen(account));
        }
        if limit {
            let live = self.live_avatar_count(&txn, account)?;
            if live + new.len() > validate::MAX_AVATARS_PER_ACCOUNT {
                return Err(CreateAvatarError::TooManyAvatars {
                    account,
                    max: validate::MAX_AVATARS_PER_ACCOUNT,
                });
            }
        }
        let now = now_ms();
        let mut ids = Vec::with_capacity(new.len());
        for n in new {
            let id = next_id(
                &mut txn.open_table(META)?,
                META_NEXT_AVATAR,
                FIRST_AVATAR_ID,
            )?;
            insert_avatar(
                &txn,
                &Avatar {
                    id,
                    account,
                    name: n.name.clone(),
                    figure: n.figure.clone(),
                    scene: n.scene,
                    status: AvatarStatus::Open,
                    created_ms: now,
                },
            )?;
            ids.push(id);
        }
        txn.commit()?;
        Ok(ids)
    }

    fn live_avatar_count(
        &self,
        txn: &WriteTransaction,
        account: AccountId,
    ) -> Result<usize, StoreError> {
        let links = txn.open_table(ACCOUNT_AVATARS)?;
        let avatars = txn.open_table(AVATARS)?;
        let mut n = 0;
        for row in links.range((account, 0)..=(account, u64::MAX))? {
            let (k, _) = row?;
            if let Some(g) = avatars.get(k.value().1)?
                && schema::decode_avatar(g.value())?.status == AvatarStatus::Open
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// One avatar.
    pub fn avatar(&self, id: AvatarId) -> Result<Option<Avatar>, StoreError> {
        let read = self.db.begin_read()?;
        let Some(g) = read.open_table(AVATARS)?.get(id)? else {
            return Ok(None);
        };
        let scene = read
            .open_table(AVATAR_SCENE)?
            .get(id)?
            .map_or(NO_SCENE, |g| g.value());
        Ok(Some(avatar_from(schema::decode_avatar(g.value())?, scene)))
    }

    /// The live avatar with this name (in any letter case).
    pub fn avatar_by_name(&self, name: &str) -> Result<Option<Avatar>, StoreError> {
        let key = validate::avatar_name_key(name);
        let id = {
            let read = self.db.begin_read()?;
            let names = read.open_table(AVATAR_NAMES)?;
            names.get(key.as_str())?.map(|g| g.value())
        };
        match id {
            Some(id) => Ok(self
                .avatar(id)?
                .filter(|a| a.status != AvatarStatus::Deleted)),
            None => Ok(None),
        }
    }

    /// All avatars of an account, deleted ones included (check `status`), by id.
    pub fn list_avatars(&self, account: AccountId) -> Result<Vec<Avatar>, StoreError> {
        let read = self.db.begin_read()?;
        let links = read.open_table(ACCOUNT_AVATARS)?;
        let avatars = read.open_table(AVATARS)?;
        let scenes = read.open_table(AVATAR_SCENE)?;
        let mut out = Vec::new();
        for row in links.range((account, 0)..=(account, u64::MAX))? {
            let (k, _) = row?;
            let id = k.value().1;
            let g = avatars.get(id)?.ok_or_else(|| {
                StoreError::corrupt("account_avatars", format!("avatar {id} missing"))
            })?;
            let scene = scenes.get(id)?.map_or(NO_SCENE, |g| g.value());
            out.push(avatar_from(schema::decode_avatar(g.value())?, scene));
        }
        Ok(out)
    }

    /// Soft-deletes an avatar: it keeps its record and name, leaves its scene, and its PC
    /// state there is removed.
    pub fn delete_avatar(&self, id: AvatarId) -> Result<(), AvatarUpdateError> {
        let txn = self.write_txn()?;
        {
            let mut avatars = txn.open_table(AVATARS)?;
            let mut record = avatar_record(&avatars, id)?;
            if record.status == AvatarStatus::Deleted {
                return Ok(());
            }
            record.status = AvatarStatus::Deleted;
            avatars.insert(id, schema::encode(&record)?.as_slice())?;
            let mut scenes = txn.open_table(AVATAR_SCENE)?;
            let old = scenes.insert(id, NO_SCENE)?.map(|g| g.value());
            if let Some(old) = old {
                txn.open_table(PC_STATES)?.remove((old, id))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Moves an avatar to another scene (a transfer). Its PC state in the old scene is
    /// removed; the new scene places it on attach. Moving to the scene it is in does nothing.
    pub fn set_avatar_scene(&self, id: AvatarId, scene: SceneId) -> Result<(), AvatarUpdateError> {
        self.move_avatar(id, scene, None)
    }

    /// [`Store::set_avatar_scene`] and, if given, the state the avatar
    /// arrives with in `scene`, in one durable transaction: a crash leaves
    /// the avatar either where it was, with its state there, or in `scene`
    /// with `arrival`, never in one scene with the other's state. An arrival
    /// state that is not finite or names another scene is refused and the
    /// move is not made.
    pub fn move_avatar(
        &self,
        id: AvatarId,
        scene: SceneId,
        arrival: Option<&PcState>,
    ) -> Result<(), AvatarUpdateError> {
        let txn = self.write_txn()?;
        {
            let avatars = txn.open_table(AVATARS)?;
            let record = avatar_record(&avatars, id)?;
            if record.status == AvatarStatus::Deleted {
                return Err(AvatarUpdateError::Deleted(id));
            }
            if txn.open_table(SCENES)?.get(scene)?.is_none() {
                return Err(AvatarUpdateError::UnknownScene(scene));
            }
            let old = txn
                .open_table(AVATAR_SCENE)?
                .insert(id, scene)?
                .map(|g| g.value());
            if let Some(old) = old
                && old != scene
            {
                txn.open_table(PC_STATES)?.remove((old, id))?;
            }
        }
        if let Some(state) = arrival {
            let batch = SaveBatch {
                scene,
                states: vec![PcState {
                    avatar: id,
                    ..state.clone()
                }],
                objects: Vec::new(),
            };
            let saved = write_states(&txn, &batch).map_err(|e| match e {
                SaveError::UnknownScene(s) => AvatarUpdateError::UnknownScene(s),
                SaveError::Store(e) => AvatarUpdateError::Store(e),
            })?;
            if saved.refused > 0 {
                // Dropping the transaction aborts it: the move is not made either.
                return Err(AvatarUpdateError::BadState(id));
            }
        }
        txn.commit()?;
        Ok(())
    }
}
