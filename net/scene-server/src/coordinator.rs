//! The coordinator side: connect, register with what is hosted, heartbeat
//! the load, report ready scenes, obey placements and attaches; reconnect
//! when the link drops; on shutdown flush, deregister and close.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument as _;

use tessera_host::{RunnerPhase, SceneHost, SystemClock};
use tessera_link::{Connector, Link, LinkReceiver, LinkSender, bump, lock};
use tessera_proto::SessionId;
use tessera_sim::{ClientId, Inbound};
use tessera_wire::{
    AttachedSession, Epoch, Heartbeat, LinkMsg, Placement, Register, SceneLoad, WirePcState,
};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::SceneServerError;
use crate::placing::{
    expire_assemblies, forget_assembly, hold_for_assembly, on_place_scene, on_scene_states,
};
use crate::state::{Route, ServerState};

/// The coordinator side: connect, register, obey, report; reconnect when
/// the link drops; on shutdown flush and deregister.
pub(crate) async fn coordinator_loop(
    shared: Arc<ServerState>,
    mut connector: Connector,
    link_addr: SocketAddr,
    capacity: u32,
    mut heartbeat: Duration,
    stop: CancellationToken,
    shutdown: CancellationToken,
) -> Result<(), SceneServerError> {
    let mut seq = 0u64;
    loop {
        let link = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = shutdown.cancelled() => {
                // No coordinator: flush the scenes into the sink anyway (a
                // later run cannot use it, but nothing is written stale).
                finish(&shared, None).await;
                return Ok(());
            }
            l = connector.connect() => l,
        };
        let link = match link {
            Ok(l) => l,
            Err(e) if e.is_transient() => continue,
            Err(e) => {
                error!(error = %e, "coordinator refused this scene server");
                return Err(SceneServerError::Refused(e));
            }
        };
        let (sender, mut receiver) = link.split();
        // Batches the last link carried without an ack go out again here.
        shared.sink.requeue();
        // Placements half received on the last link: the coordinator sends
        // them again, whole, once this link registers.
        lock(&shared.assembly).clear();
        if !register(&shared, &sender, link_addr, capacity).await {
            continue;
        }
        info!(coordinator = %connector.addr(), "registered with the coordinator");
        let mut beat = interval(heartbeat);
        let mut poll = interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = shutdown.cancelled() => {
                    finish(&shared, Some((sender, receiver))).await;
                    return Ok(());
                }
                msg = receiver.recv() => match msg {
                    Some(LinkMsg::Registered { heartbeat_ms }) => {
                        shared.registered.store(true, Ordering::Relaxed);
                        let hb = Duration::from_millis(u64::from(heartbeat_ms.max(10)));
                        if hb != heartbeat {
                            heartbeat = hb;
                            beat = tokio::time::interval(heartbeat);
                        }
                    }
                    Some(msg) => on_coordinator_msg(&shared, &sender, msg).await,
                    None => break,
                },
                _ = beat.tick() => {
                    seq += 1;
                    send_heartbeat(&shared, &sender, seq);
                    reap_failed(&shared).await;
                }
                _ = poll.tick() => {
                    report_ready(&shared, &sender);
                    report_released(&shared, &sender);
                    expire_assemblies(&shared);
                }
                _ = shared.sink.notified() => shared.sink.drain(&sender),
                _ = shared.events_ready.notified() => shared.drain_events(&sender),
            }
            // Whatever did not fit before may fit now.
            shared.drain_events(&sender);
            shared.sink.drain(&sender);
        }
        shared.registered.store(false, Ordering::Relaxed);
        warn!("coordinator link lost; reconnecting");
    }
}

