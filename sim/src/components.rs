//! Components and shared resources of a scene world.

use std::collections::{BTreeMap, VecDeque};

use bevy_ecs::lifecycle::HookContext;
use bevy_ecs::prelude::*;
use bevy_ecs::world::DeferredWorld;

use crate::aoi::Diff;
use crate::protocol::{AvatarId, ClientId, MoveMode, NetId, Quantized};
use crate::scene::Vec2;

/// The entity's wire id, unique among the scene's live entities. An id is
/// handed out by [`Directory::alloc_net`] and given back when the component
/// goes (on despawn, whatever the path: the remove hook frees it), so it may
/// later name another entity, with another generation ([`Directory::net_gen`]).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[component(on_remove = free_net_on_remove)]
pub struct Net(pub NetId);

/// Gives a removed [`Net`]'s id back to the [`Directory`], stamped with the
/// current tick (the quarantine counts from it).
fn free_net_on_remove(mut world: DeferredWorld, ctx: HookContext) {
    let Some(&Net(id)) = world.get::<Net>(ctx.entity) else {
        return;
    };
    let now = world.get_resource::<TickCount>().map_or(0, |t| t.0);
    if let Some(mut dir) = world.get_resource_mut::<Directory>() {
        dir.free_net(id, now);
    }
}

#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Position(pub Vec2);

/// Units per second, set by Simulate from intent or behaviour.
#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Velocity(pub Vec2);

#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Pose {
    pub heading: f32,
    pub action: u8,
    pub mount: u8,
}

/// The latest validated movement intent of a PC.
#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Intent {
    pub dir: Vec2,
    pub mode: MoveMode,
    /// The mount the client asks to ride (0: on foot). The movement plugin
    /// decides whether it may, and sets [`Pose::mount`].
    pub mount: u8,
}

/// A player character, attached for a client.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pc {
    pub client: ClientId,
    pub avatar: AvatarId,
    pub figure: u32,
    /// Last input sequence applied.
    pub ack: u32,
    /// Inside a portal area last tick (portal events fire on entry only).
    pub in_portal: bool,
    /// Inputs taken in tick `inputs_tick`, against the per-tick cap.
    pub inputs: u32,
    pub inputs_tick: u64,
}

/// An acknowledgement waiting in the [`AckInbox`] for its client's packet
/// build: the newest tick applied and the mask before it, as in
/// [`StateAck`](crate::protocol::StateAck).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PendingAck {
    pub tick: u32,
    pub mask: u32,
}

impl PendingAck {
    /// Feeds it to `ring`; `Err` if the ring refused it.
    #[inline]
    pub fn apply(&self, ring: &mut SentRing) -> Result<(), AckRefused> {
        ring.on_ack(self.tick, self.mask)
    }
}

#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Npc {
    pub figure: u32,
}

/// Seeded wander behaviour (NPCs, and the walkers of `tessera sim`).
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Wander {
    /// Stay within `radius` of `home`; `radius <= 0` means anywhere.
    pub home: Vec2,
    pub radius: f32,
    pub speed: f32,
    pub next_turn: u64,
}

/// An entity that has an area of interest.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Sight {
    pub radius: f32,
}

/// What an observer sees (ids, in grid-scan order) and this tick's diff.
#[derive(Component, Debug, Default, Clone)]
pub struct Interest {
    pub visible: Vec<NetId>,
    pub diff: Diff,
}

/// One entity a client has been sent, as the server tracks it: 12 bytes,
/// since every tick walks every client's entries (10,000 clients seeing 80
/// entities each is 10 MB a tick at this size; the walk is bound by the
/// memory it reads).
///
/// - The state last sent is not kept. Whether the client's copy is behind
///   is known without it: the entity changed this tick
///   ([`crate::interest::Snap::changed`]), or it wanted to go in an earlier
///   tick and did not fit ([`Known::age`] flags it), or the packet that
///   carried it was lost ([`Known::settle`] flags it). Every client's
///   entries are walked every tick, so no change is missed.
/// - The tick of the packet that last carried it is kept as its low 16 bits
///   while that packet is in flight: every tick settles every entry
///   ([`Known::settle`]), and a packet unacknowledged for [`SENT_RING`] ticks
///   is lost, so the full tick is always the latest one with those bits.
/// - The generation of the entity sent under `id` is kept as its low 16 bits:
///   an id changes holder at most once a tick (the quarantine counts whole
///   ticks), and an entry is compared with the id's holder every tick it is of
///   interest, so 2¹⁶ reuses cannot pass between two comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub id: NetId,
    sent_at: u16,
    net_gen: u16,
    flags: u8,
    /// Ticks of wanting to go without getting room (priority), up to
    /// [`Known::MAX_WAIT`].
    wait: u8,
}

