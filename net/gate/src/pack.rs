//! Several renet packets — and, towards a client, unreliable messages
//! outside renet — in one netcode payload.
//!
//! renet hands its transport a list of packets per collection, and it adds a
//! separate ack packet to almost every one, so sending each packet as its
//! own datagram costs two datagrams (two `sendto`s, two encryptions, two
//! wake-ups at the other end) per message. Both of Tessera's transports
//! (the gate's listeners and [`GateClient`](super::GateClient)) put the
//! packets of one collection into as few netcode payloads as fit:
//!
//! ```text
//! payload = PACKED, { len: u16 big-endian, renet packet | message }+
//! ```
//!
//! `PACKED` is not a renet packet type (renet 2 uses 0..=4), so a payload
//! that does not start with it is one plain renet packet, as
//! renet_netcode's own transports send. A client that speaks this sends
//! every payload packed; the gate packs towards a client only once it has
//! received a packed payload from it, so a stock renet_netcode client is
//! never sent one.
//!
//! An entry whose length has bit 15 set ([`DIRECT`]) is a message of the
//! unreliable channel carried outside renet, skipping renet's per-message
//! bookkeeping on both ends (sequence numbers, sent-packet records, acks —
//! none of which an unreliable message needs): the gate sends a packing
//! client its state this way, and [`GateClient`](super::GateClient) its
//! inputs. The gate holds such a message to the limits a renet one meets
//! (size, per-client message rate).
//!
//! **Invariant:** unpacking never panics and never reads past the payload; a
//! malformed payload is refused whole ([`Malformed`]).

use bytes::Bytes;
use renetcode::NETCODE_MAX_PAYLOAD_BYTES;

/// First byte of a packed payload.
pub const PACKED: u8 = 0xB7;

/// Bytes of framing per packet (the length).
const LEN_BYTES: usize = 2;

/// Bit 15 of an entry's length: the entry is an unreliable message, not a
/// renet packet (lengths are at most `NETCODE_MAX_PAYLOAD_BYTES`, far below).
pub const DIRECT: u16 = 0x8000;

/// The largest unreliable message that can go [`DIRECT`] (it must fit in one
/// packed payload with its framing); larger ones go through renet.
pub const MAX_DIRECT_BYTES: usize = NETCODE_MAX_PAYLOAD_BYTES - 1 - LEN_BYTES;

/// Whether an unreliable message of `len` bytes can go [`DIRECT`]: not
/// empty (a zero length is malformed) and at most [`MAX_DIRECT_BYTES`].
pub fn fits_direct(len: usize) -> bool {
    (1..=MAX_DIRECT_BYTES).contains(&len)
}

/// One entry of a packed payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part<'a> {
    /// A renet packet.
    Packet(&'a [u8]),
    /// A message of the unreliable channel, outside renet.
    Unreliable(&'a [u8]),
}

/// A packed payload whose framing does not add up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed packed payload")]
pub struct Malformed;

/// Whether `payload` is packed.
pub fn is_packed(payload: &[u8]) -> bool {
    payload.first() == Some(&PACKED)
}

/// Unreliable messages waiting to go [`DIRECT`] with a peer's next renet
/// packets, at most a cap of bytes in all — what both ends keep per peer.
#[derive(Debug, Default)]
pub struct Outbox {
    messages: Vec<Bytes>,
    bytes: usize,
}

impl Outbox {
    /// Queues `message`, which must [`fits_direct`] (callers send the others
    /// through renet), unless the outbox would pass `cap` bytes: then it is
    /// not queued and the result is false (the caller counts the drop).
    pub fn push(&mut self, message: Bytes, cap: usize) -> bool {
        debug_assert!(fits_direct(message.len()));
        if self.bytes + message.len() > cap {
            return false;
        }
        self.bytes += message.len();
        self.messages.push(message);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Appends the payloads that carry `packets` and then the queued
    /// messages ([`pack_parts`]), and empties the outbox.
    pub fn pack_with(&mut self, packets: &[Vec<u8>], out: &mut Vec<Vec<u8>>) {
        let parts = packets
            .iter()
            .map(|p| Part::Packet(p))
            .chain(self.messages.iter().map(|m| Part::Unreliable(m)));
        // Nothing is left out: only messages that fit were queued.
        pack_parts(parts, out);
        self.messages.clear();
        self.bytes = 0;
    }
}

/// Appends the payloads that carry `parts`, in order: as few packed payloads
/// of at most `NETCODE_MAX_PAYLOAD_BYTES` as they fit in (a renet packet too
/// big to fit packed goes alone, plain). A message that does not
/// [`fits_direct`] is left out and counted in the result (callers send those
/// through renet instead).
pub fn pack_parts<'a>(parts: impl IntoIterator<Item = Part<'a>>, out: &mut Vec<Vec<u8>>) -> usize {
    let mut current: Option<Vec<u8>> = None;
    let mut left_out = 0;
    for part in parts {
        let (bytes, flag) = match part {
            Part::Packet(p) => (p, 0),
            Part::Unreliable(m) if fits_direct(m.len()) => (m, DIRECT),
            Part::Unreliable(_) => {
                left_out += 1;
                continue;
            }
        };
        let framed = LEN_BYTES + bytes.len();
        if 1 + framed > NETCODE_MAX_PAYLOAD_BYTES {
            // Only a renet packet gets here (messages are bounded above).
            if let Some(done) = current.take() {
                out.push(done);
            }
            out.push(bytes.to_vec());
            continue;
        }
        if let Some(cur) = &current
            && cur.len() + framed > NETCODE_MAX_PAYLOAD_BYTES
        {
            out.extend(current.take());
        }
        let cur = current.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(NETCODE_MAX_PAYLOAD_BYTES.min(1 + framed * 2));
            v.push(PACKED);
            v
        });
        // Fits in 15 bits: bounded by NETCODE_MAX_PAYLOAD_BYTES above.
        cur.extend_from_slice(&(bytes.len() as u16 | flag).to_be_bytes());
        cur.extend_from_slice(bytes);
    }
    out.extend(current);
    left_out
}