fn interval(period: Duration) -> Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// Registers on a new link with the placements held, so a restarted
/// coordinator rebuilds placement without hosting a scene twice. False if
/// the link is already gone.
async fn register(
    shared: &ServerState,
    sender: &LinkSender,
    link_addr: SocketAddr,
    capacity: u32,
) -> bool {
    lock(&shared.ready).clear();
    // A scene dropped for a move on the old link: the coordinator gives it
    // up when this registration does not list it.
    lock(&shared.releasing).clear();
    let (hosted, game) = {
        let host = lock(&shared.host);
        let hosted = host
            .placements()
            .into_iter()
            .map(|(scene, epoch)| Placement { scene, epoch })
            .collect();
        (hosted, host.game().name().to_owned())
    };
    sender
        .send(&LinkMsg::Register(Register {
            addr: link_addr.to_string(),
            capacity,
            hosted,
            game,
        }))
        .await
        .is_ok()
}

/// The load of every scene still alive, and of every placement whose
/// states are still arriving (loading, so the coordinator keeps it).
fn send_heartbeat(shared: &ServerState, sender: &LinkSender, seq: u64) {
    let mut scenes: Vec<SceneLoad> = lock(&shared.host)
        .load()
        .iter()
        .filter(|l| l.phase != RunnerPhase::Failed && l.phase != RunnerPhase::Stopped)
        .map(|l| l.to_wire())
        .collect();
    scenes.extend(
        lock(&shared.assembly)
            .placements()
            .into_iter()
            .map(|(scene, epoch)| SceneLoad {
                scene,
                epoch,
                population: 0,
                tick_p99_us: 0,
            }),
    );
    let _ = sender.try_send(&LinkMsg::Heartbeat(Heartbeat {
        seq,
        scenes,
        ..Heartbeat::default()
    }));
}

/// Scenes whose thread panicked are dropped so the coordinator re-places them.
async fn reap_failed(shared: &Arc<ServerState>) {
    let failed: Vec<String> = lock(&shared.host)
        .load()
        .into_iter()
        .filter(|l| l.phase == RunnerPhase::Failed)
        .map(|l| l.scene)
        .collect();
    for scene in failed {
        error!(%scene, "scene thread failed; dropping it");
        drop_blocking(shared, scene, true).await;
    }
}

/// Drops a scene on the blocking pool (it joins the scene thread).
pub(crate) async fn drop_blocking(shared: &Arc<ServerState>, scene: String, stale: bool) {
    let s = Arc::clone(shared);
    let _ = tokio::task::spawn_blocking({
        let span = tracing::Span::current();
        let f = move || s.drop_scene(&scene, stale);
        move || span.in_scope(f)
    })
    .await;
}

/// Tells the coordinator of every scene dropped on its word whose saved
/// states are all acknowledged durable: a planned move may go on.
fn report_released(shared: &ServerState, sender: &LinkSender) {
    let mut releasing = lock(&shared.releasing);
    releasing.retain(|(scene, epoch)| {
        if shared.sink.holds(scene) {
            return true;
        }
        let sent = sender.try_send(&LinkMsg::SceneReleased {
            scene: scene.clone(),
            epoch: *epoch,
        });
        if sent.is_ok() {
            info!(%scene, epoch, "scene released: its saves are durable");
        }
        sent.is_err()
    });
}

/// Tells the coordinator, once per link, of every scene now running.
fn report_ready(shared: &ServerState, sender: &LinkSender) {
    let running: Vec<(String, Epoch)> = lock(&shared.host)
        .load()
        .into_iter()
        .filter(|l| l.phase == RunnerPhase::Running)
        .map(|l| (l.scene, l.epoch))
        .collect();
    let mut ready = lock(&shared.ready);
    for (scene, epoch) in running {
        if ready.contains(&(scene.clone(), epoch)) {
            continue;
        }
        if sender
            .try_send(&LinkMsg::SceneReady {
                scene: scene.clone(),
                epoch,
            })
            .is_ok()
        {
            info!(%scene, epoch, "scene ready");
            ready.insert((scene, epoch));
        }
    }
}

