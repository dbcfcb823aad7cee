//! # The arena: Tessera's sample game
//!
//! Players and NPCs have hit points ([`Hp`], replicated to every observer).
//! A player attacks with the [`Attack`] action (a target's net id), within
//! [`ATTACK_RANGE`] and once per [`COOLDOWN_TICKS`]; each blow goes to the
//! target's observers as a [`Hit`] event, and a blow that brings it to 0 as
//! a [`Death`]. The dead respawn after [`RESPAWN_TICKS`] with full hit
//! points: players at a spawn point, NPCs at home. An NPC that is struck
//! strikes back at its attacker while it stays near.
//!
//! Players form parties with [`JoinParty`]: party `n` is the channel
//! `party:n`, and party chat (`ChatTarget::Channel("party:n")`) reaches every
//! member in any scene. Every scene has one [`Shrine`] at its first spawn
//! point, which a player standing
//! within [`CAPTURE_RANGE`] takes with [`Capture`]; its owner
//! ([`ShrineOwner`], replicated) is announced to the scene ([`Captured`]).
//!
//! The rules are deterministic like the engine: time is the tick, damage
//! comes from `rng::mix`, and iteration is in net-id order where order
//! matters. Refusals are counted in [`GameCounters`]: `attack_out_of_range`,
//! `attack_cooling_down`, `attack_no_target`, `attack_dead`,
//! `capture_out_of_range`; and what happened: `hits`, `kills`, `captures`.

use std::collections::BTreeMap;

use bevy_app::{App, Plugin};
use bevy_ecs::prelude::*;
use tessera_sim::components::{Intent, Net, Npc, Pc, Pose, Position, TickCount, Velocity, Wander};
use tessera_sim::game::{
    ActionFrom, ActionRate, AsU16, ClientAction, ComponentQuantizer, Delivery, EventTarget,
    GameCounters, GameEvents, GameMessagesAppExt, ReplicateAppExt, ServerEvent,
};
use tessera_sim::metrics::TimedSystemsExt;
use tessera_sim::rng::{SceneRng, mix};
use tessera_sim::{
    Channels, Game, GameSystems, PersistAppExt, Persistent, SceneInfo, SceneWorldBuilder,
};

/// Hit points of a fresh player or NPC.
pub const MAX_HP: u16 = 100;
/// How far an attack reaches, in metres.
pub const ATTACK_RANGE: f32 = 8.0;
/// Ticks between two attacks of one fighter (0.5 s at 20 Hz).
pub const COOLDOWN_TICKS: u64 = 10;
/// Ticks a dead fighter waits before it respawns (3 s at 20 Hz).
pub const RESPAWN_TICKS: u64 = 60;
/// How near the shrine a player must stand to capture it, in metres.
pub const CAPTURE_RANGE: f32 = 6.0;
/// An NPC gives up on an attacker farther than this, in metres.
pub const AGGRO_RANGE: f32 = 30.0;
/// The shrine's figure on the wire (kind NPC).
pub const SHRINE_FIGURE: u32 = 900;

/// The arena as a [`Game`]: `tessera::run(Arena)` is its whole binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arena;

impl Game for Arena {
    fn name(&self) -> &'static str {
        "arena"
    }

    fn build(&self, world: SceneWorldBuilder) -> SceneWorldBuilder {
        world.add_plugins(ArenaPlugin)
    }
}

/// Hit points; 0 is dead. Replicated to every observer (two bytes), and
/// saved with the player.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hp(pub u16);

impl From<Hp> for u16 {
    fn from(h: Hp) -> u16 {
        h.0
    }
}

/// When a fighter may strike again (a tick).
#[derive(Component, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cooldown(pub u64);

/// Dead until the tick it respawns.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dead {
    pub respawn_at: u64,
}

/// An NPC's attacker, which it strikes back at.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggro(pub Entity);

/// The scene's shrine.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shrine;

/// The avatar holding the shrine (0: nobody). Replicated to every observer,
/// and saved with the scene: it survives a restart of the cluster.
#[derive(
    Component, Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
pub struct ShrineOwner(pub u64);

/// The shrine's key among the scene's persistent objects.
pub const SHRINE_KEY: u64 = 1;

/// Eight bytes, little-endian.
pub struct AsU64;

impl ComponentQuantizer<ShrineOwner> for AsU64 {
    const WIDTH: u8 = 8;
    fn quantize(c: &ShrineOwner, out: &mut [u8]) {
        out.copy_from_slice(&c.0.to_le_bytes());
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Strike the entity with this net id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attack {
    pub target: u32,
}

impl ClientAction for Attack {
    const WIDTH: u16 = 4;
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            target: u32_at(bytes, 0)?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.target.to_le_bytes());
    }
}

