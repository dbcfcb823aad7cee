//! Persistent game state: a PC's registered components ride in its saved
//! state, a keyed scene object's in the scene's save batches, and both come
//! back into a fresh world.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

use bevy_ecs::prelude::*;
use tessera_sim::scene::SceneDef;
use tessera_sim::testing::hp_game::{
    Hp, HpGame, SHRINE_KEY, pc_hp, set_pc_hp, set_shrine_hp, shrine_hp,
};
use tessera_sim::{
    GameField, Inbound, ObjectState, PcState, Persistent, SaveBatch, SceneEvent, SceneSettings,
    SceneWorld,
};

fn world() -> SceneWorld {
    let settings = SceneSettings {
        flush_interval_ticks: Some(1),
        ..SceneSettings::default()
    };
    SceneWorld::builder(SceneDef::open_field("test", 200.0), settings)
        .add_plugins(HpGame)
        .build()
        .unwrap()
}

fn attach(avatar: u64, game: Vec<GameField>) -> Inbound {
    Inbound::Attach {
        client: avatar,
        avatar,
        state: Some(PcState {
            avatar,
            position: [100.0, 100.0],
            game,
            ..PcState::default()
        }),
        figure: 0,
    }
}

fn hp_field(hp: u16) -> GameField {
    GameField {
        name: "hp".into(),
        version: 1,
        bytes: postcard::to_allocvec(&Hp(hp)).unwrap().into(),
    }
}

fn saved(batch: &Option<SaveBatch>, avatar: u64) -> Option<PcState> {
    batch
        .as_ref()?
        .states
        .iter()
        .find(|s| s.avatar == avatar)
        .cloned()
}

#[test]
fn a_pcs_persistent_component_is_saved_when_it_changes_only() {
    let mut w = world();
    w.push(attach(1, Vec::new())).unwrap();
    let first = w.tick().save;
    // New in the scene: saved with the default the game gave it.
    w.tick();
    assert_eq!(pc_hp(w.world_mut(), 1), Some(100));
    let mut game = saved(&first, 1).map(|s| s.game).unwrap_or_default();
    for _ in 0..3 {
        if let Some(s) = saved(&w.tick().save, 1) {
            game = s.game;
        }
    }
    assert_eq!(game, vec![hp_field(100)]);
    for _ in 0..3 {
        assert_eq!(saved(&w.tick().save, 1), None, "unchanged, not saved");
    }
    set_pc_hp(w.world_mut(), 1, 42);
    let s = saved(&w.tick().save, 1).expect("changed hp saved");
    assert_eq!(s.game, vec![hp_field(42)]);
    assert_eq!(saved(&w.tick().save, 1), None, "saved once");

    // The detach's final state carries it too: as of the end of the last
    // tick (game systems run after Ingest, so a game's change is in).
    set_pc_hp(w.world_mut(), 1, 41);
    w.tick();
    w.push(Inbound::Detach { client: 1 }).unwrap();
    let out = w.tick();
    let detached = out.events.iter().find_map(|e| match e {
        SceneEvent::Detached { state, .. } => Some(state.clone()),
        _ => None,
    });
    assert_eq!(detached.unwrap().game, vec![hp_field(41)]);
}

#[test]
fn a_pcs_persistent_component_is_restored_on_attach() {
    let mut w = world();
    w.push(attach(1, vec![hp_field(42)])).unwrap();
    let first = w.tick();
    assert_eq!(
        pc_hp(w.world_mut(), 1),
        Some(42),
        "restored, not the default"
    );
    assert_eq!(saved(&first.save, 1), None, "restored as saved: not dirty");
    for _ in 0..3 {
        assert_eq!(saved(&w.tick().save, 1), None);
    }
    assert_eq!(w.persist_stats().restored, 1);
    // And the world's own view of its PCs carries it.
    assert_eq!(w.pc_states()[0].game, vec![hp_field(42)]);
}

#[test]
fn unknown_or_old_fields_are_counted_and_dropped() {
    let mut w = world();
    let old = GameField {
        version: 0,
        ..hp_field(5)
    };
    let unknown = GameField {
        name: "mana".into(),
        version: 1,
        bytes: vec![1, 2, 3].into(),
    };
    w.push(attach(1, vec![old, unknown])).unwrap();
    let garbage = GameField {
        name: "hp".into(),
        version: 1,
        bytes: Vec::new().into(),
    };
    w.push(attach(2, vec![garbage])).unwrap();
    let first = w.tick();
    assert_eq!(
        pc_hp(w.world_mut(), 1),
        Some(100),
        "default, not the old value"
    );
    assert_eq!(pc_hp(w.world_mut(), 2), Some(100));
    let stats = w.persist_stats();
    assert_eq!(
        (
            stats.version_mismatch,
            stats.unknown_fields,
            stats.undecodable,
            stats.restored
        ),
        (1, 1, 1, 0)
    );
    // What is saved is the game's value, without the dropped fields.
    let s = saved(&first.save, 1).expect("resaved without the dropped fields");
    assert_eq!(s.game, vec![hp_field(100)]);
}