const _: () = assert!(std::mem::size_of::<Known>() == 12);
const _: () = assert!(std::mem::size_of::<SentRing>() == 24);
const _: () = assert!(SENT_RING == u64::BITS as usize);

/// [`Known::flags`]: the packet that last carried it is in flight.
const IN_FLIGHT: u8 = 1;
/// Its enter is not acknowledged yet: the client may not hold it at all, so
/// until a packet carrying it lands it goes as an enter (an update would be
/// ignored), and a lost one goes again as an enter.
const ENTERING: u8 = 2;
/// The packet that last carried it was lost: it goes again (as an enter while
/// entering), with the current state.
const RESEND: u8 = 4;
/// It wanted to go and did not fit: the client's copy is behind even if the
/// entity stops changing, so it goes when there is room.
const DIRTY: u8 = 8;
/// The packet that last carried it carried game components
/// ([`crate::game::GameSnaps`]): until it is settled, every update carries
/// all of them again, since a later packet without them might be the one
/// that lands and settles the entry.
const GAME: u8 = 16;

impl Known {
    /// Ticks of waiting the priority counts, at most.
    pub const MAX_WAIT: u8 = 31;

    /// An entity sent as an enter in tick `t`.
    pub fn entered(id: NetId, net_gen: u32, t: u32) -> Self {
        let mut k = Self {
            id,
            sent_at: 0,
            net_gen: 0,
            flags: 0,
            wait: 0,
        };
        k.sent(t, net_gen, true);
        k
    }

    /// Whether the entity sent under this id is of generation `net_gen`.
    #[inline]
    pub fn same_gen(&self, net_gen: u32) -> bool {
        self.net_gen == net_gen as u16
    }

    #[inline]
    pub fn entering(&self) -> bool {
        self.flags & ENTERING != 0
    }

    /// It goes again because a packet carrying it was lost.
    #[inline]
    pub fn resend(&self) -> bool {
        self.flags & RESEND != 0
    }

    /// It must go whether or not the entity changed this tick: lost, or
    /// left out of an earlier packet.
    #[inline]
    pub fn behind(&self) -> bool {
        self.flags & (RESEND | DIRTY) != 0
    }

    /// An update of it must carry all its game components: it is behind,
    /// or game components it was last sent are not acknowledged yet.
    #[inline]
    pub fn needs_full_game(&self) -> bool {
        self.flags & (RESEND | DIRTY | GAME) != 0
    }

    /// [`Self::needs_full_game`] of an entry as [`Self::save`] saved it.
    #[inline]
    pub(crate) fn saved_needs_full_game(saved: u32) -> bool {
        (saved >> 16) as u8 & (RESEND | DIRTY | GAME) != 0
    }

    /// The packet [`Self::sent`] just recorded carries game components.
    #[inline]
    pub fn carried_game(&mut self) {
        self.flags |= GAME;
    }

    #[inline]
    pub fn wait(&self) -> u8 {
        self.wait
    }

    /// The tick of the packet that last carried it, while in flight, as of
    /// tick `now`.
    #[inline]
    pub fn sent_at(&self, now: u32) -> Option<u32> {
        (self.flags & IN_FLIGHT != 0)
            .then(|| now.wrapping_sub((now as u16).wrapping_sub(self.sent_at) as u32))
    }

    /// Settles the packet that last carried it as of tick `now`: delivered,
    /// an enter is confirmed; lost, it goes again (as an enter while the
    /// enter is unconfirmed).
    #[inline]
    pub fn settle(&mut self, ring: &SentRing, now: u32) {
        let Some(t) = self.sent_at(now) else { return };
        match ring.fate(t, now) {
            Fate::Delivered => self.flags &= !(IN_FLIGHT | ENTERING | GAME),
            Fate::Lost => self.flags = (self.flags & !IN_FLIGHT) | RESEND,
            Fate::InFlight => {}
        }
    }

