//! Scene host tests. Time is a [`ManualClock`] moved by the test; every wait
//! is on a condition with a deadline, never a fixed sleep.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_sim::testing::{decode, input};
use tessera_sim::{Inbound, MoveMode, PcState, SceneDef, SceneEvent, SceneSettings};

use super::*;

const PERIOD: Duration = Duration::from_millis(50); // 20 Hz, the open field's rate
const WAIT: Duration = Duration::from_secs(20);

fn field(name: &str) -> SceneDef {
    SceneDef::open_field(name, 200.0)
}

fn settings() -> RunnerSettings {
    RunnerSettings {
        report_every_ticks: 1,
        scene: SceneSettings {
            flush_interval_ticks: Some(2),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn host(clock: &ManualClock, sink: &MemorySink) -> SceneHost {
    SceneHost::new(settings(), Arc::new(clock.clone()), Arc::new(sink.clone()))
}

/// Waits until `cond` holds, or panics after [`WAIT`] with `what`.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_ticks(h: &SceneHost, scene: &str, ticks: u64) -> LoadReport {
    let mut last = LoadReport::default();
    wait_for(&format!("{scene} at tick {ticks}"), || {
        last = h.runner(scene).unwrap().load();
        last.ticks >= ticks
    });
    last
}

/// Advances the clock one period at a time, waiting for each tick.
fn step(h: &SceneHost, clock: &ManualClock, scene: &str, periods: u64) -> LoadReport {
    let mut r = h.runner(scene).unwrap().load();
    for _ in 0..periods {
        clock.advance(PERIOD);
        r = wait_ticks(h, scene, r.ticks + 1);
    }
    r
}

fn saved(avatar: u64, pos: [f32; 2]) -> PcState {
    PcState {
        avatar,
        position: pos,
        heading: 1.0,
        online: false,
        tick: 3,
        ..Default::default()
    }
}

fn attach(client: u64, avatar: u64) -> Inbound {
    Inbound::Attach {
        client,
        avatar,
        state: None,
        figure: 9,
    }
}

/// Pops outputs until `pred` holds for one event, returning every batch seen.
fn events_until(q: &OutputQueue, mut pred: impl FnMut(&SceneEvent) -> bool) -> Vec<TickBatch> {
    let mut seen = Vec::new();
    let until = Instant::now() + WAIT;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let b = q.pop_timeout(left).expect("an output before the deadline");
        let hit = b.events.iter().any(&mut pred);
        seen.push(b);
        if hit {
            return seen;
        }
    }
}

#[test]
fn host_fixed_step_runs_one_tick_per_period_without_drift() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    clock.set(Duration::from_secs(100));
    let mut h = host(&clock, &sink);
    h.place("a", field("a"), 1, Vec::new()).unwrap();
    // Tick 0 of the schedule is due at once.
    let r = wait_ticks(&h, "a", 1);
    assert_eq!(r.phase, RunnerPhase::Running);
    let r = step(&h, &clock, "a", 40);
    assert_eq!(r.ticks, 41);
    assert_eq!(r.pacer.ticks, 41);
    assert_eq!(
        (r.pacer.late, r.pacer.caught_up, r.pacer.skipped),
        (0, 0, 0)
    );
    // Half a period more: nothing is due; the rest of the period: one tick.
    clock.advance(PERIOD / 2);
    std::thread::sleep(ManualClock::POLL * 20);
    assert_eq!(
        h.runner("a").unwrap().load().ticks,
        41,
        "no tick before its time"
    );
    clock.advance(PERIOD / 2);
    assert_eq!(wait_ticks(&h, "a", 42).ticks, 42);
    let report = h.drop_scene("a", false).unwrap();
    assert_eq!(report.load.phase, RunnerPhase::Stopped);
    assert_eq!(report.load.pacer.late, 0);
}

