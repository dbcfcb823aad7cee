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
//!
//! States carry a game's fields, so a chunk is also cut at
//! [`PLACE_CHUNK_BYTES`]. The scene's saved objects (bounded in all by
//! [`MAX_PLACE_OBJECT_BYTES`]) ride in the announcement.

use crate::Epoch;
use crate::msg::{LinkMsg, WireGameField, WireObjectState, WirePcState};

/// Most PC states in one [`LinkMsg::SceneStates`]: at most ~31 bytes each
/// encoded (every field at its widest) without game fields, so a chunk
/// stays under 128 KiB, far below the links' default 1 MiB frame cap.
pub const PLACE_CHUNK_STATES: usize = 4096;

/// Most bytes of states (their encoded size, as counted here) in one chunk: a
/// chunk of states with game fields stays far below the frame cap too.
pub const PLACE_CHUNK_BYTES: usize = 256 * 1024;

/// Most bytes of objects (as [`game_len`] counts them, plus 20 per object)
/// one placement carries in its announcement; the rest are left out.
pub const MAX_PLACE_OBJECT_BYTES: usize = 512 * 1024;

/// An upper bound of the encoded size of game fields.
pub fn game_len(fields: &[WireGameField]) -> usize {
    fields
        .iter()
        .map(|f| f.name.len() + f.bytes.len() + 8)
        .sum()
}

/// An upper bound of the encoded size of a state.
fn state_len(s: &WirePcState) -> usize {
    40 + game_len(&s.game)
}

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
    /// States in each chunk, in order.
    sizes: Vec<usize>,
    objects: Vec<WireObjectState>,
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
        let mut sizes = Vec::new();
        let (mut n, mut bytes) = (0usize, 0usize);
        for s in &states {
            let len = state_len(s);
            if n > 0 && (n == PLACE_CHUNK_STATES || bytes + len > PLACE_CHUNK_BYTES) {
                sizes.push(n);
                (n, bytes) = (0, 0);
            }
            n += 1;
            bytes += len;
        }
        if n > 0 {
            sizes.push(n);
        }
        Ok(Self {
            scene,
            epoch,
            // At most MAX_PLACE_STATES chunks, so it fits.
            chunks: u32::try_from(sizes.len()).unwrap_or(u32::MAX),
            states: count,
            sizes,
            objects: Vec::new(),
            next: None,
            rest: states.into_iter(),
        })
    }

    /// Adds the scene's saved objects to the announcement, in order while
    /// they fit [`MAX_PLACE_OBJECT_BYTES`]; returns how many were left out.
    pub fn with_objects(mut self, objects: Vec<WireObjectState>) -> (Self, usize) {
        let total = objects.len();
        let mut bytes = 0;
        self.objects = objects
            .into_iter()
            .take_while(|o| {
                bytes += 20 + game_len(&o.game);
                bytes <= MAX_PLACE_OBJECT_BYTES
            })
            .collect();
        let left_out = total - self.objects.len();
        (self, left_out)
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
                objects: std::mem::take(&mut self.objects),
            });
        };
        let n = self.sizes.get(seq as usize).copied().unwrap_or(0);
        let states: Vec<WirePcState> = self.rest.by_ref().take(n).collect();
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
                ..
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
            game: Vec::new(),
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

    /// States with large game fields are cut into chunks by bytes, every
    /// chunk far below the frame cap; objects ride in the announcement,
    /// bounded.
    #[test]
    fn states_with_game_fields_split_by_bytes_and_objects_are_announced() {
        let field = WireGameField {
            name: "inventory".into(),
            version: 1,
            bytes: vec![0xAB; 1000],
        };
        let states: Vec<WirePcState> = (0..3000)
            .map(|i| WirePcState {
                avatar: i,
                game: vec![field.clone()],
                ..WirePcState::default()
            })
            .collect();
        let objects: Vec<WireObjectState> = (0..1000)
            .map(|key| WireObjectState {
                key,
                tick: 1,
                game: vec![field.clone()],
            })
            .collect();
        let (msgs, left_out) = PlacementMsgs::new("town".into(), 2, states)
            .unwrap()
            .with_objects(objects);
        assert!(left_out > 0 && left_out < 1000, "{left_out}");
        let chunks = msgs.chunks();
        assert!(chunks > 1);
        let mut got = 0;
        for (i, m) in msgs.enumerate() {
            let len = m.encode().len();
            assert!(len < 640 * 1024, "message {i}: {len} bytes");
            match m {
                LinkMsg::PlaceScene { objects, .. } => {
                    assert_eq!(objects.len(), 1000 - left_out);
                    assert_eq!(objects[0].game[0], field);
                }
                LinkMsg::SceneStates { states, .. } => {
                    got += states.len();
                    assert!(states.iter().all(|s| s.game[0] == field));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, 3000);
    }
}
