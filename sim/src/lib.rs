//! # tessera-sim — the scene core
//!
//! One scene is a fixed-tick Bevy ECS world ([`SceneWorld`]). The host pushes
//! [`Inbound`] commands (attach, detach, input); [`SceneWorld::tick`] runs one
//! tick and returns the replication packet for each client and, every flush
//! interval, a [`SaveBatch`].
//!
//! A tick is a chained pipeline of public system sets, one plugin each:
//!
//! ```text
//! Ingest → Simulate → Spatial → Interest → Replicate → Persist → Metrics
//! ```
//!
//! This crate is pure and deterministic: no tokio, no sockets, no file I/O;
//! time is the tick counter, randomness a seeded [`rng::SceneRng`], and nothing
//! on the tick path iterates a hash map. The same scene, seed and inputs give
//! the same [`SceneWorld::state_hash`].

use std::sync::OnceLock;

use bevy_ecs::schedule::SystemSet;
use bevy_tasks::{ComputeTaskPool, TaskPool, TaskPoolBuilder};

pub mod aoi;
pub mod components;
mod hash;
pub mod ingest;
pub mod interest;
pub mod metrics;
pub mod movement;
pub mod persist;
pub mod protocol;
pub mod replicate;
pub mod rng;
pub mod scene;
pub mod testing;
mod world;

pub use protocol::{
    AvatarId, ClientId, Inbound, Input, MAX_PACKET_BYTES, MoveMode, NetId, PcState, SaveBatch,
    SceneEvent, StatePacket, TickOutput,
};
pub use scene::{SceneDef, SceneError};
pub use world::{PushError, SceneInfo, SceneSettings, SceneWorld, command_errors};

/// Drains the host's commands into messages and applies attach / input / detach.
/// Everything that spawns or despawns PCs runs here, before `SimulateSystems`.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct IngestSystems;

/// Authoritative movement and behaviours. Writes `Position`; nothing after it does.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct SimulateSystems;

/// Rebuilds the spatial grid and entity snapshots from final positions.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpatialSystems;

/// Per-observer AOI diffs. Reads the grid; writes only `Interest`.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterestSystems;

/// Builds and collects one packet per client. Everything that writes client
/// packets runs inside this set.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicateSystems;

/// Marks dirty PCs and emits the save batch when the flush interval is due.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct PersistSystems;

/// Records stage timings; reads nothing the simulation depends on.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricsSystems;

/// Parallel queries split into a few batches per thread, so a thread that
/// the OS preempts does not hold up the whole stage.
pub(crate) fn par_batching() -> bevy_ecs::batching::BatchingStrategy {
    bevy_ecs::batching::BatchingStrategy::new()
        .min_batch_size(64)
        .batches_per_thread(4)
}

/// The process-wide compute pool used for parallel AOI and replication: one
/// thread per core, or `TESSERA_COMPUTE_THREADS` (e.g. to share a host among
/// several processes).
pub fn compute_pool() -> &'static TaskPool {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = std::env::var("TESSERA_COMPUTE_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| (1..=256).contains(&n))
            .unwrap_or(cores);
        ComputeTaskPool::get_or_init(|| {
            TaskPoolBuilder::new()
                .num_threads(threads)
                .thread_name("tessera-compute".into())
                .build()
        });
    });
    ComputeTaskPool::get()
}
