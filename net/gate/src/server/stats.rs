//! The gate process's counters: [`GateServerStats`] and its copy,
//! [`GateServerSnapshot`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of one gate process.
#[derive(Debug, Default)]
pub struct GateServerStats {
    pub clients: AtomicU64,
    pub sessions_opened: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub malformed: AtomicU64,
    pub idle_kicks: AtomicU64,
    pub cluster_kicks: AtomicU64,
    pub inputs: AtomicU64,
    pub inputs_dropped: AtomicU64,
    pub packets: AtomicU64,
    pub packets_dropped: AtomicU64,
    pub packets_unrouted: AtomicU64,
    pub chat_delivered: AtomicU64,
    pub chat_shed_recipient_rate: AtomicU64,
    pub chat_shed_queue_full: AtomicU64,
    pub limited_chat: AtomicU64,
    pub limited_channel_chat: AtomicU64,
    pub limited_list_avatars: AtomicU64,
    pub limited_create_avatar: AtomicU64,
    pub to_coordinator_dropped: AtomicU64,
    pub told_dropped: AtomicU64,
    pub actions: AtomicU64,
    pub actions_limited: AtomicU64,
    pub actions_malformed: AtomicU64,
    pub misbehaved_kicks: AtomicU64,
    pub events_delivered: AtomicU64,
    pub events_dropped: AtomicU64,
    /// Registered with the coordinator on the current link (readiness).
    pub registered: AtomicBool,
    /// The agent loop has ended (liveness).
    pub stopped: AtomicBool,
}

/// A snapshot of [`GateServerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct GateServerSnapshot {
    pub clients: u64,
    pub sessions_opened: u64,
    pub sessions_refused: u64,
    pub malformed: u64,
    pub idle_kicks: u64,
    pub cluster_kicks: u64,
    pub inputs: u64,
    pub inputs_dropped: u64,
    /// Replication packets from scenes handed to a client's listener.
    pub packets: u64,
    /// Replication packets dropped because the listener's queue was (three
    /// quarters) full.
    pub packets_dropped: u64,
    /// Replication packets for a client no listener has (it has just left,
    /// and its scene sends until the detach reaches it).
    pub packets_unrouted: u64,
    /// Chat lines handed to a recipient's listener.
    pub chat_delivered: u64,
    /// Chat lines not sent to a recipient over `chat_received_per_s`.
    pub chat_shed_recipient_rate: u64,
    /// Chat lines not sent because the recipient's listener's command
    /// queue was half full.
    pub chat_shed_queue_full: u64,
    /// Requests refused by the session's limits, by kind.
    pub limited_chat: u64,
    pub limited_channel_chat: u64,
    pub limited_list_avatars: u64,
    pub limited_create_avatar: u64,
    pub to_coordinator_dropped: u64,
    /// Reliable messages to a client that found its listener's queue full
    /// (each is logged, and the client disconnected: its session cannot go
    /// on without the message).
    pub told_dropped: u64,
    /// Game actions forwarded to their scene.
    pub actions: u64,
    /// Game actions over their kind's rate: dropped.
    pub actions_limited: u64,
    /// Game actions of an unknown kind or a wrong size: their sender kicked.
    pub actions_malformed: u64,
    /// Clients kicked because their scene could not take their action.
    pub misbehaved_kicks: u64,
    /// Game events handed to a client's listener, and dropped (the client
    /// gone, or its listener's queue full).
    pub events_delivered: u64,
    pub events_dropped: u64,
}

impl GateServerStats {
    pub fn snapshot(&self) -> GateServerSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GateServerSnapshot {
            clients: g(&self.clients),
            sessions_opened: g(&self.sessions_opened),
            sessions_refused: g(&self.sessions_refused),
            malformed: g(&self.malformed),
            idle_kicks: g(&self.idle_kicks),
            cluster_kicks: g(&self.cluster_kicks),
            inputs: g(&self.inputs),
            inputs_dropped: g(&self.inputs_dropped),
            packets: g(&self.packets),
            packets_dropped: g(&self.packets_dropped),
            packets_unrouted: g(&self.packets_unrouted),
            chat_delivered: g(&self.chat_delivered),
            chat_shed_recipient_rate: g(&self.chat_shed_recipient_rate),
            chat_shed_queue_full: g(&self.chat_shed_queue_full),
            limited_chat: g(&self.limited_chat),
            limited_channel_chat: g(&self.limited_channel_chat),
            limited_list_avatars: g(&self.limited_list_avatars),
            limited_create_avatar: g(&self.limited_create_avatar),
            to_coordinator_dropped: g(&self.to_coordinator_dropped),
            told_dropped: g(&self.told_dropped),
            actions: g(&self.actions),
            actions_limited: g(&self.actions_limited),
            actions_malformed: g(&self.actions_malformed),
            misbehaved_kicks: g(&self.misbehaved_kicks),
            events_delivered: g(&self.events_delivered),
            events_dropped: g(&self.events_dropped),
        }
    }
}
