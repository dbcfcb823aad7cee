//! The default game: authoritative movement and NPC wander. PCs move by
//! validated intent, NPCs and walkers by a seeded wander; speeds are capped
//! per mode, moves are clamped to the scene and blocked by static obstacles
//! (an rstar R-tree). Positions never come from clients, so there is no
//! teleport to accept.
//!
//! [`MovementPlugin`] is part of [`crate::TesseraPlugins`]; a game may
//! disable it and move entities its own way (in [`crate::SimulateSystems`]).
//! Ingest still applies every input to the PC's [`Intent`] (direction,
//! mode, the mount asked for); what the intent becomes is this plugin's
//! call, including which mounts a PC may ride.

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;

use crate::SimulateSystems;
use crate::components::*;
use crate::metrics::timing_mark;
use crate::protocol::MoveMode;
use crate::rng::{SceneRng, mix, unit_f32};
use crate::scene::Vec2;
use crate::world::SceneInfo;

/// The default game's movement: mount check, PC intent → velocity, NPC
/// wander, integration against obstacles and bounds, in
/// [`SimulateSystems`]. Spawns the scene's NPCs (its `npc_spawner`s) when
/// the world is built.
pub struct MovementPlugin;

impl Plugin for MovementPlugin {
    fn build(&self, app: &mut App) {
        let set = SimulateSystems;
        let mounts = timing_mark(app, set, "check_mounts");
        let velocities = timing_mark(app, set, "intent_to_velocity");
        let wandered = timing_mark(app, set, "wander");
        let integrated = timing_mark(app, set, "integrate");
        // A game's timed systems in this set run after these.
        let slot = crate::metrics::engine_slot(app, set);
        app.add_systems(
            Update,
            (
                check_mounts,
                mounts,
                intent_to_velocity,
                velocities,
                wander,
                wandered,
                integrate,
                integrated,
            )
                .chain()
                .in_set(set)
                .in_set(slot),
        );
    }

    fn finish(&self, app: &mut App) {
        spawn_npcs(app.world_mut());
    }
}

/// Whether a PC may ride `mount` in this scene: 0 (on foot) always, any
/// other id only if the scene lists it in its `mounts`. The scene file is
/// the only data there is about mounts (there is no per-avatar inventory
/// yet), and an empty list — the default — allows none, so a client cannot
/// grant itself the mount speed.
pub fn mount_allowed(info: &SceneInfo, mount: u8) -> bool {
    mount == 0 || info.def.mounts.contains(&mount)
}

/// Applies the mount each PC's latest intent asks for, if it may ride it;
/// otherwise the PC goes on foot and the refusal is counted (once per tick
/// with a new intent: an input, or the attach with a saved mount).
fn check_mounts(
    info: Res<SceneInfo>,
    mut counters: ResMut<Counters>,
    mut q: Query<(&Intent, &mut Pose), (Changed<Intent>, Without<Wander>)>,
) {
    for (intent, mut pose) in &mut q {
        let mount = if mount_allowed(&info, intent.mount) {
            intent.mount
        } else {
            counters.mounts_refused += 1;
            0
        };
        if pose.mount != mount {
            pose.mount = mount;
        }
    }
}

/// The speed cap for a mode, in units per second.
pub fn max_speed(info: &SceneInfo, mode: MoveMode, mount: u8) -> f32 {
    let s = &info.settings;
    let base = match mode {
        MoveMode::Walk => s.walk_speed,
        MoveMode::Run => s.run_speed,
    };
    if mount != 0 {
        base * s.mount_factor
    } else {
        base
    }
}

fn intent_to_velocity(
    info: Res<SceneInfo>,
    mut q: Query<(&Intent, &Pose, &mut Velocity), Without<Wander>>,
) {
    for (intent, pose, mut vel) in &mut q {
        // Ingest already clamped |dir| <= 1: speed can never exceed the cap.
        let speed = max_speed(&info, intent.mode, pose.mount);
        vel.0 = [intent.dir[0] * speed, intent.dir[1] * speed];
    }
}

/// Seeded wander: every 1–3 s pick a new heading; head home when too far.
/// Draws come from `mix(seed, net id, tick)`, so the result does not depend on
/// the order entities are visited in.
fn wander(
    info: Res<SceneInfo>,
    rng: Res<SceneRng>,
    tick: Res<TickCount>,
    mut q: Query<(&Net, &Position, &mut Wander, &mut Velocity, &mut Pose)>,
) {
    let t = tick.0;
    let seed = rng.seed();
    let hz = info.tick_hz as u64;
    for (net, pos, mut w, mut vel, mut pose) in &mut q {
        if t < w.next_turn {
            continue;
        }
        let r = mix(seed, net.0 as u64, t);
        let mut angle = unit_f32(r) * std::f32::consts::TAU;
        if w.radius > 0.0 {
            let (dx, dy) = (w.home[0] - pos.0[0], w.home[1] - pos.0[1]);
            if dx * dx + dy * dy > w.radius * w.radius {
                angle = dy.atan2(dx);
            }
        }
        vel.0 = [angle.cos() * w.speed, angle.sin() * w.speed];
        pose.heading = angle.rem_euclid(std::f32::consts::TAU);
        w.next_turn = t + hz + (r >> 8) % (2 * hz).max(1);
    }
}

