//! The `GET /v1/status` snapshot.

use serde::{Deserialize, Serialize};

use crate::{AvatarPresence, ClusterState, NodeKind, SceneStatus};
use tessera_wire::Epoch;

/// The body of `GET /v1/status`:
/// `{"scene_servers":[{"name","alive","scenes":[...],"draining","game"}],"scenes":[{"name","server","epoch","status","population","tick_p99_ms","online","moving_to"}],"gates":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Registered scene servers, by name (gates are not listed).
    pub scene_servers: Vec<ServerRow>,
    /// Catalog scenes, by name.
    pub scenes: Vec<SceneRow>,
    /// Registered gates, by name.
    #[serde(default)]
    pub gates: Vec<GateRow>,
}

/// One gate in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRow {
    pub name: String,
    pub alive: bool,
    /// Connected clients, as the gate last reported.
    pub online: u32,
}

/// One scene server in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRow {
    pub name: String,
    pub alive: bool,
    /// Scenes placed on it, by name.
    pub scenes: Vec<String>,
    /// An operator is emptying it (`tessera admin drain`).
    #[serde(default)]
    pub draining: bool,
    /// The game it runs (the `Game::name` of its binary).
    #[serde(default)]
    pub game: String,
}

/// One scene in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneRow {
    pub name: String,
    /// The hosting scene server's name; empty when unplaced.
    pub server: String,
    /// The current placement's epoch; when unplaced, the latest it had (0 if
    /// it was never placed).
    pub epoch: Epoch,
    pub status: SceneStatus,
    /// Last reported population.
    pub population: u32,
    /// Last reported 99th percentile tick time, in milliseconds.
    pub tick_p99_ms: f64,
    /// Avatars attached for a session (online players), from the directory.
    #[serde(default)]
    pub online: u32,
    /// The scene server a planned move is taking it to; `null` when none.
    #[serde(default)]
    pub moving_to: Option<String>,
}

/// The body of `POST /v1/admin/move-scene`: move `scene` to the scene
/// server named `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub scene: String,
    pub to: String,
}

/// The answer to a [`MoveRequest`]: the move has begun; `tessera status`
/// shows the scene `moving_to` the target until it is placed there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveResponse {
    pub scene: String,
    pub to: String,
}

/// The answer to a [`DrainRequest`]: whether the server is draining now and
/// the scenes still on it (they move one at a time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainResponse {
    pub server: String,
    pub draining: bool,
    pub scenes: Vec<String>,
}

/// The body of `POST /v1/admin/drain`: empty the scene server `server`, or
/// with `cancel`, let it take scenes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub server: String,
    #[serde(default)]
    pub cancel: bool,
}

impl ClusterState {
    /// The status snapshot, sorted by name.
    pub fn status(&self) -> ClusterStatus {
        let mut scene_servers: Vec<ServerRow> = self
            .nodes
            .values()
            .filter(|n| n.kind == NodeKind::SceneServer)
            .map(|n| ServerRow {
                name: n.name.clone(),
                alive: n.alive,
                scenes: n.scenes.iter().cloned().collect(),
                draining: n.draining,
                game: n.game.clone(),
            })
            .collect();
        scene_servers.sort_by(|a, b| a.name.cmp(&b.name));
        let scenes = self
            .scenes
            .iter()
            .map(|(name, s)| SceneRow {
                name: name.clone(),
                server: s
                    .placement
                    .and_then(|(id, _)| self.nodes.get(&id))
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
                epoch: s.placement.map_or(s.latest, |(_, e)| e),
                status: self.config.status_of(s.population),
                population: s.population,
                tick_p99_ms: f64::from(s.tick_p99_us) / 1000.0,
                online: u32::try_from(
                    s.avatars
                        .iter()
                        .filter(|a| {
                            self.avatars.get(a).is_some_and(|v| {
                                matches!(v.presence, AvatarPresence::Online { .. })
                            })
                        })
                        .count(),
                )
                .unwrap_or(u32::MAX),
                moving_to: s
                    .moving
                    .as_ref()
                    .and_then(|m| self.nodes.get(&m.to))
                    .map(|n| n.name.clone()),
            })
            .collect();
        let mut gates: Vec<GateRow> = self
            .nodes
            .values()
            .filter(|n| n.kind == NodeKind::Gate)
            .map(|n| GateRow {
                name: n.name.clone(),
                alive: n.alive,
                online: 0,
            })
            .collect();
        gates.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterStatus {
            scene_servers,
            scenes,
            gates,
        }
    }
}