    /// Records that a packet of tick `t` carries it (as an enter if `enter`),
    /// with the current state of the generation `net_gen`.
    #[inline]
    pub fn sent(&mut self, t: u32, net_gen: u32, enter: bool) {
        self.net_gen = net_gen as u16;
        self.sent_at = t as u16;
        let entering = if enter {
            ENTERING
        } else {
            self.flags & ENTERING
        };
        self.flags = IN_FLIGHT | entering;
        self.wait = 0;
    }

    /// What [`Self::sent`] changes of an update (same generation), to
    /// [`Self::restore`] when it turns out not to go after all.
    #[inline]
    pub(crate) fn save(&self) -> u32 {
        self.sent_at as u32 | (self.flags as u32) << 16 | (self.wait as u32) << 24
    }

    #[inline]
    pub(crate) fn restore(&mut self, saved: u32) {
        self.sent_at = saved as u16;
        self.flags = (saved >> 16) as u8;
        self.wait = (saved >> 24) as u8;
    }

    /// Every field, for the state hash.
    pub(crate) fn words(&self) -> [u64; 2] {
        [
            (self.id as u64) << 32 | (self.net_gen as u64) << 16 | self.sent_at as u64,
            (self.flags as u64) << 8 | self.wait as u64,
        ]
    }

    /// It wanted to go and did not fit: it goes when there is room, and
    /// waits one tick more (its priority grows).
    #[inline]
    pub fn age(&mut self) {
        self.flags |= DIRTY;
        if self.wait < Self::MAX_WAIT {
            self.wait += 1;
        }
    }
}

/// "No packet" in [`Known`]'s and [`ClientView`]'s tick fields.
pub const NONE: u32 = u32::MAX;

/// Where a packet stands, as far as the client's acknowledgements tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Lost,
    InFlight,
}

/// Packets a view remembers: enough for 3 s at 20 Hz; an older packet's
/// fate is "lost" (its content is simply sent again).
pub const SENT_RING: usize = 64;

/// The recent packets sent to one client and what its acknowledgements say
/// of them: the one place a packet's [`Fate`] is decided. 24 bytes (every
/// tick reads every client's): bit `t % SENT_RING` of each mask speaks of
/// tick `t`, for the [`SENT_RING`] ticks up to `last_sent`.
#[derive(Debug, Clone, Default)]
pub struct SentRing {
    /// A packet went out in that tick.
    sent: u64,
    /// That packet was acknowledged.
    delivered: u64,
    /// The newest tick the client acknowledged (0 = none yet).
    pub acked: u32,
    /// The newest tick a packet was sent in (0 = none yet).
    pub last_sent: u32,
}

/// Why an acknowledgement was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckRefused {
    /// It names a tick no packet was sent in yet (a future sequence).
    Future,
}

impl SentRing {
    #[inline]
    fn bit(t: u32) -> u64 {
        1 << (t as usize % SENT_RING)
    }

    /// The fate, as of tick `now`, of the packet sent in tick `t`. One
    /// unacknowledged for [`SENT_RING`] ticks counts as lost.
    #[inline]
    pub fn fate(&self, t: u32, now: u32) -> Fate {
        // `now >= last_sent`, so a tick less than SENT_RING before `now` is
        // within the masks' window.
        if t == NONE || now.wrapping_sub(t) >= SENT_RING as u32 || self.sent & Self::bit(t) == 0 {
            return Fate::Lost;
        }
        if self.delivered & Self::bit(t) != 0 {
            Fate::Delivered
        } else if t <= self.acked {
            // The client applies packets in tick order: one it skipped
            // before a newer one is never applied.
            Fate::Lost
        } else {
            Fate::InFlight
        }
    }

    /// Records that a packet went out in tick `t` (later than the last).
    pub fn record_sent(&mut self, t: u32) {
        // The ticks since the last packet sent none.
        let gap = t.wrapping_sub(self.last_sent);
        if self.last_sent == 0 || gap as usize >= SENT_RING {
            self.sent = 0;
        } else {
            for skipped in 1..gap {
                self.sent &= !Self::bit(self.last_sent + skipped);
            }
        }
        self.sent |= Self::bit(t);
        self.delivered &= !Self::bit(t);
        self.last_sent = t;
    }

