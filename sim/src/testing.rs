//! Helpers for tests, benches and tools: small scenes, fake clients and a
//! packet decoder that checks the size cap.

use crate::protocol::{ClientId, Inbound, Input, MoveMode, StatePacket};
use crate::scene::{Rect, SceneDef};
use crate::{SceneSettings, SceneWorld};

/// An open square field of side `side` with one spawn point in the middle.
pub fn open_world(side: f32, settings: SceneSettings) -> SceneWorld {
    SceneWorld::new(SceneDef::open_field("test", side), settings)
}

/// A field with the given obstacles.
pub fn world_with_obstacles(
    side: f32,
    obstacles: Vec<Rect>,
    settings: SceneSettings,
) -> SceneWorld {
    let mut def = SceneDef::open_field("test", side);
    def.obstacle = obstacles;
    SceneWorld::new(def, settings)
}

/// An attach command at a given position.
pub fn attach_at(client: ClientId, pos: [f32; 2]) -> Inbound {
    Inbound::Attach {
        client,
        avatar: client,
        state: Some(crate::PcState {
            avatar: client,
            position: pos,
            ..Default::default()
        }),
        figure: 0,
    }
}

/// A movement input.
pub fn input(client: ClientId, seq: u32, dir: [f32; 2], mode: MoveMode) -> Inbound {
    Inbound::Input {
        client,
        input: Input {
            seq,
            dir,
            mode,
            ..Default::default()
        },
    }
}

/// Decodes a packet, panicking with a clear message if it is over the cap
/// or malformed (for tests).
pub fn decode(bytes: &[u8]) -> StatePacket {
    match StatePacket::decode(bytes) {
        Ok(p) => p,
        Err(e) => panic!("packet of {} bytes does not decode: {e}", bytes.len()),
    }
}

/// A network between a scene and its test clients that loses, duplicates
/// and delays (so reorders) datagrams at seeded random.
#[derive(Debug, Clone)]
pub struct LossyLink {
    /// Chance a datagram is lost (each way).
    pub loss: f32,
    /// Chance a delivered datagram arrives twice.
    pub dup: f32,
    /// Each copy arrives 0..=max_delay ticks late.
    pub max_delay: u64,
    rng: crate::rng::SceneRng,
}

impl LossyLink {
    pub fn new(seed: u64, loss: f32, dup: f32, max_delay: u64) -> Self {
        Self {
            loss,
            dup,
            max_delay,
            rng: crate::rng::SceneRng::new(seed),
        }
    }

    /// A link that delivers everything at once, in order.
    pub fn perfect() -> Self {
        Self::new(0, 0.0, 0.0, 0)
    }

    /// The ticks of delay of each copy that arrives (none when lost).
    fn fates(&mut self) -> Vec<u64> {
        if self.loss > 0.0 && self.rng.next_f32() < self.loss {
            return Vec::new();
        }
        let copies = if self.dup > 0.0 && self.rng.next_f32() < self.dup {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| match self.max_delay {
                0 => 0,
                d => self.rng.next_u64() % (d + 1),
            })
            .collect()
    }

    /// Whether an upstream datagram (an acknowledgement) gets through.
    pub fn passes(&mut self) -> bool {
        !(self.loss > 0.0 && self.rng.next_f32() < self.loss)
    }
}

/// A test client: a [`WorldView`](crate::protocol::WorldView) behind a
/// [`LossyLink`], acknowledging what it applies.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub client: ClientId,
    pub view: crate::protocol::WorldView,
    /// Datagrams on the way: (arrival tick, order sent, bytes).
    queue: Vec<(u64, u64, Vec<u8>)>,
    sent: u64,
}

impl TestClient {
    pub fn new(client: ClientId) -> Self {
        Self::with_game(client, tessera_proto::GameWire::default())
    }

