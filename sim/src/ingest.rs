//! Ingest: drain the host's commands into ECS messages and apply them —
//! attach spawns a PC with its saved state, detach saves and despawns it
//! (the despawn frees its net id, see [`Directory`]), inputs are validated
//! into the PC's [`Intent`].

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;

use crate::metrics::timing_mark;

use crate::IngestSystems;
use crate::components::*;
use crate::persist::PendingSaves;
use crate::persist_game::{GameFields, PersistStats, RestoreFields};
use crate::protocol::{AvatarId, ClientId, Inbound, Input, NetId, SceneEvent, StateAck};
use crate::world::{SceneInfo, SceneOutbox};

/// Commands pushed by the host, waiting for the next tick. Bounded: a push
/// beyond `capacity` is refused and counted.
#[derive(Resource, Debug, Default)]
pub struct Inbox {
    pub pending: Vec<Inbound>,
    pub capacity: usize,
}

#[derive(Message, Debug, Clone)]
struct AttachCmd(Inbound);
#[derive(Message, Debug, Clone, Copy)]
struct DetachCmd(ClientId);
#[derive(Message, Debug, Clone, Copy)]
struct InputCmd(ClientId, Input);
#[derive(Message, Debug, Clone, Copy)]
struct AckCmd(ClientId, StateAck);

/// Steps of Ingest other systems of the engine are ordered against.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IngestStep {
    Attach,
    /// Game actions: after the attaches' saved components are restored.
    Actions,
    Detach,
}

pub struct IngestPlugin;

impl Plugin for IngestPlugin {
    fn build(&self, app: &mut App) {
        let set = IngestSystems;
        let drained = timing_mark(app, set, "drain_inbox");
        let attached = timing_mark(app, set, "apply_attaches");
        let inputs = timing_mark(app, set, "apply_inputs");
        let detached = timing_mark(app, set, "apply_detaches");
        app.init_resource::<AckInbox>()
            .add_message::<AttachCmd>()
            .add_message::<DetachCmd>()
            .add_message::<InputCmd>()
            .add_message::<AckCmd>()
            .add_systems(
                Update,
                (
                    drain_inbox,
                    drained,
                    apply_attaches.in_set(IngestStep::Attach),
                    attached,
                    apply_inputs,
                    apply_acks,
                    crate::game::apply_actions.in_set(IngestStep::Actions),
                    inputs,
                    apply_detaches.in_set(IngestStep::Detach),
                    detached,
                )
                    .chain()
                    .in_set(IngestSystems),
            );
    }
}

fn drain_inbox(
    mut inbox: ResMut<Inbox>,
    mut attach: MessageWriter<AttachCmd>,
    mut detach: MessageWriter<DetachCmd>,
    mut input: MessageWriter<InputCmd>,
    mut ack: MessageWriter<AckCmd>,
    mut actions: ResMut<crate::game::PendingActions>,
) {
    for cmd in inbox.pending.drain(..) {
        match cmd {
            Inbound::Attach { .. } => {
                attach.write(AttachCmd(cmd));
            }
            Inbound::Detach { client } => {
                detach.write(DetachCmd(client));
            }
            Inbound::Input { client, input: i } => {
                input.write(InputCmd(client, i));
            }
            Inbound::Ack { client, ack: a } => {
                ack.write(AckCmd(client, a));
            }
            Inbound::Action {
                client,
                kind,
                payload,
            } => actions.0.push((client, kind, payload)),
        }
    }
}

