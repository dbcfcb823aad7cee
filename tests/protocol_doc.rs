//! docs/protocol.md is complete for the state packet: an independent
//! decoder written from it alone (`tests/protocol/decode_state.py`) reads
//! real packets of a busy scene exactly as the Rust decoder does.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

use std::io::Write;
use std::process::{Command, Stdio};

use tessera_sim::protocol::{MoveMode, StateAck, StatePacket};
use tessera_sim::testing::{ChurnGamePlugin, attach_at, input, open_world};
use tessera_sim::{Inbound, SceneDef, SceneSettings, SceneWorld};

#[test]
fn an_independent_decoder_reads_real_packets_from_the_doc() {
    let settings = SceneSettings {
        epoch: 300,
        packet_budget: 600,
        ..SceneSettings::default()
    };
    decode_both_ways(open_world(400.0, settings.clone()));
    // A game whose replicated components change and come and go: game
    // blocks after `you`, every enter and every update (section 7).
    let game = SceneWorld::builder(SceneDef::open_field("test", 400.0), settings)
        .add_plugins(ChurnGamePlugin)
        .build()
        .unwrap();
    decode_both_ways(game);
}

/// Runs a crowd in `w` and checks the Python decoder reads its packets as
/// the Rust one does.
fn decode_both_ways(mut w: SceneWorld) {
    let wire = w.schema().wire();
    // A crowd that moves, joins and leaves, under a small budget, so the
    // packets hold leaves, enters, updates and own states of every size.
    let mut rng = tessera_sim::rng::SceneRng::new(9);
    for c in 0..200u64 {
        let p = [rng.range_f32(150.0, 250.0), rng.range_f32(150.0, 250.0)];
        w.push(attach_at(c, p)).unwrap();
    }
    let mut packets = Vec::new();
    for t in 0..40u32 {
        for c in 0..200u64 {
            let dir = [rng.range_f32(-1.0, 1.0), rng.range_f32(-1.0, 1.0)];
            w.push(input(c, t, dir, MoveMode::Run)).unwrap();
        }
        if t == 20 {
            for c in 0..40u64 {
                w.push(Inbound::Detach { client: c }).unwrap();
            }
        }
        let out = w.tick();
        packets.extend(out.packets.iter().map(|(_, b)| b.to_vec()));
        // Every client acknowledges what it got (as a client must, or its
        // entities keep coming as enters).
        let tag = w.info().tag;
        for (&client, _) in &out.packets {
            let ack = StateAck {
                scene: tag,
                epoch: 300,
                tick: out.tick as u32,
                mask: u32::MAX,
            };
            w.push(Inbound::Ack { client, ack }).unwrap();
        }
    }
    assert!(packets.len() > 1000, "{} packets", packets.len());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/protocol/decode_state.py"
    );
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    if wire.enabled() {
        let widths: Vec<String> = wire.widths.iter().map(u8::to_string).collect();
        cmd.arg(widths.join(",")).arg(wire.public.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut input_text = String::new();
    for p in &packets {
        for b in p {
            input_text.push_str(&format!("{b:02x}"));
        }
        input_text.push('\n');
    }
    // A truncated packet must be refused by both decoders.
    let cut = &packets[0][..packets[0].len() - 1];
    for b in cut {
        input_text.push_str(&format!("{b:02x}"));
    }
    input_text.push('\n');
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input_text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "decoder failed");
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), packets.len() + 1);
    let (mut leaves, mut enters, mut updates) = (0, 0, 0);
    for (p, line) in packets.iter().zip(&lines) {
        let ours = StatePacket::decode_with(p, &wire).unwrap();
        leaves += ours.leaves.len();
        enters += ours.enters.len();
        updates += ours.updates.len();
        let theirs: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(theirs, serde_json::to_value(&ours).unwrap());
    }
    assert!(leaves > 0 && enters > 0 && updates > 0);
    let last: serde_json::Value = serde_json::from_str(lines[packets.len()]).unwrap();
    assert!(last["error"].is_string(), "{last}");
    assert!(StatePacket::decode_with(cut, &wire).is_err());
    if wire.enabled() {
        let blocks = packets
            .iter()
            .map(|p| StatePacket::decode_with(p, &wire).unwrap())
            .flat_map(|p| p.update_game.into_iter().chain(p.enter_game))
            .filter(|b| b.carried != b.present)
            .count();
        assert!(blocks > 0, "no block carried a removal or a partial change");
    }
}
