//! Internal links.
//!
//! * `link_frame_round_trip`: encode a message into a length-prefixed frame
//!   and decode it back, as a link's writer and reader do, for a typical
//!   input command and a 1 KiB replication message (no sockets).
//! * `link_loopback`: the same messages through a real link over loopback —
//!   queue, writer task, TCP, reader task, decode — pipelined, with one
//!   acknowledgement per batch.
//! * `link_handshake`: connecting a new link, handshake included.

#![allow(clippy::unwrap_used)] // benches: a failed unwrap is a failed run

use std::{hint::black_box, time::Duration};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tessera_link::{
    DEFAULT_MAX_FRAME, FrameCodec, Link, LinkConfig, LinkMsg, Role, connect, serve,
};
use tessera_wire::{Input, MoveMode, SceneCommand};
use tokio_util::codec::{Decoder, Encoder};

/// Messages per iteration: one writer batch's worth, through one buffer.
const BATCH: usize = 1000;

fn input_msg() -> LinkMsg {
    LinkMsg::Command {
        scene: "meadow".into(),
        epoch: 3,
        command: SceneCommand::Input {
            client: 123_456,
            input: Input {
                seq: 98_765,
                dir: [0.6, -0.8],
                mode: MoveMode::Run,
                heading: 2.25,
                action: 0,
                mount: 0,
                state_ack: Default::default(),
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

/// Acknowledges every `BATCH`th message.
async fn acker(mut link: Link) {
    let mut n = 0usize;
    while link.recv().await.is_some() {
        n += 1;
        if n.is_multiple_of(BATCH)
            && link
                .send(&LinkMsg::SaveAck { through: n as u64 })
                .await
                .is_err()
        {
            break;
        }
    }
}

fn link_loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(
        listener,
        LinkConfig::new(Role::SceneServer, "bench-scene", "bench"),
        acker,
        async {
            let _ = stopped.await;
        },
    ));
    let mut link = rt
        .block_on(connect(
            &addr,
            &LinkConfig::new(Role::Gate, "bench-gate", "bench"),
        ))
        .unwrap();

    let mut group = c.benchmark_group("link_loopback");
    group.measurement_time(Duration::from_secs(5));
    for (name, msg) in [
        ("input", input_msg()),
        ("replication_1k", replication_msg()),
    ] {
        let payload = msg.encode();
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    for _ in 0..BATCH {
                        link.sender().send_encoded(payload.clone()).await.unwrap();
                    }
                    assert!(matches!(link.recv().await, Some(LinkMsg::SaveAck { .. })));
                })
            })
        });
    }
    group.finish();

    // A whole handshake (TCP connect, hello, challenge, response, welcome:
    // two round trips, four BLAKE2b proofs) and an abrupt close.
    let mut group = c.benchmark_group("link_handshake");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    let client = LinkConfig::new(Role::Gate, "bench-gate", "bench");
    group.bench_function("connect", |b| {
        b.iter(|| rt.block_on(async { drop(connect(&addr, &client).await.unwrap()) }))
    });
    group.finish();

    rt.block_on(async {
        link.close().await;
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
}

criterion_group!(benches, link_frames, link_loopback);
criterion_main!(benches);
