//! The assembly of a placement's chunks: every edge case by hand, then
//! properties over the real splitter with noise mixed in.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tessera_wire::{LinkMsg, PLACE_CHUNK_STATES, PlacementMsgs};

use super::*;

fn states(from: u64, n: usize) -> Vec<WirePcState> {
    (from..from + n as u64)
        .map(|avatar| WirePcState {
            avatar,
            ..WirePcState::default()
        })
        .collect()
}

fn ids(p: Progress) -> Vec<u64> {
    match p {
        Progress::Complete(s, _, _) => s.iter().map(|s| s.avatar).collect(),
        Progress::Waiting => panic!("not complete"),
    }
}

/// Two chunks of two states each for `town` at epoch 5, announced.
fn announced(now: Instant) -> Assembly {
    let mut a = Assembly::default();
    assert_eq!(a.announce("town", 5, 2, 4, now), Ok(Progress::Waiting));
    a
}

#[test]
fn chunks_in_order_complete_the_placement() {
    let now = Instant::now();
    let mut a = announced(now);
    assert_eq!(a.placements(), vec![("town".to_owned(), 5)]);
    assert_eq!(
        a.chunk("town", 5, 0, states(0, 2), now),
        Ok(Progress::Waiting)
    );
    assert_eq!(a.held_states(), 2);
    assert_eq!(
        ids(a.chunk("town", 5, 1, states(2, 2), now).unwrap()),
        [0, 1, 2, 3]
    );
    assert!(a.placements().is_empty());
    assert_eq!((a.stats().started, a.stats().completed), (1, 1));
}

#[test]
fn an_empty_placement_is_complete_at_once() {
    let mut a = Assembly::default();
    assert_eq!(
        a.announce("town", 1, 0, 0, Instant::now()),
        Ok(Progress::Complete(Vec::new(), Vec::new(), Vec::new()))
    );
    assert!(a.placements().is_empty());
}

#[test]
fn nonsense_announcements_are_refused() {
    let now = Instant::now();
    let mut a = Assembly::default();
    for (chunks, states) in [(0, 1), (1, 0), (3, 2), (1, MAX_PLACE_STATES + 1)] {
        assert_eq!(
            a.announce("town", 1, chunks, states, now),
            Err(ChunkError::BadAnnouncement { chunks, states })
        );
    }
    assert!(a.placements().is_empty());
    assert_eq!(a.stats().bad_announcement, 4);
}

#[test]
fn a_chunk_of_another_epoch_is_ignored() {
    let now = Instant::now();
    let mut a = announced(now);
    for epoch in [4, 6] {
        assert_eq!(
            a.chunk("town", epoch, 0, states(0, 2), now),
            Err(ChunkError::WrongEpoch {
                epoch,
                assembling: 5
            })
        );
    }
    assert_eq!(a.held_states(), 0);
    a.chunk("town", 5, 0, states(0, 2), now).unwrap();
    assert_eq!(
        ids(a.chunk("town", 5, 1, states(2, 2), now).unwrap()),
        [0, 1, 2, 3]
    );
    assert_eq!(a.stats().wrong_epoch, 2);
}

#[test]
fn a_duplicate_chunk_is_ignored() {
    let now = Instant::now();
    let mut a = announced(now);
    a.chunk("town", 5, 0, states(0, 2), now).unwrap();
    assert_eq!(
        a.chunk("town", 5, 0, states(0, 2), now),
        Err(ChunkError::Duplicate { seq: 0 })
    );
    assert_eq!(a.held_states(), 2, "nothing added twice");
    assert_eq!(
        ids(a.chunk("town", 5, 1, states(2, 2), now).unwrap()),
        [0, 1, 2, 3]
    );
    assert_eq!(a.stats().duplicate, 1);
}

#[test]
fn a_gap_drops_the_placement() {
    let now = Instant::now();
    let mut a = announced(now);
    assert_eq!(
        a.chunk("town", 5, 1, states(2, 2), now),
        Err(ChunkError::Missing {
            seq: 1,
            expected: 0
        })
    );
    assert!(a.placements().is_empty());
    assert_eq!(
        a.chunk("town", 5, 0, states(0, 2), now),
        Err(ChunkError::Stray)
    );
    assert_eq!((a.stats().missing, a.stats().stray), (1, 1));
}

