//! The gate side: one task per gate (or tool) link taking inputs, and one
//! pump per hosted scene sending its replication to the gates and its
//! events towards the coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tessera_link::{Link, LinkSender, bump, lock};
use tessera_proto::Uplink;
use tessera_sim::{ClientId, Inbound, Input, SceneEvent};
use tessera_wire::{Epoch, LinkMsg, SceneCommand, ToClient, WireEvent};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::state::{Routes, ServerState};
use tessera_host::{OutputQueue, TickBatch};

/// One gate's (or tool's) link: inputs in, replication out.
pub(crate) async fn gate_link(shared: Arc<ServerState>, link: Link, stop: CancellationToken) {
    let gate = link.peer().node.clone();
    let (sender, mut receiver) = link.split();
    let id = {
        let mut routes = lock(&shared.routes);
        routes.next_link += 1;
        let id = routes.next_link;
        routes.gates.insert(gate.clone(), (id, sender.clone()));
        id
    };
    debug!(%gate, "gate linked");
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            m = receiver.recv() => match m { Some(m) => m, None => break },
        };
        match msg {
            LinkMsg::Command {
                scene,
                epoch,
                command: SceneCommand::Input { client, input },
            } => on_input(&shared, &sender, &gate, scene, epoch, client, input),
            LinkMsg::Inputs {
                scene,
                epoch,
                inputs,
            } => on_inputs(&shared, &sender, &gate, scene, epoch, inputs),
            other => {
                bump(&shared.counters.commands_foreign);
                let _ = sender.try_send(&LinkMsg::Refused {
                    reason: format!("a gate may only send inputs, not {}", other.kind()),
                });
            }
        }
    }
    let mut routes = lock(&shared.routes);
    if routes.gates.get(&gate).is_some_and(|(i, _)| *i == id) {
        routes.gates.remove(&gate);
    }
}

/// Whether `client` is routed to `gate` in `scene`: a gate sends inputs only
/// for its own clients.
fn routed(routes: &Routes, client: ClientId, gate: &str, scene: &str) -> bool {
    routes
        .clients
        .get(&client)
        .is_some_and(|r| r.gate == gate && r.scene == scene)
}

/// One input, for the hosted epoch only.
fn on_input(
    shared: &ServerState,
    sender: &LinkSender,
    gate: &str,
    scene: String,
    epoch: Epoch,
    client: ClientId,
    input: Input,
) {
    if !routed(&lock(&shared.routes), client, gate, &scene) {
        bump(&shared.counters.commands_foreign);
        return;
    }
    match shared.epoch_of(&scene) {
        Some(e) if e == epoch => shared.command(&scene, Inbound::Input { client, input }),
        Some(current) => {
            bump(&shared.counters.commands_stale);
            let _ = sender.try_send(&LinkMsg::EpochStale { scene, current });
        }
        None => bump(&shared.counters.inputs_refused),
    }
}

/// A gate's batch of inputs for one scene: all stale, or each checked
/// against its route and queued.
fn on_inputs(
    shared: &ServerState,
    sender: &LinkSender,
    gate: &str,
    scene: String,
    epoch: Epoch,
    inputs: Vec<(ClientId, Uplink)>,
) {
    let current = shared.epoch_of(&scene);
    if current != Some(epoch) {
        shared
            .counters
            .commands_stale
            .fetch_add(inputs.len() as u64, Ordering::Relaxed);
        if let Some(current) = current {
            let _ = sender.try_send(&LinkMsg::EpochStale { scene, current });
        }
        return;
    }
    let routes = lock(&shared.routes);
    let host = lock(&shared.host);
    for (client, up) in inputs {
        if !routed(&routes, client, gate, &scene) {
            bump(&shared.counters.commands_foreign);
            continue;
        }
        let cmd = match up {
            Uplink::Input(input) => Inbound::Input { client, input },
            Uplink::Ack(ack) => Inbound::Ack { client, ack },
            Uplink::Action { kind, payload } => Inbound::Action {
                client,
                kind,
                payload,
            },
        };
        if host.command(&scene, cmd).is_err() {
            bump(&shared.counters.inputs_refused);
        }
    }
}

/// Forwards one scene's output: replication to gates, events to the coordinator.
pub(crate) async fn pump(
    shared: Arc<ServerState>,
    scene: String,
    epoch: Epoch,
    output: Arc<OutputQueue>,
) {
    while let Some(batch) = output.pop().await {
        forward_packets(&shared, &batch);
        forward_to_clients(&shared, &batch);
        forward_events(&shared, &scene, epoch, &batch);
    }
    debug!(%scene, epoch, "output pump ended");
}