    /// A client of a game that replicates the components of `wire`.
    pub fn with_game(client: ClientId, wire: tessera_proto::GameWire) -> Self {
        Self {
            client,
            view: crate::protocol::WorldView::with_game(wire),
            queue: Vec::new(),
            sent: 0,
        }
    }

    /// The attach took: start an empty view of this world's placement.
    /// Datagrams still on the way (of an earlier stay) keep coming, as on a
    /// real network.
    pub fn entered(&mut self, world: &SceneWorld, net_id: crate::protocol::NetId) {
        let info = world.info();
        self.view.enter(info.tag, info.settings.epoch, net_id);
    }

    /// Puts a packet of tick `now` on the link; returns how many copies
    /// will arrive (0: lost).
    pub fn send(&mut self, now: u64, bytes: &[u8], link: &mut LossyLink) -> usize {
        let fates = link.fates();
        for &delay in &fates {
            self.sent += 1;
            self.queue.push((now + delay, self.sent, bytes.to_vec()));
        }
        fates.len()
    }

    /// Applies every datagram due by tick `now`, in arrival order.
    pub fn receive(&mut self, now: u64) {
        self.queue.sort_unstable_by_key(|d| (d.0, d.1));
        let due = self.queue.partition_point(|d| d.0 <= now);
        for (_, _, bytes) in self.queue.drain(..due) {
            let _ = self.view.apply_bytes(&bytes);
        }
    }

    /// The acknowledgement to send, if a packet was applied since the last
    /// one and the link lets it through.
    pub fn ack(&mut self, link: &mut LossyLink) -> Option<Inbound> {
        let ack = self.view.take_ack_due()?;
        link.passes().then_some(Inbound::Ack {
            client: self.client,
            ack,
        })
    }

    /// Compares the view with what the world says it must hold; `Err`
    /// names the first difference.
    pub fn check(&self, world: &mut SceneWorld) -> Result<(), String> {
        let want = world
            .expected_view(self.client)
            .ok_or_else(|| format!("client {} not attached", self.client))?;
        let (own, you) = self.view.own().ok_or("never entered")?;
        if own != want.own || you != want.you {
            return Err(format!("own state {you:?} != {:?}", want.you));
        }
        if self.view.game_wire().enabled() {
            if *self.view.you_game() != want.you_game {
                return Err(format!(
                    "client {}: own game components {:?} != {:?}",
                    self.client,
                    self.view.you_game(),
                    want.you_game
                ));
            }
            for (e, g) in want.entities.iter().zip(&want.game) {
                if self.view.get(e.id).is_some() && self.view.game(e.id) != *g {
                    return Err(format!(
                        "client {}: entity {} game components {:?} != {g:?}",
                        self.client,
                        e.id,
                        self.view.game(e.id)
                    ));
                }
            }
        }
        let have: Vec<_> = self
            .view
            .entities()
            .map(|(id, e)| (id, e.kind, e.figure, e.q))
            .collect();
        let want: Vec<_> = want
            .entities
            .iter()
            .map(|e| (e.id, e.kind, e.figure, e.q))
            .collect();
        if have != want {
            let missing = want
                .iter()
                .filter(|w| !have.iter().any(|h| h.0 == w.0))
                .count();
            let ghosts = have
                .iter()
                .filter(|h| !want.iter().any(|w| w.0 == h.0))
                .count();
            return Err(format!(
                "client {}: {} held, {} expected, {missing} missing, {ghosts} ghosts",
                self.client,
                have.len(),
                want.len()
            ));
        }
        Ok(())
    }
}

/// A minimal game for tests and tools: one timed system in each
/// [`crate::GameSystems`] set (`probe_after_ingest`, `probe_after_simulate`),
/// counting the ticks they ran in [`ProbeTicks`]. It changes no simulated
/// state.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeGame;

/// How many ticks each of [`ProbeGame`]'s systems ran.
#[derive(bevy_ecs::prelude::Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTicks {
    pub after_ingest: u64,
    pub after_simulate: u64,
}

