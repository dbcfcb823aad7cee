//! Client actions and server events: a game's own messages.
//!
//! - **Actions** (client → scene): `app.add_client_action::<A>(rate)`
//!   registers a fixed-width payload. The gate and the scene check its size
//!   and rate; the scene decodes it and game systems read it as the
//!   message [`ActionFrom<A>`], which names the sender's entity. A payload
//!   the game cannot decode gets its sender kicked
//!   ([`SceneEvent::Misbehaved`]); a flood is dropped and counted.
//! - **Events** (scene → clients): `app.add_server_event::<E>()` registers
//!   one; a game system sends it with [`GameEvents::send`] to one client,
//!   to the observers of an entity, or to the whole scene, reliably or not.
//!   The tick turns each into one [`GameEventOut`] per receiving client.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::sync::Arc;

use bevy_app::App;
use bevy_ecs::prelude::*;
use bevy_ecs::system::SystemParam;

use tessera_proto::game::{ActionDesc, EventDesc, MAX_EVENT_BYTES};

use super::replicated::{GameRegistry, short_name};
use crate::components::{ClientView, Counters, Directory, Net, Pc, TickCount};
use crate::protocol::{ClientId, GameEventOut, NetId, SceneEvent};
use crate::world::{SceneInfo, SceneOutbox};

/// A typed client → server message with a fixed-size payload.
pub trait ClientAction: Send + Sync + Sized + 'static {
    /// Bytes of its payload, 1 to 256.
    const WIDTH: u16;
    /// Reads a payload of exactly [`Self::WIDTH`] bytes; `None` if it is
    /// not a valid action (its sender is then kicked).
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// Writes it (what a client in Rust, e.g. the bots, sends).
    fn encode(&self, out: &mut Vec<u8>);
}

/// A typed server → client message, at most `MAX_BYTES` encoded.
pub trait ServerEvent: Send + Sync + Sized + 'static {
    /// Bytes of an encoded event at most, up to 1024.
    const MAX_BYTES: u16;
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one (what a client in Rust does).
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// How many actions of one kind a client may send: `per_second` sustained,
/// `burst` at once. Checked at the gate (in time) and in the scene (in
/// ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionRate {
    pub per_second: u16,
    pub burst: u16,
}

/// An action as a game system receives it.
#[derive(Message, Debug, Clone)]
pub struct ActionFrom<A: ClientAction> {
    /// The sender's PC.
    pub entity: Entity,
    pub client: ClientId,
    pub action: A,
}

/// Whom an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTarget {
    /// The client whose PC this is (nobody, if it is not a PC).
    Client(Entity),
    /// Every client that holds this entity (it is among the nearest of
    /// their area of interest, as replicated), and its own client if it is
    /// a PC.
    Observers(Entity),
    /// Every client in the scene.
    Scene,
}

/// Whether an event is resent until it arrives (in order with the other
/// reliable ones), or sent once on the unreliable channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Reliable,
    Unreliable,
}

/// Events a tick may send before the rest are dropped (and counted).
pub const MAX_EVENTS_PER_TICK: usize = 16_384;

/// Decodes one action's payload and writes its message; `false` if the
/// payload does not decode.
type Decode = Box<dyn Fn(&mut World, Entity, ClientId, &[u8]) -> bool + Send + Sync>;

/// The registered actions' decoders and the events' kinds.
#[derive(Resource, Default)]
pub struct GameMessages {
    decode: Vec<Decode>,
    events: BTreeMap<TypeId, u16>,
}

/// Registration of a game's actions and events.
pub trait GameMessagesAppExt {
    /// A client action of type `A`, named by its type, at most `rate`.
    fn add_client_action<A: ClientAction>(&mut self, rate: ActionRate) -> &mut Self;
    /// A server event of type `E`, named by its type.
    fn add_server_event<E: ServerEvent>(&mut self) -> &mut Self;
}

impl GameMessagesAppExt for App {
    fn add_client_action<A: ClientAction>(&mut self, rate: ActionRate) -> &mut Self {
        self.add_message::<ActionFrom<A>>();
        let world = self.world_mut();
        world.init_resource::<GameRegistry>();
        world.init_resource::<GameMessages>();
        world
            .resource_mut::<GameRegistry>()
            .schema
            .actions
            .push(ActionDesc {
                name: short_name::<A>(),
                width: A::WIDTH,
                per_second: rate.per_second,
                burst: rate.burst.max(1),
            });
        world.resource_mut::<GameMessages>().decode.push(Box::new(
            |world, entity, client, bytes| match A::decode(bytes) {
                Some(action) => {
                    world.write_message(ActionFrom {
                        entity,
                        client,
                        action,
                    });
                    true
                }
                None => false,
            },
        ));
        self
    }

