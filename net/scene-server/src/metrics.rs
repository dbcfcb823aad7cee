//! The scene server as a metrics [`Source`]: every hosted scene's
//! [`SceneMetrics`](tessera_host::metrics::SceneMetrics), the server's own
//! counters and its links; alive while its scenes tick, ready once
//! registered with every placed scene running.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tessera_host::RunnerPhase;
use tessera_link::lock;
use tessera_metrics::{Check, Exposition, Source};

use crate::state::ServerState;

impl Source for ServerState {
    fn collect(&self, out: &mut Exposition) {
        // The host lock is held only to clone the `Arc`s; scenes are read
        // from their atomics after it is released.
        let scenes = lock(&self.host).metrics();
        for m in &scenes {
            m.collect(&self.name, out);
        }
        let l = [("server", self.name.as_str())];
        let s = self.stats();
        out.gauge(
            "tessera_scene_server_scenes",
            "Scenes hosted by the scene server.",
            &l,
            scenes.len() as f64,
        );
        out.gauge(
            "tessera_scene_server_registered",
            "1 while the scene server is registered with the coordinator.",
            &l,
            if self.registered.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        for (what, v) in [
            ("placed", s.placed),
            ("dropped", s.dropped),
            ("dropped_stale", s.dropped_stale),
        ] {
            out.counter(
                "tessera_scene_server_placements_total",
                "Placements carried out: scenes placed, dropped with a flush, dropped as stale.",
                &[l[0], ("action", what)],
                v,
            );
        }
        for (reason, v) in [
            ("queue_full", s.inputs_refused),
            ("stale_epoch", s.commands_stale),
            ("foreign_client", s.commands_foreign),
        ] {
            out.counter(
                "tessera_scene_server_inputs_refused_total",
                "Inputs from gates refused before a scene: its queue full (or no such scene), another epoch, a client not routed through that gate.",
                &[l[0], ("reason", reason)],
                v,
            );
        }
        out.counter(
            "tessera_scene_server_commands_refused_total",
            "Attaches and detaches a scene's queue refused, or that named no hosted scene.",
            &l,
            s.commands_refused,
        );
        for (fate, v) in [
            ("sent", s.packets_sent),
            ("unrouted", s.packets_unrouted),
            ("dropped", s.packets_dropped),
        ] {
            out.counter(
                "tessera_scene_server_packets_total",
                "Replication packets pumped to gates: sent, without a route, or dropped (gate link full or gone).",
                &[l[0], ("fate", fate)],
                v,
            );
        }
        for (fate, v) in [
            ("unrouted", s.game_events_unrouted),
            ("dropped", s.game_events_dropped),
        ] {
            out.counter(
                "tessera_scene_server_game_events_lost_total",
                "Game events (and kicks) for clients not sent: without a route, or dropped (gate link full or gone).",
                &[l[0], ("fate", fate)],
                v,
            );
        }
        for (fate, v) in [("sent", s.events_sent), ("dropped", s.events_dropped)] {
            out.counter(
                "tessera_scene_server_events_total",
                "Scene events for the coordinator: sent, or dropped while it was unreachable.",
                &[l[0], ("fate", fate)],
                v,
            );
        }
        for (fate, v) in [
            ("handed_in", s.sink.batches_in),
            ("sent", s.sink.batches_sent),
            ("acked", s.sink.batches_acked),
            ("resent", s.sink.batches_resent),
            ("stale", s.sink.stale),
        ] {
            out.counter(
                "tessera_scene_server_save_batches_total",
                "Save batches: handed in by scenes, sent to the data service, confirmed durable, put back to send again after a lost link, refused for a stale epoch.",
                &[l[0], ("fate", fate)],
                v,
            );
        }
        out.gauge(
            "tessera_scene_server_unacked_states",
            "Saved states sent to the data service and not yet confirmed durable.",
            &l,
            s.sink.unacked_states as f64,
        );
        out.counter(
            "tessera_scene_server_save_held_total",
            "Times sending saves was held back because too many states waited for acks.",
            &l,
            s.sink.held_for_acks,
        );
        out.counter(
            "tessera_scene_server_states_discarded_total",
            "Saved states discarded because their placement was dropped as stale.",
            &l,
            s.sink.discarded,
        );
        let a = s.assembly;
        for (fate, v) in [
            ("started", a.started),
            ("completed", a.completed),
            ("superseded", a.superseded),
            ("dropped", a.dropped),
            ("expired", a.expired),
            ("overheld", a.overheld),
        ] {
            out.counter(
                "tessera_scene_server_placement_assemblies_total",
                "Placements whose saved states come in chunks: announced, completed, superseded by a newer one, dropped on the coordinator's word or with its link, expired waiting for a chunk, dropped holding too many attach messages.",
                &[l[0], ("fate", fate)],
                v,
            );
        }
        for (reason, v) in a.refusals() {
            out.counter(
                "tessera_scene_server_placement_chunks_refused_total",
                "Placement announcements and state chunks refused: over the cap, not newer, of no placement, of another epoch, seen before (all ignored), or after a gap, with too many or too few states (the placement is dropped).",
                &[l[0], ("reason", reason)],
                v,
            );
        }
        out.counter(
            "tessera_scene_server_placement_held_total",
            "Attach, detach and sync messages held until their placement's last chunk was in.",
            &l,
            a.held,
        );
        out.gauge(
            "tessera_scene_server_assembling_states",
            "Saved states held by placements whose chunks are still arriving.",
            &l,
            lock(&self.assembly).held_states() as f64,
        );
        self.gate_links.snapshot().collect(&self.name, "gates", out);
        self.coordinator_links
            .snapshot()
            .collect(&self.name, "coordinator", out);
    }

    fn live(&self) -> Check {
        if self.coordinator_done.load(Ordering::Relaxed) {
            return Err(format!("{}: coordinator loop stopped", self.name));
        }
        let scenes = lock(&self.host).metrics();
        let reasons: Vec<String> = scenes.iter().filter_map(|m| m.live().err()).collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: {}", self.name, reasons.join(", ")))
        }
    }

    fn ready(&self) -> Check {
        if !self.registered.load(Ordering::Relaxed) {
            return Err(format!(
                "{}: not registered with the coordinator",
                self.name
            ));
        }
        let scenes: Vec<Arc<_>> = lock(&self.host).metrics();
        // Placements whose states are still arriving are loading too.
        let assembling: Vec<String> = lock(&self.assembly)
            .placements()
            .into_iter()
            .map(|(scene, _)| scene)
            .collect();
        let loading: Vec<&str> = scenes
            .iter()
            .filter(|m| m.phase() != RunnerPhase::Running)
            .map(|m| m.scene())
            .chain(assembling.iter().map(String::as_str))
            .collect();
        if loading.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: scenes not running: {}",
                self.name,
                loading.join(", ")
            ))
        }
    }
}