    /// Takes an acknowledgement: the newest tick applied and the mask of the
    /// [`ACK_WINDOW`](crate::protocol::ACK_WINDOW) before it.
    pub fn on_ack(&mut self, tick: u32, mask: u32) -> Result<(), AckRefused> {
        if tick == 0 {
            return Ok(());
        }
        if tick > self.last_sent {
            return Err(AckRefused::Future);
        }
        // The client applies packets in tick order, so what it applied up
        // to the newest tick it acknowledged before is settled for good:
        // an older or equal acknowledgement (reordered, repeated) says
        // nothing new, and a newer one only about the ticks since.
        if tick <= self.acked {
            return Ok(());
        }
        let ack = crate::protocol::StateAck {
            tick,
            mask,
            ..Default::default()
        };
        // Within the masks' window: ACK_WINDOW < SENT_RING.
        let low = tick
            .saturating_sub(crate::protocol::ACK_WINDOW)
            .max(self.acked + 1)
            .max(self.last_sent.saturating_sub(SENT_RING as u32 - 1));
        for t in low..=tick {
            if self.sent & Self::bit(t) != 0 && ack.covers(t) {
                self.delivered |= Self::bit(t);
            }
        }
        self.acked = tick;
        Ok(())
    }
}

/// What a client has been sent and what it has acknowledged: the entities it
/// may hold, the leaves not yet acknowledged, and the recent packets' fates.
/// The view advances on acknowledgement: whatever a lost packet carried is
/// sent again with the current state.
#[derive(Component, Debug, Clone)]
pub struct ClientView {
    /// In id order.
    pub known: Vec<Known>,
    /// Leaves sent and not yet acknowledged: `(id, tick)`.
    pub leaving: Vec<(NetId, u32)>,
    /// The own state last sent, and the tick that carried it (or [`NONE`]).
    pub you_sent: Option<Quantized>,
    pub you_at: u32,
    pub you_resend: bool,
    /// A digest of the own game block last sent (0: none).
    pub you_game: u64,
    pub ring: SentRing,
    /// The distance key of the farthest entity of last tick's capped
    /// interest (0: not capped), to rank this tick's from fewer.
    pub near_key: u32,
    /// The input ack (`Pc::ack`) the last packet carried.
    pub input_ack_sent: u32,
}

impl Default for ClientView {
    fn default() -> Self {
        Self {
            known: Vec::new(),
            leaving: Vec::new(),
            you_sent: None,
            you_at: NONE,
            you_resend: false,
            you_game: 0,
            ring: SentRing::default(),
            near_key: 0,
            input_ack_sent: 0,
        }
    }
}

/// Persistence bookkeeping of a PC: the state last handed to the data service.
#[derive(Component, Debug, Default, Clone, Copy, PartialEq)]
pub struct SaveTrack {
    pub saved: Option<(Vec2, f32, u8, u8)>,
    pub dirty: bool,
}

/// The current tick (time, for the simulation).
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickCount(pub u64);

/// Who is where: client and avatar lookups, and the net ids.
///
/// Net ids are recycled so that a long-lived scene with churn keeps its
/// per-id arrays (snapshots, AOI and replication scratch) at the size of its
/// peak population plus the ids in quarantine. A freed id waits in a FIFO
/// for more than `net_quarantine` ticks, then is handed out again with its
/// generation bumped. Replication compares generations, so a client that
/// still holds the former entity under that id (its leave lost, deferred or
/// never acknowledged) is sent the new one as an enter, never as an update
/// of the old one. The quarantine is not needed for that; it keeps reuse
/// rare while anything else (a client's command, a log line) may still name
/// the former entity, and lets every packet that carried its leave settle.
#[derive(Resource, Debug, Default)]
pub struct Directory {
    pub clients: ClientIndex,
    pub avatars: BTreeMap<AvatarId, Entity>,
    /// Ids ever handed out are `0..next_net`.
    pub next_net: NetId,
    /// Per id below `next_net`: its current generation and whether it is held.
    nets: Vec<NetSlot>,
    /// Freed ids, oldest first, with the tick each was freed in.
    free_nets: VecDeque<(NetId, u64)>,
    /// Ticks a freed id waits before reuse (more than this many pass).
    net_quarantine: u64,
}

