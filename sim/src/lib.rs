//! # tessera-sim — the scene core
//!
//! One scene is a fixed-tick Bevy ECS world ([`SceneWorld`]). The host pushes
//! [`Inbound`] commands (attach, detach, input); [`SceneWorld::tick`] runs one
//! tick and returns the replication packet for each client and, every flush
//! interval, a [`SaveBatch`].
//!
//! A tick is a chained pipeline of public system sets (configured in one
//! place, `world.rs`):
//!
//! ```text
//! Ingest → Game::AfterIngest → Simulate → Game::AfterSimulate
//!        → Spatial → Interest → Replicate → Persist → Metrics
//! ```
//!
//! ## A scene made of plugins
//!
//! A world is the engine's plugin group [`TesseraPlugins`] plus the game's
//! own plugins: [`SceneWorld::builder`]`(def, settings).add_plugins(MyGame)
//! .build()`; [`SceneWorld::new`] is the default game (the group alone).
//! The group's [`movement::MovementPlugin`] (PC movement with the mount
//! check, NPC wander) is the default game: a game may disable or replace it
//! with [`SceneWorldBuilder::with_engine`]. Game systems go in the
//! [`GameSystems`] sets (or [`SimulateSystems`], for a movement of one's
//! own), each of which states what it may rely on. Added with
//! [`metrics::TimedSystemsExt::add_timed_system`], they are timed by name
//! in the tick report and the trace like the engine's own systems.
//!
//! ## Determinism
//!
//! This crate is pure and deterministic: no tokio, no sockets, no file I/O;
//! time is the tick counter, randomness a seeded [`rng::SceneRng`], and nothing
//! on the tick path iterates a hash map. The same scene, seed and inputs give
//! the same [`SceneWorld::state_hash`]. Game systems must keep to the same
//! rules (and be ordered where their access conflicts: the schedule is
//! checked for ambiguities in the tests).
//!
//! **API Boundary.** A host talks to a scene only through [`SceneWorld`]:
//! commands in, [`TickOutput`] out. This crate must never do I/O, read the
//! clock, or depend on tokio or the network crates; the client-facing types
//! it encodes come from `tessera-proto`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use bevy_ecs::schedule::SystemSet;
use bevy_tasks::{ComputeTaskPool, TaskPool, TaskPoolBuilder};

pub mod aoi;
pub mod channels;
pub mod components;
pub mod game;
mod hash;
pub mod ingest;
pub mod interest;
pub mod metrics;
pub mod movement;
pub mod persist;
pub mod persist_game;
mod portal;
pub mod protocol;
pub mod replicate;
pub mod rng;
pub mod scene;
pub mod testing;
mod world;

pub use channels::{ChannelError, ChannelOp, ChannelPayload, ChannelStats, Channels};
pub use game::{DefaultGame, Game};
pub use persist_game::{PersistAppExt, Persistent};
pub use protocol::{
    AvatarId, ClientId, GameEventOut, GameField, Inbound, Input, MAX_PACKET_BYTES, MoveMode, NetId,
    ObjectState, Packets, PcState, SaveBatch, SceneEvent, StatePacket, TickOutput,
};
pub use scene::{SceneDef, SceneError};
pub use world::{
    BuildError, PushError, SceneInfo, SceneSettings, SceneSnapshot, SceneWorld, SceneWorldBuilder,
    SnapshotEntity, TesseraPlugins, command_errors,
};

/// Drains the host's commands into messages and applies attach / input / detach.
/// Everything that spawns or despawns PCs runs here, before `SimulateSystems`.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IngestSystems;

/// Where a game's systems run. Both sets see the whole world and may read
/// and write any component or resource; what they can rely on is where they
/// sit in the tick. Systems added with
/// [`metrics::TimedSystemsExt::add_timed_system`] run in the order added
/// within their set and are timed by name; other systems must be ordered
/// against each other where their access conflicts. Randomness comes from
/// [`rng::SceneRng`], time from the tick counter, and no hash map is
/// iterated: the world stays deterministic.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GameSystems {
    /// After [`IngestSystems`], before [`SimulateSystems`]: this tick's
    /// attaches are spawned (their commands applied), detaches despawned,
    /// and every PC's [`components::Intent`] holds its latest input; nothing
    /// has moved yet. The place to act on inputs and to change what
    /// movement will do (e.g. root a stunned PC by zeroing its intent).
    AfterIngest,
    /// After [`SimulateSystems`], before [`SpatialSystems`]: every entity is
    /// at its final position for the tick, and the grid, AOI and packets
    /// are not built yet, so what is written here (a position, a pose, a
    /// despawn) is what clients are sent this tick. The place for rules
    /// about where things are (range checks, triggers, respawns).
    AfterSimulate,
}