#[test]
fn too_many_states_drop_the_placement() {
    let now = Instant::now();
    let mut a = announced(now);
    assert_eq!(
        a.chunk("town", 5, 0, states(0, 5), now),
        Err(ChunkError::TooMany { announced: 4 })
    );
    assert!(a.placements().is_empty());
    // Too many chunks: past the last one there is no placement left.
    let mut a = announced(now);
    a.chunk("town", 5, 0, states(0, 2), now).unwrap();
    a.chunk("town", 5, 1, states(2, 2), now).unwrap();
    assert_eq!(
        a.chunk("town", 5, 2, states(4, 1), now),
        Err(ChunkError::Stray)
    );
}

#[test]
fn too_few_states_drop_the_placement() {
    let now = Instant::now();
    let mut a = announced(now);
    a.chunk("town", 5, 0, states(0, 2), now).unwrap();
    assert_eq!(
        a.chunk("town", 5, 1, states(2, 1), now),
        Err(ChunkError::Short {
            got: 3,
            announced: 4
        })
    );
    assert!(a.placements().is_empty());
    let mut a = announced(now);
    assert_eq!(
        a.chunk("town", 5, 0, Vec::new(), now),
        Err(ChunkError::Short {
            got: 0,
            announced: 4
        })
    );
    assert!(a.placements().is_empty());
}

#[test]
fn a_newer_placement_supersedes_an_unfinished_one() {
    let now = Instant::now();
    let mut a = announced(now);
    a.chunk("town", 5, 0, states(0, 2), now).unwrap();
    // Not newer: ignored, the assembly goes on.
    assert_eq!(
        a.announce("town", 5, 1, 1, now),
        Err(ChunkError::NotNewer {
            epoch: 5,
            assembling: 5
        })
    );
    assert_eq!(a.held_states(), 2);
    // Newer: the partial states are gone, the old epoch's chunks are refused.
    assert_eq!(a.announce("town", 6, 1, 3, now), Ok(Progress::Waiting));
    assert_eq!(a.held_states(), 0);
    assert_eq!(
        a.chunk("town", 5, 1, states(2, 2), now),
        Err(ChunkError::WrongEpoch {
            epoch: 5,
            assembling: 6
        })
    );
    assert_eq!(
        ids(a.chunk("town", 6, 0, states(10, 3), now).unwrap()),
        [10, 11, 12]
    );
    assert_eq!(a.stats().superseded, 1);
}

#[test]
fn drops_clear_and_expiry_forget_unfinished_placements() {
    let now = Instant::now();
    let mut a = announced(now);
    assert_eq!(a.drop_scene("town", 4), None, "an older drop leaves it");
    assert_eq!(a.drop_scene("town", 5), Some(5));
    assert!(a.placements().is_empty());

    let mut a = announced(now);
    a.announce("field", 2, 1, 1, now).unwrap();
    a.clear();
    assert!(a.placements().is_empty());
    assert_eq!(a.stats().dropped, 2);

    let mut a = announced(now);
    a.chunk("town", 5, 0, states(0, 2), now + ASSEMBLY_IDLE / 2)
        .unwrap();
    assert!(
        a.expire(now + ASSEMBLY_IDLE).is_empty(),
        "a chunk came lately"
    );
    assert_eq!(
        a.expire(now + ASSEMBLY_IDLE / 2 + ASSEMBLY_IDLE),
        vec![("town".to_owned(), 5)]
    );
    assert_eq!((a.held_states(), a.stats().expired), (0, 1));
}

#[test]
fn attach_messages_wait_for_their_placement() {
    let now = Instant::now();
    let detach = |epoch| LinkMsg::DetachAt {
        scene: "town".into(),
        epoch,
        session: tessera_proto::SessionId(9),
        avatar: 1,
    };
    let mut a = Assembly::default();
    assert!(!a.hold("town", 5, detach(5)), "no placement assembling");
    let mut a = announced(now);
    assert!(!a.hold("town", 4, detach(4)), "another epoch");
    assert!(!a.hold("field", 5, detach(5)), "another scene");
    assert!(a.hold("town", 5, detach(5)));
    a.chunk("town", 5, 0, states(0, 2), now).unwrap();
    match a.chunk("town", 5, 1, states(2, 2), now).unwrap() {
        Progress::Complete(s, held, _) => {
            assert_eq!(s.len(), 4);
            assert_eq!(held, vec![detach(5)]);
        }
        Progress::Waiting => panic!("not complete"),
    }
    // Past the cap the placement is dropped (the coordinator places it again).
    let mut a = announced(now);
    for _ in 0..MAX_HELD {
        assert!(a.hold("town", 5, detach(5)));
    }
    assert!(a.hold("town", 5, detach(5)));
    assert!(a.placements().is_empty());
    assert_eq!((a.stats().held, a.stats().overheld), (MAX_HELD as u64, 1));
}

