//! Several renet packets in one netcode payload.
//!
//! renet hands its transport a list of packets per collection, and it adds a
//! separate ack packet to almost every one, so sending each packet as its
//! own datagram costs two datagrams (two `sendto`s, two encryptions, two
//! wake-ups at the other end) per message. Both of Tessera's transports
//! (the gate's listeners and [`GateClient`](super::GateClient)) put the
//! packets of one collection into as few netcode payloads as fit:
//!
//! ```text
//! payload = PACKED, { len: u16 big-endian, renet packet }+
//! ```
//!
//! `PACKED` is not a renet packet type (renet 2 uses 0..=4), so a payload
//! that does not start with it is one plain renet packet, as
//! renet_netcode's own transports send. A client that speaks this sends
//! every payload packed; the gate packs towards a client only once it has
//! received a packed payload from it, so a stock renet_netcode client is
//! never sent one.
//!
//! **Invariant:** unpacking never panics and never reads past the payload; a
//! malformed payload is refused whole ([`Malformed`]).

use renetcode::NETCODE_MAX_PAYLOAD_BYTES;

/// First byte of a packed payload.
pub const PACKED: u8 = 0xB7;

/// Bytes of framing per packet (the length).
const LEN_BYTES: usize = 2;

/// A packed payload whose framing does not add up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed packed payload")]
pub struct Malformed;

/// Whether `payload` is packed.
pub fn is_packed(payload: &[u8]) -> bool {
    payload.first() == Some(&PACKED)
}

/// Appends the payloads that carry `packets`, in order: as few packed
/// payloads of at most `NETCODE_MAX_PAYLOAD_BYTES` as they fit in (a packet
/// too big to fit packed goes alone, plain).
pub fn pack<'a>(packets: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<Vec<u8>>) {
    let mut current: Option<Vec<u8>> = None;
    for packet in packets {
        let framed = LEN_BYTES + packet.len();
        if 1 + framed > NETCODE_MAX_PAYLOAD_BYTES {
            if let Some(done) = current.take() {
                out.push(done);
            }
            out.push(packet.to_vec());
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
        // Fits in u16: bounded by NETCODE_MAX_PAYLOAD_BYTES above.
        cur.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        cur.extend_from_slice(packet);
    }
    out.extend(current);
}

/// Calls `each` with every renet packet in `payload` (a plain payload is
/// one packet). A packed payload is checked whole first: a malformed one
/// hands over nothing.
pub fn unpack(payload: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), Malformed> {
    let Some(body) = payload.strip_prefix(&[PACKED]) else {
        each(payload);
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
    type Item = Result<&'a [u8], Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len, rest)) = self.rest.split_first_chunk::<LEN_BYTES>() else {
            self.rest = &[];
            return Some(Err(Malformed));
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if len == 0 || len > rest.len() {
            self.rest = &[];
            return Some(Err(Malformed));
        }
        let (part, rest) = rest.split_at(len);
        self.rest = rest;
        Some(Ok(part))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unpacked(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for p in payloads {
            unpack(p, |part| got.push(part.to_vec())).unwrap();
        }
        got
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
        let mut got = Vec::new();
        unpack(&[4, 1, 2], |p| got.push(p.to_vec())).unwrap();
        assert_eq!(got, vec![vec![4, 1, 2]]);
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
        fn unpack_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let mut total = 0;
            if unpack(&payload, |p| total += p.len()).is_ok() {
                prop_assert!(total <= payload.len());
            }
        }
    }
}
