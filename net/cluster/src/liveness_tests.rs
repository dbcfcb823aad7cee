//! Liveness against the coordinator's own delays: heartbeats count from
//! their arrival, and a coordinator stall expires no healthy node.

use super::tests::T;
use super::*;
use tessera_wire::SceneLoad;

fn state() -> ClusterState {
    ClusterState::new(ClusterConfig::default(), 0).expect("valid config")
}

fn server(st: &mut ClusterState, now: u64, name: &str) -> NodeId {
    super::tests::server(st, now, name).0
}

fn downs(effects: &[Effect]) -> Vec<NodeId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::NodeDown { node } => Some(*node),
            _ => None,
        })
        .collect()
}

fn alive(st: &ClusterState, node: NodeId) -> bool {
    st.node(node).is_some_and(|n| n.alive)
}

/// The coordinator was stopped for three timeouts while its nodes kept
/// beating: when it resumes, the time it could not listen is not held
/// against them. A node that is really gone still expires one timeout later.
#[test]
fn a_coordinator_stall_expires_no_node() {
    let mut st = state();
    let a = server(&mut st, 0, "scene-a");
    let b = server(&mut st, 0, "scene-b");
    st.heartbeat(1000, a, &[] as &[SceneLoad]).expect("known");
    st.heartbeat(1000, b, &[]).expect("known");
    // Nothing ran from 1000 to 1000 + 3T.
    let resumed = 1000 + 3 * T;
    st.stalled(resumed, 3 * T);
    assert_eq!(downs(&st.tick(resumed)), vec![]);
    assert!(alive(&st, a) && alive(&st, b));
    // a's queued heartbeat is handled; b has really gone.
    st.heartbeat(resumed + 10, a, &[]).expect("known");
    assert_eq!(downs(&st.tick(resumed + T / 2)), vec![]);
    assert_eq!(downs(&st.tick(resumed + T + 5)), vec![b]);
    assert!(alive(&st, a));
    st.check_invariants().expect("invariants");
}

/// A heartbeat that arrived in time counts, even when the coordinator
/// handles it only after the timeout (it waited behind a busy lock).
#[test]
fn a_heartbeat_counts_from_its_arrival() {
    let mut st = state();
    let a = server(&mut st, 0, "scene-a");
    st.tick(T - 100);
    st.heard(a, T - 100);
    assert_eq!(downs(&st.tick(T + 500)), vec![], "arrived 600 ms ago");
    assert_eq!(downs(&st.tick(2 * T)), vec![a], "nothing since");
    // Arrival stamps never revive a dead node, nor reach past now.
    st.heard(a, 10 * T);
    assert!(!alive(&st, a));
    assert_eq!(st.node(a).map(|n| n.last_seen), Some(T - 100));
    st.check_invariants().expect("invariants");
}
