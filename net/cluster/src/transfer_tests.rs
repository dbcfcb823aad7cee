//! Portal transfers whose source scene changes placement midway: the detach
//! sent to the old host can no longer be reported, so the transfer is
//! aborted there and the avatar's later detaches and portals are handled.

use super::tests::{T, load, ok};
use super::*;
use tessera_proto::AvatarId;
use tessera_wire::Epoch;

const ACC: AccountId = AccountId(1);
const S1: SessionId = SessionId(100);

fn server(st: &mut ClusterState, now: u64, name: &str) -> NodeId {
    super::tests::server(st, now, name).0
}

/// "town" on `a`, "field" on `b`, both at epoch 1; avatar 7 online in town
/// and on its way through a portal to field (the detach sent to `a`).
fn midway() -> (ClusterState, NodeId, NodeId) {
    let mut st = ClusterState::new(ClusterConfig::default(), 0).expect("valid config");
    let a = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    let b = server(&mut st, 0, "b");
    st.add_scene(0, "field");
    assert_eq!(st.placement("town"), Some((a, 1)));
    assert_eq!(st.placement("field"), Some((b, 1)));
    st.add_avatar(7, ACC, "town").expect("avatar");
    st.login(ACC, S1, None).expect("login");
    st.attach(S1, 7).expect("attach");
    let fx = st.begin_transfer(7, "field").expect("begin");
    assert_eq!(
        fx,
        vec![Effect::DetachAt {
            server: a,
            scene: "town".into(),
            epoch: 1,
            avatar: 7,
            session: S1
        }]
    );
    (st, a, b)
}

fn aborted(avatar: AvatarId, scene: &str) -> Effect {
    Effect::TransferAborted {
        avatar,
        session: S1,
        scene: scene.into(),
    }
}

fn attach_at(server: NodeId, scene: &str, epoch: Epoch) -> Effect {
    Effect::AttachAt {
        server,
        scene: scene.into(),
        epoch,
        avatar: 7,
        session: S1,
    }
}

/// The avatar is online in town again (at `host`, epoch `epoch`): a detach
/// goes to that host, and so does the detach of a later portal, which
/// completes into field.
fn later_detach_and_portal_are_handled(st: &mut ClusterState, host: NodeId, epoch: Epoch) {
    let v = st.avatar(7).expect("7");
    assert_eq!(
        (v.scene.as_str(), v.presence),
        ("town", AvatarPresence::Online { session: S1 })
    );
    ok(st);
    let detach = Effect::DetachAt {
        server: host,
        scene: "town".into(),
        epoch,
        avatar: 7,
        session: S1,
    };
    assert_eq!(st.detach(S1, 7).expect("detach"), vec![detach.clone()]);
    assert_eq!(st.avatar(7).expect("7").presence, AvatarPresence::Offline);
    assert_eq!(
        st.attach(S1, 7).expect("attach"),
        vec![attach_at(host, "town", epoch)]
    );
    assert_eq!(st.begin_transfer(7, "field").expect("portal"), vec![detach]);
    let (b, field_epoch) = st.placement("field").expect("field placed");
    let fx = st.complete_transfer(7).expect("complete");
    assert_eq!(fx.last(), Some(&attach_at(b, "field", field_epoch)));
    assert_eq!(st.avatar(7).expect("7").scene, "field");
    ok(st);
}

#[test]
fn a_transfer_is_aborted_when_its_source_fails_over() {
    let (mut st, a, b) = midway();
    // a dies mid-transfer; town fails over to b, and 7 is attached there
    // (loaded from town's last flush) instead of waiting for a's report.
    st.heartbeat(2500, b, &[load("field", 1, 0)]).expect("hb");
    let fx = st.tick(T + 1);
    assert_eq!(
        fx,
        vec![
            aborted(7, "town"),
            Effect::NodeDown { node: a },
            Effect::PersistEpoch {
                scene: "town".into(),
                epoch: 2
            },
            Effect::PlaceScene {
                server: b,
                scene: "town".into(),
                epoch: 2
            },
            attach_at(b, "town", 2),
        ]
    );
    later_detach_and_portal_are_handled(&mut st, b, 2);
}