/// Join party `party` (1 or more), leaving any other; 0 leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinParty {
    pub party: u32,
}

impl ClientAction for JoinParty {
    const WIDTH: u16 = 4;
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            party: u32_at(bytes, 0)?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.party.to_le_bytes());
    }
}

/// Take the shrine (standing near it). The byte must be 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture;

impl ClientAction for Capture {
    const WIDTH: u16 = 1;
    fn decode(bytes: &[u8]) -> Option<Self> {
        (bytes == [1]).then_some(Capture)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(1);
    }
}

/// A blow: who struck whom, how hard, and the hit points left. To the
/// target's observers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub attacker: u32,
    pub target: u32,
    pub damage: u16,
    pub hp: u16,
}

impl ServerEvent for Hit {
    const MAX_BYTES: u16 = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.attacker.to_le_bytes());
        out.extend_from_slice(&self.target.to_le_bytes());
        out.extend_from_slice(&self.damage.to_le_bytes());
        out.extend_from_slice(&self.hp.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Self {
            attacker: u32_at(b, 0)?,
            target: u32_at(b, 4)?,
            damage: u16::from_le_bytes(b.get(8..10)?.try_into().ok()?),
            hp: u16::from_le_bytes(b.get(10..12)?.try_into().ok()?),
        })
    }
}

/// A fighter died: `killer` first (what the bots count as theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Death {
    pub killer: u32,
    pub victim: u32,
}

impl ServerEvent for Death {
    const MAX_BYTES: u16 = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.killer.to_le_bytes());
        out.extend_from_slice(&self.victim.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Self {
            killer: u32_at(b, 0)?,
            victim: u32_at(b, 4)?,
        })
    }
}

/// The shrine changed hands: its new owner's avatar id. To the scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    pub avatar: u64,
}

impl ServerEvent for Captured {
    const MAX_BYTES: u16 = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.avatar.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Self {
            avatar: u64::from_le_bytes(b.get(..8)?.try_into().ok()?),
        })
    }
}

/// The arena's rules.
pub struct ArenaPlugin;

impl Plugin for ArenaPlugin {
    fn build(&self, app: &mut App) {
        app.replicate::<Hp, AsU16>()
            .replicate::<ShrineOwner, AsU64>()
            .persist::<Hp>("hp", 1)
            .persist::<ShrineOwner>("shrine_owner", 1)
            .add_client_action::<Attack>(ActionRate {
                per_second: 4,
                burst: 4,
            })
            .add_client_action::<JoinParty>(ActionRate {
                per_second: 1,
                burst: 2,
            })
            .add_client_action::<Capture>(ActionRate {
                per_second: 1,
                burst: 1,
            })
            .add_server_event::<Hit>()
            .add_server_event::<Death>()
            .add_server_event::<Captured>()
            .add_timed_system(GameSystems::AfterIngest, arm_fighters)
            .add_timed_system(GameSystems::AfterIngest, hold_the_dead)
            .add_timed_system(GameSystems::AfterIngest, attacks)
            .add_timed_system(GameSystems::AfterIngest, parties)
            .add_timed_system(GameSystems::AfterIngest, captures)
            .add_timed_system(GameSystems::AfterSimulate, npcs_strike_back)
            .add_timed_system(GameSystems::AfterSimulate, respawns);
    }
}

/// New players and NPCs get full hit points (a player's saved ones come
/// back with it; one saved dead waits to respawn); the scene gets its
/// shrine.
#[allow(clippy::type_complexity)]
fn arm_fighters(
    mut commands: Commands,
    info: Res<SceneInfo>,
    mut dir: ResMut<tessera_sim::components::Directory>,
    tick: Res<TickCount>,
    new: Query<
        (Entity, Option<&Hp>),
        (
            With<Net>,
            Without<Cooldown>,
            Or<(With<Pc>, With<Npc>)>,
            Without<Shrine>,
        ),
    >,
    shrine: Query<(), With<Shrine>>,
) {
    for (e, hp) in &new {
        let mut e = commands.entity(e);
        e.insert(Cooldown::default());
        match hp {
            None => {
                e.insert(Hp(MAX_HP));
            }
            Some(Hp(0)) => {
                e.insert(Dead {
                    respawn_at: tick.0 + RESPAWN_TICKS,
                });
            }
            Some(_) => {}
        }
    }
    if shrine.is_empty() {
        let at = info.def.spawn.first().map_or([0.0, 0.0], |s| s.pos);
        let net = dir.alloc_net(tick.0);
        commands.spawn((
            Net(net),
            Position(at),
            Velocity::default(),
            Pose::default(),
            Npc {
                figure: SHRINE_FIGURE,
            },
            Shrine,
            ShrineOwner::default(),
            Persistent { key: SHRINE_KEY },
        ));
    }
}