/// One batch per gate per tick (split past `REPLICATION_BATCH_BYTES`), so
/// thousands of clients' packets cost a few frames, not thousands.
fn forward_packets(shared: &ServerState, batch: &TickBatch) {
    let routes = lock(&shared.routes);
    let mut by_gate: BTreeMap<&str, (Vec<(ClientId, Vec<u8>)>, usize)> = BTreeMap::new();
    let flush = |gate: &str, packets: Vec<(ClientId, Vec<u8>)>| {
        let n = packets.len() as u64;
        let sent = routes
            .gates
            .get(gate)
            .is_some_and(|(_, s)| s.try_send(&LinkMsg::ReplicationBatch { packets }).is_ok());
        let c = if sent {
            &shared.counters.packets_sent
        } else {
            &shared.counters.packets_dropped
        };
        c.fetch_add(n, Ordering::Relaxed);
    };
    for (client, bytes) in &batch.packets {
        let Some(route) = routes.clients.get(client) else {
            if *client > u64::from(shared.walkers) {
                bump(&shared.counters.packets_unrouted);
            }
            continue;
        };
        let entry = by_gate.entry(route.gate.as_str()).or_default();
        entry.1 += bytes.len() + 16;
        entry.0.push((*client, bytes.to_vec()));
        if entry.1 >= tessera_wire::REPLICATION_BATCH_BYTES {
            let packets = std::mem::take(&mut entry.0);
            entry.1 = 0;
            flush(route.gate.as_str(), packets);
        }
    }
    for (gate, (packets, _)) in by_gate {
        if !packets.is_empty() {
            flush(gate, packets);
        }
    }
}

/// The tick's game events and kicks of misbehaving clients, one frame per
/// gate (split past `REPLICATION_BATCH_BYTES`).
fn forward_to_clients(shared: &ServerState, batch: &TickBatch) {
    let kicks = batch.events.iter().filter_map(|e| match e {
        SceneEvent::Misbehaved { client, reason } => Some((
            *client,
            ToClient::Kick {
                client: *client,
                reason: reason.clone(),
            },
        )),
        _ => None,
    });
    let events = batch.game.iter().map(|e| {
        (
            e.client,
            ToClient::Event {
                client: e.client,
                kind: e.kind,
                reliable: e.reliable,
                payload: e.payload.to_vec(),
            },
        )
    });
    let routes = lock(&shared.routes);
    let mut by_gate: BTreeMap<&str, (Vec<ToClient>, usize)> = BTreeMap::new();
    let flush = |gate: &str, items: Vec<ToClient>| {
        let n = items.len() as u64;
        let sent = routes
            .gates
            .get(gate)
            .is_some_and(|(_, s)| s.try_send(&LinkMsg::ToClients { items }).is_ok());
        if !sent {
            shared
                .counters
                .game_events_dropped
                .fetch_add(n, Ordering::Relaxed);
        }
    };
    for (client, item) in kicks.chain(events) {
        let Some(route) = routes.clients.get(&client) else {
            bump(&shared.counters.game_events_unrouted);
            continue;
        };
        let entry = by_gate.entry(route.gate.as_str()).or_default();
        entry.1 += match &item {
            ToClient::Event { payload, .. } => payload.len() + 16,
            ToClient::Kick { reason, .. } => reason.len() + 16,
        };
        entry.0.push(item);
        if entry.1 >= tessera_wire::REPLICATION_BATCH_BYTES {
            let items = std::mem::take(&mut entry.0);
            entry.1 = 0;
            flush(route.gate.as_str(), items);
        }
    }
    for (gate, (items, _)) in by_gate {
        if !items.is_empty() {
            flush(gate, items);
        }
    }
}

/// Queues the tick's events and channel asks for the coordinator; a detach
/// also ends the client's route.
fn forward_events(shared: &ServerState, scene: &str, epoch: Epoch, batch: &TickBatch) {
    for ev in &batch.events {
        if let SceneEvent::Detached { client, .. } = ev {
            let mut routes = lock(&shared.routes);
            if routes.clients.get(client).is_some_and(|r| r.scene == scene) {
                routes.clients.remove(client);
            }
        }
        let Some(event) = WireEvent::of(ev) else {
            continue;
        };
        shared.push_event(LinkMsg::Event {
            scene: scene.to_owned(),
            epoch,
            event,
        });
    }
    // After the tick's events: an avatar attached this tick is known to the
    // coordinator before an ask that names it.
    if !batch.channel_ops.is_empty() {
        shared.push_event(LinkMsg::ChannelOps {
            scene: scene.to_owned(),
            epoch,
            ops: batch.channel_ops.iter().cloned().map(Into::into).collect(),
        });
    }
}
