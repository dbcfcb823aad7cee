//! Replication forwarding: a task per scene server link hands the scene's
//! packets, unchanged, to their clients' listeners.

use std::sync::Arc;

use tessera_link::{Connector, bump};
use tessera_proto::ServerMsg;
use tessera_proto::client::encode_event_datagram;
use tessera_wire::{LinkMsg, ToClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{Channel, Gate, GateSendError};

use super::{GateServerStats, Inbox};

/// Hands a scene's replication packet to its client's listener, counting
/// where it went.
fn forward_packet(gate: &Gate, stats: &GateServerStats, client: u64, bytes: Vec<u8>) {
    match gate.send(client, Channel::Unreliable, bytes) {
        Ok(()) => bump(&stats.packets),
        Err(GateSendError::UnknownClient) => bump(&stats.packets_unrouted),
        Err(_) => bump(&stats.packets_dropped),
    }
}

/// Hands a game event to its client's listener: reliable ones as
/// [`ServerMsg::Event`] (a client that cannot take one is disconnected,
/// like for any reliable message), the others as an event datagram on the
/// unreliable channel, shed first when the listener is busy.
fn forward_event(
    gate: &Gate,
    stats: &GateServerStats,
    client: u64,
    kind: u16,
    reliable: bool,
    payload: Vec<u8>,
) {
    let sent = if reliable {
        gate.send(
            client,
            Channel::Reliable,
            ServerMsg::Event { kind, payload }.encode(),
        )
    } else {
        // Sheddable: a burst of them never crowds out replication.
        gate.offer(
            client,
            Channel::Unreliable,
            encode_event_datagram(kind, &payload),
        )
    };
    match sent {
        Ok(()) => bump(&stats.events_delivered),
        Err(_) => bump(&stats.events_dropped),
    }
}

/// A message from a scene server: replication and game events go to the
/// clients; a client its scene could not take is kicked (by the agent loop).
fn on_scene_msg(gate: &Gate, stats: &GateServerStats, inbox: &mpsc::Sender<Inbox>, msg: LinkMsg) {
    match msg {
        LinkMsg::Replication { client, bytes } => {
            forward_packet(gate, stats, client, bytes);
        }
        LinkMsg::ReplicationBatch { packets } => {
            for (client, bytes) in packets {
                forward_packet(gate, stats, client, bytes);
            }
        }
        LinkMsg::ToClients { items } => {
            for item in items {
                match item {
                    ToClient::Event {
                        client,
                        kind,
                        reliable,
                        payload,
                    } => forward_event(gate, stats, client, kind, reliable, payload),
                    ToClient::Kick { client, reason } => {
                        if inbox.try_send(Inbox::Misbehaved(client, reason)).is_err() {
                            bump(&stats.to_coordinator_dropped);
                        }
                    }
                }
            }
        }
        LinkMsg::EpochStale { scene, current } => {
            debug!(%scene, current, "inputs for a stale placement");
        }
        other => debug!(
            kind = other.kind(),
            "unexpected message from a scene server"
        ),
    }
}

/// What a scene link task needs besides its stop signal.
pub(super) struct SceneTask {
    pub(super) server: String,
    /// The task's number, in every report (see `SceneLink::task`).
    pub(super) task: u64,
    pub(super) connector: Connector,
    pub(super) gate: Arc<Gate>,
    pub(super) stats: Arc<GateServerStats>,
    pub(super) inbox: mpsc::Sender<Inbox>,
}

/// One scene server's link, kept up until `stop`: replication straight to
/// the clients. Reports the link up each time it is made and down each
/// time it is lost, then reconnects (with the connector's backoff); a
/// permanent refusal ends the task with [`Inbox::SceneGone`].
pub(super) async fn scene_task(mut t: SceneTask, stop: CancellationToken) {
    loop {
        let link = tokio::select! {
            _ = stop.cancelled() => return,
            l = t.connector.connect() => l,
        };
        let link = match link {
            Ok(l) => l,
            Err(e) => {
                warn!(server = %t.server, addr = %t.connector.addr(), error = %e, "cannot reach scene server; giving up");
                let _ = t.inbox.send(Inbox::SceneGone(t.server, t.task)).await;
                return;
            }
        };
        let (sender, mut receiver) = link.split();
        let up = Inbox::SceneUp(t.server.clone(), t.task, sender);
        if t.inbox.send(up).await.is_err() {
            return;
        }
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = receiver.recv() => match m { Some(m) => m, None => break },
            };
            on_scene_msg(&t.gate, &t.stats, &t.inbox, msg);
        }
        let reason = receiver.close_reason();
        warn!(server = %t.server, ?reason, "scene server link lost; reconnecting");
        if t.inbox
            .send(Inbox::SceneDown(t.server.clone(), t.task))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::{AdmitAll, GateConfig};

    /// A packet for a client no listener has is counted as unrouted, not
    /// as dropped for a full queue.
    #[tokio::test]
    async fn a_packet_for_a_gone_client_is_counted_unrouted() {
        let config = GateConfig::new(1, [7u8; 32]);
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let (gate, _events) = Gate::bind(config, &[addr], Arc::new(AdmitAll))
            .await
            .expect("gate binds");
        let stats = GateServerStats::default();
        forward_packet(&gate, &stats, 42, vec![1, 2, 3]);
        let s = stats.snapshot();
        assert_eq!(
            (s.packets, s.packets_unrouted, s.packets_dropped),
            (0, 1, 0)
        );
        tokio::time::timeout(Duration::from_secs(10), gate.shutdown())
            .await
            .expect("gate stops");
    }
}
