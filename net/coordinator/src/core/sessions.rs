//! Sessions: login admission (tokens and the queue, through
//! [`Logins`](crate::login::Logins)), opening a session from a connect
//! token, a gate replaying its sessions, closing and kicking them, and
//! attaching and detaching a session's avatar.

use tessera_cluster::{AccountId, NodeId, NodeKind, SessionId};
use tessera_sim::protocol::AvatarId;
use tessera_wire::{LinkMsg, Role, SessionEvent};
use tracing::warn;

use super::Core;
use super::messages::Origin;
use crate::ids::new_session_id;
use crate::login::{Admission, AdmitError};

impl Core {
    /// A login for `account` (password or resume key already checked).
    pub(crate) fn admit(&mut self, account: u64) -> Result<Admission, AdmitError> {
        let online = self.online();
        let now = self.now();
        let gates = self.gate_addrs();
        let sessions = &self.sessions;
        self.logins.admit(account, online, now, &gates, |c| {
            !sessions.contains_key(&SessionId(c))
        })
    }

    /// A queued login polls.
    pub(crate) fn poll(&mut self, ticket: &str) -> Result<Admission, AdmitError> {
        let online = self.online();
        let now = self.now();
        let gates = self.gate_addrs();
        let sessions = &self.sessions;
        self.logins.poll(ticket, online, now, &gates, |c| {
            !sessions.contains_key(&SessionId(c))
        })
    }

    /// The account behind a resume key still in its grace period.
    pub(crate) fn resume_account(&self, key: &str) -> Option<u64> {
        self.logins.resume_account(key)
    }

    /// A login with `account`'s resume key `key`: the key is spent (see
    /// [`Logins::admit_resumed`](crate::login::Logins::admit_resumed)).
    pub(crate) fn admit_resumed(
        &mut self,
        key: &str,
        account: u64,
    ) -> Result<Admission, AdmitError> {
        let online = self.online();
        let now = self.now();
        let gates = self.gate_addrs();
        let sessions = &self.sessions;
        self.logins
            .admit_resumed(key, account, online, now, &gates, |c| {
                !sessions.contains_key(&SessionId(c))
            })
    }

    /// Takes back `account`'s unused token, resume key and queue place
    /// (a ban).
    pub(crate) fn revoke_logins(&mut self, account: u64) {
        self.logins.revoke(account);
    }

    /// Ends `account`'s session (operator kick or ban): the client is told
    /// why and disconnected by its gate; its avatar is detached.
    pub(crate) fn kick(&mut self, account: u64, reason: &str) -> bool {
        let Some(session) = self.cluster.session_of(AccountId(account)) else {
            return false;
        };
        self.send_session(
            session,
            SessionEvent::Kicked {
                reason: reason.to_owned(),
            },
        );
        self.close_session(session);
        true
    }

    /// Players connected to live gates.
    fn online(&self) -> u64 {
        self.gate_load
            .iter()
            .filter(|(n, _)| self.cluster.node(**n).is_some_and(|v| v.alive))
            .map(|(_, (o, _))| u64::from(*o))
            .sum()
    }

    /// The open client addresses of the least-loaded live gate.
    fn gate_addrs(&self) -> Vec<String> {
        self.gate_load
            .iter()
            .filter(|(n, (_, addrs))| {
                !addrs.is_empty() && self.cluster.node(**n).is_some_and(|v| v.alive)
            })
            .min_by_key(|(n, (online, _))| (*online, **n))
            .map(|(_, (_, addrs))| addrs.clone())
            .unwrap_or_default()
    }

    pub(super) fn session_account(&self, session: SessionId) -> Option<AccountId> {
        self.cluster.session_account(session)
    }

    /// Whether `session` was opened on `from`'s link; if not, the sender is
    /// told the session is unknown.
    pub(super) fn owns_session(&mut self, from: Origin, session: SessionId) -> bool {
        if self.sessions.get(&session) == Some(&from.link) {
            return true;
        }
        self.refuse_session(from.link, session, "unknown session");
        false
    }

    /// A gate opens a session for a client presenting its connect token, or
    /// replays a live one after its link dropped (a zero nonce); a tool
    /// opens one on the cluster secret alone.
    pub(super) fn on_open_session(
        &mut self,
        from: Origin,
        request: u64,
        account: AccountId,
        client: SessionId,
        nonce: &[u8; 16],
    ) {
        match from.role {
            Role::Gate if *nonce == [0; 16] => {
                self.reopen_session(from.link, from.node, account, client);
            }
            Role::Gate => self.open_with_token(from, request, account, client, nonce),
            Role::Tool => self.open_session(from.link, from.node, request, account, None),
            role => self.refuse(from.link, format!("a {role} does not open sessions")),
        }
    }

    /// A gate's client presents its connect token: the nonce is burnt
    /// (single use) and the token's client id becomes the session id.
    fn open_with_token(
        &mut self,
        from: Origin,
        request: u64,
        account: AccountId,
        client: SessionId,
        nonce: &[u8; 16],
    ) {
        if let Err(e) = self.logins.burn(nonce, account.0, client.0) {
            self.stats.refused += 1;
            warn!(account = account.0, error = %e, "session refused");
            return self.send_link(
                from.link,
                &LinkMsg::Session {
                    session: client,
                    event: SessionEvent::Refused {
                        request,
                        reason: e.to_string(),
                    },
                },
            );
        }
        self.open_session(from.link, from.node, request, account, Some(client));
    }

