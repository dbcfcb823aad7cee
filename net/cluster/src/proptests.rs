//! Property test: random sequences of cluster events against a model of the
//! scene-server processes and of what the data service stores, checking the
//! module's invariants after every step.
//!
//! The model plays the networked layer faithfully: it carries out every
//! effect over a link per process — a paused process's messages queue up and
//! arrive when it resumes, unless the coordinator declared it dead and
//! closed the link, in which case they are lost and the process registers
//! again; a process reports exactly what it hosts; a coordinator restart
//! closes every link and builds a new state with [`ClusterState::recover`]
//! from the stored epochs and avatar scenes.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use tessera_proto::AvatarId;
use tessera_wire::{Epoch, Placement, SceneLoad};

const SCENES: [&str; 4] = ["dock", "field", "keep", "town"];
const PROCS: usize = 4;
const AVATARS: u64 = 4;
const ACCOUNTS: u64 = 2;

fn config() -> ClusterConfig {
    ClusterConfig {
        heartbeat_timeout_ms: 1000,
        busy_population: 2,
        full_population: 4,
        restart_grace_ms: 1000,
        rebalance: true,
    }
}

fn account_of(avatar: AvatarId) -> AccountId {
    AccountId(avatar % ACCOUNTS)
}

#[derive(Debug, Clone)]
enum Op {
    /// The process starts (if it was killed: with nothing hosted) or
    /// reconnects, and registers with what it hosts.
    Register(usize),
    Heartbeat(usize, u32),
    Ready(usize),
    Advance(u64),
    Pause(usize),
    /// SIGCONT; a process whose coordinator restarted meanwhile registers.
    Resume(usize),
    Kill(usize),
    Deregister(usize),
    RestartCoordinator,
    Login(u64),
    Logout(u64),
    /// The avatar's own account attaches it (logging in first if it has no
    /// session).
    Attach(AvatarId),
    /// Another account tries to attach it.
    AttachOther(u64, AvatarId),
    Detach(AvatarId),
    BeginTransfer(AvatarId, usize),
    CompleteTransfer(AvatarId),
    AbortTransfer(AvatarId),
    /// A whole portal trip, when the avatar can take it: begin, then complete.
    Portal(AvatarId, usize),
    /// The next PlaceScene sent to this running process is lost.
    LoseNextPlace(usize),
    /// The process's saves are durable: it reports the scenes it dropped
    /// for a move released.
    Release(usize),
    /// An operator moves a scene to a process.
    MoveScene(usize, usize),
    /// An operator drains a process (or cancels the drain).
    Drain(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PROCS;
    let a = 0..AVATARS;
    prop_oneof![
        3 => p.clone().prop_map(Op::Register),
        6 => (p.clone(), 0u32..5).prop_map(|(p, n)| Op::Heartbeat(p, n)),
        2 => p.clone().prop_map(Op::Ready),
        5 => (0u64..1600).prop_map(Op::Advance),
        1 => p.clone().prop_map(Op::Pause),
        2 => p.clone().prop_map(Op::Resume),
        1 => p.clone().prop_map(Op::Kill),
        1 => p.prop_map(Op::Deregister),
        1 => Just(Op::RestartCoordinator),
        1 => (0..ACCOUNTS).prop_map(Op::Login),
        1 => (0..ACCOUNTS).prop_map(Op::Logout),
        5 => a.clone().prop_map(Op::Attach),
        1 => ((0..ACCOUNTS), a.clone()).prop_map(|(acc, av)| Op::AttachOther(acc, av)),
        2 => a.clone().prop_map(Op::Detach),
        4 => (a.clone(), 0..SCENES.len()).prop_map(|(av, s)| Op::BeginTransfer(av, s)),
        4 => a.clone().prop_map(Op::CompleteTransfer),
        1 => a.clone().prop_map(Op::AbortTransfer),
        3 => (a, 0..SCENES.len()).prop_map(|(av, s)| Op::Portal(av, s)),
        1 => (0..PROCS).prop_map(Op::LoseNextPlace),
        3 => (0..PROCS).prop_map(Op::Release),
        1 => (0..SCENES.len(), 0..PROCS).prop_map(|(s, p)| Op::MoveScene(s, p)),
        1 => (0..PROCS, any::<bool>()).prop_map(|(p, on)| Op::Drain(p, on)),
    ]
}

#[derive(Debug, Clone, Default)]
struct Proc {
    /// The process exists (not killed).
    up: bool,
    paused: bool,
    /// Its id in the current coordinator while its link is open.
    id: Option<NodeId>,
    /// Messages waiting on the open link while it is paused.
    inbox: Vec<Effect>,
    /// Who it has attached, per hosted scene.
    attached: BTreeMap<String, BTreeSet<(AvatarId, SessionId)>>,
    /// What it hosts: scene → epoch.
    hosted: BTreeMap<String, Epoch>,
    /// The next PlaceScene for it is lost on the way.
    lose_next_place: bool,
    /// Scenes it dropped for a planned move, to report released once its
    /// saves are durable.
    released: Vec<(String, Epoch)>,
}

impl Proc {
    fn name(i: usize) -> String {
        format!("srv{i}")
    }

