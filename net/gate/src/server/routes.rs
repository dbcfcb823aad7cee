//! Routing to scene servers: one link per scene server a session is
//! routed to — re-established whenever it drops, closed once no session
//! is routed there — and the inputs gathered per scene before they go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument as _;

use tessera_link::{Connector, LinkSender, bump};
use tessera_proto::Uplink;
use tessera_wire::{Epoch, LinkMsg};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::agent::{AgentLoop, Route};
use super::replication::{SceneTask, scene_task};

/// A scene server link, kept up by its task (reconnecting with backoff)
/// from the first `Routed` that names its server for as long as any
/// session is routed there.
pub(super) struct SceneLink {
    /// Where the server's link listener is (from `Routed`).
    pub(super) addr: String,
    /// Which task this is: reports of an earlier task for the same server
    /// are ignored.
    pub(super) task: u64,
    /// Stops the task (and closes its link).
    pub(super) stop: CancellationToken,
    /// The link while it is up; while the task connects, inputs for the
    /// server are dropped (and counted).
    pub(super) sender: Option<LinkSender>,
}

impl Drop for SceneLink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
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
                let sent = match self.scenes.get(&server).and_then(|l| l.sender.as_ref()) {
                    Some(s) => s
                        .try_send(&LinkMsg::Inputs {
                            scene,
                            epoch,
                            inputs,
                        })
                        .is_ok(),
                    None => false,
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
            // The same placement again (a replayed attach): the avatar
            // keeps its id there.
            let net_id = agent
                .route
                .as_ref()
                .filter(|r| r.scene == scene && r.epoch == epoch && r.server == server)
                .and_then(|r| r.net_id);
            agent.route = Some(Route {
                scene,
                epoch,
                server,
                net_id,
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

    /// Starts a link task to scene server `server` unless one runs for
    /// `addr` (a server that moved to another address gets a new one).
    fn ensure_scene_link(&mut self, server: &str, addr: &str) {
        if self.scenes.get(server).is_some_and(|l| l.addr == addr) {
            return;
        }
        self.scene_tasks += 1;
        let task = self.scene_tasks;
        let stop = CancellationToken::new();
        // Replacing an entry drops it, which stops the old task.
        self.scenes.insert(
            server.to_owned(),
            SceneLink {
                addr: addr.to_owned(),
                task,
                stop: stop.clone(),
                sender: None,
            },
        );
        let mut cfg = self.link_cfg.clone();
        // Keep trying for as long as sessions are routed there.
        cfg.backoff.max_attempts = None;
        tokio::spawn(
            scene_task(
                SceneTask {
                    server: server.to_owned(),
                    task,
                    connector: Connector::new(addr, cfg),
                    gate: Arc::clone(&self.gate),
                    stats: Arc::clone(&self.stats),
                    inbox: self.inbox_tx.clone(),
                },
                stop,
            )
            .in_current_span(),
        );
    }

    /// A scene link task reports its link up (`Some`) or lost (`None`).
    pub(super) fn on_scene_link(&mut self, server: &str, task: u64, sender: Option<LinkSender>) {
        if let Some(l) = self.scenes.get_mut(server)
            && l.task == task
        {
            l.sender = sender;
        }
    }

    /// A scene link task gave up for good (the server refused this gate):
    /// the next `Routed` to that server starts another.
    pub(super) fn on_scene_gone(&mut self, server: &str, task: u64) {
        if self.scenes.get(server).is_some_and(|l| l.task == task) {
            self.scenes.remove(server);
        }
    }

    /// Closes the links to scene servers no session is routed to any more.
    pub(super) fn close_unused_scene_links(&mut self) {
        let used: BTreeSet<&str> = self
            .agents
            .values()
            .filter_map(|a| a.route.as_ref().map(|r| r.server.as_str()))
            .collect();
        let unused: Vec<String> = self
            .scenes
            .keys()
            .filter(|s| !used.contains(s.as_str()))
            .cloned()
            .collect();
        for server in unused {
            debug!(%server, "no session routed to this scene server: closing its link");
            self.scenes.remove(&server);
        }
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