    fn add_server_event<E: ServerEvent>(&mut self) -> &mut Self {
        let world = self.world_mut();
        world.init_resource::<GameRegistry>();
        world.init_resource::<GameMessages>();
        let mut reg = world.resource_mut::<GameRegistry>();
        let kind = reg.schema.events.len();
        reg.schema.events.push(EventDesc {
            name: short_name::<E>(),
            max_bytes: E::MAX_BYTES,
        });
        world
            .resource_mut::<GameMessages>()
            .events
            .insert(TypeId::of::<E>(), kind.min(u16::MAX as usize) as u16);
        self
    }
}

/// Actions taken from the inbox this tick, waiting for the ingest step that checks them.
#[derive(Resource, Debug, Default)]
pub struct PendingActions(pub Vec<(ClientId, u16, Vec<u8>)>);

/// A PC's action token buckets, one per kind, in thousandths of an action.
#[derive(Component, Debug, Default, Clone)]
pub struct ActionBudget {
    tokens: Vec<u32>,
    tick: Vec<u64>,
}

impl ActionBudget {
    /// Takes one action of `kind` at tick `now` if the bucket allows.
    fn take(&mut self, kind: usize, rate: (u16, u16), tick_hz: u32, now: u64) -> bool {
        if self.tokens.len() <= kind {
            self.tokens.resize(kind + 1, rate.1 as u32 * 1000);
            self.tick.resize(kind + 1, now);
        }
        let cap = rate.1 as u64 * 1000;
        let per_tick = rate.0 as u64 * 1000 / tick_hz.max(1) as u64;
        let elapsed = now.saturating_sub(self.tick[kind]);
        let tokens = (self.tokens[kind] as u64 + elapsed.saturating_mul(per_tick)).min(cap);
        self.tick[kind] = now;
        if tokens >= 1000 {
            self.tokens[kind] = (tokens - 1000) as u32;
            true
        } else {
            self.tokens[kind] = tokens as u32;
            false
        }
    }
}

/// Ingest: checks each action (its sender, kind, size and rate), decodes it
/// into its message, or counts why not.
pub(crate) fn apply_actions(world: &mut World) {
    let pending = std::mem::take(&mut world.resource_mut::<PendingActions>().0);
    if pending.is_empty() {
        return;
    }
    world.resource_scope(|world, messages: Mut<GameMessages>| {
        let actions = world.resource::<GameRegistry>().schema.actions.clone();
        let tick_hz = world.resource::<SceneInfo>().tick_hz;
        let now = world.resource::<TickCount>().0;
        for (client, kind, payload) in pending {
            let Some(&entity) = world.resource::<Directory>().clients.get(&client) else {
                world.resource_mut::<Counters>().unknown_client += 1;
                continue;
            };
            let (Some(desc), Some(decode)) = (
                actions.get(kind as usize),
                messages.decode.get(kind as usize),
            ) else {
                misbehaved(world, client, format!("unknown action kind {kind}"));
                continue;
            };
            if payload.len() != desc.width as usize {
                misbehaved(
                    world,
                    client,
                    format!(
                        "action {} of {} bytes, not {}",
                        desc.name,
                        payload.len(),
                        desc.width
                    ),
                );
                continue;
            }
            let Ok(mut e) = world.get_entity_mut(entity) else {
                continue;
            };
            let allowed = match e.get_mut::<ActionBudget>() {
                Some(mut b) => b.take(kind as usize, (desc.per_second, desc.burst), tick_hz, now),
                None => {
                    let mut b = ActionBudget::default();
                    let ok = b.take(kind as usize, (desc.per_second, desc.burst), tick_hz, now);
                    e.insert(b);
                    ok
                }
            };
            if !allowed {
                world.resource_mut::<Counters>().actions_flood_dropped += 1;
                continue;
            }
            if decode(world, entity, client, &payload) {
                world.resource_mut::<Counters>().actions_taken += 1;
            } else {
                misbehaved(world, client, format!("malformed action {}", desc.name));
            }
        }
    });
}

/// Counts a malformed action and asks the host to kick its sender.
fn misbehaved(world: &mut World, client: ClientId, reason: String) {
    world.resource_mut::<Counters>().actions_malformed += 1;
    world
        .resource_mut::<SceneOutbox>()
        .events
        .push(SceneEvent::Misbehaved { client, reason });
}

