//! A scene made of plugins: a game's systems in the documented sets, timed
//! by name, deterministic; the default movement replaced; mounts checked.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

use bevy_app::{App, Plugin, PluginGroup};
use bevy_ecs::prelude::*;
use tessera_sim::components::{Intent, Pc, Pose, Position, TickCount};
use tessera_sim::interest::SpatialIndex;
use tessera_sim::metrics::{SpanKind, TimedSystemsExt};
use tessera_sim::movement::MovementPlugin;
use tessera_sim::protocol::{Input, MoveMode};
use tessera_sim::replicate::ReplicatePlugin;
use tessera_sim::rng::{SceneRng, mix};
use tessera_sim::scene::SceneDef;
use tessera_sim::testing::{attach_at, input};
use tessera_sim::{
    BuildError, GameSystems, Inbound, SceneSettings, SceneWorld, SimulateSystems, TesseraPlugins,
};

/// What the test game's systems saw, in the order they ran.
#[derive(Resource, Debug, Default)]
struct Log(Vec<(u64, &'static str, usize, [f32; 2])>);

/// The first PC's position, if any.
fn first_pc(q: &Query<(&Pc, &Position)>) -> [f32; 2] {
    q.iter()
        .min_by_key(|(pc, _)| pc.client)
        .map_or([f32::NAN, f32::NAN], |(_, p)| p.0)
}

fn after_ingest(tick: Res<TickCount>, mut log: ResMut<Log>, q: Query<(&Pc, &Position)>) {
    log.0
        .push((tick.0, "after_ingest", q.iter().len(), first_pc(&q)));
}

fn after_simulate(tick: Res<TickCount>, mut log: ResMut<Log>, q: Query<(&Pc, &Position)>) {
    log.0
        .push((tick.0, "after_simulate", q.iter().len(), first_pc(&q)));
}

/// A game rule with seeded randomness: every PC strikes a random pose
/// (an action id from `mix(seed, avatar, tick)`), which the state hash sees.
fn random_emotes(tick: Res<TickCount>, rng: Res<SceneRng>, mut q: Query<(&Pc, &mut Pose)>) {
    for (pc, mut pose) in &mut q {
        pose.action = (mix(rng.seed(), pc.avatar, tick.0) % 7) as u8;
    }
}

struct TestGame;

impl Plugin for TestGame {
    fn build(&self, app: &mut App) {
        app.init_resource::<Log>()
            .add_timed_system(GameSystems::AfterIngest, after_ingest)
            .add_timed_system(GameSystems::AfterSimulate, after_simulate)
            .add_timed_system(GameSystems::AfterSimulate, random_emotes);
    }
}

fn settings(seed: u64) -> SceneSettings {
    SceneSettings {
        seed,
        trace: true,
        ..SceneSettings::default()
    }
}

fn game_world(seed: u64) -> SceneWorld {
    SceneWorld::builder(SceneDef::open_field("test", 200.0), settings(seed))
        .add_plugins(TestGame)
        .build()
        .unwrap()
}

#[test]
fn game_systems_run_in_their_sets_in_order() {
    let mut w = game_world(1);
    w.add_walkers(20, 100);
    w.push(attach_at(1, [100.0, 100.0])).unwrap();
    w.tick();
    for t in 1..5u32 {
        w.push(input(1, t, [1.0, 0.0], MoveMode::Run)).unwrap();
        w.tick();
    }
    let log = &w.world().resource::<Log>().0;
    assert_eq!(log.len(), 10, "{log:?}");
    for (i, pair) in log.chunks(2).enumerate() {
        let tick = i as u64 + 1;
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!((a.0, a.1), (tick, "after_ingest"), "{log:?}");
        assert_eq!((b.0, b.1), (tick, "after_simulate"), "{log:?}");
        // AfterIngest sees this tick's attach applied (the PC of tick 1).
        assert_eq!(a.2, 21, "{log:?}");
    }
    // The walker with the lowest client is client 1 (the attached PC).
    // AfterIngest runs before movement: it sees last tick's final position;
    // AfterSimulate sees this tick's.
    for k in 1..5 {
        assert_eq!(log[2 * k].3, log[2 * k - 1].3, "{log:?}");
        assert!(log[2 * k + 1].3[0] > log[2 * k].3[0], "moved: {log:?}");
    }
    // AfterSimulate runs before Spatial: the grid holds what it saw.
    let last = log.last().unwrap().3;
    let net = {
        let world = w.world_mut();
        let mut q = world.query::<(&Pc, &tessera_sim::components::Net)>();
        q.iter(world).find(|(pc, _)| pc.client == 1).unwrap().1.0
    };
    let snap = w.world().resource::<SpatialIndex>().snap(net).unwrap();
    assert_eq!(snap.pos, last);
}

#[test]
fn a_game_plugin_keeps_the_world_deterministic_and_unambiguous() {
    let run = |seed: u64| {
        let mut w = game_world(seed);
        w.add_walkers(30, 100);
        w.push(attach_at(1, [100.0, 100.0])).unwrap();
        for t in 0..40u32 {
            w.push(input(1, t, [0.6, -0.3], MoveMode::Walk)).unwrap();
            w.tick();
        }
        w.state_hash()
    };
    assert_eq!(run(5), run(5), "same seed, same hash");
    assert_ne!(run(5), run(6), "other seed, other hash");

    use bevy_ecs::schedule::Schedules;
    let mut w = game_world(1);
    w.tick();
    let update = w
        .world()
        .resource::<Schedules>()
        .get(bevy_app::Update)
        .unwrap();
    let conflicts = update.graph().conflicting_systems();
    assert!(
        conflicts.is_empty(),
        "{} conflicting pair(s) with a game plugin",
        conflicts.len()
    );
}

#[test]
fn game_systems_are_timed_by_name_in_the_report_and_the_trace() {
    let mut w = game_world(1);
    w.add_walkers(10, 100);
    for _ in 0..3 {
        w.tick();
    }
    let m = w.metrics();
    let timed: Vec<_> = m
        .timed_systems()
        .map(|(t, h)| (t.name.as_str(), t.stage, h.len()))
        .collect();
    for (name, stage) in [
        ("after_ingest", Some(0)),
        ("after_simulate", Some(1)),
        ("random_emotes", Some(1)),
        ("integrate", Some(1)),
        ("build_packets", Some(4)),
    ] {
        assert!(
            timed.contains(&(name, stage, 3)),
            "{name} timed 3 times in stage {stage:?}: {timed:?}"
        );
    }
    let traced: Vec<&str> = m
        .trace
        .as_ref()
        .unwrap()
        .iter()
        .filter_map(|s| match s.kind {
            SpanKind::System(i) => Some(m.system_name(i)),
            _ => None,
        })
        .collect();
    assert_eq!(traced.iter().filter(|n| **n == "random_emotes").count(), 3);
    assert_eq!(traced.iter().filter(|n| **n == "after_ingest").count(), 3);
}

/// A movement of the test's own: one unit per tick along the intent, no
/// speed, no obstacles.
struct StepMovement;

fn step_by_intent(mut q: Query<(&Intent, &mut Position)>) {
    for (intent, mut pos) in &mut q {
        pos.0 = [pos.0[0] + intent.dir[0], pos.0[1] + intent.dir[1]];
    }
}

impl Plugin for StepMovement {
    fn build(&self, app: &mut App) {
        app.add_timed_system(SimulateSystems, step_by_intent);
    }
}

fn pc_position(w: &mut SceneWorld, client: u64) -> [f32; 2] {
    let world = w.world_mut();
    let mut q = world.query::<(&Pc, &Position)>();
    q.iter(world)
        .find(|(pc, _)| pc.client == client)
        .unwrap()
        .1
        .0
}

#[test]
fn the_default_movement_can_be_replaced() {
    let mut w = SceneWorld::builder(SceneDef::open_field("test", 200.0), settings(1))
        .with_engine(TesseraPlugins.build().disable::<MovementPlugin>())
        .add_plugins(StepMovement)
        .build()
        .unwrap();
    w.push(attach_at(1, [100.0, 100.0])).unwrap();
    w.tick();
    for t in 1..=4u32 {
        w.push(input(1, t, [1.0, 0.0], MoveMode::Walk)).unwrap();
        w.tick();
    }
    // The default would have walked 4 × 0.2 units.
    assert_eq!(pc_position(&mut w, 1), [104.0, 100.0]);
    let names: Vec<_> = w
        .metrics()
        .timed_systems()
        .map(|(t, _)| t.name.clone())
        .collect();
    assert!(names.contains(&"step_by_intent".to_owned()), "{names:?}");
    assert!(!names.contains(&"integrate".to_owned()), "{names:?}");

    let err = SceneWorld::builder(SceneDef::open_field("test", 200.0), settings(1))
        .with_engine(TesseraPlugins.build().disable::<ReplicatePlugin>())
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::MissingEnginePlugin("ReplicatePlugin"));
}

fn mounted(client: u64, seq: u32, mount: u8) -> Inbound {
    Inbound::Input {
        client,
        input: Input {
            seq,
            dir: [1.0, 0.0],
            mode: MoveMode::Run,
            mount,
            ..Default::default()
        },
    }
}

/// Runs a PC asking for mount 3 for 20 ticks (one second) in a scene that
/// allows `mounts`; returns the distance, its mount and the refusals.
fn ride(mounts: Vec<u8>) -> (f32, u8, u64) {
    let mut def = SceneDef::open_field("test", 200.0);
    def.mounts = mounts;
    let mut w = SceneWorld::new(def, SceneSettings::default());
    w.push(attach_at(1, [50.0, 100.0])).unwrap();
    w.tick();
    for t in 1..=20u32 {
        w.push(mounted(1, t, 3)).unwrap();
        w.tick();
    }
    let pose = {
        let world = w.world_mut();
        let mut q = world.query::<(&Pc, &Pose)>();
        *q.iter(world).next().unwrap().1
    };
    let moved = pc_position(&mut w, 1)[0] - 50.0;
    (moved, pose.mount, w.counters().mounts_refused)
}

#[test]
fn a_pc_rides_only_the_mounts_its_scene_allows() {
    // Not allowed: run speed on foot (8 units/s), every input refused.
    let (moved, mount, refused) = ride(Vec::new());
    assert!((moved - 8.0).abs() < 0.01, "moved {moved}");
    assert_eq!((mount, refused), (0, 20));
    // Allowed: mounted speed (×1.5), nothing refused.
    let (moved, mount, refused) = ride(vec![3]);
    assert!((moved - 12.0).abs() < 0.01, "moved {moved}");
    assert_eq!((mount, refused), (3, 0));
}

#[test]
fn a_saved_mount_is_checked_on_attach() {
    let mut w = SceneWorld::new(
        SceneDef::open_field("test", 200.0),
        SceneSettings::default(),
    );
    let mut attach = attach_at(1, [50.0, 100.0]);
    if let Inbound::Attach { state: Some(s), .. } = &mut attach {
        s.mount = 2;
    }
    w.push(attach).unwrap();
    w.tick();
    let world = w.world_mut();
    let mut q = world.query::<&Pose>();
    assert_eq!(q.single(world).unwrap().mount, 0);
    assert_eq!(w.counters().mounts_refused, 1);
}

/// What a timed system beside the default movement saw: the PC's position.
#[derive(Resource, Debug, Default)]
struct Seen(Vec<[f32; 2]>);

fn after_movement(mut seen: ResMut<Seen>, q: Query<(&Pc, &Position)>) {
    seen.0.push(first_pc(&q));
}

struct BesideMovement;

impl Plugin for BesideMovement {
    fn build(&self, app: &mut App) {
        app.init_resource::<Seen>()
            .add_timed_system(SimulateSystems, after_movement);
    }
}

#[test]
fn a_timed_system_beside_the_default_movement_runs_after_it() {
    let mut w = SceneWorld::builder(SceneDef::open_field("test", 200.0), settings(1))
        .add_plugins(BesideMovement)
        .build()
        .unwrap();
    w.push(attach_at(1, [100.0, 100.0])).unwrap();
    w.tick();
    for t in 1..=3u32 {
        w.push(input(1, t, [1.0, 0.0], MoveMode::Run)).unwrap();
        w.tick();
        // Seen after this tick's move (run: 8 units/s at 20 Hz).
        let seen = *w.world().resource::<Seen>().0.last().unwrap();
        assert!(
            (seen[0] - (100.0 + 0.4 * t as f32)).abs() < 1e-3,
            "{seen:?}"
        );
        assert_eq!(seen, pc_position(&mut w, 1));
    }
    use bevy_ecs::schedule::Schedules;
    let update = w
        .world()
        .resource::<Schedules>()
        .get(bevy_app::Update)
        .unwrap();
    assert!(update.graph().conflicting_systems().is_empty());
}

/// Registered components make the game's protocol: named by type, in
/// registration order, with width and scope; its hash changes with them;
/// a component registered twice is refused at build, not at the first tick.
#[test]
fn replicated_components_make_the_protocol_and_a_bad_one_is_refused() {
    use tessera_sim::game::{AsU8, AsU16, ReplicateAppExt, game_schema};
    use tessera_sim::testing::{ChurnGamePlugin, TestHp, TestMana};
    use tessera_sim::{DefaultGame, Game, SceneWorldBuilder};

    let def = || SceneDef::open_field("t", 100.0);
    let w = SceneWorld::builder(def(), SceneSettings::default())
        .add_plugins(ChurnGamePlugin)
        .named("churn")
        .build()
        .unwrap();
    let schema = w.schema();
    let names: Vec<_> = schema.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["TestHp", "TestMana", "TestMark"]);
    assert_eq!(schema.components[0].width, 2);
    assert_eq!(schema.components[1].scope, tessera_proto::Scope::Owner);
    assert_eq!(schema.game, "churn");
    let default = game_schema(&DefaultGame).unwrap();
    assert!(default.components.is_empty());
    assert_ne!(default.hash(), schema.hash());

    struct Twice;
    impl Plugin for Twice {
        fn build(&self, app: &mut App) {
            app.replicate::<TestHp, AsU16>()
                .replicate::<TestHp, AsU16>()
                .replicate_to_owner::<TestMana, AsU8>();
        }
    }
    struct TwiceGame;
    impl Game for TwiceGame {
        fn name(&self) -> &'static str {
            "twice"
        }
        fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
            world.add_plugins(Twice)
        }
    }
    assert!(matches!(
        game_schema(&TwiceGame),
        Err(BuildError::Protocol(_))
    ));
}
