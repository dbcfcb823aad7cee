//! The gate as a metrics [`Source`]: the process's and the transport's
//! counters, read from their atomics, and its links; alive while its agent
//! loop runs, ready while registered with the coordinator.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tessera_link::LinkStats;
use tessera_metrics::{Check, Exposition, Source};

use crate::screen::Reject;
use crate::{Gate, GateStats, NetcodeRefusal};

use super::GateServerStats;
use super::limits::Request;

/// What a scrape of one gate reads.
pub(super) struct GateMetrics {
    pub(super) name: String,
    pub(super) gate: Arc<Gate>,
    pub(super) stats: Arc<GateServerStats>,
    pub(super) transport: Arc<GateStats>,
    pub(super) links: Arc<LinkStats>,
}

impl Source for GateMetrics {
    fn collect(&self, out: &mut Exposition) {
        let l = [("gate", self.name.as_str())];
        let s = self.stats.snapshot();
        let t = self.transport.snapshot();
        out.gauge(
            "tessera_gate_clients",
            "Clients connected to the gate now.",
            &l,
            self.gate.connected() as f64,
        );
        out.gauge(
            "tessera_gate_registered",
            "1 while the gate is registered with the coordinator.",
            &l,
            if self.stats.registered.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        out.counter(
            "tessera_gate_receive_datagrams_total",
            "UDP datagrams received.",
            &l,
            t.datagrams_in,
        );
        out.counter(
            "tessera_gate_receive_bytes_total",
            "Bytes of UDP datagrams received.",
            &l,
            t.bytes_in,
        );
        out.counter(
            "tessera_gate_transmit_datagrams_total",
            "UDP datagrams sent.",
            &l,
            t.datagrams_out,
        );
        out.counter(
            "tessera_gate_transmit_bytes_total",
            "Bytes of UDP datagrams sent.",
            &l,
            t.bytes_out,
        );
        for (dir, v) in [("in", t.messages_in), ("out", t.messages_out)] {
            out.counter(
                "tessera_gate_messages_total",
                "Client messages received (in) and sent (out).",
                &[l[0], ("direction", dir)],
                v,
            );
        }
        out.counter(
            "tessera_gate_screen_passed_total",
            "Datagrams that passed the screen before netcode.",
            &l,
            t.screen_passed,
        );
        for r in Reject::ALL {
            out.counter(
                "tessera_gate_screen_rejected_total",
                "Datagrams the screen refused before netcode, by reason.",
                &[l[0], ("reason", r.name())],
                self.transport.screen.rejected(r),
            );
        }
        for r in NetcodeRefusal::ALL {
            out.counter(
                "tessera_gate_netcode_refused_total",
                "Datagrams that passed the screen and netcode refused, by reason.",
                &[l[0], ("reason", r.name())],
                self.transport.netcode.count(r),
            );
        }
        for (reason, v) in [
            ("handshake_throttled", t.handshake_throttled),
            ("handshake_source_throttled", t.handshake_source_throttled),
            ("stray", t.stray_dropped),
            ("handshaking_full", t.handshaking_full),
            ("send_error", t.send_errors),
            ("receive_error", t.recv_errors),
        ] {
            out.counter(
                "tessera_gate_datagrams_dropped_total",
                "Datagrams dropped by the transport, by reason.",
                &[l[0], ("reason", reason)],
                v,
            );
        }
        for (reason, v) in [
            ("events_full", t.events_dropped),
            ("outbound_full", t.outbound_dropped),
            ("inputs", s.inputs_dropped),
            ("replication_full", s.packets_dropped),
            ("replication_unrouted", s.packets_unrouted),
            ("to_coordinator", s.to_coordinator_dropped),
            ("reliable_full", s.told_dropped),
            ("game_events", s.events_dropped),
            ("actions_limited", s.actions_limited),
        ] {
            out.counter(
                "tessera_gate_messages_dropped_total",
                "Messages dropped because a bounded queue was full or had no route, by reason.",
                &[l[0], ("reason", reason)],
                v,
            );
        }
        for (reason, v) in [
            ("datagram_flood", t.kicked_datagram_flood),
            ("message_flood", t.kicked_message_flood),
            ("message_too_large", t.kicked_message_too_large),
            ("backlogged", t.kicked_backlogged),
            ("malformed_payload", t.kicked_malformed),
            ("malformed_message", s.malformed),
            ("idle", s.idle_kicks),
            ("cluster", s.cluster_kicks),
            ("malformed_action", s.actions_malformed),
            ("misbehaved", s.misbehaved_kicks),
        ] {
            out.counter(
                "tessera_gate_kicks_total",
                "Clients disconnected by the gate, by reason.",
                &[l[0], ("reason", reason)],
                v,
            );
        }
        for (reason, v) in [
            ("replayed", t.refused_replayed),
            ("expired", t.refused_expired),
            ("unknown", t.refused_unknown),
            ("bad_claims", t.refused_bad_claims),
            ("denied", t.refused_denied),
        ] {
            out.counter(
                "tessera_gate_connects_refused_total",
                "Connections refused after the netcode handshake, by reason.",
                &[l[0], ("reason", reason)],
                v,
            );
        }
        out.counter(
            "tessera_gate_admitted_total",
            "Clients admitted.",
            &l,
            t.admitted,
        );
        for (outcome, v) in [
            ("opened", s.sessions_opened),
            ("refused", s.sessions_refused),
        ] {
            out.counter(
                "tessera_gate_sessions_total",
                "Sessions the coordinator opened or refused for clients of this gate.",
                &[l[0], ("outcome", outcome)],
                v,
            );
        }
        out.counter(
            "tessera_gate_actions_total",
            "Game actions forwarded to their scene.",
            &l,
            s.actions,
        );
        out.counter(
            "tessera_gate_events_delivered_total",
            "Game events handed to a client's listener.",
            &l,
            s.events_delivered,
        );
        out.counter(
            "tessera_gate_chat_delivered_total",
            "Chat lines handed to a recipient's listener.",
            &l,
            s.chat_delivered,
        );
        for (reason, v) in [
            ("recipient_rate", s.chat_shed_recipient_rate),
            ("queue_full", s.chat_shed_queue_full),
            ("channel_full", t.sheddable_dropped),
        ] {
            out.counter(
                "tessera_gate_chat_shed_total",
                "Chat lines not sent to a recipient, by reason.",
                &[l[0], ("reason", reason)],
                v,
            );
        }
        for r in Request::ALL {
            let v = match r {
                Request::Chat => s.limited_chat,
                Request::ChannelChat => s.limited_channel_chat,
                Request::ListAvatars => s.limited_list_avatars,
                Request::CreateAvatar => s.limited_create_avatar,
            };
            out.counter(
                "tessera_gate_requests_limited_total",
                "Session requests refused by the session's limits, by request.",
                &[l[0], ("request", r.name())],
                v,
            );
        }
        out.counter(
            "tessera_gate_inputs_total",
            "Inputs forwarded to scene servers.",
            &l,
            s.inputs,
        );
        out.counter(
            "tessera_gate_replication_packets_total",
            "Replication packets from scenes handed to a client's listener.",
            &l,
            s.packets,
        );
        self.links
            .snapshot()
            .collect(&self.name, "coordinator_and_scenes", out);
    }

    fn live(&self) -> Check {
        if self.stats.stopped.load(Ordering::Relaxed) {
            Err(format!("{}: agent loop stopped", self.name))
        } else {
            Ok(())
        }
    }

    fn ready(&self) -> Check {
        if self.stats.registered.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(format!(
                "{}: not registered with the coordinator",
                self.name
            ))
        }
    }
}
