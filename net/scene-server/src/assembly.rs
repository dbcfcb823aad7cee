//! Putting a placement's saved states back together: a
//! [`LinkMsg::PlaceScene`] announces how
//! many states come in how many chunks, and the
//! [`SceneStates`](tessera_wire::LinkMsg::SceneStates) frames that follow
//! carry them, numbered from 0 (see [`tessera_wire::chunks`]).
//!
//! [`Assembly`] holds at most one unfinished placement per scene, each
//! bounded by what its announcement said, itself capped at
//! [`MAX_PLACE_STATES`]. Nonsense is refused and counted: an announcement
//! over the cap, a chunk of another epoch or of no placement, a chunk seen
//! again. What cannot complete any more is dropped at once: a chunk out of
//! order (one went missing), more states than announced, fewer once the
//! last chunk is in. A newer placement of the same scene supersedes an
//! unfinished one, and one that stops progressing expires. Attach messages
//! for a placement still assembling are held and handed back with its
//! states (the coordinator streams the chunks, so they may come first).
//! The caller drops
//! everything when its coordinator link is lost: the coordinator sends the
//! placement again, whole, on the next.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tessera_wire::{Epoch, LinkMsg, MAX_PLACE_STATES, WireObjectState, WirePcState};

/// Most attach messages held for one unfinished placement; past it the
/// placement is dropped (counted `overheld`), and placed again.
pub const MAX_HELD: usize = 65_536;

/// An unfinished placement drops when no chunk arrived for this long.
/// Meanwhile heartbeats list it as loading, so the coordinator waits.
pub const ASSEMBLY_IDLE: Duration = Duration::from_secs(10);

/// Why an announcement or a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Over [`MAX_PLACE_STATES`], or chunks that cannot hold the states
    /// (more chunks than states, or states in no chunk).
    #[error("announces {states} states in {chunks} chunks")]
    BadAnnouncement { chunks: u32, states: u32 },
    /// A placement not newer than the one being assembled: ignored.
    #[error("placement at epoch {epoch} is not newer than the one assembling ({assembling})")]
    NotNewer { epoch: Epoch, assembling: Epoch },
    /// A chunk of a scene with no placement being assembled.
    #[error("chunk of no placement being assembled")]
    Stray,
    /// A chunk of another epoch than the one being assembled: ignored.
    #[error("chunk of epoch {epoch}; assembling {assembling}")]
    WrongEpoch { epoch: Epoch, assembling: Epoch },
    /// A chunk seen before: ignored.
    #[error("chunk {seq} again")]
    Duplicate { seq: u32 },
    /// A chunk after a gap: one went missing, the placement is dropped.
    #[error("chunk {seq} where {expected} was due")]
    Missing { seq: u32, expected: u32 },
    /// More states than announced: the placement is dropped.
    #[error("more states than the {announced} announced")]
    TooMany { announced: u32 },
    /// Fewer states than announced once the last chunk is in (an empty
    /// chunk counts here too): the placement is dropped.
    #[error("{got} states of the {announced} announced")]
    Short { got: u32, announced: u32 },
}

impl ChunkError {
    /// The label this refusal is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkError::BadAnnouncement { .. } => "bad_announcement",
            ChunkError::NotNewer { .. } => "not_newer",
            ChunkError::Stray => "stray",
            ChunkError::WrongEpoch { .. } => "wrong_epoch",
            ChunkError::Duplicate { .. } => "duplicate",
            ChunkError::Missing { .. } => "missing",
            ChunkError::TooMany { .. } => "too_many",
            ChunkError::Short { .. } => "short",
        }
    }
}

/// What an announcement or a chunk brought.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// More chunks are due.
    Waiting,
    /// The placement is whole: place the scene with these states (and the
    /// objects its announcement carried), then obey the attach messages
    /// held for it, in order.
    Complete(Vec<WirePcState>, Vec<LinkMsg>, Vec<WireObjectState>),
}

/// Counters of an [`Assembly`], since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct AssemblyStats {
    /// Placements announced and accepted.
    pub started: u64,
    /// Placements whose every state arrived.
    pub completed: u64,
    /// Unfinished placements dropped for a newer one of the same scene.
    pub superseded: u64,
    /// Unfinished placements dropped on the coordinator's word (a drop or
    /// a stale epoch) or with its link.
    pub dropped: u64,
    /// Unfinished placements dropped after [`ASSEMBLY_IDLE`] without a chunk.
    pub expired: u64,
    /// Attach messages held until their placement was whole.
    pub held: u64,
    /// Unfinished placements dropped for more than [`MAX_HELD`] of them.
    pub overheld: u64,
    /// Refusals, by [`ChunkError::reason`]; the last four drop the
    /// placement.
    pub bad_announcement: u64,
    pub not_newer: u64,
    pub stray: u64,
    pub wrong_epoch: u64,
    pub duplicate: u64,
    pub missing: u64,
    pub too_many: u64,
    pub short: u64,
}