/// The dead do not move.
fn hold_the_dead(mut q: Query<&mut Intent, With<Dead>>) {
    for mut intent in &mut q {
        intent.dir = [0.0, 0.0];
    }
}

fn dist2(a: [f32; 2], b: [f32; 2]) -> f32 {
    let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
    dx * dx + dy * dy
}

/// What a blow needs to know of the world.
struct Blow {
    attacker: Entity,
    attacker_net: u32,
    target: Entity,
    seed_key: u64,
}

/// Deals one blow: damage from `mix`, the `Hit` to the target's
/// observers, and at 0 the `Death`.
#[allow(clippy::too_many_arguments)]
fn strike(
    b: &Blow,
    now: u64,
    seed: u64,
    fighters: &mut Query<(&Net, &Position, &mut Hp, &mut Cooldown, Option<&Dead>)>,
    commands: &mut Commands,
    events: &mut GameEvents,
    counters: &mut GameCounters,
) {
    // Already at 0 this tick (its `Dead` is inserted at the end of the
    // system): not struck, nor killed, twice.
    let Ok((net, _, mut hp, _, _)) = fighters.get_mut(b.target) else {
        return;
    };
    if hp.0 == 0 {
        return;
    }
    let damage = 10 + (mix(seed, b.seed_key, now) % 11) as u16;
    hp.0 = hp.0.saturating_sub(damage);
    let hit = Hit {
        attacker: b.attacker_net,
        target: net.0,
        damage,
        hp: hp.0,
    };
    counters.add("hits", 1);
    // A blow is cosmetic (the hit points are replicated): sent once, not
    // resent; a death matters, and is reliable.
    events.send(EventTarget::Observers(b.target), Delivery::Unreliable, &hit);
    if hp.0 == 0 {
        counters.add("kills", 1);
        commands.entity(b.target).insert(Dead {
            respawn_at: now + RESPAWN_TICKS,
        });
        let death = Death {
            killer: b.attacker_net,
            victim: net.0,
        };
        events.send(EventTarget::Observers(b.target), Delivery::Reliable, &death);
    }
    if let Ok((_, _, _, mut cd, _)) = fighters.get_mut(b.attacker) {
        cd.0 = now + COOLDOWN_TICKS;
    }
}

/// Players' attacks, checked against the rules (alive, cooled down, a live
/// target within range); a struck NPC turns on its attacker.
#[allow(clippy::too_many_arguments)]
fn attacks(
    mut commands: Commands,
    mut actions: MessageReader<ActionFrom<Attack>>,
    tick: Res<TickCount>,
    rng: Res<SceneRng>,
    mut counters: ResMut<GameCounters>,
    mut events: GameEvents,
    mut fighters: Query<(&Net, &Position, &mut Hp, &mut Cooldown, Option<&Dead>)>,
    npcs: Query<(), With<Npc>>,
    nets: Query<(Entity, &Net), With<Hp>>,
) {
    let now = tick.0;
    let mut by_net: Option<BTreeMap<u32, Entity>> = None;
    for a in actions.read() {
        let Ok((&Net(me), &Position(at), hp, cd, dead)) = fighters.get(a.entity) else {
            continue;
        };
        if dead.is_some() || hp.0 == 0 {
            counters.add("attack_dead", 1);
            continue;
        }
        if cd.0 > now {
            counters.add("attack_cooling_down", 1);
            continue;
        }
        let by_net = by_net.get_or_insert_with(|| nets.iter().map(|(e, n)| (n.0, e)).collect());
        let target = by_net.get(&a.action.target).copied();
        let Some((target, there)) = target.and_then(|t| {
            fighters
                .get(t)
                .ok()
                .filter(|f| f.4.is_none() && f.2.0 > 0 && t != a.entity)
                .map(|f| (t, f.1.0))
        }) else {
            counters.add("attack_no_target", 1);
            continue;
        };
        if dist2(at, there) > ATTACK_RANGE * ATTACK_RANGE {
            counters.add("attack_out_of_range", 1);
            continue;
        }
        let blow = Blow {
            attacker: a.entity,
            attacker_net: me,
            target,
            seed_key: u64::from(me) << 32 | u64::from(a.action.target),
        };
        strike(
            &blow,
            now,
            rng.seed(),
            &mut fighters,
            &mut commands,
            &mut events,
            &mut counters,
        );
        if npcs.contains(target) {
            commands.entity(target).insert(Aggro(a.entity));
        }
    }
}