/// Authoritative movement and behaviours: the default game's
/// [`movement::MovementPlugin`] or a game's replacement writes `Position`
/// here. A game's timed systems added here run after the default
/// movement's. Only [`GameSystems::AfterSimulate`] may move entities after
/// this set.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimulateSystems;

/// Detects portal entries and rebuilds the spatial grid and entity
/// snapshots from final positions.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpatialSystems;

/// Per-observer AOI diffs. Reads the grid; writes only `Interest`.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterestSystems;

/// Builds and collects one packet per client. Everything that writes client
/// packets runs inside this set.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicateSystems;

/// Marks dirty PCs and emits the save batch when the flush interval is due.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PersistSystems;

/// Records stage timings; reads nothing the simulation depends on.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricsSystems;

/// The process-wide compute pool for the parallel stages (Interest,
/// Replicate, `AoiStage`): one worker per core but one, because the thread
/// that calls [`par_chunks`] works too. `TESSERA_COMPUTE_THREADS` overrides
/// the worker count (e.g. to share a host among several processes).
pub fn compute_pool() -> &'static TaskPool {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = std::env::var("TESSERA_COMPUTE_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| (1..=256).contains(&n))
            .unwrap_or(cores.saturating_sub(1).max(1));
        ComputeTaskPool::get_or_init(|| {
            TaskPoolBuilder::new()
                .num_threads(workers)
                .thread_name("tessera-compute".into())
                .build()
        });
    });
    ComputeTaskPool::get()
}

/// Reads one word (`word` of an item) of every cache line of `items`. A
/// scene with thousands of clients streams each client's arrays (its
/// visible set, its view) from memory every tick; read up front, their
/// misses overlap, where a loop with a long body meets them one at a time.
/// (`unsafe` prefetch hints are not allowed in this workspace; plain reads
/// do most of what they would.) Reading the next client's arrays before building this
/// one's lets the work overlap the fetch as well.
#[inline]
pub(crate) fn warm_lines<T>(items: &[T], word: impl Fn(&T) -> u32) {
    let per_line = (64 / std::mem::size_of::<T>().max(1)).max(1);
    let mut acc = 0u32;
    for item in items.iter().step_by(per_line) {
        acc ^= word(item);
    }
    std::hint::black_box(acc);
}

/// Runs `f(scratch, chunk)` over `items` split into a few chunks per thread
/// (the pool's workers plus the calling thread), each chunk with its own
/// reusable scratch from `scratch` (grown as needed). Results must not depend
/// on the split: every stage that uses this writes only to its own items and
/// its own scratch, and merges scratch totals in chunk order afterwards.
pub fn par_chunks<T: Send, S: Send + Default>(
    items: &mut [T],
    scratch: &mut Vec<S>,
    f: impl Fn(&mut S, &mut [T]) + Sync,
) {
    let pool = compute_pool();
    let parts = (pool.thread_num() + 1) * 2;
    let chunk = items.len().div_ceil(parts).max(64);
    let n = items.len().div_ceil(chunk);
    if scratch.len() < n {
        scratch.resize_with(n, S::default);
    }
    if n <= 1 {
        if let (Some(s), false) = (scratch.first_mut(), items.is_empty()) {
            f(s, items);
        }
        return;
    }
    // One scene at a time fans out on the pool. When several scenes tick at
    // once in one process (a scene server hosting many), the others run
    // their chunks inline on their own threads: the cores are busy anyway,
    // and waiting on a shared pool behind another scene's chunks only
    // stretches every tick. Same chunks, same results either way.
    let Some(_busy) = PoolClaim::try_claim() else {
        for (c, s) in items.chunks_mut(chunk).zip(scratch.iter_mut()) {
            f(s, c);
        }
        return;
    };
    let f = &f;
    pool.scope(|sc| {
        for (c, s) in items.chunks_mut(chunk).zip(scratch.iter_mut()) {
            sc.spawn(async move { f(s, c) });
        }
    });
}

/// Whether some thread is fanning out on the compute pool right now.
static POOL_IN_USE: AtomicBool = AtomicBool::new(false);

/// The right to fan out on the compute pool, released on drop (also on
/// unwind).
struct PoolClaim;

impl PoolClaim {
    fn try_claim() -> Option<Self> {
        (!POOL_IN_USE.swap(true, Ordering::Acquire)).then_some(PoolClaim)
    }
}

impl Drop for PoolClaim {
    fn drop(&mut self) {
        POOL_IN_USE.store(false, Ordering::Release);
    }
}
