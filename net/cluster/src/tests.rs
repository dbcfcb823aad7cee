//! Scenario tests: placement, failover, stale epochs, coordinator restart,
//! the avatar directory and the status snapshot.

use std::collections::BTreeMap;

use super::*;
use tessera_proto::AvatarId;
use tessera_wire::{Epoch, Placement, SceneLoad};

pub(super) const T: u64 = 3000; // default heartbeat timeout

pub(super) fn state() -> ClusterState {
    ClusterState::new(small(), 0).expect("valid config")
}

pub(super) fn server(st: &mut ClusterState, now: u64, name: &str) -> (NodeId, Vec<Effect>) {
    st.register(now, name, "127.0.0.1:0", NodeKind::SceneServer, 0, &[])
        .expect("register")
}

pub(super) fn load(scene: &str, epoch: Epoch, population: u32) -> SceneLoad {
    SceneLoad {
        scene: scene.into(),
        epoch,
        population,
        tick_p99_us: 1500,
    }
}

fn places(effects: &[Effect]) -> Vec<(NodeId, String, Epoch)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::PlaceScene {
                server,
                scene,
                epoch,
            } => Some((*server, scene.clone(), *epoch)),
            _ => None,
        })
        .collect()
}

fn drops(effects: &[Effect]) -> Vec<(NodeId, String, Epoch)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::DropScene {
                server,
                scene,
                epoch,
                ..
            } => Some((*server, scene.clone(), *epoch)),
            _ => None,
        })
        .collect()
}

pub(super) fn sync(
    server: NodeId,
    scene: &str,
    epoch: Epoch,
    attached: &[(AvatarId, SessionId)],
) -> Effect {
    Effect::SyncAttached {
        server,
        scene: scene.into(),
        epoch,
        attached: attached.to_vec(),
    }
}