#[test]
fn host_stall_catches_up_to_the_burst_then_skips_counting_exactly() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = SceneHost::new(
        RunnerSettings {
            max_burst: 3,
            ..settings()
        },
        Arc::new(clock.clone()),
        Arc::new(sink),
    );
    h.place("a", field("a"), 1, Vec::new()).unwrap();
    wait_ticks(&h, "a", 1);
    step(&h, &clock, "a", 5);
    // A stall of 5 periods: 5 ticks are due at one wake-up, 4 of them a full
    // period late; 3 run (2 caught up), 2 are skipped.
    clock.advance(PERIOD * 5);
    let r = wait_ticks(&h, "a", 6 + 3);
    assert_eq!(r.ticks, 9);
    let p = r.pacer;
    assert_eq!(
        (p.ticks, p.late, p.caught_up, p.skipped, p.late_wakeups),
        (9, 4, 2, 2, 1)
    );
    // Back on the original grid, on time.
    let r = step(&h, &clock, "a", 3);
    assert_eq!((r.ticks, r.pacer.late), (12, 4));
    h.drop_scene("a", false).unwrap();
}

#[test]
fn host_commands_in_events_and_decodable_packets_out() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place("a", field("a"), 3, Vec::new()).unwrap();
    let out = h.output("a").unwrap();
    h.command("a", attach(1, 11)).unwrap();
    h.command("a", input(1, 1, [1.0, 0.0], MoveMode::Run))
        .unwrap();
    wait_ticks(&h, "a", 1);
    clock.advance(PERIOD);
    let seen = events_until(&out, |e| {
        matches!(e, SceneEvent::Attached { client: 1, .. })
    });
    let b = seen.last().unwrap();
    assert_eq!(b.epoch, 3);
    let net_id = b
        .events
        .iter()
        .find_map(|e| match e {
            SceneEvent::Attached {
                client: 1,
                avatar: 11,
                net_id,
            } => Some(*net_id),
            _ => None,
        })
        .unwrap();
    // Packets for client 1 decode, and it sees itself.
    let mut acked = false;
    for _ in 0..5 {
        clock.advance(PERIOD);
        let b = out.pop_timeout(WAIT).expect("a tick's output");
        let bytes = b.packets.get(1).expect("a packet for client 1");
        let p = decode(bytes);
        assert_eq!(p.tick as u64, b.tick);
        if let Some(you) = p.you {
            assert_eq!(you.id, net_id);
        }
        acked |= p.ack == 1;
    }
    assert!(acked, "input 1 acknowledged");
    assert_eq!(
        h.command("b", attach(2, 2)),
        Err(CommandError::UnknownScene("b".into()))
    );
    h.drop_scene("a", false).unwrap();
}

#[test]
fn host_flooding_the_command_queue_refuses_and_counts_while_ticking_goes_on() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = SceneHost::new(
        RunnerSettings {
            command_capacity: 8,
            ..settings()
        },
        Arc::new(clock.clone()),
        Arc::new(sink),
    );
    h.place("a", field("a"), 1, Vec::new()).unwrap();
    wait_ticks(&h, "a", 1);
    let resume = h.runner("a").unwrap().pause();
    let mut ok = 0;
    let mut full = 0;
    for i in 0..1000u32 {
        match h.command("a", input(1, i, [0.0, 1.0], MoveMode::Walk)) {
            Ok(()) => ok += 1,
            Err(CommandError::Full(_)) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // Inputs fill three quarters of the queue; the rest is kept for
    // attaches and detaches, which an input flood must not crowd out.
    assert_eq!((ok, full), (6, 994));
    assert_eq!(h.command("a", attach(2, 2)), Ok(()));
    assert_eq!(h.command("a", attach(3, 3)), Ok(()));
    assert_eq!(
        h.command("a", attach(4, 4)),
        Err(CommandError::Full("a".into()))
    );
    assert_eq!(h.runner("a").unwrap().load().commands_refused, 995);
    drop(resume);
    // The queue drains and the tick keeps running.
    let r = step(&h, &clock, "a", 3);
    assert_eq!(r.ticks, 4);
    assert_eq!(r.commands_refused, 995);
    // Drained, the queue takes inputs again.
    assert_eq!(
        h.command("a", input(1, 2000, [0.0, 1.0], MoveMode::Walk)),
        Ok(())
    );
    // A sender that never lets up (another thread, as fast as it can) does
    // not keep the tick from running. (Each wake-up drains at most one
    // queue's worth; this test does not manage to outpace the drain, so it
    // checks the outcome, not that bound.)
    let stop = std::sync::atomic::AtomicBool::new(false);
    let r = std::thread::scope(|scope| {
        let flooder = scope.spawn(|| {
            let mut seq = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                let _ = h.command("a", input(1, seq, [0.0, 1.0], MoveMode::Walk));
            }
        });
        let r = step(&h, &clock, "a", 5);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flooder.join().unwrap();
        r
    });
    assert_eq!(r.ticks, 9);
    // Whatever the flooder left queued is discarded at the stop and counted.
    let report = h.drop_scene("a", false).unwrap();
    assert!(report.load.commands_refused >= 995);
    assert!(report.commands_discarded <= 8);
}

