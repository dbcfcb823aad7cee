//! Replication forwarding: a task per scene server link hands the scene's
//! packets, unchanged, to their clients' listeners.

use std::sync::Arc;

use tessera_link::{LinkConfig, bump, connect};
use tessera_wire::LinkMsg;
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

/// A message from a scene server: replication goes to the clients.
fn on_scene_msg(gate: &Gate, stats: &GateServerStats, msg: LinkMsg) {
    match msg {
        LinkMsg::Replication { client, bytes } => {
            forward_packet(gate, stats, client, bytes);
        }
        LinkMsg::ReplicationBatch { packets } => {
            for (client, bytes) in packets {
                forward_packet(gate, stats, client, bytes);
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

/// One scene server link: replication straight to the clients. Reports
/// the link up and, when it ends or cannot be made, down.
pub(super) async fn scene_task(
    server: String,
    addr: String,
    cfg: LinkConfig,
    gate: Arc<Gate>,
    stats: Arc<GateServerStats>,
    inbox: mpsc::Sender<Inbox>,
    stop: CancellationToken,
) {
    let link = tokio::select! {
        _ = stop.cancelled() => return,
        l = connect(&addr, &cfg) => l,
    };
    let link = match link {
        Ok(l) => l,
        Err(e) => {
            warn!(%server, %addr, error = %e, "cannot reach scene server");
            let _ = inbox.send(Inbox::SceneDown(server)).await;
            return;
        }
    };
    let (sender, mut receiver) = link.split();
    if inbox
        .send(Inbox::SceneUp(server.clone(), sender))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = receiver.recv() => match m { Some(m) => m, None => break },
        };
        on_scene_msg(&gate, &stats, msg);
    }
    let _ = inbox.send(Inbox::SceneDown(server)).await;
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