    /// Receives one message on its link. Anything but a placement is for
    /// one `(scene, epoch)` and ignored unless that is what it hosts.
    fn receive(&mut self, e: Effect) {
        if let Effect::PlaceScene { scene, epoch, .. } = e {
            if self.lose_next_place {
                self.lose_next_place = false;
            } else {
                self.hosted.insert(scene.clone(), epoch);
                self.attached.insert(scene, BTreeSet::new());
            }
            return;
        }
        let (scene, epoch) = match &e {
            Effect::DropScene { scene, epoch, .. }
            | Effect::AttachAt { scene, epoch, .. }
            | Effect::DetachAt { scene, epoch, .. }
            | Effect::SyncAttached { scene, epoch, .. } => (scene.clone(), *epoch),
            _ => return,
        };
        if self.hosted.get(&scene) != Some(&epoch) {
            return;
        }
        let set = self.attached.entry(scene.clone()).or_default();
        match e {
            Effect::DropScene { reason, .. } => {
                self.hosted.remove(&scene);
                self.attached.remove(&scene);
                if matches!(reason, DropReason::Move { .. }) {
                    self.released.push((scene, epoch));
                }
            }
            // An attach of an avatar already attached (for another session:
            // a replay after a coordinator restart) re-binds it.
            Effect::AttachAt {
                avatar, session, ..
            } => {
                set.retain(|&(a, _)| a != avatar);
                set.insert((avatar, session));
            }
            Effect::DetachAt {
                avatar, session, ..
            } => {
                set.remove(&(avatar, session));
            }
            Effect::SyncAttached { attached, .. } => {
                *set = attached.into_iter().collect();
            }
            _ => {}
        }
    }

    /// The coordinator closed its link: queued messages are lost.
    fn link_closed(&mut self) {
        self.id = None;
        self.inbox.clear();
        self.released.clear();
    }

    fn placements(&self) -> Vec<Placement> {
        self.hosted
            .iter()
            .map(|(scene, &epoch)| Placement {
                scene: scene.clone(),
                epoch,
            })
            .collect()
    }
}

struct Model {
    st: ClusterState,
    now: u64,
    procs: Vec<Proc>,
    /// The data service: stored epochs and avatar scenes.
    stored_epochs: BTreeMap<String, Epoch>,
    avatar_scene: BTreeMap<AvatarId, String>,
    sessions: BTreeMap<u64, SessionId>,
    next_session: u64,
    /// Every placement ever sent, over all coordinator lifetimes.
    issued: BTreeSet<(String, Epoch)>,
    /// The highest epoch seen per scene, over all coordinator lifetimes.
    max_epoch: BTreeMap<String, Epoch>,
    /// Per avatar, the placement of its scene when its last transfer began:
    /// where the detach went, the only host whose report can complete it.
    transfer_from: BTreeMap<AvatarId, Option<(NodeId, Epoch)>>,
}

impl Model {
    fn new() -> Self {
        let st = ClusterState::new(config(), 0).expect("valid config");
        let mut m = Self {
            st,
            now: 0,
            procs: vec![Proc::default(); PROCS],
            stored_epochs: BTreeMap::new(),
            avatar_scene: (0..AVATARS)
                .map(|a| (a, SCENES[a as usize % SCENES.len()].to_owned()))
                .collect(),
            sessions: BTreeMap::new(),
            next_session: 1,
            issued: BTreeSet::new(),
            max_epoch: BTreeMap::new(),
            transfer_from: BTreeMap::new(),
        };
        m.load_catalog();
        m
    }