#[test]
fn a_transfer_is_aborted_when_its_source_is_given_up() {
    let (mut st, a, _) = midway();
    // a restarted and registers again without town: town is given up and
    // placed again under a fresh epoch (on a, which now hosts the fewest).
    let fx = st
        .register(10, "a", "127.0.0.1:0", NodeKind::SceneServer, 0, &[])
        .expect("register")
        .1;
    assert_eq!(fx.first(), Some(&aborted(7, "town")));
    assert_eq!(st.placement("town"), Some((a, 2)));
    assert_eq!(fx.last(), Some(&attach_at(a, "town", 2)));
    later_detach_and_portal_are_handled(&mut st, a, 2);
}

#[test]
fn a_transfer_is_aborted_when_its_source_moves() {
    let (mut st, a, b) = midway();
    st.scene_ready(10, a, "town", 1).expect("ready");
    let fx = st.move_scene(20, "town", "b").expect("move");
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::DropScene { server, .. } if *server == a))
    );
    // Still moving: a may yet report the detach.
    assert!(matches!(
        st.avatar(7).expect("7").presence,
        AvatarPresence::Transferring { .. }
    ));
    // a released town without the detach report reaching the coordinator.
    let fx = st.scene_released(30, a, "town", 1).expect("released");
    assert_eq!(
        fx,
        vec![
            aborted(7, "town"),
            Effect::PersistEpoch {
                scene: "town".into(),
                epoch: 2
            },
            Effect::PlaceScene {
                server: b,
                scene: "town".into(),
                epoch: 2
            },
            attach_at(b, "town", 2),
        ]
    );
    later_detach_and_portal_are_handled(&mut st, b, 2);
}

#[test]
fn a_transfer_is_aborted_when_a_newer_claim_takes_its_source() {
    let (mut st, a, b) = midway();
    // b claims town at a newer epoch (a coordinator that lost track): a is
    // told to drop it, so its detach report would be stale.
    let fx = st.heartbeat(10, b, &[load("field", 1, 0), load("town", 5, 1)]);
    let fx = fx.expect("hb");
    assert!(fx.contains(&aborted(7, "town")));
    assert!(fx.contains(&attach_at(b, "town", 5)));
    assert_eq!(st.placement("town"), Some((b, 5)));
    assert!(!st.node(a).expect("a").scenes.contains(&"town".to_owned()));
    later_detach_and_portal_are_handled(&mut st, b, 5);
}

#[test]
fn a_transfer_out_of_an_unplaced_scene_is_aborted_when_it_is_placed() {
    let mut st = ClusterState::new(ClusterConfig::default(), 0).expect("valid config");
    st.add_scene(0, "town");
    st.add_scene(0, "field");
    st.add_avatar(7, ACC, "town").expect("avatar");
    st.login(ACC, S1, None).expect("login");
    st.attach(S1, 7).expect("attach");
    // Nothing to detach: the caller was to complete it at once, and did not.
    assert!(st.begin_transfer(7, "field").expect("begin").is_empty());
    let b = server(&mut st, 10, "b");
    let (host, epoch) = st.placement("town").expect("town placed");
    assert_eq!((host, epoch), (b, 1));
    later_detach_and_portal_are_handled(&mut st, b, 1);
}

#[test]
fn a_transfer_whose_source_keeps_its_placement_waits_for_the_report() {
    let (mut st, a, b) = midway();
    // The target failing over does not matter: nothing was sent there yet.
    st.heartbeat(2500, a, &[load("town", 1, 1)]).expect("hb");
    let fx = st.tick(T + 1);
    assert!(fx.contains(&Effect::NodeDown { node: b }));
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::TransferAborted { .. }))
    );
    assert!(matches!(
        st.avatar(7).expect("7").presence,
        AvatarPresence::Transferring { .. }
    ));
    ok(&st);
    let fx = st.complete_transfer(7).expect("complete");
    assert_eq!(
        fx,
        vec![
            Effect::PersistAvatarScene {
                avatar: 7,
                scene: "field".into()
            },
            attach_at(a, "field", 2),
        ]
    );
    ok(&st);
}

#[test]
fn a_transfer_is_aborted_when_its_session_ends_midway() {
    let (mut st, a, _) = midway();
    let fx = st.logout(S1);
    assert_eq!(fx, vec![aborted(7, "town")]);
    let v = st.avatar(7).expect("7");
    assert_eq!(
        (v.scene.as_str(), v.presence),
        ("town", AvatarPresence::Offline)
    );
    ok(&st);
    // Back in: it is in town, and a portal goes through.
    st.login(ACC, S1, None).expect("login");
    st.attach(S1, 7).expect("attach");
    let fx = st.begin_transfer(7, "field").expect("a later portal goes");
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::DetachAt { server, .. } if *server == a))
    );
    ok(&st);
}
