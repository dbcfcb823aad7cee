//! Replication: building and encoding one client's packet, and decoding it.

#![allow(clippy::unwrap_used)] // tests and benches: a failed unwrap is a failed run

use criterion::{Criterion, criterion_group, criterion_main};
use tessera_sim::protocol::{EnterState, Quantized, StatePacket, UpdateState};

fn packet(updates: usize, enters: usize, leaves: usize) -> StatePacket {
    let q = |i: usize| Quantized {
        x: (i * 7919 % 65536) as u16,
        y: (i * 104_729 % 65536) as u16,
        heading: i as u8,
        action: 0,
        mount: 0,
    };
    StatePacket {
        scene: 0x1234_5678,
        epoch: 3,
        tick: 1234,
        ack: 99,
        you: Some(UpdateState { id: 1, q: q(1) }),
        leaves: (0..leaves as u32).map(|i| 20_000 + i).collect(),
        enters: (0..enters)
            .map(|i| EnterState {
                id: 10_000 + i as u32,
                kind: 0,
                figure: 3,
                q: q(i),
            })
            .collect(),
        updates: (0..updates)
            .map(|i| UpdateState {
                id: (i * 13) as u32,
                q: q(i),
            })
            .collect(),
        ..StatePacket::default()
    }
}

fn codec(c: &mut Criterion) {
    // A typical packet at 78 neighbours: ~78 updates, a few enters and leaves.
    let p = packet(78, 6, 6);
    let mut buf = Vec::with_capacity(2048);
    let bytes = p.encode();
    println!("typical packet: {} bytes", bytes.len());
    c.bench_function("encode_typical_packet", |b| {
        b.iter(|| {
            buf.clear();
            p.encode_into(&mut buf);
            buf.len()
        })
    });
    c.bench_function("decode_typical_packet", |b| {
        b.iter(|| StatePacket::decode(&bytes))
    });
    let full = packet(100, 0, 0);
    c.bench_function("encode_100_updates", |b| {
        b.iter(|| {
            buf.clear();
            full.encode_into(&mut buf);
            buf.len()
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
