//! The link frame codec under random input: any byte stream, cut
//! anywhere, never panics; valid frames survive any split.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tessera_link::{FrameCodec, Handshake, LinkMsg};
use tokio_util::codec::Decoder;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any byte stream, cut anywhere, decodes to frames, messages or
    /// errors — never a panic, never a frame over the cap.
    #[test]
    fn random_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), cut in 0usize..4096) {
        let mut codec = FrameCodec::new(1024);
        let cut = cut.min(bytes.len());
        let mut buf = BytesMut::from(&bytes[..cut]);
        let mut feed = vec![BytesMut::from(&bytes[cut..])];
        'outer: loop {
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.len() <= 1024);
                        let _ = LinkMsg::decode(&frame);
                        let _ = Handshake::decode(&frame);
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            match feed.pop() {
                Some(more) => buf.extend_from_slice(&more),
                None => {
                    let _ = codec.decode_eof(&mut buf);
                    break;
                }
            }
        }
    }

    /// Valid frames of random payloads survive any split of the stream.
    #[test]
    fn frames_survive_any_split(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8), split in 1usize..64) {
        let mut codec = FrameCodec::new(1024);
        let mut wire = BytesMut::new();
        for p in &payloads {
            tokio_util::codec::Encoder::encode(&mut codec, Bytes::copy_from_slice(p), &mut wire).expect("encode");
        }
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for chunk in wire.chunks(split) {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).expect("valid stream") {
                got.push(f.to_vec());
            }
        }
        prop_assert!(codec.decode_eof(&mut buf).expect("clean end").is_none());
        prop_assert_eq!(got, payloads);
    }
}