/// One event a game system sent this tick, waiting to be routed.
#[derive(Debug, Clone)]
struct Outgoing {
    to: EventTarget,
    kind: u16,
    reliable: bool,
    bytes: Arc<[u8]>,
}

/// This tick's events, routed to their clients after Interest.
#[derive(Resource, Debug, Default)]
pub struct EventOutbox {
    pending: Vec<Outgoing>,
}

/// Sends game events from a system: `events.send(EventTarget::Scene,
/// Delivery::Reliable, &MyEvent { .. })`.
#[derive(SystemParam)]
pub struct GameEvents<'w> {
    out: ResMut<'w, EventOutbox>,
    messages: Res<'w, GameMessages>,
    counters: ResMut<'w, Counters>,
}

impl GameEvents<'_> {
    /// Queues `event` for `to`. An event of an unregistered type, one over
    /// its size, or one beyond [`MAX_EVENTS_PER_TICK`] is dropped and
    /// counted (`Counters::events_dropped`).
    pub fn send<E: ServerEvent>(&mut self, to: EventTarget, delivery: Delivery, event: &E) {
        let Some(&kind) = self.messages.events.get(&TypeId::of::<E>()) else {
            self.counters.events_dropped += 1;
            return;
        };
        let mut bytes = Vec::new();
        event.encode(&mut bytes);
        if bytes.len() > (E::MAX_BYTES as usize).min(MAX_EVENT_BYTES)
            || self.out.pending.len() >= MAX_EVENTS_PER_TICK
        {
            self.counters.events_dropped += 1;
            return;
        }
        self.out.pending.push(Outgoing {
            to,
            kind,
            reliable: delivery == Delivery::Reliable,
            bytes: bytes.into(),
        });
    }
}

/// Replicate stage: each event becomes one [`GameEventOut`] per client
/// it goes to, in the order sent (and, for one event, by client).
pub(crate) fn route_events(
    mut out: ResMut<EventOutbox>,
    mut scene: ResMut<SceneOutbox>,
    mut counters: ResMut<Counters>,
    targets: Query<(Option<&Pc>, Option<&Net>)>,
    observers: Query<(&Pc, &ClientView)>,
    all: Query<&Pc>,
) {
    if out.pending.is_empty() {
        return;
    }
    let pending = std::mem::take(&mut out.pending);
    // Observers of each watched entity: the clients that hold it (as of the
    // packets just built; at most `max_interest` each), found by a binary
    // search of every client's known entities, only in a tick that has
    // such events.
    let watched: BTreeMap<NetId, Vec<ClientId>> = {
        let mut ids: BTreeMap<NetId, Vec<ClientId>> = pending
            .iter()
            .filter_map(|o| match o.to {
                EventTarget::Observers(e) => targets.get(e).ok().and_then(|(_, n)| n),
                _ => None,
            })
            .map(|n| (n.0, Vec::new()))
            .collect();
        if !ids.is_empty() {
            for (pc, view) in &observers {
                for (id, v) in ids.iter_mut() {
                    if view.known.binary_search_by_key(id, |k| k.id).is_ok() {
                        v.push(pc.client);
                    }
                }
            }
            for v in ids.values_mut() {
                v.sort_unstable();
            }
        }
        ids
    };
    let mut everyone: Vec<ClientId> = Vec::new();
    let mut to: Vec<ClientId> = Vec::new();
    for o in pending {
        to.clear();
        match o.to {
            EventTarget::Client(e) => {
                if let Ok((Some(pc), _)) = targets.get(e) {
                    to.push(pc.client);
                }
            }
            EventTarget::Observers(e) => {
                if let Ok((pc, Some(net))) = targets.get(e) {
                    to.extend(watched.get(&net.0).into_iter().flatten());
                    if let Some(pc) = pc
                        && to.binary_search(&pc.client).is_err()
                    {
                        to.push(pc.client);
                        to.sort_unstable();
                    }
                }
            }
            EventTarget::Scene => {
                if everyone.is_empty() {
                    everyone.extend(all.iter().map(|pc| pc.client));
                    everyone.sort_unstable();
                }
                to.extend_from_slice(&everyone);
            }
        }
        if to.is_empty() {
            counters.events_unrouted += 1;
        }
        for &client in &to {
            scene.game.push(GameEventOut {
                client,
                kind: o.kind,
                reliable: o.reliable,
                payload: Arc::clone(&o.bytes),
            });
        }
        counters.events_sent += to.len() as u64;
    }
}
