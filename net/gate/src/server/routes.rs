//! Routing to scene servers: one link per scene server a session is
//! routed to, and the inputs gathered per scene before they go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument as _;

use tessera_link::{LinkSender, bump};
use tessera_proto::Uplink;
use tessera_wire::{Epoch, LinkMsg};
use tokio_util::sync::CancellationToken;

use super::agent::{AgentLoop, Route};
use super::replication::scene_task;

/// A scene server link, from the first `Routed` that names its server.
pub(super) enum SceneLink {
    /// Its task is connecting: inputs for it are dropped (and counted).
    Connecting,
    Up(LinkSender),
}

/// How long inputs are gathered before they go to the scene servers.
pub(super) const INPUT_FLUSH: Duration = Duration::from_millis(5);
/// Inputs for one scene that trigger a flush at once.
pub(super) const MAX_INPUT_BATCH: usize = 4096;

/// Inputs waiting, by scene server, then (scene, epoch).
pub(super) type InputBatches = BTreeMap<String, BTreeMap<(String, Epoch), Vec<(u64, Uplink)>>>;

impl AgentLoop {
    /// Sends the gathered inputs, one `Inputs` frame per scene.
    pub(super) fn flush_inputs(&mut self) {
        for (server, scenes) in std::mem::take(&mut self.inputs) {
            for ((scene, epoch), inputs) in scenes {
                let n = inputs.len() as u64;
                let sent = match self.scenes.get(&server) {
                    Some(SceneLink::Up(s)) => s
                        .try_send(&LinkMsg::Inputs {
                            scene,
                            epoch,
                            inputs,
                        })
                        .is_ok(),
                    _ => false,
                };
                let c = if sent {
                    &self.stats.inputs
                } else {
                    &self.stats.inputs_dropped
                };
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// A session's avatar is in `scene` (at `epoch`) on scene server
    /// `server`: its inputs go there from now on, over a link to `addr`.
    pub(super) fn on_routed(
        &mut self,
        session: u64,
        scene: String,
        epoch: Epoch,
        server: String,
        addr: &str,
    ) {
        self.ensure_scene_link(&server, addr);
        if let Some(agent) = self.agents.get_mut(&session) {
            agent.route = Some(Route {
                scene,
                epoch,
                server,
            });
        }
    }

    /// Gathers a session's input for its scene server: it goes with the
    /// others for that scene as one `Inputs` frame every [`INPUT_FLUSH`],
    /// or at once when [`MAX_INPUT_BATCH`] are waiting. Without a route it
    /// is dropped (and counted).
    pub(super) fn queue_input(&mut self, session: u64, input: Uplink) {
        let Some(route) = self.agents.get(&session).and_then(|a| a.route.as_ref()) else {
            bump(&self.stats.inputs_dropped);
            return;
        };
        let batch = self
            .inputs
            .entry(route.server.clone())
            .or_default()
            .entry((route.scene.clone(), route.epoch))
            .or_default();
        batch.push((session, input));
        if batch.len() >= MAX_INPUT_BATCH {
            self.flush_inputs();
        }
    }

    /// Starts a link task to scene server `server` unless there is one.
    fn ensure_scene_link(&mut self, server: &str, addr: &str) {
        if self.scenes.contains_key(server) {
            return;
        }
        self.scenes.insert(server.to_owned(), SceneLink::Connecting);
        tokio::spawn(
            scene_task(
                server.to_owned(),
                addr.to_owned(),
                self.link_cfg.clone(),
                Arc::clone(&self.gate),
                Arc::clone(&self.stats),
                self.inbox_tx.clone(),
                CancellationToken::new(),
            )
            .in_current_span(),
        );
    }
}