#[test]
fn host_saves_every_flush_interval_with_the_epoch_and_flushes_all_online_pcs_on_stop() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place("a", field("a"), 7, Vec::new()).unwrap();
    for c in 1..=3 {
        h.command("a", attach(c, 100 + c)).unwrap();
        h.command("a", input(c, 1, [1.0, 0.5], MoveMode::Walk))
            .unwrap();
    }
    wait_ticks(&h, "a", 1);
    let r = step(&h, &clock, "a", 10);
    assert_eq!((r.ticks, r.population), (11, 3));
    assert!(r.tick_p99_us > 0 && r.tick_p99_total_us > 0, "{r:?}");
    let wire = r.to_wire();
    assert_eq!(
        (wire.scene.as_str(), wire.epoch, wire.population),
        ("a", 7, 3)
    );
    let batches = sink.batches();
    // Flush interval 2: ticks 2, 4, …, 10; the PCs keep walking, so each is dirty.
    let ticks: Vec<u64> = batches.iter().map(|b| b.batch.tick).collect();
    assert_eq!(ticks, vec![2, 4, 6, 8, 10]);
    for b in &batches {
        assert_eq!((b.epoch, b.batch.scene.as_str()), (7, "a"));
        let avatars: Vec<u64> = b.batch.states.iter().map(|s| s.avatar).collect();
        assert_eq!(avatars, vec![101, 102, 103]);
    }
    assert_eq!(r.saves, 5);
    // Client 3 leaves: its final state is saved at once (offline).
    h.command("a", Inbound::Detach { client: 3 }).unwrap();
    let r = step(&h, &clock, "a", 1);
    assert_eq!(r.population, 2);
    let last = sink.batches().pop().unwrap();
    assert_eq!(last.batch.tick, 12);
    assert!(
        last.batch
            .states
            .iter()
            .any(|s| s.avatar == 103 && !s.online)
    );

    let before = sink.batches().len();
    let report = h.drop_scene("a", false).unwrap();
    assert_eq!((report.final_states, report.final_saved), (2, true));
    let all = sink.batches();
    assert_eq!(all.len(), before + 1);
    let fin = all.last().unwrap();
    assert_eq!((fin.epoch, fin.batch.tick), (7, 12));
    let states: Vec<(u64, bool)> = fin
        .batch
        .states
        .iter()
        .map(|s| (s.avatar, s.online))
        .collect();
    assert_eq!(states, vec![(101, true), (102, true)]);
    assert!(
        fin.batch.states.iter().all(|s| s.position[0] > 100.0),
        "walked east"
    );
}

#[test]
fn host_drop_stale_writes_nothing_after_the_drop() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place("a", field("a"), 2, Vec::new()).unwrap();
    h.command("a", attach(1, 1)).unwrap();
    h.command("a", input(1, 1, [1.0, 0.0], MoveMode::Walk))
        .unwrap();
    wait_ticks(&h, "a", 1);
    step(&h, &clock, "a", 4);
    let before = sink.batches().len();
    assert_eq!(before, 2);
    // Time passes (flushes due) while the drop is requested.
    clock.advance(PERIOD * 3);
    let report = h.drop_scene("a", true).unwrap();
    assert_eq!((report.final_states, report.final_saved), (0, false));
    // Whatever ticks ran before the request may have saved; nothing after.
    let after = sink.batches().len();
    assert_eq!(after, before + report.load.saves as usize - 2);
    clock.advance(PERIOD * 10);
    std::thread::sleep(ManualClock::POLL * 20);
    assert_eq!(sink.batches().len(), after);
    assert!(h.runner("a").is_none());
    assert_eq!(
        h.command("a", attach(2, 2)),
        Err(CommandError::UnknownScene("a".into()))
    );
}