pub(super) fn ok(st: &ClusterState) {
    if let Err(e) = st.check_invariants() {
        panic!("invariant broken: {e}\n{st:#?}");
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// Small population thresholds (busy 200, full 500), so tests can fill scenes.
fn small() -> ClusterConfig {
    ClusterConfig {
        busy_population: 200,
        full_population: 500,
        // The restart tests count time against this grace.
        restart_grace_ms: 3000,
        ..ClusterConfig::default()
    }
}

#[test]
fn config_validation_and_status_thresholds() {
    let c = small();
    assert_eq!(c.validate(), Ok(()));
    assert_eq!(c.status_of(0), SceneStatus::Open);
    assert_eq!(c.status_of(199), SceneStatus::Open);
    assert_eq!(c.status_of(200), SceneStatus::Busy);
    assert_eq!(c.status_of(499), SceneStatus::Busy);
    assert_eq!(c.status_of(500), SceneStatus::Full);
    let bad = ClusterConfig {
        busy_population: 600,
        ..c.clone()
    };
    assert_eq!(
        bad.validate(),
        Err(ClusterConfigError::BusyAboveFull {
            busy: 600,
            full: 500
        })
    );
    let bad = ClusterConfig {
        heartbeat_timeout_ms: 0,
        ..c.clone()
    };
    assert_eq!(
        bad.validate(),
        Err(ClusterConfigError::ZeroHeartbeatTimeout)
    );
    let bad = ClusterConfig {
        full_population: 0,
        busy_population: 0,
        ..c
    };
    assert_eq!(bad.validate(), Err(ClusterConfigError::ZeroFull));
    assert!(matches!(
        ClusterState::new(bad.clone(), 0),
        Err(ClusterConfigError::ZeroFull)
    ));
    assert!(ClusterState::recover(bad, [], 0).is_err());
}

#[test]
fn config_deserializes_with_defaults_and_rejects_unknown_keys() {
    let c: ClusterConfig =
        serde_json::from_str(r#"{"heartbeat_timeout_ms": 5000}"#).expect("parse");
    assert_eq!(
        c,
        ClusterConfig {
            heartbeat_timeout_ms: 5000,
            ..ClusterConfig::default()
        }
    );
    assert!(serde_json::from_str::<ClusterConfig>(r#"{"heartbeat_ms": 1}"#).is_err());
}

#[test]
fn scene_status_follows_reported_population() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    let e = st.placement("town").expect("placed").1;
    st.heartbeat(10, a, &[load("town", e, 250)]).expect("hb");
    assert_eq!(st.scene("town").expect("scene").status, SceneStatus::Busy);
    st.heartbeat(20, a, &[load("town", e, 500)]).expect("hb");
    assert_eq!(st.scene("town").expect("scene").status, SceneStatus::Full);
    st.heartbeat(30, a, &[load("town", e, 3)]).expect("hb");
    assert_eq!(st.scene("town").expect("scene").status, SceneStatus::Open);
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

#[test]
fn register_same_name_keeps_id_and_rejects_bad_registrations() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    let (a2, _) = server(&mut st, 5, "a");
    assert_eq!(a, a2);
    assert_eq!(
        st.register(0, "", "x", NodeKind::SceneServer, 0, &[]),
        Err(RegisterError::EmptyName)
    );
    assert_eq!(
        st.register(0, "a", "x", NodeKind::Gate, 0, &[]),
        Err(RegisterError::KindMismatch { name: "a".into() })
    );
    let hosted = [Placement {
        scene: "town".into(),
        epoch: 1,
    }];
    assert_eq!(
        st.register(0, "g", "x", NodeKind::Gate, 0, &hosted),
        Err(RegisterError::GateWithScenes)
    );
    assert_eq!(
        st.heartbeat(0, NodeId(99), &[]),
        Err(UnknownNode(NodeId(99)))
    );
    ok(&st);
}

#[test]
fn heartbeat_timeout_kills_a_node_and_a_heartbeat_revives_it() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    assert!(st.tick(T).is_empty(), "exactly the timeout is still alive");
    assert!(st.node(a).expect("node").alive);
    let fx = st.tick(T + 1);
    assert_eq!(fx, vec![Effect::NodeDown { node: a }]);
    assert!(!st.node(a).expect("node").alive);
    st.heartbeat(T + 2, a, &[]).expect("hb");
    assert!(st.node(a).expect("node").alive);
    ok(&st);
}

#[test]
fn deregister_removes_the_node_and_replaces_its_scenes() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    let (b, _) = server(&mut st, 1, "b");
    assert_eq!(st.placement("town"), Some((a, 1)));
    let fx = st.deregister(2, a).expect("deregister");
    assert_eq!(places(&fx), vec![(b, "town".into(), 2)]);
    assert_eq!(st.node(a), None);
    assert_eq!(st.node_by_name("a"), None);
    assert_eq!(st.deregister(3, a), Err(UnknownNode(a)));
    ok(&st);
}

// ---------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------

#[test]
fn placement_picks_fewest_scenes_then_least_loaded_then_name() {
    let mut st = state();
    let (b, _) = server(&mut st, 0, "b");
    let (a, _) = server(&mut st, 0, "a");
    // Equal load and scene count: name decides ("a" < "b"), not id.
    let fx = st.add_scene(0, "s1");
    assert_eq!(places(&fx), vec![(a, "s1".into(), 1)]);
    // "a" has one scene now: fewest scenes decides.
    let fx = st.add_scene(0, "s2");
    assert_eq!(places(&fx), vec![(b, "s2".into(), 1)]);
    // Equal scene counts: population decides.
    st.heartbeat(10, a, &[load("s1", 1, 5)]).expect("hb");
    st.heartbeat(10, b, &[load("s2", 1, 50)]).expect("hb");
    let fx = st.add_scene(10, "s3");
    assert_eq!(places(&fx), vec![(a, "s3".into(), 1)]);
    // a: 5 people, 2 scenes; b: 50 people, 1 scene → b: scenes first.
    let fx = st.add_scene(10, "s4");
    assert_eq!(places(&fx), vec![(b, "s4".into(), 1)]);
    ok(&st);
}

#[test]
fn placement_is_deterministic() {
    let run = || {
        let mut st = state();
        let mut all = Vec::new();
        for name in ["c", "a", "b"] {
            all.extend(server(&mut st, 0, name).1);
        }
        for scene in ["x", "y", "z", "w", "v"] {
            all.extend(st.add_scene(0, scene));
        }
        (all, format!("{:?}", st.status()))
    };
    assert_eq!(run(), run());
}

#[test]
fn placement_is_stable_while_the_server_lives() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    st.add_scene(0, "field");
    st.heartbeat(0, a, &[load("town", 1, 400), load("field", 1, 400)])
        .expect("hb");
    // A new, empty server does not steal scenes that are not running yet
    // (no scene_ready: the hand-off moves running scenes only).
    let (b, fx) = server(&mut st, 100, "b");
    assert!(places(&fx).is_empty());
    for t in (1000..20_000).step_by(1000) {
        let fx = st
            .heartbeat(t, a, &[load("town", 1, 400), load("field", 1, 400)])
            .expect("hb");
        let fx2 = st.heartbeat(t, b, &[]).expect("hb");
        assert!(fx.is_empty() && fx2.is_empty(), "{fx:?} {fx2:?}");
    }
    assert_eq!(st.placement("town"), Some((a, 1)));
    assert_eq!(st.placement("field"), Some((a, 1)));
    ok(&st);
}

#[test]
fn capacity_limits_scenes_per_server() {
    let mut st = state();
    let (a, _) = st
        .register(0, "a", "x", NodeKind::SceneServer, 1, &[])
        .expect("register");
    st.add_scene(0, "s1");
    let fx = st.add_scene(0, "s2");
    assert!(places(&fx).is_empty());
    assert_eq!(st.placement("s1"), Some((a, 1)));
    assert_eq!(st.placement("s2"), None);
    let (b, fx) = server(&mut st, 1, "b");
    assert_eq!(places(&fx), vec![(b, "s2".into(), 1)]);
    ok(&st);
}

#[test]
fn gates_never_host_scenes() {
    let mut st = state();
    st.register(0, "g", "x", NodeKind::Gate, 0, &[])
        .expect("gate");
    let fx = st.add_scene(0, "town");
    assert!(places(&fx).is_empty());
    assert_eq!(st.placement("town"), None);
    assert!(st.status().scene_servers.is_empty());
}

#[test]
fn persist_epoch_comes_before_place_scene() {
    let mut st = state();
    server(&mut st, 0, "a");
    let fx = st.add_scene(0, "town");
    assert_eq!(
        fx,
        vec![
            Effect::PersistEpoch {
                scene: "town".into(),
                epoch: 1
            },
            Effect::PlaceScene {
                server: NodeId(1),
                scene: "town".into(),
                epoch: 1
            },
        ]
    );
}

// ---------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------

#[test]
fn dead_server_scenes_move_to_a_survivor_with_a_higher_epoch() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    let (b, _) = server(&mut st, 0, "b");
    for s in ["s1", "s2", "s3", "s4"] {
        st.add_scene(0, s);
    }
    let on_a: Vec<String> = st.node(a).expect("a").scenes;
    assert_eq!(on_a.len(), 2);
    // b keeps heartbeating, a goes silent.
    st.heartbeat(2000, b, &[]).expect("hb");
    let fx = st.tick(T + 1);
    assert!(fx.contains(&Effect::NodeDown { node: a }));
    let moved = places(&fx);
    assert_eq!(moved.len(), 2);
    for (server, scene, epoch) in moved {
        assert_eq!(server, b);
        assert!(on_a.contains(&scene));
        assert_eq!(epoch, 2);
    }
    assert!(st.node(a).expect("a").scenes.is_empty());
    assert_eq!(st.node(b).expect("b").scenes.len(), 4);
    ok(&st);
}

