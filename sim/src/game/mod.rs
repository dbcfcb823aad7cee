//! [`Game`]: what a game built on Tessera hands the engine. Every scene
//! world a process builds (the host runner's, `tessera sim`'s) is
//! `game.build(SceneWorld::builder(def, settings)).build()`, so one game
//! value carries its plugins into every command of the CLI.

use crate::world::{BuildError, SceneWorld, SceneWorldBuilder};
use crate::{SceneDef, SceneSettings};

/// A game: its name and the plugins every scene of it is made of.
///
/// ```ignore
/// struct Arena;
/// impl Game for Arena {
///     fn name(&self) -> &'static str { "arena" }
///     fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
///         world.add_plugins(ArenaPlugin)
///     }
/// }
/// ```
pub trait Game: Send + Sync + 'static {
    /// Short and stable: logs, reports and the protocol description name it.
    fn name(&self) -> &'static str;

    /// Adds the game's plugins (or replaces engine ones) to a world being
    /// built. Called once per scene world, so plugins are made fresh here.
    fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder;
}

/// The engine's default game: movement, mounts and NPC wander, nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultGame;

impl Game for DefaultGame {
    fn name(&self) -> &'static str {
        "default"
    }

    fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
        world
    }
}

impl SceneWorld {
    /// A scene world of `game`.
    pub fn for_game(
        game: &dyn Game,
        def: SceneDef,
        settings: SceneSettings,
    ) -> Result<SceneWorld, BuildError> {
        game.build(SceneWorld::builder(def, settings).named(game.name()))
            .build()
    }
}

mod messages;
mod replicated;

pub use messages::{
    ActionBudget, ActionFrom, ActionRate, ClientAction, Delivery, EventOutbox, EventTarget,
    GameEvents, GameMessages, GameMessagesAppExt, MAX_EVENTS_PER_TICK, PendingActions, ServerEvent,
};
pub(crate) use messages::{apply_actions, route_events};

pub(crate) use replicated::snap_game;
pub use replicated::{
    AsU8, AsU16, AsU32, ComponentQuantizer, GameRegistry, GameSnaps, ReplicateAppExt,
};

/// The protocol of `game` (what its clients must agree on), from a probe
/// world built with its plugins.
pub fn game_schema(game: &dyn Game) -> Result<tessera_proto::GameSchema, BuildError> {
    let def = SceneDef::open_field("probe", 100.0);
    Ok(SceneWorld::for_game(game, def, SceneSettings::default())?.schema())
}

/// A game's own counters, by name (what its rules refused, what happened):
/// reported with the scene's (`tessera sim --report json` `game`, and the
/// host's metrics). Names are `'static` and few; iteration is by name.
#[derive(bevy_ecs::prelude::Resource, Debug, Default, Clone, PartialEq, Eq)]
pub struct GameCounters(std::collections::BTreeMap<&'static str, u64>);

impl GameCounters {
    pub fn add(&mut self, name: &'static str, n: u64) {
        *self.0.entry(name).or_default() += n;
    }

    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().map(|(&k, &v)| (k, v))
    }
}