/// Calls `each` with every entry of `payload` (a plain payload is one renet
/// packet). A packed payload is checked whole first: a malformed one hands
/// over nothing.
pub fn unpack<'a>(payload: &'a [u8], mut each: impl FnMut(Part<'a>)) -> Result<(), Malformed> {
    let Some(body) = payload.strip_prefix(&[PACKED]) else {
        each(Part::Packet(payload));
        return Ok(());
    };
    let parts = || Parts { rest: body };
    if body.is_empty() || parts().any(|p| p.is_err()) {
        return Err(Malformed);
    }
    for part in parts().flatten() {
        each(part);
    }
    Ok(())
}

struct Parts<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Parts<'a> {
    type Item = Result<Part<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len, rest)) = self.rest.split_first_chunk::<LEN_BYTES>() else {
            self.rest = &[];
            return Some(Err(Malformed));
        };
        let raw = u16::from_be_bytes(*len);
        let len = usize::from(raw & !DIRECT);
        if len == 0 || len > rest.len() {
            self.rest = &[];
            return Some(Err(Malformed));
        }
        let (part, rest) = rest.split_at(len);
        self.rest = rest;
        Some(Ok(if raw & DIRECT == 0 {
            Part::Packet(part)
        } else {
            Part::Unreliable(part)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Packs renet packets alone.
    fn pack<'a>(packets: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<Vec<u8>>) {
        assert_eq!(pack_parts(packets.into_iter().map(Part::Packet), out), 0);
    }

    fn unpacked(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for p in payloads {
            unpack(p, |part| match part {
                Part::Packet(b) => got.push(b.to_vec()),
                Part::Unreliable(_) => panic!("a message among packets"),
            })
            .unwrap();
        }
        got
    }

    /// Every entry, with `true` for an unreliable message.
    fn parts(payloads: &[Vec<u8>]) -> Vec<(bool, Vec<u8>)> {
        let mut got = Vec::new();
        for p in payloads {
            unpack(p, |part| match part {
                Part::Packet(b) => got.push((false, b.to_vec())),
                Part::Unreliable(b) => got.push((true, b.to_vec())),
            })
            .unwrap();
        }
        got
    }

    #[test]
    fn messages_ride_with_packets_and_come_out_as_messages() {
        let ack = vec![4u8, 0, 1];
        let state = vec![7u8; 700];
        let mut out = Vec::new();
        let left = pack_parts(
            [
                Part::Packet(&ack),
                Part::Unreliable(&state),
                Part::Unreliable(&state),
            ],
            &mut out,
        );
        assert_eq!(left, 0);
        assert_eq!(
            out.len(),
            2,
            "700 + 700 + framing do not fit in one payload"
        );
        assert_eq!(
            parts(&out),
            vec![
                (false, ack.clone()),
                (true, state.clone()),
                (true, state.clone())
            ]
        );
        // Messages that cannot go direct are left out and counted.
        let big = vec![1u8; MAX_DIRECT_BYTES + 1];
        let mut out = Vec::new();
        let left = pack_parts([Part::Unreliable(&[]), Part::Unreliable(&big)], &mut out);
        assert_eq!((left, out.len()), (2, 0));
        // The largest direct message fills a payload exactly.
        let max = vec![2u8; MAX_DIRECT_BYTES];
        let mut out = Vec::new();
        pack_parts([Part::Unreliable(&max)], &mut out);
        assert_eq!(out[0].len(), NETCODE_MAX_PAYLOAD_BYTES);
        assert_eq!(parts(&out), vec![(true, max)]);
    }

    #[test]
    fn an_outbox_holds_its_cap_and_empties_into_payloads_after_the_packets() {
        let mut outbox = Outbox::default();
        assert!(outbox.push(Bytes::from(vec![1u8; 600]), 1000));
        assert!(
            !outbox.push(Bytes::from(vec![2u8; 401]), 1000),
            "past the cap"
        );
        assert!(
            outbox.push(Bytes::from(vec![3u8; 400]), 1000),
            "up to the cap"
        );
        let ack = vec![4u8, 0, 1];
        let mut out = Vec::new();
        outbox.pack_with(std::slice::from_ref(&ack), &mut out);
        assert!(outbox.is_empty());
        assert_eq!(
            parts(&out),
            vec![(false, ack), (true, vec![1u8; 600]), (true, vec![3u8; 400])]
        );
        // Emptied, its bytes too: the cap applies afresh.
        assert!(outbox.push(Bytes::from(vec![5u8; 1000]), 1000));
    }

    #[test]
    fn small_packets_share_one_payload() {
        let packets = [vec![1u8; 300], vec![4u8; 12]];
        let mut out = Vec::new();
        pack(packets.iter().map(Vec::as_slice), &mut out);
        assert_eq!(out.len(), 1);
        assert!(is_packed(&out[0]));
        assert_eq!(out[0].len(), 1 + 2 + 300 + 2 + 12);
        assert_eq!(unpacked(&out), packets.to_vec());
    }

    #[test]
    fn payloads_stay_within_netcode_limit_and_keep_order() {
        let packets: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 500]).collect();
        let mut out = Vec::new();
        pack(packets.iter().map(Vec::as_slice), &mut out);
        assert_eq!(out.len(), 4, "two 500-byte packets per payload");
        assert!(out.iter().all(|p| p.len() <= NETCODE_MAX_PAYLOAD_BYTES));
        assert_eq!(unpacked(&out), packets);
    }

    #[test]
    fn a_packet_too_big_to_frame_goes_plain() {
        let big = vec![0u8; NETCODE_MAX_PAYLOAD_BYTES - 1];
        let packets = [vec![3u8; 10], big.clone(), vec![4u8; 10]];
        let mut out = Vec::new();
        pack(packets.iter().map(Vec::as_slice), &mut out);
        assert_eq!(out.len(), 3);
        assert!(!is_packed(&out[1]));
        assert_eq!(unpacked(&out), packets.to_vec());
    }

    #[test]
    fn a_plain_payload_is_one_packet() {
        assert_eq!(unpacked(&[vec![4, 1, 2]]), vec![vec![4, 1, 2]]);
        assert_eq!(parts(&[vec![4, 1, 2]]), vec![(false, vec![4, 1, 2])]);
    }

    #[test]
    fn malformed_packed_payloads_hand_over_nothing() {
        for bad in [
            &[PACKED][..],
            &[PACKED, 0][..],
            &[PACKED, 0, 0][..],
            &[PACKED, 0, 5, 1, 2][..],
            &[PACKED, 0, 1, 9, 0][..],
            &[PACKED, 0, 1, 9, 0xFF, 0xFF, 1][..],
            &[PACKED, 0x80, 0][..],
            &[PACKED, 0x80, 2, 1][..],
            &[PACKED, 0x80, 1, 9, 0x80][..],
        ] {
            let mut n = 0;
            assert_eq!(unpack(bad, |_| n += 1), Err(Malformed), "{bad:?}");
            assert_eq!(n, 0, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn pack_then_unpack_is_identity(
            packets in proptest::collection::vec(
                // A renet packet starts with its type, 0..=4.
                (0u8..=4, proptest::collection::vec(any::<u8>(), 0..1300))
                    .prop_map(|(kind, mut rest)| { rest.insert(0, kind); rest }),
                0..8)
        ) {
            let mut out = Vec::new();
            pack(packets.iter().map(Vec::as_slice), &mut out);
            prop_assert!(out.iter().all(|p| p.len() <= NETCODE_MAX_PAYLOAD_BYTES));
            prop_assert_eq!(unpacked(&out), packets);
        }

        #[test]
        fn parts_then_unpack_is_identity(
            entries in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 1..1200)),
                0..8)
        ) {
            let parts_in: Vec<Part<'_>> = entries
                .iter()
                .map(|(direct, b)| if *direct { Part::Unreliable(b) } else { Part::Packet(b) })
                .collect();
            let mut out = Vec::new();
            prop_assert_eq!(pack_parts(parts_in, &mut out), 0);
            prop_assert!(out.iter().all(|p| p.len() <= NETCODE_MAX_PAYLOAD_BYTES));
            // (A packet that is not a renet one and goes plain would read back
            // as whatever its first byte says; 1..1200 bytes always pack.)
            prop_assert_eq!(parts(&out), entries);
        }

        #[test]
        fn unpack_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let mut total = 0;
            let ok = unpack(&payload, |p| match p {
                Part::Packet(b) | Part::Unreliable(b) => total += b.len(),
            });
            if ok.is_ok() {
                prop_assert!(total <= payload.len());
            }
        }
    }
}