/// NPCs strike back at their attacker while it is alive and near.
fn npcs_strike_back(
    mut commands: Commands,
    tick: Res<TickCount>,
    rng: Res<SceneRng>,
    mut counters: ResMut<GameCounters>,
    mut events: GameEvents,
    mut fighters: Query<(&Net, &Position, &mut Hp, &mut Cooldown, Option<&Dead>)>,
    angry: Query<(Entity, &Net, &Aggro)>,
) {
    let now = tick.0;
    let mut list: Vec<(u32, Entity, Entity)> =
        angry.iter().map(|(e, n, a)| (n.0, e, a.0)).collect();
    list.sort_unstable_by_key(|l| l.0);
    for (me, npc, target) in list {
        let (Ok(npc_f), Ok(target_f)) = (fighters.get(npc), fighters.get(target)) else {
            commands.entity(npc).remove::<Aggro>();
            continue;
        };
        let (npc_at, npc_ready) = (npc_f.1.0, npc_f.3.0 <= now);
        let npc_dead = npc_f.4.is_some() || npc_f.2.0 == 0;
        let (target_at, target_dead) = (target_f.1.0, target_f.4.is_some() || target_f.2.0 == 0);
        let d2 = dist2(npc_at, target_at);
        if npc_dead || target_dead || d2 > AGGRO_RANGE * AGGRO_RANGE {
            commands.entity(npc).remove::<Aggro>();
            continue;
        }
        if npc_ready && d2 <= ATTACK_RANGE * ATTACK_RANGE {
            let blow = Blow {
                attacker: npc,
                attacker_net: me,
                target,
                seed_key: u64::from(me) << 32 | 1,
            };
            strike(
                &blow,
                now,
                rng.seed(),
                &mut fighters,
                &mut commands,
                &mut events,
                &mut counters,
            );
        }
    }
}

/// The dead come back with full hit points: players at a spawn point,
/// NPCs at home.
fn respawns(
    mut commands: Commands,
    tick: Res<TickCount>,
    info: Res<SceneInfo>,
    mut q: Query<(
        Entity,
        &Dead,
        &mut Hp,
        &mut Position,
        Option<&Wander>,
        Option<&Pc>,
    )>,
) {
    for (e, dead, mut hp, mut pos, wander, pc) in &mut q {
        if dead.respawn_at > tick.0 {
            continue;
        }
        hp.0 = MAX_HP;
        pos.0 = match (pc, wander) {
            (Some(pc), _) => {
                let n = info.def.spawn.len().max(1) as u64;
                info.def
                    .spawn
                    .get((pc.avatar % n) as usize)
                    .map_or(pos.0, |s| s.pos)
            }
            (None, Some(w)) => w.home,
            _ => pos.0,
        };
        commands.entity(e).remove::<Dead>();
    }
}

/// Party `n` is the channel `party:n`; joining one leaves the last.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Party(pub u32);

fn party_channel(n: u32) -> String {
    format!("party:{n}")
}

fn parties(
    mut commands: Commands,
    mut actions: MessageReader<ActionFrom<JoinParty>>,
    mut channels: ResMut<Channels>,
    mut counters: ResMut<GameCounters>,
    q: Query<(&Pc, Option<&Party>)>,
) {
    for a in actions.read() {
        let Ok((pc, party)) = q.get(a.entity) else {
            continue;
        };
        if let Some(old) = party {
            let _ = channels.remove(&party_channel(old.0), pc.avatar);
            commands.entity(a.entity).remove::<Party>();
        }
        if a.action.party == 0 {
            continue;
        }
        let name = party_channel(a.action.party);
        let joined = channels
            .create(&name)
            .and_then(|()| channels.add(&name, pc.avatar));
        match joined {
            Ok(()) => {
                commands.entity(a.entity).insert(Party(a.action.party));
                counters.add("party_joins", 1);
            }
            Err(_) => counters.add("party_refused", 1),
        }
    }
}

fn captures(
    mut actions: MessageReader<ActionFrom<Capture>>,
    mut counters: ResMut<GameCounters>,
    mut events: GameEvents,
    players: Query<(&Pc, &Position), Without<Dead>>,
    mut shrine: Query<(&Position, &mut ShrineOwner), With<Shrine>>,
) {
    for a in actions.read() {
        let (Ok((pc, at)), Ok((there, mut owner))) = (players.get(a.entity), shrine.single_mut())
        else {
            continue;
        };
        if dist2(at.0, there.0) > CAPTURE_RANGE * CAPTURE_RANGE {
            counters.add("capture_out_of_range", 1);
            continue;
        }
        if owner.0 != pc.avatar {
            owner.0 = pc.avatar;
            counters.add("captures", 1);
            events.send(
                EventTarget::Scene,
                Delivery::Reliable,
                &Captured { avatar: pc.avatar },
            );
        }
    }
}
