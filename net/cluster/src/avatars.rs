//! The avatar directory and single sign-on: avatar → scene → server, account
//! → session. See the [crate docs](crate#avatar-directory) for the model.

use thiserror::Error;

use tessera_proto::AvatarId;
use tessera_wire::Epoch;

use crate::{
    AccountId, ClusterState, Effect, KickReason, NodeId, NodeKind, SceneStatus, SessionId,
};

/// Where an avatar stands in its scene.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvatarPresence {
    /// Detached: kept by its scene, invisible.
    Offline,
    /// Attached for `session`.
    Online { session: SessionId },
    /// Going through a portal for `session`: detached from its scene (which
    /// still owns it) and waiting for [`ClusterState::complete_transfer`] to
    /// move it to `to`.
    Transferring { session: SessionId, to: String },
}

/// Read-only view of one avatar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarView {
    pub avatar: AvatarId,
    pub account: AccountId,
    pub scene: String,
    /// The scene's current host, `None` while unplaced.
    pub server: Option<(NodeId, Epoch)>,
    pub presence: AvatarPresence,
}

#[derive(Debug, Clone)]
pub(crate) struct Avatar {
    pub(crate) account: AccountId,
    pub(crate) scene: String,
    pub(crate) presence: AvatarPresence,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) account: AccountId,
    /// The gate carrying the session, if known: the session ends with it.
    pub(crate) gate: Option<NodeId>,
    /// The avatar attached (or in transfer) for this session.
    pub(crate) avatar: Option<AvatarId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddAvatarError {
    #[error("scene {0:?} is not in the catalog")]
    UnknownScene(String),
    #[error("avatar {avatar} already belongs to another account")]
    OtherAccount { avatar: AvatarId },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoginError {
    #[error("session {0:?} already exists")]
    SessionExists(SessionId),
    #[error("{0} is not a live gate")]
    UnknownGate(NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AttachError {
    #[error("unknown session {0:?}")]
    UnknownSession(SessionId),
    #[error("unknown avatar {0}")]
    UnknownAvatar(AvatarId),
    #[error("avatar {0} belongs to another account")]
    NotOwner(AvatarId),
    #[error("avatar is online for session {0:?}")]
    AlreadyOnline(SessionId),
    #[error("the session already has avatar {0} attached")]
    SessionBusy(AvatarId),
    #[error("avatar {0} is going through a portal")]
    InTransfer(AvatarId),
    #[error("scene {0:?} is full")]
    SceneFull(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DetachError {
    #[error("unknown avatar {0}")]
    UnknownAvatar(AvatarId),
    #[error("avatar {0} is not attached for this session")]
    NotAttached(AvatarId),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransferError {
    #[error("unknown avatar {0}")]
    UnknownAvatar(AvatarId),
    #[error("avatar {0} is not online")]
    NotOnline(AvatarId),
    #[error("avatar {0} is not going through a portal")]
    NotInTransfer(AvatarId),
    #[error("scene {0:?} is not in the catalog")]
    UnknownScene(String),
    #[error("avatar is already in scene {0:?}")]
    SameScene(String),
    #[error("scene {0:?} is full")]
    SceneFull(String),
}

impl ClusterState {
    /// Makes `avatar` (of `account`, saved in `scene`) known to the directory,
    /// offline. The networked layer calls it with what the data service
    /// stores, at login or when rebuilding after a restart. Idempotent; an
    /// already known avatar keeps its scene and presence.
    pub fn add_avatar(
        &mut self,
        avatar: AvatarId,
        account: AccountId,
        scene: &str,
    ) -> Result<(), AddAvatarError> {
        if let Some(a) = self.avatars.get(&avatar) {
            return if a.account == account {
                Ok(())
            } else {
                Err(AddAvatarError::OtherAccount { avatar })
            };
        }
        let Some(s) = self.scenes.get_mut(scene) else {
            return Err(AddAvatarError::UnknownScene(scene.to_owned()));
        };
        s.avatars.insert(avatar);
        self.avatars.insert(
            avatar,
            Avatar {
                account,
                scene: scene.to_owned(),
                presence: AvatarPresence::Offline,
            },
        );
        Ok(())
    }

    pub fn avatar(&self, avatar: AvatarId) -> Option<AvatarView> {
        self.avatars.get(&avatar).map(|a| AvatarView {
            avatar,
            account: a.account,
            scene: a.scene.clone(),
            server: self.placement(&a.scene),
            presence: a.presence.clone(),
        })
    }

    /// Every avatar in the directory, by id.
    pub fn avatars(&self) -> impl Iterator<Item = AvatarView> + '_ {
        self.avatars.keys().filter_map(|&a| self.avatar(a))
    }

    /// The avatars that belong to `scene` (online or not).
    pub fn scene_avatars(&self, scene: &str) -> impl Iterator<Item = AvatarId> + '_ {
        self.scenes
            .get(scene)
            .into_iter()
            .flat_map(|s| s.avatars.iter().copied())
    }

    /// The current session of `account`.
    pub fn session_of(&self, account: AccountId) -> Option<SessionId> {
        self.accounts.get(&account).copied()
    }

    /// Sessions open in the directory.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The sessions carried by gate `gate`.
    pub fn gate_sessions(&self, gate: NodeId) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions
            .iter()
            .filter(move |(_, s)| s.gate == Some(gate))
            .map(|(&id, _)| id)
    }

    /// The gate carrying `session`, if known.
    pub fn session_gate(&self, session: SessionId) -> Option<NodeId> {
        self.sessions.get(&session).and_then(|s| s.gate)
    }

    /// The account of `session`.
    pub fn session_account(&self, session: SessionId) -> Option<AccountId> {
        self.sessions.get(&session).map(|s| s.account)
    }

    /// The avatar attached (or in transfer) for `session`.
    pub fn session_avatar(&self, session: SessionId) -> Option<AvatarId> {
        self.sessions.get(&session).and_then(|s| s.avatar)
    }

    /// `account` logs in with a new `session` (through `gate`, if known).
    /// Single sign-on: an older session of the same account ends — its
    /// avatar is detached — and is returned as [`Effect::Kick`].
    pub fn login(
        &mut self,
        account: AccountId,
        session: SessionId,
        gate: Option<NodeId>,
    ) -> Result<Vec<Effect>, LoginError> {
        if self.sessions.contains_key(&session) {
            return Err(LoginError::SessionExists(session));
        }
        if let Some(g) = gate {
            match self.nodes.get(&g) {
                Some(n) if n.alive && n.kind == NodeKind::Gate => {}
                _ => return Err(LoginError::UnknownGate(g)),
            }
        }
        let mut out = Vec::new();
        if let Some(old) = self.accounts.get(&account).copied() {
            self.end_session(old, &mut out);
            out.push(Effect::Kick {
                session: old,
                reason: KickReason::DuplicateLogin,
            });
        }
        self.sessions.insert(
            session,
            Session {
                account,
                gate,
                avatar: None,
            },
        );
        self.accounts.insert(account, session);
        Ok(out)
    }

    /// `session` ends (logout or disconnect): its avatar is detached.
    /// Unknown sessions are ignored (already ended).
    pub fn logout(&mut self, session: SessionId) -> Vec<Effect> {
        let mut out = Vec::new();
        self.end_session(session, &mut out);
        out
    }

    /// Attaches `avatar` for `session` in the avatar's scene.
    ///
    /// Refused while the avatar is online for another session, while the
    /// session has another avatar, and into a full scene. The same session
    /// attaching the same avatar again is a reconnect: accepted, and the
    /// attach is sent again. If the scene is unplaced the attach is recorded
    /// and sent when it is placed.
    pub fn attach(
        &mut self,
        session: SessionId,
        avatar: AvatarId,
    ) -> Result<Vec<Effect>, AttachError> {
        let Some(sess) = self.sessions.get(&session) else {
            return Err(AttachError::UnknownSession(session));
        };
        let Some(a) = self.avatars.get(&avatar) else {
            return Err(AttachError::UnknownAvatar(avatar));
        };
        if a.account != sess.account {
            return Err(AttachError::NotOwner(avatar));
        }
        let mut out = Vec::new();
        match &a.presence {
            AvatarPresence::Online { session: s } if *s == session => {
                self.push_attach(avatar, &mut out);
                return Ok(out);
            }
            AvatarPresence::Online { session: s } => return Err(AttachError::AlreadyOnline(*s)),
            AvatarPresence::Transferring { session: s, .. } if *s == session => {
                return Err(AttachError::InTransfer(avatar));
            }
            AvatarPresence::Transferring { session: s, .. } => {
                return Err(AttachError::AlreadyOnline(*s));
            }
            AvatarPresence::Offline => {}
        }
        if let Some(other) = sess.avatar {
            return Err(AttachError::SessionBusy(other));
        }
        if self.scene_status(&a.scene) == SceneStatus::Full {
            return Err(AttachError::SceneFull(a.scene.clone()));
        }
        self.avatars.get_mut(&avatar).expect("checked").presence =
            AvatarPresence::Online { session };
        self.sessions.get_mut(&session).expect("checked").avatar = Some(avatar);
        self.push_attach(avatar, &mut out);
        Ok(out)
    }

    /// Detaches `avatar` from `session`: it stays in its scene, offline. An
    /// avatar in transfer stays in its source scene (already detached there).
    pub fn detach(
        &mut self,
        session: SessionId,
        avatar: AvatarId,
    ) -> Result<Vec<Effect>, DetachError> {
        let Some(a) = self.avatars.get(&avatar) else {
            return Err(DetachError::UnknownAvatar(avatar));
        };
        match &a.presence {
            AvatarPresence::Online { session: s }
            | AvatarPresence::Transferring { session: s, .. }
                if *s == session => {}
            _ => return Err(DetachError::NotAttached(avatar)),
        }
        let mut out = Vec::new();
        self.detach_inner(avatar, &mut out);
        Ok(out)
    }

    /// A portal: starts moving online `avatar` to scene `to`. The avatar is
    /// detached at its scene's host (which saves it) and stays in its scene
    /// until [`complete_transfer`](Self::complete_transfer). If its scene is
    /// unplaced there is nothing to detach and the transfer can be completed
    /// at once. If the scene's placement changes first, the transfer is
    /// aborted ([`Effect::TransferAborted`]).
    pub fn begin_transfer(
        &mut self,
        avatar: AvatarId,
        to: &str,
    ) -> Result<Vec<Effect>, TransferError> {
        let Some(a) = self.avatars.get(&avatar) else {
            return Err(TransferError::UnknownAvatar(avatar));
        };
        let AvatarPresence::Online { session } = a.presence else {
            return Err(TransferError::NotOnline(avatar));
        };
        if !self.scenes.contains_key(to) {
            return Err(TransferError::UnknownScene(to.to_owned()));
        }
        if a.scene == to {
            return Err(TransferError::SameScene(to.to_owned()));
        }
        if self.scene_status(to) == SceneStatus::Full {
            return Err(TransferError::SceneFull(to.to_owned()));
        }
        let mut out = Vec::new();
        self.push_detach(avatar, session, &mut out);
        self.avatars.get_mut(&avatar).expect("checked").presence = AvatarPresence::Transferring {
            session,
            to: to.to_owned(),
        };
        Ok(out)
    }

    /// Commits a transfer once the source host reported the avatar detached
    /// (its state saved): the avatar now belongs to the target scene
    /// ([`Effect::PersistAvatarScene`] first), and is attached there.
    pub fn complete_transfer(&mut self, avatar: AvatarId) -> Result<Vec<Effect>, TransferError> {
        let Some(a) = self.avatars.get_mut(&avatar) else {
            return Err(TransferError::UnknownAvatar(avatar));
        };
        let AvatarPresence::Transferring { session, to } = a.presence.clone() else {
            return Err(TransferError::NotInTransfer(avatar));
        };
        let from = std::mem::replace(&mut a.scene, to.clone());
        a.presence = AvatarPresence::Online { session };
        if let Some(s) = self.scenes.get_mut(&from) {
            s.avatars.remove(&avatar);
        }
        self.scenes
            .get_mut(&to)
            .expect("catalog scenes are never removed")
            .avatars
            .insert(avatar);
        let mut out = vec![Effect::PersistAvatarScene { avatar, scene: to }];
        self.push_attach(avatar, &mut out);
        Ok(out)
    }

    /// Cancels a transfer: the avatar is attached again in its own scene.
    pub fn abort_transfer(&mut self, avatar: AvatarId) -> Result<Vec<Effect>, TransferError> {
        let Some(a) = self.avatars.get_mut(&avatar) else {
            return Err(TransferError::UnknownAvatar(avatar));
        };
        let AvatarPresence::Transferring { session, .. } = a.presence else {
            return Err(TransferError::NotInTransfer(avatar));
        };
        a.presence = AvatarPresence::Online { session };
        let mut out = Vec::new();
        self.push_attach(avatar, &mut out);
        Ok(out)
    }

    /// `scene`'s placement changed (its host died, gave it up or released
    /// it, or another host took it over): the detach of every transfer out of
    /// it went to a placement whose reports are no longer handled, so each is
    /// aborted. The avatar is online in `scene` again and attached at its
    /// current host, if it has one (otherwise when it is placed). Call it
    /// once the new placement is in place.
    pub(crate) fn abort_transfers_from(&mut self, scene: &str, out: &mut Vec<Effect>) {
        let Some(s) = self.scenes.get(scene) else {
            return;
        };
        let stuck: Vec<(AvatarId, SessionId)> = s
            .avatars
            .iter()
            .filter_map(|&a| match self.avatars[&a].presence {
                AvatarPresence::Transferring { session, .. } => Some((a, session)),
                _ => None,
            })
            .collect();
        for (avatar, session) in stuck {
            self.avatars.get_mut(&avatar).expect("indexed").presence =
                AvatarPresence::Online { session };
            out.push(Effect::TransferAborted {
                avatar,
                session,
                scene: scene.to_owned(),
            });
            self.push_attach(avatar, out);
        }
    }

    pub(crate) fn scene_status(&self, scene: &str) -> SceneStatus {
        let population = self.scenes.get(scene).map_or(0, |s| s.population);
        self.config.status_of(population)
    }

    /// Ends `session`, detaching its avatar. Unknown sessions are ignored.
    pub(crate) fn end_session(&mut self, session: SessionId, out: &mut Vec<Effect>) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if self.accounts.get(&s.account) == Some(&session) {
            self.accounts.remove(&s.account);
        }
        if let Some(avatar) = s.avatar {
            self.set_offline(avatar, out);
        }
    }

    /// Detaches `avatar` and clears its session's link to it.
    fn detach_inner(&mut self, avatar: AvatarId, out: &mut Vec<Effect>) {
        let session = match &self.avatars[&avatar].presence {
            AvatarPresence::Online { session } | AvatarPresence::Transferring { session, .. } => {
                *session
            }
            AvatarPresence::Offline => return,
        };
        if let Some(s) = self.sessions.get_mut(&session) {
            s.avatar = None;
        }
        self.set_offline(avatar, out);
    }

    /// Marks `avatar` offline, sending a detach if it was attached.
    fn set_offline(&mut self, avatar: AvatarId, out: &mut Vec<Effect>) {
        let Some(a) = self.avatars.get_mut(&avatar) else {
            return;
        };
        let previous = std::mem::replace(&mut a.presence, AvatarPresence::Offline);
        match previous {
            AvatarPresence::Online { session } => self.push_detach(avatar, session, out),
            // Its portal ends with it: the source's detach (already sent)
            // saves it where it was, and the pending arrival is forgotten,
            // so its next detach and portal are handled as such.
            AvatarPresence::Transferring { session, .. } => out.push(Effect::TransferAborted {
                avatar,
                session,
                scene: a.scene.clone(),
            }),
            AvatarPresence::Offline => {}
        }
    }

    fn push_attach(&self, avatar: AvatarId, out: &mut Vec<Effect>) {
        let a = &self.avatars[&avatar];
        let AvatarPresence::Online { session } = a.presence else {
            return;
        };
        if let Some((server, epoch)) = self.placement(&a.scene) {
            out.push(Effect::AttachAt {
                server,
                scene: a.scene.clone(),
                epoch,
                avatar,
                session,
            });
        }
    }

    fn push_detach(&self, avatar: AvatarId, session: SessionId, out: &mut Vec<Effect>) {
        let a = &self.avatars[&avatar];
        if let Some((server, epoch)) = self.placement(&a.scene) {
            out.push(Effect::DetachAt {
                server,
                scene: a.scene.clone(),
                epoch,
                avatar,
                session,
            });
        }
    }

    /// `scene` has a new host: its online avatars are attached there (the
    /// host loads them from the last flush, with nobody attached).
    pub(crate) fn reattach_scene(&self, scene: &str, out: &mut Vec<Effect>) {
        let Some(s) = self.scenes.get(scene) else {
            return;
        };
        for &avatar in &s.avatars {
            self.push_attach(avatar, out);
        }
    }

    /// Tells `scene`'s host exactly who is attached there, unless the
    /// directory is still being rebuilt after a restart (the end of the grace
    /// period syncs every scene).
    pub(crate) fn push_sync(&self, scene: &str, out: &mut Vec<Effect>) {
        if self.recovering {
            return;
        }
        let Some(s) = self.scenes.get(scene) else {
            return;
        };
        let Some((server, epoch)) = s.placement else {
            return;
        };
        let attached = s
            .avatars
            .iter()
            .filter_map(|&a| match self.avatars[&a].presence {
                AvatarPresence::Online { session } => Some((a, session)),
                _ => None,
            })
            .collect();
        out.push(Effect::SyncAttached {
            server,
            scene: scene.to_owned(),
            epoch,
            attached,
        });
    }

    pub(crate) fn check_avatar_invariants(&self) -> Result<(), String> {
        for (&id, a) in &self.avatars {
            let Some(s) = self.scenes.get(&a.scene) else {
                return Err(format!("avatar {id} in unknown scene {:?}", a.scene));
            };
            if !s.avatars.contains(&id) {
                return Err(format!("avatar {id} missing from {:?}'s index", a.scene));
            }
            let in_scenes = self
                .scenes
                .values()
                .filter(|s| s.avatars.contains(&id))
                .count();
            if in_scenes != 1 {
                return Err(format!("avatar {id} indexed in {in_scenes} scenes"));
            }
            match &a.presence {
                AvatarPresence::Offline => {}
                AvatarPresence::Online { session }
                | AvatarPresence::Transferring { session, .. } => {
                    match self.sessions.get(session) {
                        Some(s) if s.avatar == Some(id) && s.account == a.account => {}
                        _ => {
                            return Err(format!(
                                "avatar {id} is online for {session:?}, which does not name it"
                            ));
                        }
                    }
                }
            }
            if let AvatarPresence::Transferring { to, .. } = &a.presence
                && (!self.scenes.contains_key(to) || *to == a.scene)
            {
                return Err(format!("avatar {id} in transfer to bad scene {to:?}"));
            }
        }
        for (&sid, s) in &self.sessions {
            if self.accounts.get(&s.account) != Some(&sid) {
                return Err(format!("session {sid:?} is not its account's session"));
            }
            if let Some(avatar) = s.avatar {
                match self.avatars.get(&avatar).map(|a| &a.presence) {
                    Some(AvatarPresence::Online { session })
                    | Some(AvatarPresence::Transferring { session, .. })
                        if *session == sid => {}
                    _ => return Err(format!("session {sid:?} names avatar {avatar} wrongly")),
                }
            }
        }
        for (account, sid) in &self.accounts {
            if self.sessions.get(sid).map(|s| s.account) != Some(*account) {
                return Err(format!("account {account:?} names missing session {sid:?}"));
            }
        }
        Ok(())
    }
}
