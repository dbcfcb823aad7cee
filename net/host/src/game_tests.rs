//! The game reaches the runner: its plugins are in every world a host
//! places, and a game that does not build fails the runner, not the process.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy_app::{App, Plugin, PluginGroup};
use bevy_ecs::prelude::*;
use tessera_sim::components::Pc;
use tessera_sim::metrics::TimedSystemsExt;
use tessera_sim::replicate::ReplicatePlugin;
use tessera_sim::{GameSystems, SceneDef, SceneWorldBuilder, TesseraPlugins};

use super::*;

const WAIT: Duration = Duration::from_secs(20);
const FIGURE: u32 = 77;

/// Dresses every PC in figure [`FIGURE`].
struct Tailor;

fn dress(mut q: Query<&mut Pc>) {
    for mut pc in &mut q {
        pc.figure = FIGURE;
    }
}

impl Plugin for Tailor {
    fn build(&self, app: &mut App) {
        app.add_timed_system(GameSystems::AfterSimulate, dress);
    }
}

struct Tailors;

impl Game for Tailors {
    fn name(&self) -> &'static str {
        "tailors"
    }
    fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
        world.add_plugins(Tailor)
    }
}

/// A game that leaves out an engine plugin a scene needs.
struct Broken;

impl Game for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
        world.with_engine(TesseraPlugins.build().disable::<ReplicatePlugin>())
    }
}

fn host(game: Option<Arc<dyn Game>>, clock: &ManualClock) -> SceneHost {
    let settings = RunnerSettings {
        report_every_ticks: 1,
        walkers: 3,
        ..RunnerSettings::default()
    };
    let h = SceneHost::new(
        settings,
        Arc::new(clock.clone()),
        Arc::new(MemorySink::new()),
    );
    match game {
        Some(game) => h.with_game(game),
        None => h,
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The figures of the scene's entities after two ticks.
fn figures(h: &SceneHost, clock: &ManualClock) -> Vec<u32> {
    for ticks in 1..=2 {
        clock.advance(Duration::from_millis(50));
        wait_for("a tick", || h.runner("f").unwrap().load().ticks >= ticks);
    }
    let snapshot = h.runner("f").unwrap().snapshot().unwrap();
    let snapshot = snapshot.blocking_recv().unwrap();
    snapshot.entities.iter().map(|e| e.figure).collect()
}

#[test]
fn every_world_a_host_places_is_its_games() {
    let clock = ManualClock::new();
    let mut h = host(Some(Arc::new(Tailors)), &clock);
    assert_eq!(h.game().name(), "tailors");
    h.place("f", SceneDef::open_field("f", 200.0), 1, Vec::new())
        .unwrap();
    assert_eq!(figures(&h, &clock), vec![FIGURE; 3]);
    h.drop_scene("f", false).unwrap();

    // The default game leaves the walkers' figures alone.
    let mut h = host(None, &clock);
    assert_eq!(h.game().name(), "default");
    h.place("f", SceneDef::open_field("f", 200.0), 1, Vec::new())
        .unwrap();
    let figures = figures(&h, &clock);
    assert_eq!(figures.len(), 3);
    assert!(!figures.contains(&FIGURE), "{figures:?}");
    h.drop_scene("f", false).unwrap();
}

#[test]
fn a_game_that_does_not_build_fails_its_runner_with_a_build_error() {
    let clock = ManualClock::new();
    assert_eq!(
        check_game(&Broken),
        Err(BuildError::MissingEnginePlugin("ReplicatePlugin"))
    );
    assert_eq!(check_game(&Tailors), Ok(()));
    let mut h = host(Some(Arc::new(Broken)), &clock);
    h.place("f", SceneDef::open_field("f", 200.0), 1, Vec::new())
        .unwrap();
    wait_for("the runner to fail", || {
        h.runner("f").unwrap().load().phase == RunnerPhase::Failed
    });
    match h.drop_scene("f", false) {
        Err(DropError::Run(RunError::Build {
            game,
            scene,
            message,
        })) => {
            assert_eq!((game, scene.as_str()), ("broken", "f"));
            assert!(message.contains("ReplicatePlugin"), "{message}");
        }
        other => panic!("expected a build error, got {other:?}"),
    }
}