/// Each attached client's entity: looked up once per input and per
/// acknowledgement (10,000 a tick at 10,000 clients), where a `BTreeMap`
/// costs a dozen dependent, mostly missing reads per lookup and a hash map
/// one or two. It has no iteration on purpose: hash order is not
/// deterministic, and nothing on the tick path may depend on it.
#[derive(Debug, Default)]
pub struct ClientIndex(
    #[allow(clippy::disallowed_types)] // lookups only: see above
    std::collections::HashMap<ClientId, Entity, ClientHash>,
);

/// [`ClientIndex`]'s hasher: one multiply of the id with a per-process
/// random key, folded (SipHash cost 120 instructions a lookup here, a
/// tenth of the ingest stage at 10,000 clients). Client ids are issued by
/// the server, and the key keeps collisions unpredictable all the same.
#[derive(Debug, Clone, Copy)]
struct ClientHash(u64);

impl Default for ClientHash {
    fn default() -> Self {
        use std::hash::BuildHasher;
        Self(std::collections::hash_map::RandomState::new().hash_one(0x7e55e7a_u64) | 1)
    }
}

impl std::hash::BuildHasher for ClientHash {
    type Hasher = ClientHasher;
    fn build_hasher(&self) -> ClientHasher {
        ClientHasher { key: self.0, h: 0 }
    }
}

struct ClientHasher {
    key: u64,
    h: u64,
}

impl std::hash::Hasher for ClientHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.h = (self.h ^ v).wrapping_mul(self.key);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.h ^ (self.h >> 29) ^ (self.h >> 47)
    }
}

impl ClientIndex {
    pub fn get(&self, client: &ClientId) -> Option<&Entity> {
        self.0.get(client)
    }

    pub fn contains_key(&self, client: &ClientId) -> bool {
        self.0.contains_key(client)
    }

    pub fn insert(&mut self, client: ClientId, entity: Entity) -> Option<Entity> {
        self.0.insert(client, entity)
    }