/// Moves one step with sub-steps no longer than half a unit, sliding along
/// obstacles axis by axis. Returns the new position and whether an obstacle
/// or the bounds cut the move.
pub fn step(info: &SceneInfo, from: Vec2, vel: Vec2, dt: f32) -> (Vec2, bool, bool) {
    let delta = [vel[0] * dt, vel[1] * dt];
    let len = (delta[0] * delta[0] + delta[1] * delta[1]).sqrt();
    if len == 0.0 || !len.is_finite() {
        return (from, false, false);
    }
    let n = (len / 0.5).ceil().clamp(1.0, 64.0) as u32;
    let d = [delta[0] / n as f32, delta[1] / n as f32];
    let (w, h) = (info.def.size[0], info.def.size[1]);
    let mut p = from;
    let (mut blocked, mut clamped) = (false, false);
    let free = |q: Vec2| info.obstacles.locate_at_point(q).is_none();
    for _ in 0..n {
        let mut next = [p[0] + d[0], p[1] + d[1]];
        let cx = next[0].clamp(0.0, w);
        let cy = next[1].clamp(0.0, h);
        if cx != next[0] || cy != next[1] {
            clamped = true;
            next = [cx, cy];
        }
        if free(next) {
            p = next;
        } else {
            blocked = true;
            let xs = [next[0], p[1]];
            let ys = [p[0], next[1]];
            if d[0] != 0.0 && free(xs) {
                p = xs;
            } else if d[1] != 0.0 && free(ys) {
                p = ys;
            } else {
                break;
            }
        }
    }
    (p, blocked, clamped)
}

fn integrate(
    info: Res<SceneInfo>,
    tick: Res<TickCount>,
    mut counters: ResMut<Counters>,
    mut q: Query<(&mut Position, &Velocity, Option<&mut Wander>)>,
) {
    let dt = info.dt;
    for (mut pos, vel, wander) in &mut q {
        if vel.0 == [0.0, 0.0] {
            continue;
        }
        let (p, blocked, clamped) = step(&info, pos.0, vel.0, dt);
        if blocked {
            counters.obstacle_blocked += 1;
        }
        if clamped {
            counters.bounds_clamped += 1;
        }
        if let Some(mut w) = wander
            && (blocked || clamped)
        {
            // Turn next tick instead of pushing into the wall.
            w.next_turn = tick.0 + 1;
        }
        if p != pos.0 {
            pos.0 = p;
        }
    }
}

/// A uniformly random walkable point in a disc (falls back to `center`).
fn random_walkable(info: &SceneInfo, rng: &mut SceneRng, center: Vec2, radius: f32) -> Vec2 {
    for _ in 0..32 {
        let a = rng.range_f32(0.0, std::f32::consts::TAU);
        let r = radius * rng.next_f32().sqrt();
        let p = [center[0] + a.cos() * r, center[1] + a.sin() * r];
        if info.is_walkable(p) {
            return p;
        }
    }
    center
}

/// Spawns the scene's NPCs from its spawners (at world creation).
fn spawn_npcs(world: &mut World) {
    let spawners = world.resource::<SceneInfo>().def.npc_spawner.clone();
    for sp in spawners {
        for _ in 0..sp.count {
            let pos = world.resource_scope(|world, mut rng: Mut<SceneRng>| {
                random_walkable(
                    world.resource::<SceneInfo>(),
                    &mut rng,
                    sp.center,
                    sp.radius,
                )
            });
            let now = world.resource::<TickCount>().0;
            let net = world.resource_mut::<Directory>().alloc_net(now);
            world.spawn((
                Net(net),
                Position(pos),
                Velocity::default(),
                Pose::default(),
                Npc { figure: sp.figure },
                Wander {
                    home: sp.center,
                    radius: sp.radius,
                    speed: sp.speed,
                    next_turn: 0,
                },
            ));
        }
    }
}

/// Spawns `n` wandering PCs with fake clients (for `tessera sim` and benches).
pub(crate) fn spawn_walkers(world: &mut World, n: u32, first_client: u64) {
    for i in 0..n as u64 {
        let client = first_client + i;
        let (pos, speed, radius) = world.resource_scope(|world, mut rng: Mut<SceneRng>| {
            let info = world.resource::<SceneInfo>();
            let size = info.def.size;
            let mut p = info.def.spawn[0].pos;
            for _ in 0..64 {
                let q = [rng.range_f32(0.0, size[0]), rng.range_f32(0.0, size[1])];
                if info.is_walkable(q) {
                    p = q;
                    break;
                }
            }
            (p, info.settings.run_speed, info.settings.aoi_radius)
        });
        let now = world.resource::<TickCount>().0;
        let mut dir = world.resource_mut::<Directory>();
        if dir.clients.contains_key(&client) || dir.avatars.contains_key(&client) {
            continue;
        }
        let net = dir.alloc_net(now);
        let pc = crate::ingest::pc_bundle(
            net,
            client,
            client,
            0,
            pos,
            Pose::default(),
            radius,
            SaveTrack::default(),
        );
        let wander = Wander {
            home: pos,
            radius: 0.0,
            speed,
            next_turn: 0,
        };
        let entity = world.spawn((pc, wander)).id();
        let mut dir = world.resource_mut::<Directory>();
        dir.clients.insert(client, entity);
        dir.avatars.insert(client, entity);
    }
}