#[test]
fn with_no_survivors_scenes_wait_unplaced_until_a_server_registers() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    let fx = st.tick(T + 1);
    assert_eq!(fx, vec![Effect::NodeDown { node: a }]);
    assert_eq!(st.placement("town"), None);
    let row = &st.status().scenes[0];
    assert_eq!(row.server, "");
    assert_eq!(row.epoch, 1);
    let (b, fx) = server(&mut st, T + 10, "b");
    assert_eq!(places(&fx), vec![(b, "town".into(), 2)]);
    ok(&st);
}

#[test]
fn nothing_is_placed_on_a_dead_server() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.tick(T + 1);
    assert!(!st.node(a).expect("a").alive);
    let fx = st.add_scene(T + 2, "town");
    assert!(places(&fx).is_empty());
    // A heartbeat that is due but was not processed yet does not count: a
    // node silent for longer than the timeout is expired before placement.
    let mut st = state();
    server(&mut st, 0, "a");
    let fx = st.add_scene(T + 5, "town");
    assert!(places(&fx).is_empty(), "{fx:?}");
    ok(&st);
}

// ---------------------------------------------------------------------------
// Stale epochs
// ---------------------------------------------------------------------------

#[test]
fn paused_server_returning_with_a_stale_epoch_is_told_to_drop() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    let (b, _) = server(&mut st, 0, "b");
    assert_eq!(st.placement("town"), Some((a, 1)));
    // a is SIGSTOPped; b keeps going.
    st.heartbeat(2500, b, &[]).expect("hb");
    let fx = st.tick(T + 1);
    assert_eq!(places(&fx), vec![(b, "town".into(), 2)]);
    // SIGCONT: a reports town at epoch 1.
    let fx = st
        .heartbeat(T + 100, a, &[load("town", 1, 30)])
        .expect("hb");
    assert_eq!(
        fx,
        vec![Effect::DropScene {
            server: a,
            scene: "town".into(),
            epoch: 1,
            reason: DropReason::Stale { current: 2 },
        }]
    );
    assert_eq!(st.placement("town"), Some((b, 2)));
    assert_eq!(
        st.scene("town").expect("town").population,
        0,
        "stale load ignored"
    );
    assert!(
        st.node(a).expect("a").alive,
        "a lives on, without the scene"
    );
    // A stale "ready" is refused the same way.
    let fx = st.scene_ready(T + 200, a, "town", 1).expect("ready");
    assert_eq!(drops(&fx), vec![(a, "town".into(), 1)]);
    ok(&st);
}

