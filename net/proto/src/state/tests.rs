//! The state packet's codec: round trips, hostile input, the encoder's
//! item writers.

use super::*;
use proptest::prelude::*;

#[test]
fn quantize_round_trips_within_a_step() {
    let q = Quantizer::new([1000.0, 500.0]);
    let s = q.quantize([123.456, 499.9], 1.0, 3, 1);
    let p = q.position(&s);
    assert!(
        (p[0] - 123.456).abs() < 0.02 && (p[1] - 499.9).abs() < 0.01,
        "{p:?}"
    );
    assert_eq!((s.action, s.mount), (3, 1));
    let neg = q.quantize([-5.0, 1e9], -0.1, 0, 0);
    assert_eq!((neg.x, neg.y), (0, 65535));
}

#[test]
fn garbage_never_decodes_into_a_panic() {
    let mut seed = 1u64;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 56) as u8
            })
            .collect();
        let _ = StatePacket::decode(&bytes);
    }
    assert!(matches!(
        StatePacket::decode(&[0u8; MAX_PACKET_BYTES + 1]),
        Err(DecodeError::TooLarge(_))
    ));
}

fn sample() -> StatePacket {
    let q = Quantized {
        x: 0x1234,
        y: 65535,
        heading: 7,
        action: 2,
        mount: 1,
    };
    StatePacket {
        scene: scene_tag("field"),
        epoch: 300,
        tick: 70_000,
        ack: 5,
        you: Some(UpdateState { id: 3, q }),
        leaves: vec![1, 200],
        enters: vec![EnterState {
            id: 20_000,
            kind: KIND_NPC,
            figure: 9,
            q,
        }],
        updates: vec![UpdateState { id: 0, q }],
        ..Default::default()
    }
}

/// A game with a public 2-byte and an owner-only 1-byte component.
fn game_wire() -> crate::game::GameWire {
    crate::game::GameWire {
        widths: vec![2, 1],
        public: 0b01,
    }
}

#[test]
fn game_blocks_ride_after_you_enters_and_updates() {
    use crate::game::GameBlock;
    let mut p = sample();
    p.you_game = Some(GameBlock {
        carried: 0b11,
        present: 0b11,
        bytes: vec![100, 0, 7],
    });
    p.enter_game = vec![GameBlock {
        carried: 0b01,
        present: 0b01,
        bytes: vec![5, 0],
    }];
    p.update_game = vec![GameBlock::default()];
    let bytes = p.encode();
    let wire = game_wire();
    assert_eq!(StatePacket::decode_with(&bytes, &wire), Ok(p.clone()));
    // Without the game's wire the blocks are trailing garbage.
    assert!(StatePacket::decode(&bytes).is_err());
    // The update's block is one byte (nothing carried) at the very end, and
    // the own block follows the own state: `3, 3, 100, 0, 7`.
    assert_eq!(bytes.last(), Some(&0));
    assert!(bytes.windows(5).any(|w| w == [3, 3, 100, 0, 7]));
    // An owner-only component in an enter is malformed.
    p.enter_game[0] = GameBlock {
        carried: 0b10,
        present: 0b10,
        bytes: vec![1],
    };
    assert_eq!(
        StatePacket::decode_with(&p.encode(), &wire),
        Err(DecodeError::BadGameBlock)
    );
}

