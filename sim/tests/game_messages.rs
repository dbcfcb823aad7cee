//! A game's own messages in one scene: client actions reach game systems
//! as messages naming their sender, within their rate; a malformed one gets
//! its sender kicked; events reach one client, an entity's observers or the
//! whole scene.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

use bevy_app::{App, Plugin};
use bevy_ecs::prelude::*;
use tessera_sim::game::{
    ActionFrom, ActionRate, ClientAction, Delivery, EventTarget, GameEvents, GameMessagesAppExt,
    ServerEvent,
};
use tessera_sim::metrics::TimedSystemsExt;
use tessera_sim::testing::attach_at;
use tessera_sim::{GameSystems, Inbound, SceneDef, SceneEvent, SceneSettings, SceneWorld};

/// Pokes the PC with this net id (payload: its id, u32 little-endian).
#[derive(Debug, Clone, PartialEq)]
struct Poke(u32);

impl ClientAction for Poke {
    const WIDTH: u16 = 4;
    fn decode(bytes: &[u8]) -> Option<Self> {
        let id = u32::from_le_bytes(bytes.try_into().ok()?);
        // A game's own rule of what is well-formed: ids below 1000.
        (id < 1000).then_some(Poke(id))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
}

/// Someone was poked (to the target's observers), or a greeting (to one
/// client), or news (to the scene).
#[derive(Debug, Clone, PartialEq)]
struct Poked(u32);

impl ServerEvent for Poked {
    const MAX_BYTES: u16 = 4;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Poked(u32::from_le_bytes(bytes.try_into().ok()?)))
    }
}

/// Never registered.
struct Stray;

impl ServerEvent for Stray {
    const MAX_BYTES: u16 = 1;
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(0);
    }
    fn decode(_: &[u8]) -> Option<Self> {
        Some(Stray)
    }
}

#[derive(Resource, Default)]
struct Got(Vec<(Entity, u64, u32)>);

fn take_pokes(
    mut got: ResMut<Got>,
    mut pokes: MessageReader<ActionFrom<Poke>>,
    targets: Query<(Entity, &tessera_sim::components::Net)>,
    mut events: GameEvents,
) {
    for p in pokes.read() {
        got.0.push((p.entity, p.client, p.action.0));
        if let Some((target, _)) = targets.iter().find(|(_, n)| n.0 == p.action.0) {
            events.send(
                EventTarget::Observers(target),
                Delivery::Unreliable,
                &Poked(p.action.0),
            );
        }
        events.send(EventTarget::Client(p.entity), Delivery::Reliable, &Poked(7));
        events.send(EventTarget::Scene, Delivery::Reliable, &Poked(8));
        events.send(EventTarget::Scene, Delivery::Reliable, &Stray);
    }
}

struct PokeGame;

impl Plugin for PokeGame {
    fn build(&self, app: &mut App) {
        app.init_resource::<Got>()
            .add_client_action::<Poke>(ActionRate {
                per_second: 2,
                burst: 2,
            })
            .add_server_event::<Poked>()
            .add_timed_system(GameSystems::AfterIngest, take_pokes);
    }
}

fn poke(client: u64, id: u32) -> Inbound {
    let mut payload = Vec::new();
    Poke(id).encode(&mut payload);
    Inbound::Action {
        client,
        kind: 0,
        payload,
    }
}

#[test]
fn actions_reach_the_game_within_their_rate_and_events_their_clients() {
    let mut w = SceneWorld::builder(SceneDef::open_field("t", 1000.0), SceneSettings::default())
        .add_plugins(PokeGame)
        .build()
        .unwrap();
    // 1 and 2 see each other; 3 is far away.
    w.push(attach_at(1, [100.0, 100.0])).unwrap();
    w.push(attach_at(2, [110.0, 100.0])).unwrap();
    w.push(attach_at(3, [900.0, 900.0])).unwrap();
    let out = w.tick();
    let ids: Vec<(u64, u32)> = out
        .events
        .iter()
        .filter_map(|e| match e {
            SceneEvent::Attached { client, net_id, .. } => Some((*client, *net_id)),
            _ => None,
        })
        .collect();
    let net = |c: u64| ids.iter().find(|i| i.0 == c).unwrap().1;
    w.tick();

    // Client 1 pokes 2 three times at once: the burst is 2.
    for _ in 0..3 {
        w.push(poke(1, net(2))).unwrap();
    }
    let out = w.tick();
    let got = &w.world().resource::<Got>().0;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|g| g.1 == 1 && g.2 == net(2)));
    assert_eq!(w.counters().actions_flood_dropped, 1);
    assert_eq!(w.counters().actions_taken, 2);
    // Per poke: 2's observers (1, and 2 itself), 1 alone, the whole scene;
    // the unregistered event is dropped and counted.
    let to = |kind_payload: u32| {
        let mut v: Vec<u64> = out
            .game
            .iter()
            .filter(|g| g.payload[..] == kind_payload.to_le_bytes())
            .map(|g| g.client)
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(to(net(2)), [1, 1, 2, 2]);
    assert_eq!(to(7), [1, 1]);
    assert_eq!(to(8), [1, 1, 2, 2, 3, 3]);
    assert!(out.game.iter().all(|g| g.kind == 0));
    assert!(
        out.game
            .iter()
            .filter(|g| g.payload[..] == net(2).to_le_bytes())
            .all(|g| !g.reliable)
    );
    assert_eq!(w.counters().events_dropped, 2);

    // A second later the bucket has refilled.
    for _ in 0..20 {
        w.tick();
    }
    w.push(poke(1, net(3))).unwrap();
    w.tick();
    assert_eq!(w.world().resource::<Got>().0.len(), 3);

    // Wrong size, an unknown kind, and a payload the game refuses: each
    // kicks its sender, none reaches the game.
    w.push(Inbound::Action {
        client: 2,
        kind: 0,
        payload: vec![1, 2, 3],
    })
    .unwrap();
    w.push(Inbound::Action {
        client: 3,
        kind: 9,
        payload: vec![0; 4],
    })
    .unwrap();
    w.push(poke(1, 5000)).unwrap();
    let out = w.tick();
    let mut kicked: Vec<u64> = out
        .events
        .iter()
        .filter_map(|e| match e {
            SceneEvent::Misbehaved { client, .. } => Some(*client),
            _ => None,
        })
        .collect();
    kicked.sort_unstable();
    assert_eq!(kicked, [1, 2, 3]);
    assert_eq!(w.counters().actions_malformed, 3);
    assert_eq!(w.world().resource::<Got>().0.len(), 3);
    // An action from a client not here is counted, not a kick.
    let before = w.counters().unknown_client;
    w.push(poke(99, 1)).unwrap();
    w.tick();
    assert_eq!(w.counters().unknown_client, before + 1);
}
