//! A placement's saved states, in chunks.
//!
//! A scene's last flushed states can be far more than one frame holds (at
//! about 23 bytes a state, the default 1 MiB cap is reached near 45,000
//! avatars). So a placement is a [`LinkMsg::PlaceScene`] that announces how
//! many states follow in how many chunks, then that many
//! [`LinkMsg::SceneStates`] frames, numbered from 0, each holding at most
//! [`PLACE_CHUNK_STATES`] states. [`PlacementMsgs`] makes them one at a
//! time, moving the states out of the loaded `Vec` (nothing is cloned, and
//! no more than one chunk is built ahead of the send); the scene server
//! puts them back together and places the scene once the last one is in.

use crate::Epoch;
use crate::msg::{LinkMsg, WirePcState};

/// Most PC states in one [`LinkMsg::SceneStates`]: at most ~31 bytes each
/// encoded (every field at its widest), so a chunk stays under 128 KiB,
/// far below the links' default 1 MiB frame cap.
pub const PLACE_CHUNK_STATES: usize = 4096;

/// Most PC states one placement may announce: ten times the largest scene
/// the project places in its tests (100,000 resident avatars), about 40 MB
/// once assembled. A scene server refuses a larger announcement.
pub const MAX_PLACE_STATES: u32 = 1_000_000;

/// A scene holds more saved states than a placement may carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{states} saved states exceed the {MAX_PLACE_STATES} a placement may carry")]
pub struct TooManyStates {
    pub states: usize,
}

/// The messages that place `scene` at `epoch` with its saved states: a
/// [`LinkMsg::PlaceScene`], then its [`LinkMsg::SceneStates`] chunks in
/// order. Each chunk is built when the iterator is advanced.
#[derive(Debug)]
pub struct PlacementMsgs {
    scene: String,
    epoch: Epoch,
    chunks: u32,
    states: u32,
    /// The next message: `None` is the announcement, `Some(seq)` a chunk.
    next: Option<u32>,
    rest: std::vec::IntoIter<WirePcState>,
}

impl PlacementMsgs {
    /// Splits `states` (moved, not cloned) for a placement of `scene` at
    /// `epoch`. Errs when there are more than [`MAX_PLACE_STATES`].
    pub fn new(
        scene: String,
        epoch: Epoch,
        states: Vec<WirePcState>,
    ) -> Result<Self, TooManyStates> {
        let too_many = TooManyStates {
            states: states.len(),
        };
        let count = u32::try_from(states.len()).map_err(|_| too_many.clone())?;
        if count > MAX_PLACE_STATES {
            return Err(too_many);
        }
        let chunks = states.len().div_ceil(PLACE_CHUNK_STATES);
        Ok(Self {
            scene,
            epoch,
            // At most MAX_PLACE_STATES chunks, so it fits.
            chunks: u32::try_from(chunks).unwrap_or(u32::MAX),
            states: count,
            next: None,
            rest: states.into_iter(),
        })
    }

    /// How many [`LinkMsg::SceneStates`] follow the announcement.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// How many states they carry in all.
    pub fn states(&self) -> u32 {
        self.states
    }
}

impl Iterator for PlacementMsgs {
    type Item = LinkMsg;

    fn next(&mut self) -> Option<LinkMsg> {
        let Some(seq) = self.next else {
            self.next = Some(0);
            return Some(LinkMsg::PlaceScene {
                scene: self.scene.clone(),
                epoch: self.epoch,
                chunks: self.chunks,
                states: self.states,
            });
        };
        let states: Vec<WirePcState> = self.rest.by_ref().take(PLACE_CHUNK_STATES).collect();
        if states.is_empty() {
            return None;
        }
        self.next = Some(seq + 1);
        Some(LinkMsg::SceneStates {
            scene: self.scene.clone(),
            epoch: self.epoch,
            seq,
            states,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(n: usize) -> Vec<WirePcState> {
        (0..n)
            .map(|i| WirePcState {
                avatar: i as u64,
                ..WirePcState::default()
            })
            .collect()
    }

    /// Every state arrives once, in order, in chunks numbered from 0 as
    /// announced.
    #[test]
    fn states_split_into_announced_chunks_in_order() {
        for n in [
            0,
            1,
            PLACE_CHUNK_STATES - 1,
            PLACE_CHUNK_STATES,
            PLACE_CHUNK_STATES + 1,
            100_000,
        ] {
            let mut msgs = PlacementMsgs::new("town".into(), 3, states(n)).expect("split");
            let Some(LinkMsg::PlaceScene {
                scene,
                epoch,
                chunks,
                states: announced,
            }) = msgs.next()
            else {
                panic!("no announcement first");
            };
            assert_eq!((scene.as_str(), epoch, announced as usize), ("town", 3, n));
            let mut got = Vec::new();
            let mut seqs = Vec::new();
            for m in msgs {
                let LinkMsg::SceneStates {
                    epoch, seq, states, ..
                } = m
                else {
                    panic!("not a chunk: {m:?}");
                };
                assert_eq!(epoch, 3);
                assert!(!states.is_empty() && states.len() <= PLACE_CHUNK_STATES);
                seqs.push(seq);
                got.extend(states.iter().map(|s| s.avatar));
            }
            assert_eq!(seqs, (0..chunks).collect::<Vec<_>>(), "n = {n}");
            assert_eq!(got, (0..n as u64).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn more_than_the_cap_is_refused() {
        let n = MAX_PLACE_STATES as usize + 1;
        assert_eq!(
            PlacementMsgs::new("town".into(), 1, vec![WirePcState::default(); n]).unwrap_err(),
            TooManyStates { states: n }
        );
        assert!(PlacementMsgs::new("town".into(), 1, states(MAX_PLACE_STATES as usize)).is_ok());
    }

    /// A full chunk with every field at its widest stays far below 1 MiB.
    #[test]
    fn a_full_chunk_of_the_widest_states_is_small() {
        let widest = WirePcState {
            avatar: u64::MAX,
            position: [f32::MAX, f32::MIN],
            heading: -0.1,
            action: u8::MAX,
            mount: u8::MAX,
            online: true,
            tick: u64::MAX,
        };
        let msg = LinkMsg::SceneStates {
            scene: "x".repeat(64),
            epoch: u64::MAX,
            seq: u32::MAX,
            states: vec![widest; PLACE_CHUNK_STATES],
        };
        let len = msg.encode().len();
        assert!(len < 128 * 1024, "{len} bytes");
        assert_eq!(LinkMsg::decode(&msg.encode()), Ok(msg));
    }
}