fn probe_after_ingest(mut t: bevy_ecs::prelude::ResMut<ProbeTicks>) {
    t.after_ingest += 1;
}

fn probe_after_simulate(mut t: bevy_ecs::prelude::ResMut<ProbeTicks>) {
    t.after_simulate += 1;
}

impl bevy_app::Plugin for ProbeGame {
    fn build(&self, app: &mut bevy_app::App) {
        use crate::metrics::TimedSystemsExt;
        app.init_resource::<ProbeTicks>()
            .add_timed_system(crate::GameSystems::AfterIngest, probe_after_ingest)
            .add_timed_system(crate::GameSystems::AfterSimulate, probe_after_simulate);
    }
}

/// A game whose replicated components keep changing, for convergence
/// tests: every PC gets a public `TestHp` (2 bytes) and an owner-only
/// `TestMana` (1 byte); a public `TestMark` (1 byte) comes and goes. While
/// [`ChurnGame::active`], each changes at seeded random every tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChurnGamePlugin;

/// Whether [`ChurnGamePlugin`]'s components change this tick.
#[derive(bevy_ecs::prelude::Resource, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChurnGame {
    pub active: bool,
}

#[derive(bevy_ecs::prelude::Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestHp(pub u16);
#[derive(bevy_ecs::prelude::Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestMana(pub u8);
#[derive(bevy_ecs::prelude::Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestMark(pub u8);

impl From<TestHp> for u16 {
    fn from(v: TestHp) -> u16 {
        v.0
    }
}
impl From<TestMana> for u8 {
    fn from(v: TestMana) -> u8 {
        v.0
    }
}
impl From<TestMark> for u8 {
    fn from(v: TestMark) -> u8 {
        v.0
    }
}

fn churn_game(
    mut commands: bevy_ecs::prelude::Commands,
    game: bevy_ecs::prelude::Res<ChurnGame>,
    tick: bevy_ecs::prelude::Res<crate::components::TickCount>,
    rng: bevy_ecs::prelude::Res<crate::rng::SceneRng>,
    mut q: bevy_ecs::prelude::Query<(
        bevy_ecs::prelude::Entity,
        &crate::components::Pc,
        Option<&mut TestHp>,
        Option<&mut TestMana>,
        Option<&TestMark>,
    )>,
) {
    use crate::rng::mix;
    for (e, pc, hp, mana, mark) in &mut q {
        let r = mix(rng.seed(), pc.avatar, tick.0);
        let (Some(mut hp), Some(mut mana)) = (hp, mana) else {
            commands
                .entity(e)
                .insert((TestHp(1000), TestMana((r % 7) as u8)));
            continue;
        };
        if !game.active {
            continue;
        }
        if r.is_multiple_of(3) {
            hp.0 = (r >> 8) as u16 % 1000;
        }
        if r.is_multiple_of(5) {
            mana.0 = (r >> 24) as u8;
        }
        if r.is_multiple_of(11) {
            match mark {
                Some(_) => {
                    commands.entity(e).remove::<TestMark>();
                }
                None => {
                    commands.entity(e).insert(TestMark((r >> 32) as u8));
                }
            }
        }
    }
}

impl bevy_app::Plugin for ChurnGamePlugin {
    fn build(&self, app: &mut bevy_app::App) {
        use crate::game::{AsU8, AsU16, ReplicateAppExt};
        use crate::metrics::TimedSystemsExt;
        app.insert_resource(ChurnGame { active: true })
            .replicate::<TestHp, AsU16>()
            .replicate_to_owner::<TestMana, AsU8>()
            .replicate::<TestMark, AsU8>()
            .add_timed_system(crate::GameSystems::AfterSimulate, churn_game);
    }
}