    /// What the coordinator reads at start: the catalog and, from the data
    /// service, every avatar's scene.
    fn load_catalog(&mut self) {
        for s in SCENES {
            let fx = self.st.add_scene(self.now, s);
            self.apply(fx);
        }
        for (&a, scene) in &self.avatar_scene {
            self.st
                .add_avatar(a, account_of(a), scene)
                .expect("stored avatars load");
        }
    }

    fn proc_of(&mut self, id: NodeId) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.id == Some(id))
    }

    /// Sends `e` on `server`'s link, if it has one.
    fn send(&mut self, server: NodeId, e: Effect) {
        if let Some(p) = self.proc_of(server)
            && p.up
        {
            if p.paused {
                p.inbox.push(e);
            } else {
                p.receive(e);
            }
        }
    }

    /// Carries out effects the way the networked layer would.
    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::PersistEpoch { scene, epoch } => {
                    let old = self.stored_epochs.insert(scene.clone(), epoch);
                    assert!(
                        old.is_none_or(|o| o < epoch),
                        "stored epoch of {scene} went from {old:?} to {epoch}"
                    );
                }
                Effect::PlaceScene {
                    server,
                    scene,
                    epoch,
                } => {
                    assert!(
                        self.stored_epochs.get(&scene) == Some(&epoch),
                        "{scene}@{epoch} sent before it was stored"
                    );
                    assert!(
                        self.issued.insert((scene.clone(), epoch)),
                        "{scene}@{epoch} placed twice"
                    );
                    self.send(
                        server,
                        Effect::PlaceScene {
                            server,
                            scene,
                            epoch,
                        },
                    );
                }
                e @ Effect::DropScene { server, .. } => self.send(server, e),
                Effect::PersistAvatarScene { avatar, scene } => {
                    self.avatar_scene.insert(avatar, scene);
                }
                Effect::AttachAt {
                    server,
                    ref scene,
                    epoch,
                    ..
                }
                | Effect::DetachAt {
                    server,
                    ref scene,
                    epoch,
                    ..
                }
                | Effect::SyncAttached {
                    server,
                    ref scene,
                    epoch,
                    ..
                } => {
                    assert_eq!(
                        self.st.placement(scene),
                        Some((server, epoch)),
                        "attach/detach/sync sent to a host that is not current"
                    );
                    self.send(server, e);
                }
                Effect::Kick { session, .. } => {
                    assert!(
                        !self.sessions.values().any(|&s| s == session),
                        "kicked session still in the model"
                    );
                }
                Effect::NodeDown { node } => {
                    if let Some(p) = self.proc_of(node) {
                        p.link_closed();
                    }
                }
                Effect::TransferAborted {
                    avatar,
                    session,
                    scene,
                } => {
                    // Online again in its scene, or offline there (its
                    // session ended midway).
                    let v = self.st.avatar(avatar).expect("known avatar");
                    assert_eq!(v.scene, scene, "an aborted transfer keeps its scene");
                    assert!(
                        matches!(v.presence, AvatarPresence::Offline)
                            || v.presence == AvatarPresence::Online { session },
                        "an aborted transfer leaves its avatar online or offline: {:?}",
                        v.presence
                    );
                }
            }
        }
    }

    fn register(&mut self, i: usize) {
        let p = &mut self.procs[i];
        if !p.up {
            *p = Proc {
                up: true,
                ..Proc::default()
            };
        }
        if p.paused {
            return;
        }
        // A new link: nothing queued on an old one arrives any more.
        p.inbox.clear();
        let hosted = p.placements();
        let (id, fx) = self
            .st
            .register(
                self.now,
                &Proc::name(i),
                "127.0.0.1:0",
                NodeKind::SceneServer,
                0,
                &hosted,
            )
            .expect("valid registration");
        self.procs[i].id = Some(id);
        self.apply(fx);
        self.check_claims_settled(i);
    }

    /// After a process told the state what it hosts, each of its scenes is
    /// either its placement in the state or has been dropped.
    fn check_claims_settled(&self, i: usize) {
        let p = &self.procs[i];
        let id = p.id.expect("registered");
        for (scene, &epoch) in &p.hosted {
            assert_eq!(
                self.st.placement(scene),
                Some((id, epoch)),
                "{} still hosts {scene}@{epoch} after its claim",
                Proc::name(i)
            );
        }
    }

    /// A new session for `account` (single sign-on kicks the old one).
    fn login(&mut self, account: u64) {
        let session = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.insert(account, session);
        let fx = self
            .st
            .login(AccountId(account), session, None)
            .expect("fresh session");
        self.apply(fx);
    }

    fn session_of(&self, account: u64) -> SessionId {
        // A session the coordinator does not know (none logged in) gets an
        // id that never exists.
        self.sessions
            .get(&account)
            .copied()
            .unwrap_or(SessionId(u64::MAX))
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Register(i) => self.register(i),
            Op::Heartbeat(i, population) => self.heartbeat(i, population),
            Op::Ready(i) => self.ready(i),
            Op::Advance(ms) => {
                self.now += ms;
                let fx = self.st.tick(self.now);
                self.apply(fx);
            }
            Op::Pause(i) => {
                if self.procs[i].up {
                    self.procs[i].paused = true;
                }
            }
            Op::Resume(i) => self.resume(i),
            Op::Kill(i) => {
                // Its id stays with the coordinator until the timeout.
                let id = self.procs[i].id;
                self.procs[i] = Proc {
                    id,
                    ..Proc::default()
                };
            }
            Op::Deregister(i) => self.deregister(i),
            Op::RestartCoordinator => self.restart_coordinator(),
            Op::Login(account) => self.login(account),
            Op::Logout(account) => {
                if let Some(session) = self.sessions.remove(&account) {
                    let fx = self.st.logout(session);
                    self.apply(fx);
                }
            }
            Op::Attach(avatar) => self.attach(avatar),
            Op::AttachOther(account, avatar) => self.attach_other(account, avatar),
            Op::Detach(avatar) => {
                let session = self.session_of(account_of(avatar).0);
                let fx = self.st.detach(session, avatar);
                self.apply_ok(fx);
            }
            Op::BeginTransfer(avatar, scene) => self.begin_transfer(avatar, scene),
            Op::CompleteTransfer(avatar) => {
                let fx = self.st.complete_transfer(avatar);
                self.apply_ok(fx);
            }
            Op::Portal(avatar, scene) => self.portal(avatar, scene),
            Op::LoseNextPlace(i) => {
                if self.procs[i].up {
                    self.procs[i].lose_next_place = true;
                }
            }
            Op::Release(i) => self.release(i),
            Op::MoveScene(scene, i) => {
                let fx = self.st.move_scene(self.now, SCENES[scene], &Proc::name(i));
                self.apply_ok(fx);
            }
            Op::Drain(i, on) => {
                let fx = self.st.drain(self.now, &Proc::name(i), on);
                self.apply_ok(fx);
            }
            Op::AbortTransfer(avatar) => {
                let fx = self.st.abort_transfer(avatar);
                self.apply_ok(fx);
            }
        }
    }

    /// Carries out the effects of a call that succeeded; a refused call
    /// changes nothing.
    fn apply_ok<E>(&mut self, result: Result<Vec<Effect>, E>) {
        if let Ok(fx) = result {
            self.apply(fx);
        }
    }

    /// Process `i` heartbeats with what it hosts (each scene at
    /// `population`), or registers again if its link was closed.
    fn heartbeat(&mut self, i: usize, population: u32) {
        let p = &self.procs[i];
        if !p.up || p.paused {
            return;
        }
        let Some(id) = p.id else {
            // The link was closed: reconnect and register.
            return self.register(i);
        };
        let loads: Vec<SceneLoad> = p
            .hosted
            .iter()
            .map(|(scene, &epoch)| SceneLoad {
                scene: scene.clone(),
                epoch,
                population,
                tick_p99_us: 2000,
            })
            .collect();
        match self.st.heartbeat(self.now, id, &loads) {
            Ok(fx) => {
                self.apply(fx);
                self.check_claims_settled(i);
            }
            // Deregistered: it has to register again.
            Err(UnknownNode(_)) => self.procs[i].link_closed(),
        }
    }

    /// Process `i` reports every scene it hosts ready.
    fn ready(&mut self, i: usize) {
        let p = &self.procs[i];
        let (true, false, Some(id)) = (p.up, p.paused, p.id) else {
            return;
        };
        for (scene, epoch) in p.hosted.clone() {
            let fx = self.st.scene_ready(self.now, id, &scene, epoch);
            self.apply_ok(fx);
        }
    }

    /// Process `i` reports the scenes it dropped for a move released.
    fn release(&mut self, i: usize) {
        let p = &mut self.procs[i];
        let (true, false, Some(id)) = (p.up, p.paused, p.id) else {
            return;
        };
        for (scene, epoch) in std::mem::take(&mut p.released) {
            let fx = self.st.scene_released(self.now, id, &scene, epoch);
            self.apply_ok(fx);
        }
    }

    /// A paused process resumes: its queued messages arrive, unless its
    /// link was closed meanwhile (then it registers again).
    fn resume(&mut self, i: usize) {
        let p = &mut self.procs[i];
        if p.up && p.paused {
            p.paused = false;
            if p.id.is_none() {
                self.register(i);
            } else {
                for e in std::mem::take(&mut p.inbox) {
                    p.receive(e);
                }
            }
        }
    }

    /// SIGTERM: the process flushes, drops everything and leaves.
    fn deregister(&mut self, i: usize) {
        let p = &self.procs[i];
        let (true, false, Some(id)) = (p.up, p.paused, p.id) else {
            return;
        };
        self.procs[i].hosted.clear();
        self.procs[i].attached.clear();
        self.procs[i].link_closed();
        let fx = self.st.deregister(self.now, id);
        self.apply_ok(fx);
    }

    /// The coordinator restarts from the data service; every link closes
    /// and the running processes register again.
    fn restart_coordinator(&mut self) {
        self.st = ClusterState::recover(config(), self.stored_epochs.clone(), self.now)
            .expect("valid config");
        self.sessions.clear();
        for p in &mut self.procs {
            p.link_closed();
        }
        self.load_catalog();
        for i in 0..PROCS {
            if self.procs[i].up && !self.procs[i].paused {
                self.register(i);
            }
        }
    }

    /// The avatar's account attaches it (logging in first if needed).
    fn attach(&mut self, avatar: AvatarId) {
        let account = account_of(avatar).0;
        if !self.sessions.contains_key(&account) {
            self.login(account);
        }
        let session = self.session_of(account);
        let fx = self.st.attach(session, avatar);
        self.apply_ok(fx);
    }

    /// Any account's session tries to attach the avatar: refused unless
    /// the account owns it.
    fn attach_other(&mut self, account: u64, avatar: AvatarId) {
        let session = self.session_of(account);
        let result = self.st.attach(session, avatar);
        if account_of(avatar) != AccountId(account) {
            assert!(result.is_err(), "attached another account's avatar");
        }
        self.apply_ok(result);
    }

    /// A portal's first half: the avatar is detached at its scene's host.
    fn begin_transfer(&mut self, avatar: AvatarId, scene: usize) {
        let from = self
            .st
            .avatar(avatar)
            .and_then(|v| self.st.placement(&v.scene));
        let fx = self.st.begin_transfer(avatar, SCENES[scene]);
        if fx.is_ok() {
            self.transfer_from.insert(avatar, from);
        }
        self.apply_ok(fx);
    }

    /// A portal whose source detach report comes at once: begin and
    /// complete the transfer.
    fn portal(&mut self, avatar: AvatarId, scene: usize) {
        if let Ok(fx) = self.st.begin_transfer(avatar, SCENES[scene]) {
            self.apply(fx);
            let fx = self.st.complete_transfer(avatar).expect("in transfer");
            self.apply(fx);
        }
    }

    /// Every invariant, of the state and of the history so far.
    fn check(&mut self) {
        if let Err(e) = self.st.check_invariants() {
            panic!("state invariant: {e}");
        }
        self.check_directory();
        self.check_epochs();
        if !self.st.recovering() {
            self.check_attachments();
        }
        self.check_hosting();
        self.check_status_shape();
        self.check_transfers();
    }

    /// A transfer waits only while its source keeps the placement its
    /// detach went to: once that changes, the report can never be handled,
    /// and the transfer must not stay pending.
    fn check_transfers(&self) {
        for v in self.st.avatars() {
            if let AvatarPresence::Transferring { .. } = v.presence {
                assert_eq!(
                    self.st.placement(&v.scene),
                    self.transfer_from[&v.avatar],
                    "avatar {} still in transfer after its source {} changed placement",
                    v.avatar,
                    v.scene
                );
            }
        }
    }

    /// Every avatar is in exactly one scene, the one the data service
    /// stores: never lost, never duplicated; the directory's sessions are
    /// the model's.
    fn check_directory(&self) {
        let listed: Vec<AvatarId> = self.st.avatars().map(|v| v.avatar).collect();
        assert_eq!(listed, (0..AVATARS).collect::<Vec<_>>());
        for a in 0..AVATARS {
            let homes: Vec<&str> = SCENES
                .iter()
                .copied()
                .filter(|s| self.st.scene_avatars(s).any(|x| x == a))
                .collect();
            assert_eq!(homes, [self.avatar_scene[&a].as_str()], "avatar {a}");
            assert_eq!(self.st.avatar(a).expect("listed").scene, homes[0]);
        }
        for acc in 0..ACCOUNTS {
            assert_eq!(
                self.st.session_of(AccountId(acc)),
                self.sessions.get(&acc).copied()
            );
        }
    }

    /// Epochs per scene never go back, across restarts too; no process
    /// holds an epoch the state does not know; a placed scene's host is a
    /// live, registered process.
    fn check_epochs(&mut self) {
        for s in SCENES {
            let latest = self.st.scene(s).expect("catalog").latest_epoch;
            let seen = self.max_epoch.entry(s.to_owned()).or_default();
            assert!(
                latest >= *seen,
                "{s}: epoch went back from {seen} to {latest}"
            );
            *seen = latest;
            for p in &self.procs {
                if let Some(&e) = p.hosted.get(s) {
                    assert!(e <= latest, "a process hosts {s}@{e}, state knows {latest}");
                }
            }
            if let Some((server, _)) = self.st.placement(s) {
                assert!(self.st.node(server).expect("registered").alive);
                assert!(
                    self.procs.iter().any(|p| p.id == Some(server)),
                    "{s} placed on a node no process is registered as"
                );
            }
        }
    }

    /// Outside the restart grace, a host's attachments are exactly the
    /// directory's online avatars of the scene.
    fn check_attachments(&self) {
        for p in &self.procs {
            let (true, false, Some(id)) = (p.up, p.paused, p.id) else {
                continue;
            };
            for (scene, &epoch) in &p.hosted {
                if self.st.placement(scene) != Some((id, epoch)) {
                    continue;
                }
                let expected: BTreeSet<(AvatarId, SessionId)> = self
                    .st
                    .scene_avatars(scene)
                    .filter_map(|a| match self.st.avatar(a)?.presence {
                        AvatarPresence::Online { session } => Some((a, session)),
                        _ => None,
                    })
                    .collect();
                assert_eq!(
                    p.attached.get(scene).cloned().unwrap_or_default(),
                    expected,
                    "host of {scene}@{epoch} attached wrongly"
                );
            }
        }
    }

    /// No two processes host a scene at the same epoch; no scene is on two
    /// live servers.
    fn check_hosting(&self) {
        let mut held = BTreeSet::new();
        for p in &self.procs {
            for (s, &e) in &p.hosted {
                assert!(held.insert((s.clone(), e)), "{s}@{e} hosted twice");
            }
        }
        let mut seen_scenes = BTreeSet::new();
        for n in self.st.nodes() {
            for s in n.scenes {
                assert!(n.alive);
                assert!(seen_scenes.insert(s.clone()), "{s} on two servers");
            }
        }
    }

    /// The status JSON keeps its shape.
    fn check_status_shape(&self) {
        let json = serde_json::to_value(self.st.status()).expect("json");
        for server in json["scene_servers"].as_array().expect("array") {
            for key in ["name", "alive", "scenes"] {
                assert!(server.get(key).is_some(), "server row lacks {key}");
            }
        }
        let rows = json["scenes"].as_array().expect("array");
        assert_eq!(rows.len(), SCENES.len());
        for row in rows {
            for key in [
                "name",
                "server",
                "epoch",
                "status",
                "population",
                "tick_p99_ms",
            ] {
                assert!(row.get(key).is_some(), "scene row lacks {key}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cluster_invariants_hold_over_random_histories(ops in prop::collection::vec(op(), 1..120)) {
        let mut m = Model::new();
        m.check();
        for op in &ops {
            m.step(op);
            m.check();
        }
    }

    #[test]
    fn the_same_history_gives_the_same_state(ops in prop::collection::vec(op(), 1..60)) {
        let run = || {
            let mut m = Model::new();
            for op in &ops {
                m.step(op);
            }
            format!("{:?}", m.st)
        };
        prop_assert_eq!(run(), run());
    }
}

/// A liveness check the random histories cannot see: a server paused and
/// resumed across a coordinator restart, another killed, a lost PlaceScene —
/// once the live processes heartbeat regularly, every scene is placed on a
/// live process that really hosts it, at a higher epoch than before.
#[test]
fn every_scene_is_hosted_once_the_cluster_settles() {
    let mut m = Model::new();
    let script = [
        Op::Register(0),
        Op::Register(1),
        Op::Heartbeat(0, 1),
        Op::Heartbeat(1, 1),
        Op::Pause(0),
        Op::Advance(700),
        Op::Heartbeat(1, 1),
        Op::Advance(700),
        Op::Resume(0),
        Op::RestartCoordinator,
        Op::Kill(1),
        Op::Register(2),
        Op::LoseNextPlace(2),
    ];
    for op in &script {
        m.step(op);
        m.check();
    }
    // srv0 was paused out and told its epoch-1 scenes are stale; srv1 kept
    // epoch 2 across the restart.
    assert!(m.procs[0].hosted.is_empty());
    assert!(m.procs[1].hosted.is_empty(), "killed");
    for s in SCENES {
        assert_eq!(m.st.placement(s).map(|(_, e)| e), Some(2), "{s}");
    }
    for _ in 0..6 {
        for i in 0..PROCS {
            m.step(&Op::Heartbeat(i, 0));
        }
        m.step(&Op::Advance(600));
        m.check();
    }
    let mut hosts = BTreeSet::new();
    for s in SCENES {
        let (server, epoch) = m.st.placement(s).expect("placed");
        assert!(epoch > 2, "{s}@{epoch}");
        let (i, p) = m
            .procs
            .iter()
            .enumerate()
            .find(|(_, p)| p.id == Some(server))
            .expect("proc");
        assert!(p.up && !p.paused);
        assert_eq!(p.hosted.get(s), Some(&epoch), "{s}");
        hosts.insert(i);
    }
    assert_eq!(hosts, BTreeSet::from([0, 2]), "spread over both survivors");
    assert!(!m.procs[2].lose_next_place, "the lost PlaceScene happened");
}