/// Noise a link should never carry, mixed into a real placement.
#[derive(Debug, Clone)]
enum Noise {
    /// A chunk already delivered, again.
    Duplicate,
    /// A chunk of an older or a newer epoch.
    OtherEpoch(bool),
    /// A chunk of a scene not being placed.
    Stray,
    /// The same placement announced again.
    SameAnnouncement,
}

fn noise() -> impl Strategy<Value = Noise> {
    prop_oneof![
        Just(Noise::Duplicate),
        any::<bool>().prop_map(Noise::OtherEpoch),
        Just(Noise::Stray),
        Just(Noise::SameAnnouncement),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever ignorable noise comes between the chunks the splitter
    /// makes, the placement completes once, with every state in order.
    #[test]
    fn noise_never_corrupts_a_placement(
        n in prop_oneof![0usize..10, 0usize..3 * PLACE_CHUNK_STATES + 5],
        noise in prop::collection::vec((0usize..8, noise()), 0..12),
    ) {
        let now = Instant::now();
        let mut a = Assembly::default();
        let mut complete = Vec::new();
        let mut delivered: Vec<LinkMsg> = Vec::new();
        let msgs = PlacementMsgs::new("town".into(), 7, states(0, n)).unwrap();
        for (i, msg) in msgs.enumerate() {
            for (at, what) in &noise {
                if *at != i || delivered.is_empty() {
                    continue;
                }
                let r = match what {
                    Noise::Duplicate => match delivered.last() {
                        Some(LinkMsg::SceneStates { seq, states, .. }) => {
                            a.chunk("town", 7, *seq, states.clone(), now)
                        }
                        _ => continue,
                    },
                    Noise::OtherEpoch(newer) => {
                        let epoch = if *newer { 8 } else { 6 };
                        a.chunk("town", epoch, 0, states(0, 1), now)
                    }
                    Noise::Stray => a.chunk("field", 7, 0, states(0, 1), now),
                    Noise::SameAnnouncement => a.announce("town", 7, 1, 1, now),
                };
                prop_assert!(r.is_err(), "{what:?} accepted");
            }
            let r = match &msg {
                LinkMsg::PlaceScene { scene, epoch, chunks, states, .. } => {
                    a.announce(scene, *epoch, *chunks, *states, now)
                }
                LinkMsg::SceneStates { scene, epoch, seq, states } => {
                    a.chunk(scene, *epoch, *seq, states.clone(), now)
                }
                other => panic!("{other:?}"),
            };
            match r {
                Ok(Progress::Complete(s, _, _)) => complete.push(s),
                Ok(Progress::Waiting) => {}
                Err(e) => prop_assert!(false, "{e}"),
            }
            delivered.push(msg);
        }
        prop_assert_eq!(complete.len(), 1);
        let got: Vec<u64> = complete[0].iter().map(|s| s.avatar).collect();
        prop_assert_eq!(got, (0..n as u64).collect::<Vec<_>>());
        prop_assert!(a.placements().is_empty());
    }

    /// Any sequence of announcements and chunks: never more held than
    /// announced, and a completed placement has exactly what it announced.
    #[test]
    fn nothing_completes_short_or_holds_more_than_announced(
        ops in prop::collection::vec(
            (any::<bool>(), 0u64..3, 0u32..4, 0usize..5),
            0..40,
        ),
    ) {
        let now = Instant::now();
        let mut a = Assembly::default();
        // The announced count of the epoch being assembled, by our reckoning.
        let mut announced: Option<(Epoch, u32)> = None;
        for (announce, epoch, k, len) in ops {
            if announce {
                if let Ok(p) = a.announce("town", epoch, k, len as u32, now) {
                    announced = Some((epoch, len as u32));
                    if let Progress::Complete(s, _, _) = p {
                        prop_assert!(s.is_empty());
                    }
                }
            } else if let Ok(Progress::Complete(s, _, _)) =
                a.chunk("town", epoch, k, states(0, len), now)
            {
                let (e, n) = announced.unwrap();
                prop_assert_eq!(e, epoch);
                prop_assert_eq!(s.len(), n as usize);
            }
            if let Some((_, n)) = announced {
                prop_assert!(a.held_states() <= n as usize);
            }
        }
    }
}