#[test]
fn host_a_stale_epoch_is_refused_by_the_sink_and_counted() {
    // Two hosts of one scene (a paused server that resumed) sharing one
    // data service, each with its own clock.
    let sink = MemorySink::new();
    let (new_clock, old_clock) = (ManualClock::new(), ManualClock::new());
    let mut new_host = host(&new_clock, &sink);
    let mut old_host = host(&old_clock, &sink);
    new_host.place("a", field("a"), 5, Vec::new()).unwrap();
    old_host.place("a", field("a"), 4, Vec::new()).unwrap();
    new_host.command("a", attach(1, 1)).unwrap();
    old_host.command("a", attach(1, 1)).unwrap();
    wait_ticks(&new_host, "a", 1);
    wait_ticks(&old_host, "a", 1);
    // The new host flushes first (tick 2): the fence rises to epoch 5.
    let r = step(&new_host, &new_clock, "a", 1);
    assert_eq!(r.saves, 1);
    let r = step(&old_host, &old_clock, "a", 1);
    assert_eq!((r.saves, r.save_errors), (0, 1));
    assert_eq!(sink.refused(), 1);
    assert!(sink.batches().iter().all(|b| b.epoch == 5));
    let old = old_host.drop_scene("a", false).unwrap();
    assert!(!old.final_saved, "the stale final batch is refused");
    assert_eq!(old.load.save_errors, 2);
    assert!(new_host.drop_scene("a", false).unwrap().final_saved);
}

#[test]
fn host_loaded_states_are_used_by_attaches_without_a_state() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place(
        "a",
        field("a"),
        1,
        vec![saved(11, [30.0, 40.0]), saved(12, [50.0, 60.0])],
    )
    .unwrap();
    let r = wait_ticks(&h, "a", 1);
    assert_eq!((r.offline, r.population), (2, 0));
    h.command("a", attach(1, 11)).unwrap();
    // An explicit state wins over the kept one.
    h.command(
        "a",
        Inbound::Attach {
            client: 2,
            avatar: 12,
            state: Some(saved(12, [70.0, 80.0])),
            figure: 0,
        },
    )
    .unwrap();
    let r = step(&h, &clock, "a", 1);
    assert_eq!((r.offline, r.population), (0, 2));
    // Detach and re-attach: the detached state is kept and reused.
    h.command("a", input(1, 1, [0.0, 1.0], MoveMode::Run))
        .unwrap();
    step(&h, &clock, "a", 2);
    h.command("a", Inbound::Detach { client: 1 }).unwrap();
    let r = step(&h, &clock, "a", 1);
    assert_eq!((r.offline, r.population), (1, 1));
    let left = sink
        .batches()
        .iter()
        .flat_map(|b| b.batch.states.clone())
        .rfind(|s| s.avatar == 11 && !s.online)
        .unwrap();
    assert!(left.position[1] > 40.0, "walked north: {left:?}");
    h.command("a", attach(3, 11)).unwrap();
    step(&h, &clock, "a", 1);
    let report = h.drop_scene("a", false).unwrap();
    let fin = sink.batches().pop().unwrap().batch.states;
    assert_eq!(report.final_states, 2);
    let pos = |a: u64| fin.iter().find(|s| s.avatar == a).unwrap().position;
    assert_eq!(pos(11), left.position, "re-attached where it left");
    assert_eq!(pos(12), [70.0, 80.0]);
}

#[test]
fn host_one_stalled_scene_does_not_delay_another() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place("slow", field("slow"), 1, Vec::new()).unwrap();
    h.place("fast", field("fast"), 1, Vec::new()).unwrap();
    wait_ticks(&h, "slow", 1);
    wait_ticks(&h, "fast", 1);
    // "slow" is stuck inside a tick; "fast" keeps its schedule exactly.
    let resume = h.runner("slow").unwrap().pause();
    let r = step(&h, &clock, "fast", 8);
    assert_eq!((r.ticks, r.pacer.late), (9, 0));
    assert_eq!(h.runner("slow").unwrap().load().ticks, 1);
    drop(resume);
    // "slow" wakes 8 periods late: burst of 4 (default), 4 skipped.
    let r = wait_ticks(&h, "slow", 5);
    assert_eq!(
        (r.ticks, r.pacer.late, r.pacer.caught_up, r.pacer.skipped),
        (5, 7, 3, 4)
    );
    let loads = h.load();
    let names: Vec<&str> = loads.iter().map(|l| l.scene.as_str()).collect();
    assert_eq!(names, vec!["fast", "slow"]);
    assert_eq!(h.placements(), vec![("fast".into(), 1), ("slow".into(), 1)]);
    for (scene, r) in h.shutdown() {
        assert!(r.is_ok(), "{scene}: {r:?}");
    }
}