#[test]
fn paused_server_with_no_successor_keeps_its_scene() {
    // Nobody else could take the scene: the returning server's epoch is still
    // the latest, so it is adopted back instead of reloading from a flush.
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    st.tick(T + 1);
    assert_eq!(st.placement("town"), None);
    let fx = st.heartbeat(T + 50, a, &[load("town", 1, 7)]).expect("hb");
    assert_eq!(fx, vec![sync(a, "town", 1, &[])]);
    assert_eq!(st.placement("town"), Some((a, 1)));
    assert_eq!(st.scene("town").expect("town").population, 7);
    ok(&st);
}

#[test]
fn any_message_from_a_dead_node_revives_it() {
    // A paused sole host whose first word after SIGCONT is a "ready" (not a
    // heartbeat) keeps its scene too, rather than being told to throw away
    // the only copy.
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    st.tick(T + 1);
    assert!(!st.node(a).expect("a").alive);
    let fx = st.scene_ready(T + 5, a, "town", 1).expect("ready");
    assert_eq!(fx, vec![sync(a, "town", 1, &[])]);
    assert!(st.node(a).expect("a").alive);
    assert_eq!(st.placement("town"), Some((a, 1)));
    assert!(st.scene("town").expect("town").ready);
    ok(&st);
}

#[test]
fn takeover_by_a_newer_claim_persists_the_epoch_first() {
    let mut st = ClusterState::recover(small(), [], 0).expect("valid config");
    st.add_scene(0, "town");
    let claim = |epoch| {
        [Placement {
            scene: "town".into(),
            epoch,
        }]
    };
    let (a, _) = st
        .register(0, "a", "x", NodeKind::SceneServer, 0, &claim(3))
        .expect("register");
    let (b, fx) = st
        .register(0, "b", "x", NodeKind::SceneServer, 0, &claim(5))
        .expect("register");
    assert_eq!(
        fx,
        vec![
            Effect::PersistEpoch {
                scene: "town".into(),
                epoch: 5
            },
            Effect::DropScene {
                server: a,
                scene: "town".into(),
                epoch: 3,
                reason: DropReason::Stale { current: 5 }
            },
        ]
    );
    assert_eq!(st.placement("town"), Some((b, 5)));
}