    pub fn remove(&mut self, client: &ClientId) -> Option<Entity> {
        self.0.remove(client)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The acknowledgements taken this tick, checked against the scene and the
/// clock, by client. Each client's packet build (in parallel) feeds its own
/// to its view's ring; ingest touches no client's components for one, which
/// at 10,000 clients acknowledging every tick saves two or three cache
/// misses apiece on the single-threaded ingest. Bounded by the inbox: at
/// most one entry per command taken. Lookups only, like [`ClientIndex`].
#[derive(Resource, Debug, Default)]
pub struct AckInbox {
    #[allow(clippy::disallowed_types)] // lookups only: see above
    map: std::collections::HashMap<ClientId, PendingAck, ClientHash>,
}

impl AckInbox {
    /// Keeps `ack` for `client`; returns the one it displaces (taken
    /// earlier this tick), which the caller must apply first.
    pub fn insert(&mut self, client: ClientId, ack: PendingAck) -> Option<PendingAck> {
        self.map.insert(client, ack)
    }

    pub fn get(&self, client: &ClientId) -> Option<&PendingAck> {
        self.map.get(client)
    }

    pub fn remove(&mut self, client: &ClientId) -> Option<PendingAck> {
        self.map.remove(client)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Empties it, keeping its memory for the next tick.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// One net id's bookkeeping in the [`Directory`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct NetSlot {
    /// Bumped on every reuse. An id is reused at most once per tick (the
    /// quarantine counts whole ticks), so a generation cannot come round
    /// again within the 2³² ticks a state packet's tick can name.
    net_gen: u32,
    live: bool,
}

impl Directory {
    /// An empty directory whose freed ids wait `quarantine` ticks.
    pub fn with_quarantine(quarantine: u64) -> Self {
        Self {
            net_quarantine: quarantine,
            ..Self::default()
        }
    }

    /// A net id for an entity spawned in tick `now`: the oldest freed id once
    /// more than the quarantine has passed since it was freed, else a new one.
    pub fn alloc_net(&mut self, now: u64) -> NetId {
        if let Some(&(id, freed)) = self.free_nets.front()
            && now.saturating_sub(freed) > self.net_quarantine
            && let Some(slot) = self.nets.get_mut(id as usize)
        {
            self.free_nets.pop_front();
            slot.net_gen = slot.net_gen.wrapping_add(1);
            slot.live = true;
            return id;
        }
        let id = self.next_net;
        self.next_net = self.next_net.wrapping_add(1);
        match self.nets.get_mut(id as usize) {
            // Only once `next_net` wrapped: 2³² ids held at once, which the
            // recycling above keeps out of reach.
            Some(slot) => {
                *slot = NetSlot {
                    net_gen: slot.net_gen.wrapping_add(1),
                    live: true,
                }
            }
            None => self.nets.push(NetSlot {
                net_gen: 0,
                live: true,
            }),
        }
        id
    }

    /// Gives `id` back in tick `now` (its entity is gone). An id not held
    /// (freed twice, or never handed out) is ignored, so it can never be
    /// handed to two entities.
    pub fn free_net(&mut self, id: NetId, now: u64) {
        if let Some(slot) = self.nets.get_mut(id as usize)
            && slot.live
        {
            slot.live = false;
            self.free_nets.push_back((id, now));
        }
    }

    /// The generation of `id`'s current (or last) holder; 0 for an id never
    /// handed out.
    #[inline]
    pub fn net_gen(&self, id: NetId) -> u32 {
        self.nets.get(id as usize).map_or(0, |s| s.net_gen)
    }

    /// Freed ids waiting for reuse, oldest first: `(id, tick freed)`.
    pub fn free_nets(&self) -> impl ExactSizeIterator<Item = (NetId, u64)> + '_ {
        self.free_nets.iter().copied()
    }

    /// Ticks a freed id waits before it is handed out again.
    pub fn net_quarantine(&self) -> u64 {
        self.net_quarantine
    }
}

/// Everything dropped, clamped or refused, counted. Never reset during a run.
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Commands refused because the inbound queue was full.
    pub inbound_full: u64,
    /// Inputs beyond the per-client per-tick cap.
    pub inputs_flood_dropped: u64,
    /// Inputs with NaN / infinite fields.
    pub inputs_invalid_dropped: u64,
    /// Inputs whose direction was longer than 1 (a speed hack) and got clamped.
    pub inputs_speed_clamped: u64,
    /// Inputs or detaches for a client that is not attached.
    pub unknown_client: u64,
    pub attach_rejected: u64,
    /// Moves stopped or shortened by an obstacle.
    pub obstacle_blocked: u64,
    /// Moves clamped to the scene bounds.
    pub bounds_clamped: u64,
    /// Replication items (enter / leave / update) deferred to a later tick by the byte budget.
    pub items_deferred: u64,
    /// Packets that had to be re-encoded smaller after the size estimate.
    pub packets_trimmed: u64,
    /// Items sent again because the packet that carried them was lost.
    pub items_resent: u64,
    /// Acknowledgements of another scene or placement, or of a tick before
    /// this stay's first packet (sent before the client learnt it moved or
    /// came back), ignored.
    pub acks_stale: u64,
    /// Acknowledgements of a tick still to come: dropped.
    pub acks_invalid: u64,
    /// Unacknowledged leaves forgotten because a client kept more than
    /// `MAX_LEAVING` (it does not acknowledge).
    pub leaves_forgotten: u64,
    /// Inputs (or attaches) asking for a mount the scene does not allow:
    /// the PC moved on foot instead (see `movement::mount_allowed`).
    pub mounts_refused: u64,
    /// Game actions decoded and handed to the game.
    pub actions_taken: u64,
    /// Game actions beyond their kind's rate: dropped.
    pub actions_flood_dropped: u64,
    /// Game actions of an unknown kind, a wrong size or that do not decode:
    /// dropped, and their sender kicked (`SceneEvent::Misbehaved`).
    pub actions_malformed: u64,
    /// Game events delivered, one per receiving client.
    pub events_sent: u64,
    /// Game events dropped: unregistered, too large, or beyond the tick's cap.
    pub events_dropped: u64,
    /// Game events that had nobody to go to.
    pub events_unrouted: u64,
    /// Failed ECS commands, process-wide (bevy's fallback error handler is a
    /// plain `fn` with no world context, so it cannot tell scenes apart).
    pub command_errors: u64,
}