#[test]
fn host_a_panicking_scene_is_reported_at_join_and_spares_the_others() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place("bad", field("bad"), 1, Vec::new()).unwrap();
    h.place("good", field("good"), 1, Vec::new()).unwrap();
    h.command("good", attach(1, 1)).unwrap();
    wait_ticks(&h, "bad", 1);
    h.runner("bad").unwrap().inject_panic();
    wait_for("the bad scene to fail", || {
        h.runner("bad").unwrap().load().phase == RunnerPhase::Failed
    });
    // Its output queue is closed: a consumer is told at once, not left waiting.
    let out = h.output("bad").unwrap();
    while out.try_pop().is_some() {}
    let t = Instant::now();
    assert!(out.pop_timeout(WAIT).is_none());
    assert!(t.elapsed() < WAIT / 2);
    match h.drop_scene("bad", false) {
        Err(DropError::Run(RunError::Panicked { scene, message })) => {
            assert_eq!(scene, "bad");
            assert!(message.contains("test hook"), "{message}");
        }
        other => panic!("expected a panic report, got {other:?}"),
    }
    let r = step(&h, &clock, "good", 2);
    assert_eq!(r.population, 1);
    assert!(h.drop_scene("good", false).unwrap().final_saved);
}

#[test]
fn host_refuses_bad_placements() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place("a", field("a"), 1, Vec::new()).unwrap();
    assert!(matches!(
        h.place("a", field("a"), 2, Vec::new()),
        Err(PlaceError::AlreadyHosted { epoch: 1, .. })
    ));
    assert!(matches!(
        h.place("b", field("a"), 2, Vec::new()),
        Err(PlaceError::NameMismatch { .. })
    ));
    let mut def = field("c");
    def.spawn.clear();
    assert!(matches!(
        h.place("c", def, 1, Vec::new()),
        Err(PlaceError::InvalidScene(_))
    ));
    assert!(matches!(
        h.drop_scene("zzz", false),
        Err(DropError::UnknownScene(_))
    ));
    assert_eq!(h.placements(), vec![("a".into(), 1)]);
}

#[test]
fn host_smoke_real_clock() {
    let sink = MemorySink::new();
    let mut h = SceneHost::new(
        RunnerSettings {
            scene: SceneSettings {
                tick_hz: Some(200),
                flush_interval_ticks: Some(5),
                ..Default::default()
            },
            ..settings()
        },
        Arc::new(SystemClock::new()),
        Arc::new(sink.clone()),
    );
    h.place("a", field("a"), 9, Vec::new()).unwrap();
    h.command("a", attach(1, 1)).unwrap();
    h.command("a", input(1, 1, [1.0, 0.0], MoveMode::Walk))
        .unwrap();
    wait_ticks(&h, "a", 20);
    let out = h.output("a").unwrap();
    assert!(out.try_pop().is_some());
    let report = h.drop_scene("a", false).unwrap();
    assert!(report.load.ticks >= 20);
    assert!(report.final_saved);
    assert!(sink.batches().iter().all(|b| b.epoch == 9));
}