impl AssemblyStats {
    /// Every refusal with its label, for metrics.
    pub fn refusals(&self) -> [(&'static str, u64); 8] {
        [
            ("bad_announcement", self.bad_announcement),
            ("not_newer", self.not_newer),
            ("stray", self.stray),
            ("wrong_epoch", self.wrong_epoch),
            ("duplicate", self.duplicate),
            ("missing", self.missing),
            ("too_many", self.too_many),
            ("short", self.short),
        ]
    }

    fn refused(&mut self, e: &ChunkError) {
        let n = match e {
            ChunkError::BadAnnouncement { .. } => &mut self.bad_announcement,
            ChunkError::NotNewer { .. } => &mut self.not_newer,
            ChunkError::Stray => &mut self.stray,
            ChunkError::WrongEpoch { .. } => &mut self.wrong_epoch,
            ChunkError::Duplicate { .. } => &mut self.duplicate,
            ChunkError::Missing { .. } => &mut self.missing,
            ChunkError::TooMany { .. } => &mut self.too_many,
            ChunkError::Short { .. } => &mut self.short,
        };
        *n += 1;
    }
}

/// One placement being assembled.
#[derive(Debug)]
struct Partial {
    epoch: Epoch,
    chunks: u32,
    announced: u32,
    /// The chunk due next.
    next: u32,
    states: Vec<WirePcState>,
    /// The scene's saved objects, from the announcement.
    objects: Vec<WireObjectState>,
    /// Attach messages for this placement, to obey once it is placed.
    held: Vec<LinkMsg>,
    /// When it was announced or its last chunk arrived.
    last: Instant,
}

/// The placements being assembled, by scene.
#[derive(Debug, Default)]
pub struct Assembly {
    partial: BTreeMap<String, Partial>,
    stats: AssemblyStats,
}

impl Assembly {
    /// A [`LinkMsg::PlaceScene`] of
    /// `scene` at `epoch`, announcing `states` states in `chunks` chunks.
    /// It supersedes an unfinished older placement of the scene; a
    /// placement with no states is complete at once.
    pub fn announce(
        &mut self,
        scene: &str,
        epoch: Epoch,
        chunks: u32,
        states: u32,
        now: Instant,
    ) -> Result<Progress, ChunkError> {
        self.announce_objects(scene, epoch, chunks, states, Vec::new(), now)
    }

    /// [`Assembly::announce`] of a placement that carries the scene's
    /// saved objects.
    pub fn announce_objects(
        &mut self,
        scene: &str,
        epoch: Epoch,
        chunks: u32,
        states: u32,
        objects: Vec<WireObjectState>,
        now: Instant,
    ) -> Result<Progress, ChunkError> {
        let r = self.try_announce(scene, epoch, chunks, states, objects, now);
        self.count(r)
    }

    fn try_announce(
        &mut self,
        scene: &str,
        epoch: Epoch,
        chunks: u32,
        states: u32,
        objects: Vec<WireObjectState>,
        now: Instant,
    ) -> Result<Progress, ChunkError> {
        if states > MAX_PLACE_STATES || chunks > states || (chunks == 0) != (states == 0) {
            return Err(ChunkError::BadAnnouncement { chunks, states });
        }
        if let Some(p) = self.partial.get(scene) {
            if p.epoch >= epoch {
                return Err(ChunkError::NotNewer {
                    epoch,
                    assembling: p.epoch,
                });
            }
            self.partial.remove(scene);
            self.stats.superseded += 1;
        }
        self.stats.started += 1;
        if chunks == 0 {
            self.stats.completed += 1;
            return Ok(Progress::Complete(Vec::new(), Vec::new(), objects));
        }
        self.partial.insert(
            scene.to_owned(),
            Partial {
                epoch,
                chunks,
                announced: states,
                next: 0,
                // Grown as chunks arrive: an announcement alone costs nothing.
                states: Vec::new(),
                objects,
                held: Vec::new(),
                last: now,
            },
        );
        Ok(Progress::Waiting)
    }