fn objects(batch: &Option<SaveBatch>) -> Vec<ObjectState> {
    batch
        .as_ref()
        .map(|b| b.objects.clone())
        .unwrap_or_default()
}

#[test]
fn a_keyed_scene_object_is_saved_and_restored_into_a_fresh_world() {
    let mut w = world();
    let first = objects(&w.tick().save);
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].key, first[0].game.clone()),
        (SHRINE_KEY, vec![hp_field(500)])
    );
    assert!(objects(&w.tick().save).is_empty(), "unchanged, not saved");
    set_shrine_hp(w.world_mut(), 250);
    let changed = objects(&w.tick().save);
    assert_eq!(changed[0].game, vec![hp_field(250)]);

    // A fresh world (the scene placed again) gets the saved object back
    // before its first tick; the game spawns the shrine at startup with
    // its default, and the saved value wins.
    let mut fresh = world();
    fresh.restore_objects(changed.clone());
    let out = fresh.tick();
    assert_eq!(shrine_hp(fresh.world_mut()), Some(250));
    assert!(
        objects(&out.save).is_empty(),
        "restored as saved: not resaved"
    );
    assert_eq!(fresh.object_states()[0].game, vec![hp_field(250)]);

    // Its entity despawned: its saved state is erased.
    let mut q = fresh.world_mut().query::<(Entity, &Persistent)>();
    let shrine: Vec<Entity> = q.iter(fresh.world()).map(|(e, _)| e).collect();
    fresh.world_mut().despawn(shrine[0]);
    let erased = objects(&fresh.tick().save);
    assert_eq!(
        erased,
        vec![ObjectState {
            key: SHRINE_KEY,
            tick: fresh.tick_count(),
            game: Vec::new()
        }]
    );
}

#[test]
fn an_object_restored_before_its_entity_exists_waits_for_it() {
    let mut w = world();
    // A key the game has not spawned (yet): not saved over, not lost.
    w.restore_objects(vec![ObjectState {
        key: 99,
        tick: 1,
        game: vec![hp_field(3)],
    }]);
    for _ in 0..3 {
        assert!(objects(&w.tick().save).iter().all(|o| o.key != 99));
    }
    w.world_mut().spawn((Persistent { key: 99 }, Hp(1)));
    for _ in 0..2 {
        let saved = objects(&w.tick().save);
        assert!(saved.iter().all(|o| o.key != 99), "restored as saved");
    }
    let mut q = w.world_mut().query::<(&Persistent, &Hp)>();
    let hp = q
        .iter(w.world())
        .find(|(p, _)| p.key == 99)
        .map(|(_, h)| h.0);
    assert_eq!(hp, Some(3));
}

#[test]
fn persistent_state_keeps_the_schedule_unambiguous_and_deterministic() {
    use bevy_ecs::schedule::Schedules;
    let mut w = world();
    w.push(attach(1, vec![hp_field(7)])).unwrap();
    w.tick();
    let update = w
        .world()
        .resource::<Schedules>()
        .get(bevy_app::Update)
        .unwrap();
    let conflicts = update.graph().conflicting_systems();
    assert!(conflicts.is_empty(), "{conflicts:?}");
}

#[derive(Component, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Bag(Vec<u8>);

struct BagGame;

impl bevy_app::Plugin for BagGame {
    fn build(&self, app: &mut bevy_app::App) {
        use tessera_sim::PersistAppExt;
        app.persist::<Bag>("bag", 1);
    }
}

/// A PC whose fields grow over the bound keeps its last save within it;
/// the oversize is counted.
#[test]
fn oversized_fields_keep_the_last_save_and_are_counted() {
    let settings = SceneSettings {
        flush_interval_ticks: Some(1),
        ..SceneSettings::default()
    };
    let mut w = SceneWorld::builder(SceneDef::open_field("test", 200.0), settings)
        .add_plugins(BagGame)
        .build()
        .unwrap();
    w.push(attach(1, Vec::new())).unwrap();
    w.tick();
    let set = |w: &mut SceneWorld, n: usize| {
        let mut q = w
            .world_mut()
            .query::<(Entity, &tessera_sim::components::Pc)>();
        let e = q.iter(w.world()).next().unwrap().0;
        w.world_mut().entity_mut(e).insert(Bag(vec![1; n]));
    };
    set(&mut w, 10);
    let small = saved(&w.tick().save, 1).expect("saved").game;
    assert_eq!(small[0].bytes.len(), 11);
    set(&mut w, tessera_sim::persist_game::MAX_GAME_BYTES);
    let out = w.tick();
    assert_eq!(saved(&out.save, 1).map(|s| s.game), Some(small.clone()));
    assert!(w.persist_stats().oversize > 0);
    w.push(Inbound::Detach { client: 1 }).unwrap();
    let out = w.tick();
    assert_eq!(saved(&out.save, 1).map(|s| s.game), Some(small));
}