/// How long a scene thread may take to hand over a snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// Asks the scene's thread for a snapshot and, without holding up the link,
/// answers with it (postcard-encoded) or with `None`.
fn on_snapshot_request(shared: &ServerState, sender: &LinkSender, request: u64, scene: String) {
    let rx = lock(&shared.host).runner(&scene).and_then(|r| r.snapshot());
    let sender = sender.clone();
    tokio::spawn(
        (async move {
            let snapshot = match rx {
                Some(rx) => match tokio::time::timeout(SNAPSHOT_WAIT, rx).await {
                    Ok(Ok(s)) => postcard::to_allocvec(&s).ok(),
                    _ => None,
                },
                None => None,
            };
            let _ = sender.try_send(&LinkMsg::Snapshot {
                request,
                scene,
                snapshot,
            });
        })
        .in_current_span(),
    );
}

async fn on_coordinator_msg(shared: &Arc<ServerState>, sender: &LinkSender, msg: LinkMsg) {
    match msg {
        LinkMsg::PlaceScene {
            scene,
            epoch,
            chunks,
            states,
            objects,
        } => on_place_scene(shared, sender, scene, epoch, chunks, states, objects).await,
        LinkMsg::SceneStates {
            scene,
            epoch,
            seq,
            states,
        } => on_scene_states(shared, scene, epoch, seq, states),
        LinkMsg::SaveAck { through } => shared.sink.ack(through),
        LinkMsg::SnapshotRequest { request, scene } => {
            on_snapshot_request(shared, sender, request, scene);
        }
        LinkMsg::DropScene { scene, epoch } => {
            if forget_assembly(shared, &scene, epoch) == Some(epoch) {
                // Dropped before it was placed: nothing of it was saved.
                lock(&shared.releasing).push((scene.clone(), epoch));
                report_released(shared, sender);
            }
            if shared.epoch_of(&scene) == Some(epoch) {
                drop_blocking(shared, scene.clone(), false).await;
                lock(&shared.releasing).push((scene, epoch));
                shared.sink.drain(sender);
                report_released(shared, sender);
            }
        }
        LinkMsg::EpochStale { scene, current } => {
            forget_assembly(shared, &scene, current.saturating_sub(1));
            if shared.epoch_of(&scene).is_some_and(|e| e < current) {
                warn!(%scene, current, "our placement is stale; dropping it without writing");
                drop_blocking(shared, scene, true).await;
            } else {
                // A stale batch from an earlier placement here: nothing to keep.
                shared.sink.discard(&scene);
            }
        }
        msg @ (LinkMsg::AttachAt { .. }
        | LinkMsg::DetachAt { .. }
        | LinkMsg::SyncAttached { .. }) => {
            if let Some(msg) = hold_for_assembly(shared, msg) {
                obey_attachment(shared, msg);
            }
        }
        LinkMsg::Refused { reason } => warn!(%reason, "the coordinator refused a message"),
        other => debug!(
            kind = other.kind(),
            "unexpected message from the coordinator"
        ),
    }
}

/// An attach, detach or sync of attached sessions: obeyed if it is for
/// the hosted placement, counted stale otherwise.
pub(crate) fn obey_attachment(shared: &ServerState, msg: LinkMsg) {
    match msg {
        LinkMsg::AttachAt {
            scene,
            epoch,
            session,
            avatar,
            gate,
            state,
        } => {
            if current_epoch(shared, &scene, epoch) {
                attach(shared, &scene, session, avatar, gate, state);
            }
        }
        LinkMsg::DetachAt {
            scene,
            epoch,
            session,
            ..
        } => {
            if current_epoch(shared, &scene, epoch) {
                shared.command(&scene, Inbound::Detach { client: session.0 });
            }
        }
        LinkMsg::SyncAttached {
            scene,
            epoch,
            attached,
        } => {
            if current_epoch(shared, &scene, epoch) {
                sync_attached(shared, &scene, attached);
            }
        }
        other => debug!(kind = other.kind(), "not an attachment message"),
    }
}

