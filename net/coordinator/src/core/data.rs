//! The data service: a session's avatars (read by the link task,
//! `lookups.rs`), and scene servers' save batches (with the epoch fence).
//! The states a new placement starts from are read off the lock (`io.rs`).

use std::collections::BTreeMap;

use tessera_cluster::SessionId;
use tessera_persistence as db;
use tessera_wire::{AvatarInfo, LinkMsg, Role, SessionEvent, WirePcState, WireSaveBatch};
use tracing::warn;

use super::messages::Origin;
use super::{AckWaiting, Core};

/// Most save batches waiting for the writer's commit to be acknowledged.
pub(super) const MAX_ACKS_WAITING: usize = 65_536;

impl Core {
    /// The session's account's avatars ([`SessionEvent::Avatars`]).
    pub(super) fn on_list_avatars(&mut self, from: Origin, session: SessionId) {
        if self.owns_session(from, session) {
            self.send_avatars(session);
        }
    }

    /// A new avatar for the session's account, in the start scene (or the
    /// first scene): the link task created it, and read the account's
    /// avatars after it, which are sent.
    pub(super) fn on_create_avatar(&mut self, from: Origin, session: SessionId) {
        if self.owns_session(from, session) {
            self.send_avatars(session);
        }
    }

    /// Sends the session's account's avatars (deleted ones left out), each
    /// with its scene's name, as the link task read them (`lookups.rs`).
    fn send_avatars(&mut self, session: SessionId) {
        let list = match self.looked.avatars.take() {
            Some(Ok(list)) => list,
            Some(Err(reason)) => return self.refuse_session_by(session, reason),
            None => return self.refuse_session_by(session, "unknown session".into()),
        };
        let names: BTreeMap<db::SceneId, String> = self
            .scene_ids
            .iter()
            .map(|(n, id)| (*id, n.clone()))
            .collect();
        let avatars = list
            .into_iter()
            .filter(|a| a.status != db::AvatarStatus::Deleted)
            .map(|a| AvatarInfo {
                id: a.id,
                name: a.name,
                scene: names.get(&a.scene).cloned().unwrap_or_default(),
            })
            .collect();
        self.send_session(session, SessionEvent::Avatars(avatars));
    }

    /// A scene's write-behind batch, from a registered scene server only.
    /// A batch from a placement older than the scene's latest is refused
    /// (the epoch fence) and its sender told it is stale.
    pub(super) fn on_save_batch(&mut self, from: Origin, batch: WireSaveBatch) {
        if from.node.is_none() || from.role != Role::SceneServer {
            return self.refuse(from.link, "only a registered scene server saves");
        }
        let id = from.link;
        let latest = self
            .cluster
            .scene(&batch.scene)
            .map_or(0, |s| s.latest_epoch);
        if batch.epoch < latest {
            self.stats.batches_stale += 1;
            warn!(scene = %batch.scene, epoch = batch.epoch, current = latest, "stale save batch refused");
            self.send_link(
                id,
                &LinkMsg::EpochStale {
                    scene: batch.scene,
                    current: latest,
                },
            );
            return;
        }
        let Some(&scene) = self.scene_ids.get(&batch.scene) else {
            return self.refuse(id, format!("unknown scene {:?}", batch.scene));
        };
        let states = batch.states.iter().map(|s| db_state(scene, s)).collect();
        let objects = batch
            .objects
            .into_iter()
            .map(|o| tessera_host::to_db_object(&o.into()))
            .collect();
        if let Some(w) = &self.writer {
            let batch_db = db::SaveBatch {
                scene,
                states,
                objects,
            };
            let submission = w.submit_at(batch.epoch, batch_db);
            self.stats.batches += 1;
            self.ack_when_durable(submission.ticket, id, batch.seq);
        }
    }

    /// Batch `seq` of link `link` is acknowledged once the writer has
    /// committed `ticket`. Bounded: past [`MAX_ACKS_WAITING`] the oldest is
    /// forgotten (counted); acks are cumulative, so a later one covers it.
    fn ack_when_durable(&mut self, ticket: u64, link: u64, seq: u64) {
        if self.save_acks.len() >= MAX_ACKS_WAITING {
            self.save_acks.pop_front();
            self.stats.save_acks_dropped += 1;
        }
        self.save_acks.push_back(AckWaiting { ticket, link, seq });
    }

    /// The writer committed every batch up to ticket `through`: each scene
    /// server link hears the highest of its batches now durable.
    pub(crate) fn on_durable(&mut self, through: u64) {
        let mut acks: BTreeMap<u64, u64> = BTreeMap::new();
        while let Some(a) = self.save_acks.front() {
            if a.ticket > through {
                break;
            }
            let seq = acks.entry(a.link).or_default();
            *seq = (*seq).max(a.seq);
            self.save_acks.pop_front();
        }
        for (link, through) in acks {
            self.stats.save_acks += 1;
            self.send_link(link, &LinkMsg::SaveAck { through });
        }
    }
}

/// Why a scene's saved states could not be read for a placement.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadStatesError {
    #[error("the writer could not flush what it holds: {0}")]
    Flush(db::writer::FlushError),
    #[error("the scene's states do not load: {0}")]
    Load(db::LoadError),
    #[error("scene {0:?} is not in the database")]
    UnknownScene(String),
}

/// A wire state as the data service stores it in `scene`.
pub(super) fn db_state(scene: db::SceneId, s: &WirePcState) -> db::PcState {
    tessera_host::sink::to_db_state(&s.clone().into(), scene)
}