/// A small game with persistent state, for tests of persistence: every PC
/// gets an [`hp_game::Hp`] of 100 unless it has one (restored), and a shrine
/// ([`hp_game::SHRINE_KEY`], `Hp(500)`) is spawned at startup; `Hp` is registered
/// persistent as `"hp"` version 1. Driven over the network by a PC's
/// action: 1..=100 sets its own `Hp` to the action, 101..=200 the shrine's
/// to the action less 100 (0 does nothing).
pub mod hp_game {
    use bevy_app::{App, Plugin, Startup};
    use bevy_ecs::prelude::*;

    use crate::GameSystems;
    use crate::components::Pc;
    use crate::persist_game::{PersistAppExt, Persistent};

    /// Hit points, saved with PCs and the shrine.
    #[derive(
        Component, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize,
    )]
    pub struct Hp(pub u16);

    /// The key of the shrine object.
    pub const SHRINE_KEY: u64 = 7;

    pub struct HpGame;

    impl Plugin for HpGame {
        fn build(&self, app: &mut App) {
            app.persist::<Hp>("hp", 1)
                .add_systems(Startup, spawn_shrine)
                .add_systems(Update, give_hp.in_set(GameSystems::AfterIngest))
                .add_systems(Update, hp_from_action.in_set(GameSystems::AfterSimulate));
        }
    }

    /// [`HpGame`] as a [`crate::Game`], for hosts.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct HpTestGame;

    impl crate::Game for HpTestGame {
        fn name(&self) -> &'static str {
            "hp-test"
        }

        fn build(&self, world: crate::SceneWorldBuilder) -> crate::SceneWorldBuilder {
            world.add_plugins(HpGame)
        }
    }

    use bevy_app::Update;

    fn hp_from_action(
        mut pcs: Query<(&crate::components::Pose, &mut Hp), With<Pc>>,
        mut objects: Query<(&Persistent, &mut Hp), Without<Pc>>,
    ) {
        let mut shrine = None;
        for (pose, mut hp) in &mut pcs {
            match pose.action {
                a @ 1..=100 if hp.0 != u16::from(a) => hp.0 = u16::from(a),
                a @ 101..=200 => shrine = Some(u16::from(a) - 100),
                _ => {}
            }
        }
        if let Some(v) = shrine {
            for (p, mut hp) in &mut objects {
                if p.key == SHRINE_KEY && hp.0 != v {
                    hp.0 = v;
                }
            }
        }
    }

    fn spawn_shrine(mut commands: Commands) {
        commands.spawn((Persistent { key: SHRINE_KEY }, Hp(500)));
    }

    fn give_hp(mut commands: Commands, q: Query<Entity, (With<Pc>, Without<Hp>)>) {
        for e in &q {
            commands.entity(e).insert(Hp(100));
        }
    }

    /// The `Hp` of `avatar`'s PC, if it is in the world and has one.
    pub fn pc_hp(world: &mut World, avatar: u64) -> Option<u16> {
        let mut q = world.query::<(&Pc, &Hp)>();
        q.iter(world)
            .find(|(pc, _)| pc.avatar == avatar)
            .map(|(_, h)| h.0)
    }

    /// Sets `avatar`'s PC's `Hp`.
    pub fn set_pc_hp(world: &mut World, avatar: u64, hp: u16) {
        let mut q = world.query::<(&Pc, &mut Hp)>();
        for (pc, mut h) in q.iter_mut(world) {
            if pc.avatar == avatar {
                h.0 = hp;
            }
        }
    }

    /// The shrine's `Hp`, if it exists.
    pub fn shrine_hp(world: &mut World) -> Option<u16> {
        let mut q = world.query::<(&Persistent, &Hp)>();
        q.iter(world)
            .find(|(p, _)| p.key == SHRINE_KEY)
            .map(|(_, h)| h.0)
    }

    /// Sets the shrine's `Hp`.
    pub fn set_shrine_hp(world: &mut World, hp: u16) {
        let mut q = world.query::<(&Persistent, &mut Hp)>();
        for (p, mut h) in q.iter_mut(world) {
            if p.key == SHRINE_KEY {
                h.0 = hp;
            }
        }
    }
}