#[test]
fn a_newer_claim_wins_and_the_older_host_is_told_to_drop() {
    // After a restart without stored epochs, two servers may both claim a
    // scene: the higher epoch wins whatever the order.
    for order in [[0, 1], [1, 0]] {
        let mut st = ClusterState::recover(small(), [], 0).expect("valid config");
        st.add_scene(0, "town");
        let claims = [("a", 3), ("b", 5)];
        let mut fx = Vec::new();
        for i in order {
            let (name, epoch) = claims[i];
            let hosted = [Placement {
                scene: "town".into(),
                epoch,
            }];
            fx.extend(
                st.register(0, name, "x", NodeKind::SceneServer, 0, &hosted)
                    .expect("register")
                    .1,
            );
        }
        let a = st.node_by_name("a").expect("a");
        let b = st.node_by_name("b").expect("b");
        assert_eq!(st.placement("town"), Some((b, 5)));
        assert_eq!(drops(&fx), vec![(a, "town".into(), 3)]);
        ok(&st);
    }
}

#[test]
fn claims_of_unknown_scenes_and_epoch_zero_are_dropped() {
    let mut st = state();
    st.add_scene(0, "town");
    let hosted = [
        Placement {
            scene: "nowhere".into(),
            epoch: 4,
        },
        Placement {
            scene: "town".into(),
            epoch: 0,
        },
    ];
    let (a, fx) = st
        .register(0, "a", "x", NodeKind::SceneServer, 0, &hosted)
        .expect("register");
    assert_eq!(
        fx[..2],
        [
            Effect::DropScene {
                server: a,
                scene: "nowhere".into(),
                epoch: 4,
                reason: DropReason::UnknownScene,
            },
            Effect::DropScene {
                server: a,
                scene: "town".into(),
                epoch: 0,
                reason: DropReason::Stale { current: 0 },
            },
        ]
    );
    // The scene is then placed normally, at a fresh epoch.
    assert_eq!(places(&fx), vec![(a, "town".into(), 1)]);
    ok(&st);
}

#[test]
fn reregistering_without_a_scene_replaces_it_with_a_fresh_epoch() {
    // The process restarted (kill -9 and back within the timeout): it reports
    // nothing, so its old placement is gone and the scene is placed again.
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    let (a2, fx) = server(&mut st, 100, "a");
    assert_eq!(a, a2);
    assert_eq!(drops(&fx), vec![(a, "town".into(), 1)]);
    assert_eq!(places(&fx), vec![(a, "town".into(), 2)]);
    ok(&st);
}

#[test]
fn a_placement_the_server_never_reports_is_given_up_and_placed_again() {
    // The PlaceScene was lost (or loading failed): the server keeps
    // heartbeating without the scene.
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    // Within the timeout a heartbeat may simply predate the PlaceScene.
    assert!(st.heartbeat(T, a, &[]).expect("hb").is_empty());
    assert_eq!(st.placement("town"), Some((a, 1)));
    let fx = st.heartbeat(T + 1, a, &[]).expect("hb");
    assert_eq!(
        fx,
        vec![
            Effect::DropScene {
                server: a,
                scene: "town".into(),
                epoch: 1,
                reason: DropReason::NotReported
            },
            Effect::PersistEpoch {
                scene: "town".into(),
                epoch: 2
            },
            Effect::PlaceScene {
                server: a,
                scene: "town".into(),
                epoch: 2
            },
        ]
    );
    // Listed (even while still loading, population 0): kept.
    let fx = st
        .heartbeat(2 * T + 10, a, &[load("town", 2, 0)])
        .expect("hb");
    assert!(fx.is_empty());
    assert_eq!(st.placement("town"), Some((a, 2)));
    ok(&st);
}