#[test]
fn host_writer_sink_persists_through_the_store_and_fences_epochs() {
    use tessera_persistence::{NewAvatar, Store, Writer, WriterConfig};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path().join("t.redb")).unwrap());
    let account = store
        .register("host@tessera.invalid", "a host test password", None)
        .unwrap();
    let scene_id = store.create_scene("a").unwrap();
    let avatars = store
        .provision_avatars(
            account,
            &[NewAvatar {
                name: "walker".into(),
                figure: String::new(),
                scene: scene_id,
            }],
        )
        .unwrap();
    let avatar = avatars[0];
    let writer =
        Arc::new(Writer::spawn(Arc::clone(&store), WriterConfig::default(), |_| {}).unwrap());
    let ids = {
        let store = Arc::clone(&store);
        move |name: &str| store.scene_by_name(name).ok().flatten().map(|s| s.id)
    };
    let sink = Arc::new(WriterSink::new(Arc::clone(&writer), ids));
    let clock = ManualClock::new();

    // First placement: the avatar walks, the host stops with a final flush.
    let mut h = SceneHost::new(settings(), Arc::new(clock.clone()), sink.clone());
    let loaded = from_db_states(store.load_scene(scene_id).unwrap());
    assert!(loaded.is_empty());
    h.place("a", field("a"), 1, loaded).unwrap();
    h.command("a", attach(1, avatar)).unwrap();
    h.command("a", input(1, 1, [1.0, 0.0], MoveMode::Walk))
        .unwrap();
    wait_ticks(&h, "a", 1);
    step(&h, &clock, "a", 5);
    let report = h.drop_scene("a", false).unwrap();
    assert!(report.final_saved);
    writer.flush().unwrap();
    let rows = store.load_scene(scene_id).unwrap();
    assert_eq!(rows.len(), 1);
    let row = rows[0].clone();
    assert_eq!((row.avatar, row.online, row.tick), (avatar, true, 6));
    assert!(row.position[0] > 100.0, "{row:?}");

    // Failover: placed again under epoch 2 from the last flush; the attach
    // carries no state and resumes where the avatar was.
    let mut h2 = SceneHost::new(settings(), Arc::new(clock.clone()), sink.clone());
    h2.place("a", field("a"), 2, from_db_states(rows)).unwrap();
    h2.command("a", attach(7, avatar)).unwrap();
    let r = step(&h2, &clock, "a", 1);
    assert_eq!(r.population, 1);
    // A stale host of epoch 1 can no longer write through this sink.
    let mut stale = SceneHost::new(settings(), Arc::new(clock.clone()), sink.clone());
    stale.place("a", field("a"), 1, Vec::new()).unwrap();
    stale.command("a", attach(9, avatar)).unwrap();
    wait_ticks(&stale, "a", 1);
    let stale_report = stale.drop_scene("a", false).unwrap();
    assert_eq!(
        (stale_report.final_saved, stale_report.load.save_errors),
        (false, 1)
    );
    let fin = h2.drop_scene("a", false).unwrap();
    assert!(fin.final_saved);
    writer.flush().unwrap();
    let rows = store.load_scene(scene_id).unwrap();
    assert_eq!(
        rows[0].position, row.position,
        "re-attached at the flushed state"
    );
}

fn all_events(q: &OutputQueue) -> Vec<SceneEvent> {
    std::iter::from_fn(|| q.try_pop())
        .flat_map(|b| b.events)
        .collect()
}

#[test]
fn host_attach_is_idempotent_and_rebinds_an_avatar_to_a_new_client() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place("a", field("a"), 1, vec![saved(11, [30.0, 40.0])])
        .unwrap();
    let out = h.output("a").unwrap();
    wait_ticks(&h, "a", 1);
    // The same attach twice before a tick, then again after it (a gate
    // replaying attaches after a coordinator restart): one Attached each time,
    // never a rejection.
    h.command("a", attach(1, 11)).unwrap();
    h.command("a", attach(1, 11)).unwrap();
    step(&h, &clock, "a", 1);
    let ev = all_events(&out);
    let net_id = match ev.as_slice() {
        [
            SceneEvent::Attached {
                client: 1,
                avatar: 11,
                net_id,
            },
        ] => *net_id,
        other => panic!("{other:?}"),
    };
    h.command("a", attach(1, 11)).unwrap();
    let r = step(&h, &clock, "a", 1);
    assert_eq!(
        all_events(&out),
        vec![SceneEvent::Attached {
            client: 1,
            avatar: 11,
            net_id
        }]
    );
    assert_eq!(r.population, 1);
    // Another session takes the avatar over: detached from client 1, then
    // attached for client 2 from the detached state.
    h.command("a", input(1, 1, [1.0, 0.0], MoveMode::Run))
        .unwrap();
    step(&h, &clock, "a", 2);
    all_events(&out);
    h.command("a", attach(2, 11)).unwrap();
    step(&h, &clock, "a", 1);
    let ev = all_events(&out);
    let left = match ev.as_slice() {
        [SceneEvent::Detached { client: 1, state }] => state.clone(),
        other => panic!("{other:?}"),
    };
    let r = step(&h, &clock, "a", 1);
    assert!(matches!(
        all_events(&out).as_slice(),
        [SceneEvent::Attached {
            client: 2,
            avatar: 11,
            ..
        }]
    ));
    assert_eq!((r.population, r.offline), (1, 0));
    let world_counters = h.drop_scene("a", false).unwrap();
    assert_eq!(world_counters.final_states, 1);
    let fin = sink.batches().pop().unwrap().batch.states;
    assert_eq!(
        fin[0].position, left.position,
        "client 2 resumed where 1 left"
    );
    assert!(left.position[0] > 30.0);
}

