//! Framing: a u32 big-endian length, then that many payload bytes.
//!
//! [`FrameCodec`] is tokio-util's [`LengthDelimitedCodec`] with a typed error:
//! an oversized frame (on send *or* receive) and a stream that ends inside a
//! frame are told apart from I/O errors, so the link can count and log them.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, length_delimited};

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// The default cap on one frame's payload: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared (receive) or actual (send) payload length is over the cap.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized { len: u64, max: usize },
    /// The stream ended part-way through a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Length-prefixed framing with a maximum payload size.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
    /// The inner codec has consumed a header and waits for its payload.
    mid_frame: bool,
}

impl FrameCodec {
    /// `max_frame` is the largest payload accepted or sent, in bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            inner: LengthDelimitedCodec::builder()
                .big_endian()
                .length_field_length(HEADER_LEN)
                .max_frame_length(max_frame)
                .new_codec(),
            max: max_frame,
            mid_frame: false,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let before = src.len();
        match self.inner.decode(src) {
            Ok(Some(frame)) => {
                self.mid_frame = false;
                Ok(Some(frame))
            }
            Ok(None) => {
                self.mid_frame |= src.len() < before;
                Ok(None)
            }
            Err(e) if is_too_long(&e) => {
                // The codec rejects a frame while reading its header and
                // leaves the header in place, so its declared length is
                // still at the front of the buffer.
                let len = src
                    .get(..HEADER_LEN)
                    .and_then(|h| <[u8; HEADER_LEN]>::try_from(h).ok())
                    .map_or(0, |h| u64::from(u32::from_be_bytes(h)));
                Err(FrameError::Oversized { len, max: self.max })
            }
            Err(e) => Err(FrameError::Io(e)),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && !self.mid_frame => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: buf.len(),
            }),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        if item.len() > self.max {
            return Err(FrameError::Oversized {
                len: item.len() as u64,
                max: self.max,
            });
        }
        self.inner.encode(item, dst).map_err(FrameError::Io)
    }
}

fn is_too_long(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<length_delimited::LengthDelimitedCodecError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut codec = FrameCodec::new(64);
        let mut wire = BytesMut::new();
        for payload in [&b""[..], b"a", b"hello world"] {
            codec
                .encode(Bytes::copy_from_slice(payload), &mut wire)
                .expect("encode");
        }
        assert_eq!(&wire[..HEADER_LEN], &[0, 0, 0, 0]);
        // Feed one byte at a time: the decoder must wait, never misread.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = codec.decode(&mut buf).expect("decode") {
                got.push(f.to_vec());
            }
        }
        assert_eq!(
            got,
            vec![b"".to_vec(), b"a".to_vec(), b"hello world".to_vec()]
        );
    }

    #[test]
    fn oversized_is_refused_both_ways() {
        let mut codec = FrameCodec::new(8);
        let mut dst = BytesMut::new();
        assert!(matches!(
            codec.encode(Bytes::from_static(b"123456789"), &mut dst),
            Err(FrameError::Oversized { len: 9, max: 8 })
        ));
        assert!(dst.is_empty());
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::Oversized {
                len: 0xffff_ffff,
                max: 8
            })
        ));
        // Exactly at the limit is fine.
        let mut src = BytesMut::from(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8][..]);
        assert_eq!(
            codec.decode(&mut src).expect("decode").map(|f| f.len()),
            Some(8)
        );
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        let mut codec = FrameCodec::new(64);
        let mut src = BytesMut::from(&[0, 0, 0, 10, 1, 2, 3][..]);
        assert!(codec.decode(&mut src).expect("partial").is_none());
        assert!(matches!(
            codec.decode_eof(&mut src),
            Err(FrameError::Truncated { .. })
        ));
        // A complete header and nothing after it: the codec consumed the
        // header, the buffer is empty, and the frame is still missing.
        let mut codec = FrameCodec::new(64);
        let mut src = BytesMut::from(&[0, 0, 0, 10][..]);
        assert!(codec.decode(&mut src).expect("partial").is_none());
        assert!(matches!(
            codec.decode_eof(&mut src),
            Err(FrameError::Truncated { buffered: 0 })
        ));
        let mut header_only = BytesMut::from(&[0, 0][..]);
        assert!(matches!(
            FrameCodec::new(64).decode_eof(&mut header_only),
            Err(FrameError::Truncated { buffered: 2 })
        ));
        assert!(
            FrameCodec::new(64)
                .decode_eof(&mut BytesMut::new())
                .expect("clean end")
                .is_none()
        );
    }
}