// ---------------------------------------------------------------------------
// Coordinator restart
// ---------------------------------------------------------------------------

#[test]
fn coordinator_restart_servers_keep_their_scenes() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    let (b, _) = server(&mut st, 0, "b");
    for s in ["s1", "s2", "s3"] {
        st.add_scene(0, s);
    }
    let before: BTreeMap<String, (String, Epoch)> = st
        .scene_names()
        .map(|s| {
            let (n, e) = st.placement(s).expect("placed");
            (s.to_owned(), (st.node(n).expect("n").name, e))
        })
        .collect();
    let epochs = st.epochs();
    let hosted_by = |name: &str| -> Vec<Placement> {
        before
            .iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(s, (_, e))| Placement {
                scene: s.clone(),
                epoch: *e,
            })
            .collect()
    };
    let _ = (a, b);

    // The new coordinator knows the stored epochs and the catalog.
    let mut st = ClusterState::recover(small(), epochs, 10_000).expect("valid config");
    for s in ["s1", "s2", "s3"] {
        assert!(places(&st.add_scene(10_000, s)).is_empty(), "held back");
    }
    // Only "b" re-registers within the grace period at first: nothing of a's
    // is given to b.
    let (_, fx) = st
        .register(10_100, "b", "x", NodeKind::SceneServer, 0, &hosted_by("b"))
        .expect("register");
    assert!(fx.is_empty(), "{fx:?}");
    let (_, fx) = st
        .register(10_200, "a", "x", NodeKind::SceneServer, 0, &hosted_by("a"))
        .expect("register");
    assert!(fx.is_empty(), "{fx:?}");
    for (scene, (name, epoch)) in &before {
        let (n, e) = st.placement(scene).expect("kept");
        assert_eq!((&st.node(n).expect("n").name, e), (name, *epoch));
    }
    // Past the grace period nothing moves either; each host learns who is
    // attached (nobody: no gate replayed a session).
    assert!(st.recovering());
    let fx = st.tick(10_000 + 3000);
    assert!(!st.recovering());
    assert!(places(&fx).is_empty() && drops(&fx).is_empty(), "{fx:?}");
    assert_eq!(fx.len(), 3);
    assert!(
        fx.iter()
            .all(|e| matches!(e, Effect::SyncAttached { attached, .. } if attached.is_empty()))
    );
    ok(&st);
}

#[test]
fn coordinator_restart_places_unclaimed_scenes_after_the_grace_period() {
    let mut st = ClusterState::recover(small(), [("town".into(), 7)], 0).expect("valid config");
    let (a, fx) = server(&mut st, 0, "a");
    assert!(fx.is_empty());
    assert_eq!(st.placement("town"), None);
    st.heartbeat(2000, a, &[]).expect("hb");
    assert!(places(&st.tick(2999)).is_empty());
    let fx = st.tick(3000);
    assert_eq!(
        places(&fx),
        vec![(a, "town".into(), 8)],
        "never reuses epoch 7"
    );
    ok(&st);
}

#[test]
fn coordinator_restart_refuses_a_paused_servers_stale_epoch() {
    // Old coordinator: town moved from a (paused) to b at epoch 2, stored.
    // After the restart a comes back first claiming epoch 1: refused.
    let mut st = ClusterState::recover(small(), [("town".into(), 2)], 0).expect("valid config");
    let stale = [Placement {
        scene: "town".into(),
        epoch: 1,
    }];
    let (a, fx) = st
        .register(0, "a", "x", NodeKind::SceneServer, 0, &stale)
        .expect("register");
    assert_eq!(drops(&fx), vec![(a, "town".into(), 1)]);
    let current = [Placement {
        scene: "town".into(),
        epoch: 2,
    }];
    let (b, fx) = st
        .register(1, "b", "x", NodeKind::SceneServer, 0, &current)
        .expect("register");
    assert!(fx.is_empty());
    assert_eq!(st.placement("town"), Some((b, 2)));
    ok(&st);
}