#[test]
fn host_output_can_be_awaited_from_async_code() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = host(&clock, &sink);
    h.place("a", field("a"), 1, Vec::new()).unwrap();
    h.command("a", attach(1, 1)).unwrap();
    let out = h.output("a").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Walking, so every tick has a packet for client 1.
    h.command("a", input(1, 1, [1.0, 0.0], MoveMode::Walk))
        .unwrap();
    wait_ticks(&h, "a", 1);
    let got = std::thread::scope(|scope| {
        // Ticks happen on another thread while this one awaits them.
        let ticker = scope.spawn(|| step(&h, &clock, "a", 3));
        let got = rt.block_on(async {
            tokio::time::timeout(WAIT, async {
                let mut ticks = Vec::new();
                while ticks.len() < 3 {
                    let b = out.pop().await.expect("open");
                    assert!(b.packets.get(1).is_some());
                    ticks.push(b.tick);
                }
                ticks
            })
            .await
            .expect("three outputs in time")
        });
        assert_eq!(ticker.join().unwrap().ticks, 4);
        got
    });
    assert!(got == [1, 2, 3] || got == [2, 3, 4], "{got:?}");
    h.drop_scene("a", true).unwrap();
    // Closed and drained: `pop` ends instead of waiting forever.
    let rest = rt.block_on(async {
        let mut n = 0;
        while out.pop().await.is_some() {
            n += 1;
        }
        n
    });
    assert!(rest <= 4, "{rest}");
}

#[test]
fn host_a_stuck_consumer_costs_old_packets_not_events_or_ticks() {
    let (clock, sink) = (ManualClock::new(), MemorySink::new());
    let mut h = SceneHost::new(
        RunnerSettings {
            output_capacity: 2,
            ..settings()
        },
        Arc::new(clock.clone()),
        Arc::new(sink.clone()),
    );
    h.place("a", field("a"), 1, Vec::new()).unwrap();
    wait_ticks(&h, "a", 1);
    for c in 1..=2 {
        h.command("a", attach(c, c)).unwrap();
        h.command("a", input(c, 1, [1.0, 0.0], MoveMode::Walk))
            .unwrap();
    }
    // Nobody pops for 10 ticks: the tick goes on, saves go on.
    let r = step(&h, &clock, "a", 10);
    assert_eq!(r.ticks, 11);
    assert_eq!(r.saves, 5);
    let o = r.output;
    assert_eq!(o.pushed, 10, "every tick since the attach had packets");
    assert_eq!(o.overflowed, 8);
    assert_eq!(o.packets_dropped, 16);
    let out = h.output("a").unwrap();
    let first = out.try_pop().unwrap();
    assert_eq!(first.tick, 10);
    assert_eq!(first.dropped_for, vec![1, 2], "both clients need a resync");
    let attached = first
        .events
        .iter()
        .filter(|e| matches!(e, SceneEvent::Attached { .. }))
        .count();
    assert_eq!(attached, 2, "the attach events survived the overflow");
    let second = out.try_pop().unwrap();
    assert_eq!((second.tick, second.dropped_for.len()), (11, 0));
    assert!(out.try_pop().is_none());
    assert!(h.drop_scene("a", false).unwrap().final_saved);
}