#[test]
fn packets_round_trip_in_the_documented_layout() {
    let p = sample();
    let bytes = p.encode();
    assert_eq!(StatePacket::decode(&bytes), Ok(p.clone()));
    // type, scene tag LE, epoch varint (300 = ac 02), tick LE, ack varint.
    let tag = scene_tag("field").to_le_bytes();
    assert_eq!(bytes[0], STATE_PACKET_TYPE);
    assert_eq!(&bytes[1..5], &tag);
    assert_eq!(&bytes[5..7], &[0xac, 0x02]);
    assert_eq!(&bytes[7..11], &70_000u32.to_le_bytes());
    assert_eq!(bytes[11], 5);
    // you: flag, id, x LE, y LE, heading, pose byte (action | mount << 4).
    assert_eq!(&bytes[12..20], &[1, 3, 0x34, 0x12, 0xff, 0xff, 7, 0x12]);
    // leaves: count 2, ids 1 and 200 as 1 then +199 (c7 01).
    assert_eq!(&bytes[20..24], &[2, 1, 0xc7, 0x01]);
    // A pose that does not fit one byte takes the long form.
    let mut long = p.clone();
    long.you = Some(UpdateState {
        id: 3,
        q: Quantized {
            action: 200,
            ..p.you.expect("own state").q
        },
    });
    let lb = long.encode();
    assert_eq!(&lb[18..22], &[7, 0x80, 200, 1]);
    assert_eq!(StatePacket::decode(&lb), Ok(long));
    let mut bad = bytes.clone();
    bad[19] = 0x81;
    assert_eq!(StatePacket::decode(&bad), Err(DecodeError::BadPose(0x81)));
    // Lists in any order round-trip (ascending packs tightest).
    let mut shuffled = p.clone();
    shuffled.leaves = vec![200, 1, u32::MAX, 0];
    assert_eq!(StatePacket::decode(&shuffled.encode()), Ok(shuffled));
    let empty = StatePacket::default().encode();
    assert_eq!(empty.len(), 1 + 4 + 1 + 4 + 1 + 1 + 3);
    let max = StatePacket {
        epoch: u64::MAX,
        ack: u32::MAX,
        ..Default::default()
    };
    assert_eq!(max.encode().len(), HEADER_MAX_BYTES);
    // Every truncation and every trailing byte is an error.
    for n in 0..bytes.len() {
        assert!(StatePacket::decode(&bytes[..n]).is_err(), "prefix {n}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(StatePacket::decode(&long), Err(DecodeError::Trailing(1)));
}

fn quantized() -> impl Strategy<Value = Quantized> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(|(x, y, heading, action, mount)| Quantized {
            x,
            y,
            heading,
            action,
            mount,
        })
}

fn packet() -> impl Strategy<Value = StatePacket> {
    let id = || prop_oneof![0u32..200, any::<u32>()];
    let update = || (id(), quantized()).prop_map(|(id, q)| UpdateState { id, q });
    let enter = (id(), any::<u8>(), any::<u32>(), quantized()).prop_map(|(id, kind, figure, q)| {
        EnterState {
            id,
            kind,
            figure,
            q,
        }
    });
    (
        (any::<u32>(), any::<u64>(), any::<u32>(), any::<u32>()),
        proptest::option::of(update()),
        proptest::collection::vec(id(), 0..25),
        proptest::collection::vec(enter, 0..25),
        proptest::collection::vec(update(), 0..25),
    )
        .prop_map(
            |((scene, epoch, tick, ack), you, leaves, enters, updates)| StatePacket {
                scene,
                epoch,
                tick,
                ack,
                you,
                leaves,
                enters,
                updates,
                ..Default::default()
            },
        )
}

proptest! {
    /// The item writer packs bytes into words; any packet, appended
    /// after others in one buffer, decodes back to itself.
    #[test]
    fn any_packet_round_trips_appended_to_a_buffer(
        a in packet(),
        b in packet(),
        sort in any::<bool>(),
    ) {
        let (mut a, mut b) = (a, b);
        if sort {
            a.sort_lists();
            b.sort_lists();
        }
        let mut buf = vec![0xee; 3];
        a.encode_into(&mut buf);
        let mid = buf.len();
        b.encode_into(&mut buf);
        prop_assert_eq!(&buf[..3], &[0xee; 3]);
        prop_assert_eq!(StatePacket::decode(&buf[3..mid]), Ok(a));
        prop_assert_eq!(StatePacket::decode(&buf[mid..]), Ok(b));
    }
}

proptest! {
    #[test]
    fn wire_states_hold_their_state(
        x in any::<u16>(), y in any::<u16>(), heading in any::<u8>(),
        action in any::<u8>(), mount in any::<u8>(),
    ) {
        let q = Quantized { x, y, heading, action, mount };
        prop_assert_eq!(q.wire().quantized(), q);
        prop_assert_eq!(q.wire().len as usize, q.wire_len());
    }

    /// A list of updates encoded ahead, reused across packets, writes
    /// the bytes `update` writes one by one.
    #[test]
    fn an_update_list_writes_what_update_writes(a in packet(), b in packet()) {
        let mut list = UpdateList::default();
        for p in [a, b] {
            let mut p = p;
            p.sort_lists();
            p.updates.dedup_by_key(|u| u.id);
            let mut want = Vec::new();
            p.encode_into(&mut want);
            let h = StateHeader {
                scene: p.scene,
                epoch: p.epoch,
                tick: p.tick,
                ack: p.ack,
                you: p.you,
            };
            list.clear();
            for u in &p.updates {
                list.push(u.id, u.q.wire());
            }
            prop_assert_eq!(list.len(), p.updates.len());
            let mut got = Vec::new();
            let max = p.leaves.len() * LEAVE_MAX_BYTES
                + p.enters.len() * ENTER_MAX_BYTES
                + p.updates.len() * UPDATE_MAX_BYTES;
            let mut enc = StateEncoder::begin(&mut got, &h, max);
            enc.leaves(p.leaves.len());
            for &id in &p.leaves {
                enc.leave(id);
            }
            enc.enters(p.enters.len());
            for e in &p.enters {
                enc.enter(e);
            }
            enc.update_list(&list);
            enc.finish();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn a_hostile_count_allocates_nothing() {
    let mut b = StatePacket::default().encode();
    b.truncate(b.len() - 3);
    b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert_eq!(StatePacket::decode(&b), Err(DecodeError::Truncated));
    let mut v = StatePacket::default().encode();
    v[5] = 0xff; // epoch varint that never ends
    assert!(StatePacket::decode(&v).is_err());
}

#[test]
fn acks_cover_the_tick_and_the_mask() {
    let a = StateAck {
        scene: 1,
        epoch: 1,
        tick: 100,
        mask: 0b101,
    };
    assert!(a.covers(100) && a.covers(99) && !a.covers(98) && a.covers(97));
    assert!(!a.covers(101) && !a.covers(67) && !a.covers(0));
    let full = StateAck {
        mask: u32::MAX,
        ..a
    };
    assert!(full.covers(68) && !full.covers(67));
    assert!(!StateAck::default().covers(0));
}
