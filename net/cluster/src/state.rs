//! [`ClusterState`]: what it holds, how it is built, and how time passes.

use std::collections::BTreeMap;

use tessera_proto::AvatarId;
use tessera_wire::Epoch;

use crate::avatars::{Avatar, Session};
use crate::placement::SceneEntry;
use crate::registry::Node;
use crate::{AccountId, ClusterConfig, ClusterConfigError, Effect, NodeId, SessionId};

/// The coordinator's cluster state. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct ClusterState {
    pub(crate) config: ClusterConfig,
    pub(crate) now: u64,
    /// No new placements before this time (restart grace).
    pub(crate) hold_until: u64,
    /// Recovering after a restart: the directory is not authoritative until
    /// the grace period ends, so [`Effect::SyncAttached`] waits until then.
    pub(crate) recovering: bool,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) names: BTreeMap<String, NodeId>,
    pub(crate) next_node: u32,
    pub(crate) scenes: BTreeMap<String, SceneEntry>,
    pub(crate) avatars: BTreeMap<AvatarId, Avatar>,
    pub(crate) sessions: BTreeMap<SessionId, Session>,
    pub(crate) accounts: BTreeMap<AccountId, SessionId>,
}

impl ClusterState {
    /// A fresh cluster (first start): no epochs known, no grace period.
    pub fn new(config: ClusterConfig, now: u64) -> Result<Self, ClusterConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            now,
            hold_until: now,
            recovering: false,
            nodes: BTreeMap::new(),
            names: BTreeMap::new(),
            next_node: 1,
            scenes: BTreeMap::new(),
            avatars: BTreeMap::new(),
            sessions: BTreeMap::new(),
            accounts: BTreeMap::new(),
        })
    }

    /// The state after a coordinator restart: `epochs` are the per-scene
    /// epochs stored from [`Effect::PersistEpoch`] (scenes in it join the
    /// catalog). New placements wait `restart_grace_ms` for servers to
    /// re-register with the scenes they still host.
    pub fn recover(
        config: ClusterConfig,
        epochs: impl IntoIterator<Item = (String, Epoch)>,
        now: u64,
    ) -> Result<Self, ClusterConfigError> {
        let grace = config.restart_grace_ms;
        let mut state = Self::new(config, now)?;
        state.hold_until = now.saturating_add(grace);
        state.recovering = true;
        for (scene, epoch) in epochs {
            let entry = state.scenes.entry(scene).or_default();
            entry.latest = entry.latest.max(epoch);
        }
        Ok(state)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The latest time the state has seen.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Still in the grace period after [`recover`](Self::recover): placements
    /// are held back and the directory is being rebuilt.
    pub fn recovering(&self) -> bool {
        self.recovering
    }

    /// Time passes: nodes past their heartbeat timeout die (their scenes are
    /// re-placed on survivors) and unplaced scenes are placed if they can be.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        self.advance(now);
        let mut out = Vec::new();
        self.sweep(&mut out);
        out
    }

    /// Checks every invariant in the crate docs; `Err` names the first
    /// broken one. Cheap enough for debug assertions and tests, not for every
    /// message in production (it walks the whole state).
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_registry_invariants()?;
        self.check_placement_invariants()?;
        self.check_move_invariants()?;
        self.check_avatar_invariants()
    }

    /// Time only goes forward.
    pub(crate) fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// Expire silent nodes and late moves, end the restart grace period
    /// when it is over, place what is unplaced, then start the next planned
    /// move if one is due. Every mutating call ends with it.
    pub(crate) fn sweep(&mut self, out: &mut Vec<Effect>) {
        self.expire_silent(out);
        self.expire_moves(out);
        if self.recovering && self.now >= self.hold_until {
            self.end_recovery(out);
        }
        self.place_unplaced(out);
        self.plan_moves(out);
    }

    /// The directory is rebuilt: every host learns what it must have
    /// attached.
    fn end_recovery(&mut self, out: &mut Vec<Effect>) {
        self.recovering = false;
        let placed: Vec<String> = self
            .scenes
            .iter()
            .filter(|(_, s)| s.placement.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        for scene in placed {
            self.push_sync(&scene, out);
        }
    }
}