fn apply_attaches(
    mut commands: Commands,
    mut reader: MessageReader<AttachCmd>,
    mut dir: ResMut<Directory>,
    mut counters: ResMut<Counters>,
    mut out: ResMut<SceneOutbox>,
    info: Res<SceneInfo>,
    tick: Res<TickCount>,
) {
    for AttachCmd(cmd) in reader.read() {
        let Inbound::Attach {
            client,
            avatar,
            state,
            figure,
        } = cmd
        else {
            continue;
        };
        let (client, avatar) = (*client, *avatar);
        let reason = if dir.clients.contains_key(&client) {
            Some("client already attached")
        } else if dir.avatars.contains_key(&avatar) {
            Some("avatar already in this scene")
        } else if dir.clients.len() >= info.settings.max_population as usize {
            Some("scene full")
        } else {
            None
        };
        if let Some(reason) = reason {
            counters.attach_rejected += 1;
            out.events.push(SceneEvent::AttachRejected {
                client,
                avatar,
                reason,
            });
            continue;
        }
        // A saved position is trusted only if it is still a legal place.
        let spawn_at = |i: u64| info.def.spawn[(i % info.def.spawn.len() as u64) as usize].pos;
        let (pos, pose) = match state {
            Some(s) if info.is_walkable(s.position) => (
                s.position,
                Pose {
                    heading: if s.heading.is_finite() {
                        s.heading
                    } else {
                        0.0
                    },
                    action: s.action,
                    mount: s.mount,
                },
            ),
            _ => (spawn_at(avatar), Pose::default()),
        };
        let net = dir.alloc_net(tick.0);
        let saved = state
            .as_ref()
            .map(|_| (pos, pose.heading, pose.action, pose.mount));
        let save = SaveTrack {
            saved,
            dirty: saved.is_none(),
        };
        let radius = info.settings.aoi_radius;
        let mut spawned = commands.spawn(pc_bundle(
            net, client, avatar, *figure, pos, pose, radius, save,
        ));
        // The saved persistent components come back in this Ingest
        // (`persist_game`).
        if let Some(s) = state
            && !s.game.is_empty()
        {
            spawned.insert(RestoreFields(s.game.clone()));
        }
        let entity = spawned.id();
        dir.clients.insert(client, entity);
        dir.avatars.insert(avatar, entity);
        out.events.push(SceneEvent::Attached {
            client,
            avatar,
            net_id: net,
        });
    }
}

/// Everything a player character is made of: what an attach spawns (and the
/// walkers of `tessera sim`, which add a `Wander`). `in_portal` starts true
/// so that arriving on a portal does not bounce the PC straight back.
pub(crate) fn pc_bundle(
    net: NetId,
    client: ClientId,
    avatar: AvatarId,
    figure: u32,
    pos: [f32; 2],
    pose: Pose,
    radius: f32,
    save: SaveTrack,
) -> impl Bundle {
    (
        Net(net),
        Position(pos),
        Velocity::default(),
        pose,
        // A restored mount is asked for again, so the movement plugin
        // checks it in this scene too.
        Intent {
            mount: pose.mount,
            ..Intent::default()
        },
        Pc {
            client,
            avatar,
            figure,
            ack: 0,
            in_portal: true,
            inputs: 0,
            inputs_tick: 0,
        },
        Sight { radius },
        Interest::default(),
        ClientView::default(),
        save,
        GameFields::default(),
    )
}

fn apply_inputs(
    mut reader: MessageReader<InputCmd>,
    dir: Res<Directory>,
    info: Res<SceneInfo>,
    tick: Res<TickCount>,
    mut counters: ResMut<Counters>,
    mut acks: ResMut<AckInbox>,
    mut pcs: Query<(&mut Intent, &mut Pose, &mut Pc, &mut ClientView)>,
) {
    let cap = info.settings.max_inputs_per_tick;
    for InputCmd(client, input) in reader.read() {
        let Some((mut intent, mut pose, mut pc, mut view)) =
            dir.clients.get(client).and_then(|&e| pcs.get_mut(e).ok())
        else {
            counters.unknown_client += 1;
            continue;
        };
        // The per-tick count lives in the `Pc`: O(1) whatever the order
        // the clients' inputs arrive in.
        if pc.inputs_tick != tick.0 {
            pc.inputs_tick = tick.0;
            pc.inputs = 0;
        }
        pc.inputs += 1;
        if pc.inputs > cap {
            counters.inputs_flood_dropped += 1;
            continue;
        }
        if !(input.dir[0].is_finite() && input.dir[1].is_finite() && input.heading.is_finite()) {
            counters.inputs_invalid_dropped += 1;
            continue;
        }
        if let Some(earlier) = take_ack(
            &info,
            tick.0,
            *client,
            &input.state_ack,
            &mut acks,
            &mut counters,
        ) && earlier.apply(&mut view.ring).is_err()
        {
            counters.acks_stale += 1;
        }
        let len2 = input.dir[0] * input.dir[0] + input.dir[1] * input.dir[1];
        let dir = if len2 > 1.0 + 1e-4 {
            counters.inputs_speed_clamped += 1;
            let len = len2.sqrt();
            [input.dir[0] / len, input.dir[1] / len]
        } else {
            input.dir
        };
        // The mount is only asked for here: whether the PC may ride it is
        // the movement plugin's call (`movement::check_mounts`).
        *intent = Intent {
            dir,
            mode: input.mode,
            mount: input.mount,
        };
        pose.heading = input.heading.rem_euclid(std::f32::consts::TAU);
        pose.action = input.action;
        pc.ack = pc.ack.max(input.seq);
    }
}

