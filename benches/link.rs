//! Internal link framing: encode a message into a length-prefixed frame and
//! decode it back, as the link's writer and reader do, for a typical input
//! command and a 1 KiB replication message.

#![allow(clippy::unwrap_used)] // benches: a failed unwrap is a failed run

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tessera_net::{
    DEFAULT_MAX_FRAME, FrameCodec, LinkMsg,
    wire::{SceneCommand, WireInput, WireMoveMode},
};
use tokio_util::codec::{Decoder, Encoder};

/// Messages per iteration: one writer batch's worth, through one buffer.
const BATCH: usize = 1000;

fn input_msg() -> LinkMsg {
    LinkMsg::Command {
        scene: "meadow".into(),
        epoch: 3,
        command: SceneCommand::Input {
            client: 123_456,
            input: WireInput {
                seq: 98_765,
                dir: [0.6, -0.8],
                mode: WireMoveMode::Run,
                heading: 2.25,
                action: 0,
                mount: 0,
            },
        },
    }
}

fn replication_msg() -> LinkMsg {
    // Replication packets are already-encoded, high-entropy bytes.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let bytes = (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    LinkMsg::Replication {
        client: 123_456,
        bytes,
    }
}

/// Encodes `BATCH` copies of `msg` as frames into one buffer, then decodes
/// them all; returns the decoded count so nothing is optimised away.
fn round_trip(codec: &mut FrameCodec, buf: &mut BytesMut, msg: &LinkMsg) -> usize {
    for _ in 0..BATCH {
        codec.encode(black_box(msg).encode(), buf).unwrap();
    }
    let mut n = 0;
    while let Some(frame) = codec.decode(buf).unwrap() {
        black_box(LinkMsg::decode(&frame).unwrap());
        n += 1;
    }
    n
}

fn link_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("link_frame_round_trip");
    for (name, msg) in [
        ("input", input_msg()),
        ("replication_1k", replication_msg()),
    ] {
        let payload = msg.encode().len();
        println!(
            "{name}: {payload}-byte payload, {} bytes framed",
            payload + 4
        );
        let mut codec = FrameCodec::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::with_capacity(BATCH * (payload + 4));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(name, |b| {
            b.iter(|| assert_eq!(round_trip(&mut codec, &mut buf, &msg), BATCH))
        });
    }
    group.finish();
}

criterion_group!(benches, link_frames);
criterion_main!(benches);