/// Whether `epoch` is the hosted placement of `scene`; a command for
/// another one is counted stale.
fn current_epoch(shared: &ServerState, scene: &str, epoch: Epoch) -> bool {
    let current = shared.epoch_of(scene) == Some(epoch);
    if !current {
        bump(&shared.counters.commands_stale);
    }
    current
}

/// Routes the session's replication to `gate` and queues the attach. A
/// session is the scene's client of the same id.
fn attach(
    shared: &ServerState,
    scene: &str,
    SessionId(session): SessionId,
    avatar: u64,
    gate: String,
    state: Option<WirePcState>,
) {
    lock(&shared.routes).clients.insert(
        session,
        Route {
            scene: scene.to_owned(),
            gate,
        },
    );
    shared.command(
        scene,
        Inbound::Attach {
            client: session,
            avatar,
            state: state.map(Into::into),
            figure: 0,
        },
    );
}

/// Makes `scene`'s attached clients exactly `attached`: detaches (saving)
/// every other routed client, attaches the missing ones (idempotent).
fn sync_attached(shared: &ServerState, scene: &str, attached: Vec<AttachedSession>) {
    let keep: BTreeSet<ClientId> = attached.iter().map(|a| a.session.0).collect();
    let extra: Vec<ClientId> = lock(&shared.routes)
        .clients
        .iter()
        .filter(|(c, r)| r.scene == scene && !keep.contains(c))
        .map(|(c, _)| *c)
        .collect();
    for client in extra {
        shared.command(scene, Inbound::Detach { client });
    }
    for a in attached {
        attach(shared, scene, a.session, a.avatar, a.gate, None);
    }
}

/// Shutdown: stop every scene with a final flush, hand everything pending to
/// the coordinator, deregister, close.
async fn finish(shared: &Arc<ServerState>, link: Option<(LinkSender, LinkReceiver)>) {
    let s = Arc::clone(shared);
    let reports = tokio::task::spawn_blocking({
        let span = tracing::Span::current();
        let f = move || {
            let mut host = lock(&s.host);
            let placeholder = SceneHost::new(
                s.settings.clone(),
                Arc::new(SystemClock::new()),
                Arc::clone(&s.sink) as Arc<dyn tessera_host::SaveSink>,
            )
            .with_game(Arc::clone(host.game()));
            std::mem::replace(&mut *host, placeholder).shutdown()
        };
        move || span.in_scope(f)
    })
    .await
    .unwrap_or_default();
    for (scene, r) in &reports {
        match r {
            Ok(r) => info!(%scene, ticks = r.load.ticks, saves = r.load.saves, "scene flushed"),
            Err(e) => warn!(%scene, error = %e, "scene stopped with an error"),
        }
    }
    let Some((sender, mut receiver)) = link else {
        if shared.sink.has_pending() {
            warn!("coordinator unreachable at shutdown: the last flush is lost");
        }
        return;
    };
    // Everything goes, and waits (a while) to be confirmed durable.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        shared.drain_events(&sender);
        shared.sink.drain(&sender);
        if !shared.sink.has_pending() && lock(&shared.events).is_empty() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                warn!(
                    unacked = shared.sink.stats().unacked_states,
                    "shutting down with saves the coordinator has not confirmed durable"
                );
                break;
            }
            msg = receiver.recv() => match msg {
                Some(LinkMsg::SaveAck { through }) => shared.sink.ack(through),
                Some(LinkMsg::EpochStale { scene, .. }) => shared.sink.discard(&scene),
                Some(_) => {}
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    let _ = sender
        .send(&LinkMsg::Deregister {
            reason: "shutdown".into(),
        })
        .await;
    let link = Link::from_parts(sender, receiver);
    let reason = link.close().await;
    info!(?reason, "deregistered; coordinator link closed");
}