    /// A [`SceneStates`](tessera_wire::LinkMsg::SceneStates) chunk.
    pub fn chunk(
        &mut self,
        scene: &str,
        epoch: Epoch,
        seq: u32,
        states: Vec<WirePcState>,
        now: Instant,
    ) -> Result<Progress, ChunkError> {
        let r = self.try_chunk(scene, epoch, seq, states, now);
        self.count(r)
    }

    fn try_chunk(
        &mut self,
        scene: &str,
        epoch: Epoch,
        seq: u32,
        states: Vec<WirePcState>,
        now: Instant,
    ) -> Result<Progress, ChunkError> {
        let p = self.partial.get_mut(scene).ok_or(ChunkError::Stray)?;
        if epoch != p.epoch {
            return Err(ChunkError::WrongEpoch {
                epoch,
                assembling: p.epoch,
            });
        }
        if seq < p.next {
            return Err(ChunkError::Duplicate { seq });
        }
        let fail = if seq > p.next {
            Some(ChunkError::Missing {
                seq,
                expected: p.next,
            })
        } else if p.states.len() + states.len() > p.announced as usize {
            Some(ChunkError::TooMany {
                announced: p.announced,
            })
        } else if states.is_empty()
            || (seq + 1 == p.chunks && p.states.len() + states.len() < p.announced as usize)
        {
            Some(ChunkError::Short {
                got: u32::try_from(p.states.len() + states.len()).unwrap_or(u32::MAX),
                announced: p.announced,
            })
        } else {
            None
        };
        if let Some(e) = fail {
            self.partial.remove(scene);
            return Err(e);
        }
        p.states.extend(states);
        p.next += 1;
        p.last = now;
        if p.next < p.chunks {
            return Ok(Progress::Waiting);
        }
        let Some(done) = self.partial.remove(scene) else {
            return Ok(Progress::Waiting);
        };
        self.stats.completed += 1;
        Ok(Progress::Complete(done.states, done.held, done.objects))
    }

    /// Keeps `msg`, an attach message for `scene` at `epoch`, until that
    /// placement is whole (it may arrive before the last chunk). False,
    /// and `msg` is not kept, when no such placement is being assembled.
    pub fn hold(&mut self, scene: &str, epoch: Epoch, msg: LinkMsg) -> bool {
        let Some(p) = self.partial.get_mut(scene).filter(|p| p.epoch == epoch) else {
            return false;
        };
        if p.held.len() >= MAX_HELD {
            self.partial.remove(scene);
            self.stats.overheld += 1;
        } else {
            p.held.push(msg);
            self.stats.held += 1;
        }
        true
    }

    /// Drops the unfinished placement of `scene` if its epoch is at most
    /// `through` (a drop of that placement, or a stale epoch); returns the
    /// epoch it had.
    pub fn drop_scene(&mut self, scene: &str, through: Epoch) -> Option<Epoch> {
        let epoch = self.epoch_of(scene).filter(|&e| e <= through)?;
        self.partial.remove(scene);
        self.stats.dropped += 1;
        Some(epoch)
    }

    /// Drops every unfinished placement (the coordinator link was lost).
    pub fn clear(&mut self) {
        self.stats.dropped += self.partial.len() as u64;
        self.partial.clear();
    }

    /// Drops the placements no chunk reached for [`ASSEMBLY_IDLE`]; returns
    /// them.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, Epoch)> {
        let old: Vec<(String, Epoch)> = self
            .partial
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) >= ASSEMBLY_IDLE)
            .map(|(s, p)| (s.clone(), p.epoch))
            .collect();
        for (scene, _) in &old {
            self.partial.remove(scene);
        }
        self.stats.expired += old.len() as u64;
        old
    }

    /// The placements being assembled, for heartbeats (a scene still
    /// loading is listed, so the coordinator does not give it up).
    pub fn placements(&self) -> Vec<(String, Epoch)> {
        self.partial
            .iter()
            .map(|(s, p)| (s.clone(), p.epoch))
            .collect()
    }

    /// The epoch of `scene`'s placement being assembled.
    pub fn epoch_of(&self, scene: &str) -> Option<Epoch> {
        self.partial.get(scene).map(|p| p.epoch)
    }

    /// States held by unfinished placements.
    pub fn held_states(&self) -> usize {
        self.partial.values().map(|p| p.states.len()).sum()
    }

    pub fn stats(&self) -> AssemblyStats {
        self.stats
    }

    fn count(&mut self, r: Result<Progress, ChunkError>) -> Result<Progress, ChunkError> {
        if let Err(e) = &r {
            self.stats.refused(e);
        }
        r
    }
}

#[cfg(test)]
#[path = "assembly_tests.rs"]
mod tests;
