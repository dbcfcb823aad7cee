//! What a link's message needs from the data service, read (or written)
//! before the lock is taken for it.
//!
//! A link task handles its messages one at a time: for each, [`look_up`]
//! first does the message's redb work on the blocking pool — the account
//! behind a session being opened, the avatar being attached, the avatar
//! list (after a creation), the names a chat line needs — taking the lock
//! only for a moment to learn which account or avatar a session has. Then
//! the message is handled under the lock with what was found
//! ([`Core::looked`]). The link's messages stay in order (its task awaits
//! each), and no redb call runs under the lock.
//!
//! What was read may be a moment old by the time the lock is taken: each
//! handler checks again what it decides on (session ownership, the
//! directory), as it always did.

use std::sync::Arc;

use tessera_cluster::SessionId;
use tessera_persistence::{self as db, Store};
use tessera_sim::protocol::AvatarId;
use tessera_wire::{ChatTarget, LinkMsg};

use super::SharedCore;

/// What [`look_up`] found for the message being handled; each handler takes
/// its part.
#[derive(Debug, Default)]
pub(crate) struct Looked {
    /// `OpenSession`: whether the account may open a session, or why not.
    pub(super) account: Option<Result<(), String>>,
    /// `AttachAvatar`: the avatar, unless it is unknown or deleted.
    pub(super) avatar: Option<Option<KnownAvatar>>,
    /// `ListAvatars`, `CreateAvatar`: the account's avatars (after the
    /// creation), or why not. `None`: the session is not the link's.
    pub(super) avatars: Option<Result<Vec<db::Avatar>, String>>,
    /// `Chat`: the speaker's name, if the core did not know it.
    pub(super) speaker: Option<(AvatarId, String)>,
    /// `Chat` whisper: the target avatar (`None`: no such avatar).
    pub(super) whisper: Option<Option<AvatarId>>,
}

/// An avatar as the data service has it.
#[derive(Debug, Clone)]
pub(super) struct KnownAvatar {
    pub(super) account: u64,
    pub(super) scene: String,
    pub(super) name: String,
}

/// Reads what `msg`, from link `link`, needs; the lock is held only to
/// learn a session's account or avatar.
pub(crate) async fn look_up(
    core: &SharedCore,
    store: &Arc<Store>,
    link: u64,
    msg: &LinkMsg,
) -> Looked {
    let mut looked = Looked::default();
    match msg {
        LinkMsg::OpenSession { account, .. } => {
            let account = account.0;
            looked.account = Some(blocking(store, move |s| account_open(s, account)).await);
        }
        LinkMsg::AttachAvatar { avatar, .. } => {
            let avatar = *avatar;
            looked.avatar = Some(
                blocking(store, move |s| Ok(known_avatar(s, avatar)))
                    .await
                    .ok()
                    .flatten(),
            );
        }
        LinkMsg::ListAvatars { session } => {
            let account = core.lock().session_account_on(link, *session);
            if let Some(account) = account {
                looked.avatars = Some(blocking(store, move |s| list(s, account)).await);
            }
        }
        LinkMsg::CreateAvatar { session, name } => {
            let target = core.lock().creation_target(link, *session);
            looked.avatars = match target {
                None => None,
                Some(Err(reason)) => Some(Err(reason)),
                Some(Ok((account, scene))) => {
                    let new = db::NewAvatar {
                        name: name.clone(),
                        figure: "default".into(),
                        scene,
                    };
                    Some(
                        blocking(store, move |s| {
                            s.create_avatar(account, &new)
                                .map_err(|e| format!("cannot create avatar: {e}"))?;
                            list(s, account)
                        })
                        .await,
                    )
                }
            };
        }
        LinkMsg::Chat { session, to, .. } => {
            let speaker = core.lock().unnamed_speaker(link, *session);
            let whisper = match to {
                ChatTarget::Whisper(name) => Some(name.clone()),
                _ => None,
            };
            if speaker.is_some() || whisper.is_some() {
                let found = blocking(store, move |s| {
                    let speaker = speaker.map(|a| {
                        let name = s.avatar(a).ok().flatten().map(|a| a.name);
                        (a, name.unwrap_or_else(|| format!("#{a}")))
                    });
                    let whisper =
                        whisper.map(|n| s.avatar_by_name(&n).ok().flatten().map(|a| a.id));
                    Ok((speaker, whisper))
                })
                .await;
                if let Ok((speaker, whisper)) = found {
                    looked.speaker = speaker;
                    looked.whisper = whisper;
                }
            }
        }
        _ => {}
    }
    looked
}

/// Runs `f` over the store on the blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| Err(format!("data service: {e}")))
}

/// `Ok` if the data service has `account`, open; else why not.
fn account_open(store: &Store, account: u64) -> Result<(), String> {
    match store.account(account) {
        Ok(Some(a)) if a.status == db::AccountStatus::Open => Ok(()),
        Ok(Some(_)) => Err(format!("account {account} is locked or deleted")),
        Ok(None) => Err(format!("no account {account}")),
        Err(e) => Err(format!("data service: {e}")),
    }
}

/// The avatar with its scene's name, unless it is unknown or deleted.
fn known_avatar(store: &Store, avatar: AvatarId) -> Option<KnownAvatar> {
    let a = store.avatar(avatar).ok().flatten()?;
    let scene = store.scene(a.scene).ok().flatten()?;
    (a.status != db::AvatarStatus::Deleted).then_some(KnownAvatar {
        account: a.account,
        scene: scene.name,
        name: a.name,
    })
}

/// The account's avatars.
fn list(store: &Store, account: u64) -> Result<Vec<db::Avatar>, String> {
    store
        .list_avatars(account)
        .map_err(|e| format!("data service: {e}"))
}

impl super::Core {
    /// The account of `session`, if link `link` opened it.
    fn session_account_on(&self, link: u64, session: SessionId) -> Option<u64> {
        if self.sessions.get(&session) != Some(&link) {
            return None;
        }
        self.session_account(session).map(|a| a.0)
    }

    /// Where a new avatar of `session`'s account starts: its account and
    /// the start scene (or the first scene). `None` if link `link` did not
    /// open the session.
    fn creation_target(
        &self,
        link: u64,
        session: SessionId,
    ) -> Option<Result<(u64, db::SceneId), String>> {
        let account = self.session_account_on(link, session)?;
        let start = &self.logins.config().start_scene;
        Some(
            self.scene_ids
                .get(start)
                .or_else(|| self.scene_ids.values().next())
                .map(|&scene| (account, scene))
                .ok_or_else(|| "no scene to start in".to_owned()),
        )
    }

    /// The avatar `session` speaks for, if link `link` opened the session
    /// and its name is not known yet.
    fn unnamed_speaker(&self, link: u64, session: SessionId) -> Option<AvatarId> {
        if self.sessions.get(&session) != Some(&link) {
            return None;
        }
        let avatar = self.cluster.session_avatar(session)?;
        (!self.avatar_names.contains_key(&avatar)).then_some(avatar)
    }
}