    /// Opens a session for `account` on link `id` — under `client` if given,
    /// else a fresh id — and answers `request` with it, or with a refusal.
    fn open_session(
        &mut self,
        id: u64,
        gate_node: Option<NodeId>,
        request: u64,
        account: AccountId,
        client: Option<SessionId>,
    ) {
        let opened = self.account_open(account).and_then(|()| {
            let session = self.pick_session_id(client)?;
            let gate = gate_node.filter(|n| {
                self.cluster
                    .node(*n)
                    .is_some_and(|v| v.kind == NodeKind::Gate)
            });
            self.cluster
                .login(account, session, gate)
                .map(|effects| (session, effects))
                .map_err(|e| e.to_string())
        });
        match (opened, client) {
            (Ok((session, effects)), _) => {
                self.stats.sessions += 1;
                self.sessions.insert(session, id);
                self.send_link(
                    id,
                    &LinkMsg::Session {
                        session,
                        event: SessionEvent::Opened { request, account },
                    },
                );
                self.apply(effects);
            }
            // A replay (request 0, the client's own id) refused: its gate
            // has the client connected, so it is kicked with the reason
            // rather than left open at the gate and unknown here.
            (Err(reason), Some(session)) if request == 0 => {
                self.kick_replay(id, session, &reason);
            }
            (Err(reason), _) => {
                self.stats.refused += 1;
                self.send_link(
                    id,
                    &LinkMsg::Session {
                        session: SessionId(0),
                        event: SessionEvent::Refused { request, reason },
                    },
                );
            }
        }
    }

    /// `Ok` if the data service has `account`, open; else why not (read
    /// by the link task before the lock, `lookups.rs`).
    fn account_open(&mut self, AccountId(account): AccountId) -> Result<(), String> {
        self.looked
            .account
            .take()
            .unwrap_or_else(|| Err(format!("account {account} was not read")))
    }

    /// The id of a new session: the client's, if free, or a fresh one.
    fn pick_session_id(&self, client: Option<SessionId>) -> Result<SessionId, String> {
        match client {
            Some(c) if !self.sessions.contains_key(&c) => Ok(c),
            Some(_) => Err("session id in use".into()),
            None => loop {
                let s = SessionId(new_session_id().map_err(|e| e.to_string())?);
                if !self.sessions.contains_key(&s) {
                    break Ok(s);
                }
            },
        }
    }

    /// A gate replays a live session after its link dropped: the same link
    /// owner takes it back; after a coordinator restart (while recovering)
    /// it is opened again with its old id.
    fn reopen_session(
        &mut self,
        id: u64,
        gate_node: Option<NodeId>,
        account: AccountId,
        session: SessionId,
    ) {
        if self.sessions.contains_key(&session) {
            if self.session_account(session) != Some(account) {
                return self.kick_replay(id, session, "session id in use");
            }
            self.replayed(session);
            self.sessions.insert(session, id);
            return self.send_link(
                id,
                &LinkMsg::Session {
                    session,
                    event: SessionEvent::Opened {
                        request: 0,
                        account,
                    },
                },
            );
        }
        if !self.cluster.recovering() {
            return self.kick_replay(id, session, "session lost by the cluster: log in again");
        }
        self.open_session(id, gate_node, 0, account, Some(session));
    }

    /// The session ended at its gate (logout or disconnect): its avatar is
    /// detached. A session the link did not open is ignored.
    pub(super) fn on_close_session(&mut self, from: Origin, session: SessionId) {
        if self.sessions.get(&session) == Some(&from.link) {
            self.close_session(session);
        }
    }

    /// Ends `session` in the directory (detaching its avatar).
    pub(super) fn close_session(&mut self, session: SessionId) {
        let effects = self.cluster.logout(session);
        self.sessions.remove(&session);
        self.apply(effects);
    }

    /// Attach `avatar` for the session, in the avatar's scene.
    pub(super) fn on_attach_avatar(&mut self, from: Origin, session: SessionId, avatar: AvatarId) {
        if self.owns_session(from, session) {
            self.attach(session, avatar);
        }
    }

    /// Detach the session's avatar: it is saved and stays in its scene.
    pub(super) fn on_detach_avatar(&mut self, from: Origin, session: SessionId) {
        if !self.owns_session(from, session) {
            return;
        }
        let Some(avatar) = self.cluster.session_avatar(session) else {
            return self.refuse_session(from.link, session, "no avatar attached");
        };
        match self.cluster.detach(session, avatar) {
            Ok(effects) => self.apply(effects),
            Err(e) => self.refuse_session(from.link, session, &e.to_string()),
        }
    }

    /// Attaches `avatar` for `session`, first learning it from the data
    /// service if the directory does not know it yet.
    fn attach(&mut self, session: SessionId, avatar: AvatarId) {
        if let Some(Some(found)) = &self.looked.avatar {
            self.avatar_names.insert(avatar, found.name.clone());
        }
        if self.cluster.avatar(avatar).is_none()
            && let Err(reason) = self.learn_avatar(avatar)
        {
            self.stats.attaches_refused += 1;
            return self.refuse_session_by(session, reason);
        }
        match self.cluster.attach(session, avatar) {
            Ok(effects) => {
                self.stats.attaches += 1;
                self.apply(effects);
            }
            Err(e) => {
                self.stats.attaches_refused += 1;
                self.refuse_session_by(session, e.to_string());
            }
        }
    }

    /// Adds `avatar` to the directory, in the scene the data service has
    /// it in (read by the link task before the lock, `lookups.rs`).
    fn learn_avatar(&mut self, avatar: AvatarId) -> Result<(), String> {
        let Some(found) = self.looked.avatar.clone().flatten() else {
            return Err(format!("no avatar {avatar}"));
        };
        self.cluster
            .add_avatar(avatar, AccountId(found.account), &found.scene)
            .map_err(|e| e.to_string())
    }
}
