//! Routing to scene servers: one link per scene server a session is
//! routed to, and the inputs gathered per scene before they go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tessera_link::LinkSender;
use tessera_wire::{Epoch, Input, LinkMsg};
use tokio_util::sync::CancellationToken;

use super::agent::AgentLoop;
use super::replication::scene_task;

pub(super) enum SceneLink {
    Connecting,
    Up(LinkSender),
}

/// How long inputs are gathered before they go to the scene servers.
pub(super) const INPUT_FLUSH: Duration = Duration::from_millis(5);
/// Inputs for one scene that trigger a flush at once.
pub(super) const MAX_INPUT_BATCH: usize = 4096;

/// Inputs waiting, by scene server, then (scene, epoch).
pub(super) type InputBatches = BTreeMap<String, BTreeMap<(String, Epoch), Vec<(u64, Input)>>>;

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

    pub(super) fn ensure_scene_link(&mut self, server: &str, addr: &str) {
        if self.scenes.contains_key(server) {
            return;
        }
        self.scenes.insert(server.to_owned(), SceneLink::Connecting);
        tokio::spawn(scene_task(
            server.to_owned(),
            addr.to_owned(),
            self.link_cfg.clone(),
            Arc::clone(&self.gate),
            Arc::clone(&self.stats),
            self.inbox_tx.clone(),
            CancellationToken::new(),
        ));
    }
}
