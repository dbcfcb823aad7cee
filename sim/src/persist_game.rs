//! Persistent game state. A game registers components with
//! [`PersistAppExt::persist`]; a registered component is then saved with
//! its PC's state ([`PcState::game`](crate::PcState)) and, on a scene
//! entity the game marks [`Persistent`], with the scene
//! ([`SaveBatch::objects`](crate::SaveBatch)), in the same save batches.
//!
//! Every registered component of a PC or keyed object is kept encoded
//! (postcard) in the entity's [`GameFields`], re-encoded in the Persist
//! stage when it changes. An entity whose encoded fields differ from the
//! ones last saved is saved at the next flush. Restoring: the fields of an
//! attach's saved state, and the scene's objects handed to
//! [`SceneWorld::restore_objects`], are decoded and inserted during Ingest
//! (objects once the game has spawned the entity with their key). A field
//! of an unknown name, another version, or that does not decode is dropped
//! and counted in [`PersistStats`].

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use bevy_app::{App, Update};
use bevy_ecs::prelude::*;
use serde::{Serialize, de::DeserializeOwned};

use crate::components::{SaveTrack, TickCount};
use crate::ingest::IngestStep;
use crate::protocol::{GameField, ObjectState, SaveBatch};
use crate::world::{SceneInfo, SceneOutbox, SceneWorld};
use crate::{IngestSystems, PersistSystems};

/// Most bytes of one PC's or one object's fields (names and values). A
/// save over it keeps the last one within it, and is counted.
pub const MAX_GAME_BYTES: usize = 1024;
/// Longest name of a persistent component, in bytes.
pub const MAX_FIELD_NAME: usize = 32;
/// Most keyed objects a scene saves; more are refused and counted.
pub const MAX_SCENE_OBJECTS: usize = 4096;
/// Most bytes of all of a scene's saved objects: they travel to the scene
/// server in one placement message.
pub const MAX_OBJECT_BYTES: usize = 256 * 1024;

/// The size of `fields` as the limits count it.
pub fn game_bytes(fields: &[GameField]) -> usize {
    fields
        .iter()
        .map(|f| f.name.len() + f.bytes.len() + 2)
        .sum()
}

/// A scene entity whose registered persistent components are saved with
/// the scene, under `key` (unique in the scene, stable across restarts:
/// the game chooses it).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[require(GameFields)]
pub struct Persistent {
    pub key: u64,
}

/// The encoded persistent components of a PC or keyed object, sorted by
/// name: `now` as they are, `saved` as last saved or restored.
#[derive(Component, Debug, Default, Clone, PartialEq)]
pub struct GameFields {
    pub now: Vec<GameField>,
    pub saved: Vec<GameField>,
}

impl GameFields {
    /// What a save of this entity carries: `now`, or `saved` when `now`
    /// is over [`MAX_GAME_BYTES`] (counted).
    pub(crate) fn to_save(&self, stats: &mut PersistStats) -> Vec<GameField> {
        if game_bytes(&self.now) > MAX_GAME_BYTES {
            stats.oversize += 1;
            return self.saved.clone();
        }
        self.now.clone()
    }
}

/// Saved fields waiting to be inserted into their entity (this tick).
#[derive(Component, Debug, Clone)]
pub(crate) struct RestoreFields(pub Vec<GameField>);

/// Counters of persistent game state.
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PersistStats {
    /// Fields restored into PCs and objects.
    pub restored: u64,
    /// Saved fields dropped on restore: no component of that name is registered.
    pub unknown_fields: u64,
    /// Saved fields dropped on restore: registered under another version.
    pub version_mismatch: u64,
    /// Saved fields dropped on restore: their bytes do not decode.
    pub undecodable: u64,
    /// Components that could not be encoded (not saved).
    pub encode_errors: u64,
    /// Saves of a PC or object over [`MAX_GAME_BYTES`]: its last fields
    /// within it were kept.
    pub oversize: u64,
    /// Object saves refused: over [`MAX_SCENE_OBJECTS`] or [`MAX_OBJECT_BYTES`].
    pub objects_refused: u64,
    /// Keyed entities not saved because another holds the same key.
    pub duplicate_keys: u64,
}

struct Entry {
    name: &'static str,
    version: u16,
    decodes: fn(&[u8]) -> bool,
}