/// Acknowledgements sent alone (the client had no input to carry them).
/// Only one displacing an earlier one of the same tick needs the client's
/// view here (rare); the rest wait in the [`AckInbox`].
fn apply_acks(
    mut reader: MessageReader<AckCmd>,
    dir: Res<Directory>,
    info: Res<SceneInfo>,
    tick: Res<TickCount>,
    mut counters: ResMut<Counters>,
    mut acks: ResMut<AckInbox>,
    mut views: Query<&mut ClientView>,
) {
    for AckCmd(client, ack) in reader.read() {
        let Some(earlier) = take_ack(&info, tick.0, *client, ack, &mut acks, &mut counters) else {
            continue;
        };
        match dir.clients.get(client).and_then(|&e| views.get_mut(e).ok()) {
            Some(mut view) => {
                if earlier.apply(&mut view.ring).is_err() {
                    counters.acks_stale += 1;
                }
            }
            None => counters.unknown_client += 1,
        }
    }
}

/// Takes one acknowledgement for `client`: one of a tick still to come is
/// invalid; one of another placement, or (found when applied) of a tick no
/// packet of this stay went in, is stale; both are counted and dropped.
/// A valid one waits in the [`AckInbox`] for the client's packet build
/// (which counts it stale, or its client unknown, there); returned is the
/// one it displaces, taken earlier this tick, which the caller applies to
/// the view now so that acknowledgements apply in arrival order.
fn take_ack(
    info: &SceneInfo,
    now: u64,
    client: ClientId,
    ack: &StateAck,
    acks: &mut AckInbox,
    counters: &mut Counters,
) -> Option<PendingAck> {
    if ack.tick == 0 {
        return None;
    }
    if u64::from(ack.tick) > now {
        counters.acks_invalid += 1;
        return None;
    }
    if (ack.scene, ack.epoch) != (info.tag, info.settings.epoch) {
        counters.acks_stale += 1;
        return None;
    }
    acks.insert(
        client,
        PendingAck {
            tick: ack.tick,
            mask: ack.mask,
        },
    )
}

fn apply_detaches(
    mut commands: Commands,
    mut reader: MessageReader<DetachCmd>,
    mut dir: ResMut<Directory>,
    mut counters: ResMut<Counters>,
    mut out: ResMut<SceneOutbox>,
    mut saves: ResMut<PendingSaves>,
    tick: Res<TickCount>,
    mut acks: ResMut<AckInbox>,
    mut stats: ResMut<PersistStats>,
    pcs: Query<(&Pc, &Position, &Pose, &GameFields)>,
) {
    for DetachCmd(client) in reader.read() {
        let Some(entity) = dir.clients.remove(client) else {
            counters.unknown_client += 1;
            continue;
        };
        // Its view goes with it.
        acks.remove(client);
        if let Ok((pc, pos, pose, fields)) = pcs.get(entity) {
            dir.avatars.remove(&pc.avatar);
            let game = fields.to_save(&mut stats);
            let state = crate::persist::pc_state(pc, pos, pose, false, tick.0, game);
            saves.0.push(state.clone());
            out.events.push(SceneEvent::Detached {
                client: *client,
                state,
            });
        }
        commands.entity(entity).try_despawn();
    }
}