/// The registered persistent components, sorted by name.
#[derive(Resource, Default)]
pub struct PersistRegistry {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for PersistRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (e.name, e.version)))
            .finish()
    }
}

impl PersistRegistry {
    fn get(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Whether any component is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Saved objects waiting for the game to spawn their entity.
#[derive(Resource, Debug, Default)]
pub(crate) struct ObjectRestore {
    pending: BTreeMap<u64, Vec<GameField>>,
    /// Look at every keyed entity once, not only new ones (objects handed
    /// over after entities were spawned).
    scan_all: bool,
}

/// What the data service holds of this scene's objects, and which keys
/// had an entity at the last flush (a key that loses it is erased).
#[derive(Resource, Debug, Default)]
pub(crate) struct ObjectTrack {
    sizes: BTreeMap<u64, usize>,
    total: usize,
    live: BTreeSet<u64>,
}

/// Name and version of one registered component.
#[derive(Resource)]
struct Meta<C: Component> {
    name: &'static str,
    version: u16,
    _c: PhantomData<fn() -> C>,
}

#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EncodeSet;

#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RestoreSet;

/// Registers persistent components on a scene's app.
pub trait PersistAppExt {
    /// Saves component `C` of PCs (with their state) and of [`Persistent`]
    /// scene entities (with the scene) under `name` and `version`, and
    /// restores it. Bump `version` when `C`'s serialized form changes:
    /// saved values of another version are dropped (counted), and the
    /// entity keeps what the game gives it. Panics on a name registered
    /// twice, empty or longer than [`MAX_FIELD_NAME`] (a programming error,
    /// as adding a plugin twice).
    fn persist<C: Component + Serialize + DeserializeOwned>(
        &mut self,
        name: &'static str,
        version: u16,
    ) -> &mut Self;
}

impl PersistAppExt for App {
    fn persist<C: Component + Serialize + DeserializeOwned>(
        &mut self,
        name: &'static str,
        version: u16,
    ) -> &mut Self {
        assert!(
            !name.is_empty() && name.len() <= MAX_FIELD_NAME,
            "persistent component name {name:?}: 1 to {MAX_FIELD_NAME} bytes"
        );
        init(self);
        {
            let mut reg = self.world_mut().resource_mut::<PersistRegistry>();
            match reg.entries.binary_search_by(|e| e.name.cmp(name)) {
                Ok(_) => panic!("persistent component name {name:?} registered twice"),
                Err(i) => reg.entries.insert(
                    i,
                    Entry {
                        name,
                        version,
                        decodes: decodes::<C>,
                    },
                ),
            }
        }
        self.insert_resource(Meta::<C> {
            name,
            version,
            _c: PhantomData,
        })
        .add_systems(
            Update,
            (
                encode::<C>
                    .in_set(PersistSystems)
                    .in_set(EncodeSet)
                    .ambiguous_with(EncodeSet)
                    .before(mark_game_dirty),
                restore::<C>
                    .in_set(IngestSystems)
                    .in_set(RestoreSet)
                    .after(IngestStep::Attach)
                    .before(finish_restore)
                    .before(IngestStep::Actions),
            ),
        )
    }
}

/// The engine's side: resources, and the systems that do not depend on a
/// component type (added once, by the `PersistPlugin`).
pub(crate) fn init(app: &mut App) {
    if app.world().contains_resource::<PersistRegistry>() {
        return;
    }
    app.init_resource::<PersistRegistry>()
        .init_resource::<PersistStats>()
        .init_resource::<ObjectRestore>()
        .init_resource::<ObjectTrack>()
        .add_systems(
            Update,
            (
                match_objects
                    .in_set(IngestSystems)
                    .before(IngestStep::Attach),
                finish_restore
                    .in_set(IngestSystems)
                    .after(RestoreSet)
                    .after(IngestStep::Attach)
                    .before(IngestStep::Actions)
                    .before(IngestStep::Detach),
                mark_game_dirty
                    .in_set(PersistSystems)
                    .after(crate::persist::mark_dirty)
                    .before(crate::persist::flush),
                flush_objects
                    .in_set(PersistSystems)
                    .after(crate::persist::flush),
            ),
        );
}

fn decodes<C: DeserializeOwned>(bytes: &[u8]) -> bool {
    postcard::from_bytes::<C>(bytes).is_ok()
}

/// Sets `name`'s field in `f.now` (marking `f` changed only if it changes).
fn set_field(f: &mut Mut<GameFields>, name: &str, version: u16, bytes: Vec<u8>) {
    match f.now.binary_search_by(|x| (*x.name).cmp(name)) {
        Ok(i) if f.now[i].version == version && *f.now[i].bytes == *bytes => {}
        Ok(i) => {
            f.now[i].version = version;
            f.now[i].bytes = bytes.into();
        }
        Err(i) => f.now.insert(
            i,
            GameField {
                name: name.into(),
                version,
                bytes: bytes.into(),
            },
        ),
    }
}

/// Keeps `C`'s encoded field of PCs and keyed objects up to date.
fn encode<C: Component + Serialize>(
    meta: Res<Meta<C>>,
    mut removed: RemovedComponents<C>,
    mut gone: Query<&mut GameFields, Without<C>>,
    mut changed: Query<(&C, &mut GameFields), Or<(Changed<C>, Added<GameFields>)>>,
    mut stats: ResMut<PersistStats>,
) {
    for e in removed.read() {
        if let Ok(mut f) = gone.get_mut(e)
            && let Ok(i) = f.now.binary_search_by(|x| (*x.name).cmp(meta.name))
        {
            f.now.remove(i);
        }
    }
    for (c, mut f) in &mut changed {
        match postcard::to_allocvec(c) {
            Ok(bytes) => set_field(&mut f, meta.name, meta.version, bytes),
            Err(_) => stats.encode_errors += 1,
        }
    }
}

/// Inserts `C` from the saved fields of entities restored this tick.
fn restore<C: Component + DeserializeOwned>(
    meta: Res<Meta<C>>,
    mut commands: Commands,
    q: Query<(Entity, &RestoreFields)>,
) {
    for (e, r) in &q {
        let Some(f) = r.0.iter().find(|f| &*f.name == meta.name) else {
            continue;
        };
        if f.version != meta.version {
            continue;
        }
        if let Ok(c) = postcard::from_bytes::<C>(&f.bytes) {
            commands.entity(e).insert(c);
        }
    }
}

/// Hands saved objects to the entities the game spawned with their keys.
fn match_objects(
    mut commands: Commands,
    mut restore: ResMut<ObjectRestore>,
    added: Query<(Entity, &Persistent), Added<Persistent>>,
    all: Query<(Entity, &Persistent)>,
) {
    if restore.pending.is_empty() {
        return;
    }
    let scan_all = std::mem::take(&mut restore.scan_all);
    let mut found: Vec<(u64, Entity)> = if scan_all {
        all.iter().map(|(e, p)| (p.key, e)).collect()
    } else {
        added.iter().map(|(e, p)| (p.key, e)).collect()
    };
    found.sort_unstable();
    for (key, e) in found {
        if let Some(fields) = restore.pending.remove(&key) {
            commands.entity(e).insert(RestoreFields(fields));
        }
    }
}

/// Accounts for the restored fields: the ones inserted are what the entity
/// saved last; the others are counted and dropped.
fn finish_restore(
    mut commands: Commands,
    reg: Res<PersistRegistry>,
    mut stats: ResMut<PersistStats>,
    mut q: Query<(Entity, &RestoreFields, &mut GameFields)>,
) {
    for (e, r, mut f) in &mut q {
        let mut accepted: Vec<GameField> = Vec::new();
        for field in &r.0 {
            match reg.get(&field.name) {
                None => stats.unknown_fields += 1,
                Some(entry) if entry.version != field.version => stats.version_mismatch += 1,
                Some(entry) if !(entry.decodes)(&field.bytes) => stats.undecodable += 1,
                Some(_) if accepted.iter().any(|a| a.name == field.name) => {
                    stats.unknown_fields += 1;
                }
                Some(_) => {
                    stats.restored += 1;
                    accepted.push(field.clone());
                }
            }
        }
        accepted.sort_by(|a, b| a.name.cmp(&b.name));
        f.saved = accepted.clone();
        f.now = accepted;
        commands.entity(e).remove::<RestoreFields>();
    }
}

/// A PC whose encoded fields differ from the ones last saved is dirty.
fn mark_game_dirty(mut q: Query<(&GameFields, &mut SaveTrack), Changed<GameFields>>) {
    for (f, mut track) in &mut q {
        if f.now != f.saved && !track.dirty {
            track.dirty = true;
        }
    }
}

/// Adds the changed keyed objects, and the erased ones, to the batch of a
/// flush tick.
fn flush_objects(
    info: Res<SceneInfo>,
    tick: Res<TickCount>,
    restore: Res<ObjectRestore>,
    mut track: ResMut<ObjectTrack>,
    mut stats: ResMut<PersistStats>,
    mut out: ResMut<SceneOutbox>,
    mut q: Query<(Entity, &Persistent, &mut GameFields)>,
) {
    if !tick.0.is_multiple_of(info.flush_every) {
        return;
    }
    let mut found: Vec<(u64, Entity)> = q.iter().map(|(e, p, _)| (p.key, e)).collect();
    found.sort_unstable();
    let mut objects = Vec::new();
    let mut live = BTreeSet::new();
    for (key, e) in found {
        if !live.insert(key) {
            stats.duplicate_keys += 1;
            continue;
        }
        // Its saved state has not been applied yet: saving now would
        // overwrite it with the game's defaults.
        if restore.pending.contains_key(&key) {
            continue;
        }
        let Ok((_, _, mut f)) = q.get_mut(e) else {
            continue;
        };
        if f.now == f.saved {
            continue;
        }
        let game = f.to_save(&mut stats);
        if game == f.saved {
            continue;
        }
        let size = game_bytes(&game);
        let old = track.sizes.get(&key).copied();
        let total = track.total - old.unwrap_or(0) + size;
        if (old.is_none() && track.sizes.len() >= MAX_SCENE_OBJECTS) || total > MAX_OBJECT_BYTES {
            stats.objects_refused += 1;
            continue;
        }
        track.total = total;
        if game.is_empty() {
            track.sizes.remove(&key);
        } else {
            track.sizes.insert(key, size);
        }
        f.saved = game.clone();
        objects.push(ObjectState {
            key,
            tick: tick.0,
            game,
        });
    }
    let erased: Vec<u64> = track.live.difference(&live).copied().collect();
    for key in erased {
        if let Some(size) = track.sizes.remove(&key) {
            track.total -= size;
            objects.push(ObjectState {
                key,
                tick: tick.0,
                game: Vec::new(),
            });
        }
    }
    track.live = live;
    if objects.is_empty() {
        return;
    }
    objects.sort_by_key(|o| o.key);
    out.save
        .get_or_insert_with(|| SaveBatch {
            scene: info.def.name.clone(),
            tick: tick.0,
            ..SaveBatch::default()
        })
        .objects = objects;
}

impl SceneWorld {
    /// Hands the scene's saved objects to the world (a placement does,
    /// before the first tick). Each is applied to the entity the game
    /// spawns with its key, in Ingest of the first tick that entity exists
    /// at; until then it is not saved over.
    pub fn restore_objects(&mut self, objects: Vec<ObjectState>) {
        let world = self.world_mut();
        let mut sizes = Vec::new();
        {
            let mut restore = world.resource_mut::<ObjectRestore>();
            for o in objects {
                if o.game.is_empty() {
                    continue;
                }
                sizes.push((o.key, game_bytes(&o.game)));
                restore.pending.insert(o.key, o.game);
            }
            restore.scan_all = true;
        }
        let mut track = world.resource_mut::<ObjectTrack>();
        for (key, size) in sizes {
            let old = track.sizes.insert(key, size).unwrap_or(0);
            track.total = track.total - old + size;
        }
    }

    /// Every keyed object's fields now, by key (the objects of a final save).
    pub fn object_states(&mut self) -> Vec<ObjectState> {
        let tick = self.tick_count();
        let world = self.world_mut();
        let pending: BTreeSet<u64> = world
            .resource::<ObjectRestore>()
            .pending
            .keys()
            .copied()
            .collect();
        let mut q = world.query::<(&Persistent, &GameFields)>();
        let mut v: Vec<ObjectState> = q
            .iter(world)
            .filter(|(p, f)| {
                !f.now.is_empty()
                    && !pending.contains(&p.key)
                    && game_bytes(&f.now) <= MAX_GAME_BYTES
            })
            .map(|(p, f)| ObjectState {
                key: p.key,
                tick,
                game: f.now.clone(),
            })
            .collect();
        v.sort_by_key(|o| o.key);
        v.dedup_by_key(|o| o.key);
        v
    }

    /// Counters of persistent game state.
    pub fn persist_stats(&self) -> PersistStats {
        *self.world().resource::<PersistStats>()
    }
}
