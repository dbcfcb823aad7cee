//! Scenario tests of the avatar directory: attach, detach, transfers,
//! sessions across failover and restart.

use super::tests::{T, load, ok, server, state, sync};
use super::*;
use tessera_wire::Placement;

// ---------------------------------------------------------------------------
// Avatar directory
// ---------------------------------------------------------------------------

const ACC: AccountId = AccountId(1);
const S1: SessionId = SessionId(100);

fn world() -> (ClusterState, NodeId, NodeId) {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    let (b, _) = server(&mut st, 0, "b");
    st.add_scene(0, "field");
    assert_eq!(st.placement("town"), Some((a, 1)));
    assert_eq!(st.placement("field"), Some((b, 1)));
    st.add_avatar(7, ACC, "town").expect("avatar");
    (st, a, b)
}

#[test]
fn attach_detach_round_trip() {
    let (mut st, a, _) = world();
    assert!(st.login(ACC, S1, None).expect("login").is_empty());
    let fx = st.attach(S1, 7).expect("attach");
    assert_eq!(
        fx,
        vec![Effect::AttachAt {
            server: a,
            scene: "town".into(),
            epoch: 1,
            avatar: 7,
            session: S1
        }]
    );
    assert_eq!(
        st.avatar(7).expect("7").presence,
        AvatarPresence::Online { session: S1 }
    );
    let fx = st.detach(S1, 7).expect("detach");
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
    let v = st.avatar(7).expect("7");
    assert_eq!(v.presence, AvatarPresence::Offline);
    assert_eq!(v.scene, "town", "detached avatars stay in their scene");
    assert_eq!(st.detach(S1, 7), Err(DetachError::NotAttached(7)));
    ok(&st);
}

#[test]
fn attach_refusals() {
    let (mut st, _, _) = world();
    st.add_avatar(8, ACC, "town").expect("avatar");
    st.add_avatar(9, AccountId(2), "town").expect("avatar");
    assert_eq!(
        st.add_avatar(9, ACC, "town"),
        Err(AddAvatarError::OtherAccount { avatar: 9 })
    );
    assert_eq!(
        st.add_avatar(10, ACC, "moon"),
        Err(AddAvatarError::UnknownScene("moon".into()))
    );
    assert_eq!(st.attach(S1, 7), Err(AttachError::UnknownSession(S1)));
    st.login(ACC, S1, None).expect("login");
    assert_eq!(st.attach(S1, 70), Err(AttachError::UnknownAvatar(70)));
    assert_eq!(st.attach(S1, 9), Err(AttachError::NotOwner(9)));
    st.attach(S1, 7).expect("attach");
    assert_eq!(st.attach(S1, 8), Err(AttachError::SessionBusy(7)));
    assert_eq!(st.login(ACC, S1, None), Err(LoginError::SessionExists(S1)));
    // Full scene: new attaches refused, the reconnect still goes through.
    let a = st.placement("town").expect("placed").0;
    st.heartbeat(10, a, &[load("town", 1, 500)]).expect("hb");
    assert_eq!(st.attach(S1, 7).expect("reconnect").len(), 1);
    st.detach(S1, 7).expect("detach");
    assert_eq!(st.attach(S1, 8), Err(AttachError::SceneFull("town".into())));
    ok(&st);
}

#[test]
fn reconnect_of_the_same_session_resends_the_attach() {
    let (mut st, a, _) = world();
    st.login(ACC, S1, None).expect("login");
    let first = st.attach(S1, 7).expect("attach");
    let again = st.attach(S1, 7).expect("reconnect");
    assert_eq!(first, again);
    assert_eq!(st.avatar(7).expect("7").server, Some((a, 1)));
    ok(&st);
}

#[test]
fn second_login_kicks_the_first_session_and_detaches_its_avatar() {
    let (mut st, a, _) = world();
    st.login(ACC, S1, None).expect("login");
    st.attach(S1, 7).expect("attach");
    let s2 = SessionId(200);
    let fx = st.login(ACC, s2, None).expect("login");
    assert_eq!(
        fx,
        vec![
            Effect::DetachAt {
                server: a,
                scene: "town".into(),
                epoch: 1,
                avatar: 7,
                session: S1
            },
            Effect::Kick {
                session: S1,
                reason: KickReason::DuplicateLogin
            },
        ]
    );
    assert_eq!(st.session_of(ACC), Some(s2));
    assert_eq!(st.attach(S1, 7), Err(AttachError::UnknownSession(S1)));
    assert_eq!(st.attach(s2, 7).expect("attach").len(), 1);
    ok(&st);
}

#[test]
fn logout_and_gate_death_end_sessions() {
    let (mut st, _, _) = world();
    let (g, _) = st
        .register(0, "gate", "x", NodeKind::Gate, 0, &[])
        .expect("gate");
    assert_eq!(
        st.login(ACC, S1, Some(NodeId(99))),
        Err(LoginError::UnknownGate(NodeId(99)))
    );
    st.login(ACC, S1, Some(g)).expect("login");
    st.attach(S1, 7).expect("attach");
    // Scene servers keep heartbeating, the gate does not.
    for n in [NodeId(1), NodeId(2)] {
        st.heartbeat(2500, n, &[]).expect("hb");
    }
    let fx = st.tick(T + 1);
    assert!(fx.contains(&Effect::NodeDown { node: g }));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::DetachAt { avatar: 7, .. }))
    );
    assert_eq!(st.session_of(ACC), None);
    assert_eq!(st.avatar(7).expect("7").presence, AvatarPresence::Offline);
    // Logout of an unknown session is a no-op.
    assert!(st.logout(S1).is_empty());
    ok(&st);
}

#[test]
fn transfer_moves_the_avatar_in_explicit_steps() {
    let (mut st, a, b) = world();
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
    // Mid-transfer: still in the source scene, and in exactly one scene.
    let v = st.avatar(7).expect("7");
    assert_eq!(v.scene, "town");
    assert_eq!(
        v.presence,
        AvatarPresence::Transferring {
            session: S1,
            to: "field".into()
        }
    );
    assert_eq!(st.scene_avatars("town").collect::<Vec<_>>(), vec![7]);
    assert_eq!(st.scene_avatars("field").count(), 0);
    assert_eq!(st.attach(S1, 7), Err(AttachError::InTransfer(7)));
    assert_eq!(
        st.begin_transfer(7, "field"),
        Err(TransferError::NotOnline(7))
    );
    let fx = st.complete_transfer(7).expect("complete");
    assert_eq!(
        fx,
        vec![
            Effect::PersistAvatarScene {
                avatar: 7,
                scene: "field".into()
            },
            Effect::AttachAt {
                server: b,
                scene: "field".into(),
                epoch: 1,
                avatar: 7,
                session: S1
            },
        ]
    );
    assert_eq!(st.avatar(7).expect("7").scene, "field");
    assert_eq!(st.scene_avatars("town").count(), 0);
    assert_eq!(
        st.complete_transfer(7),
        Err(TransferError::NotInTransfer(7))
    );
    ok(&st);
}

#[test]
fn transfer_refusals_abort_and_detach_midway() {
    let (mut st, a, b) = world();
    st.login(ACC, S1, None).expect("login");
    assert_eq!(
        st.begin_transfer(7, "field"),
        Err(TransferError::NotOnline(7))
    );
    st.attach(S1, 7).expect("attach");
    assert_eq!(
        st.begin_transfer(7, "moon"),
        Err(TransferError::UnknownScene("moon".into()))
    );
    assert_eq!(
        st.begin_transfer(7, "town"),
        Err(TransferError::SameScene("town".into()))
    );
    st.heartbeat(10, b, &[load("field", 1, 999)]).expect("hb");
    assert_eq!(
        st.begin_transfer(7, "field"),
        Err(TransferError::SceneFull("field".into()))
    );
    st.heartbeat(20, b, &[load("field", 1, 0)]).expect("hb");
    // Abort: attached again in the source.
    st.begin_transfer(7, "field").expect("begin");
    let fx = st.abort_transfer(7).expect("abort");
    assert_eq!(
        fx,
        vec![Effect::AttachAt {
            server: a,
            scene: "town".into(),
            epoch: 1,
            avatar: 7,
            session: S1
        }]
    );
    // Detach midway: offline in the source (the detach already sent saves
    // it), and the pending arrival is dropped.
    st.begin_transfer(7, "field").expect("begin");
    assert_eq!(
        st.detach(S1, 7).expect("detach"),
        vec![Effect::TransferAborted {
            avatar: 7,
            session: S1,
            scene: "town".into()
        }]
    );
    let v = st.avatar(7).expect("7");
    assert_eq!(
        (v.scene.as_str(), v.presence),
        ("town", AvatarPresence::Offline)
    );
    assert_eq!(st.abort_transfer(7), Err(TransferError::NotInTransfer(7)));
    ok(&st);
}

#[test]
fn failover_reattaches_online_avatars_at_the_new_host() {
    let (mut st, a, b) = world();
    st.add_avatar(8, AccountId(2), "town").expect("avatar");
    st.login(ACC, S1, None).expect("login");
    st.attach(S1, 7).expect("attach");
    // a dies; b survives.
    st.heartbeat(2500, b, &[]).expect("hb");
    let fx = st.tick(T + 1);
    assert_eq!(
        fx,
        vec![
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
            Effect::AttachAt {
                server: b,
                scene: "town".into(),
                epoch: 2,
                avatar: 7,
                session: S1
            },
        ]
    );
    // Offline avatar 8 stays in town, not attached anywhere.
    let v = st.avatar(8).expect("8");
    assert_eq!(
        (v.scene.as_str(), v.presence),
        ("town", AvatarPresence::Offline)
    );
    ok(&st);
}

#[test]
fn a_returning_sole_host_learns_the_attaches_and_detaches_it_missed() {
    let mut st = state();
    let (a, _) = server(&mut st, 0, "a");
    st.add_scene(0, "town");
    st.add_avatar(7, ACC, "town").expect("avatar");
    st.add_avatar(8, AccountId(2), "town").expect("avatar");
    let s2 = SessionId(200);
    st.login(ACC, S1, None).expect("login");
    st.login(AccountId(2), s2, None).expect("login");
    st.attach(S1, 7).expect("attach");
    // a is paused and declared dead: town is unplaced, nothing to send to.
    st.tick(T + 1);
    assert!(st.detach(S1, 7).expect("detach").is_empty());
    assert!(st.attach(s2, 8).expect("attach").is_empty());
    // a comes back with the only copy of town: it has 7 attached, not 8.
    let fx = st.register(
        T + 10,
        "a",
        "x",
        NodeKind::SceneServer,
        0,
        &[Placement {
            scene: "town".into(),
            epoch: 1,
        }],
    );
    let (a2, fx) = fx.expect("register");
    assert_eq!(a2, a);
    assert_eq!(fx, vec![sync(a, "town", 1, &[(8, s2)])]);
    ok(&st);
}

#[test]
fn reregistering_with_kept_scenes_resyncs_attachments() {
    // The link dropped and came back within the timeout: attaches sent on
    // the old link may be lost.
    let (mut st, a, _) = world();
    st.login(ACC, S1, None).expect("login");
    st.attach(S1, 7).expect("attach");
    let kept = [Placement {
        scene: "town".into(),
        epoch: 1,
    }];
    let (_, fx) = st
        .register(10, "a", "x", NodeKind::SceneServer, 0, &kept)
        .expect("register");
    assert_eq!(fx, vec![sync(a, "town", 1, &[(7, S1)])]);
    ok(&st);
}

#[test]
fn attach_into_an_unplaced_scene_waits_for_placement() {
    let mut st = state();
    st.add_scene(0, "town");
    st.add_avatar(7, ACC, "town").expect("avatar");
    st.login(ACC, S1, None).expect("login");
    assert!(st.attach(S1, 7).expect("attach").is_empty());
    let (a, fx) = server(&mut st, 5, "a");
    assert_eq!(
        fx.last(),
        Some(&Effect::AttachAt {
            server: a,
            scene: "town".into(),
            epoch: 1,
            avatar: 7,
            session: S1
        })
    );
    ok(&st);
}

// ---------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------

#[test]
fn status_json_has_exactly_the_documented_fields() {
    let (mut st, a, _) = world();
    st.add_scene(0, "void");
    st.heartbeat(5, a, &[load("town", 1, 42)]).expect("hb");
    // "void" went to "a" or "b"; make one scene unplaced: kill both.
    st.tick(T + 10);
    st.add_scene(T + 10, "late");
    let json = serde_json::to_value(st.status()).expect("json");
    let top = json.as_object().expect("object");
    // The issue-4 fields, plus the gates and the online players per scene
    // (issue 5), and planned moves: draining servers, moving scenes; the
    // game each server runs.
    assert_eq!(
        top.keys().collect::<Vec<_>>(),
        vec!["gates", "scene_servers", "scenes"]
    );
    let servers = top["scene_servers"].as_array().expect("array");
    assert_eq!(servers.len(), 2);
    for s in servers {
        let o = s.as_object().expect("object");
        let mut keys: Vec<_> = o.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["alive", "draining", "game", "name", "scenes"]);
        assert_eq!(o["alive"], false);
        assert!(o["scenes"].as_array().expect("array").is_empty());
    }
    let scenes = top["scenes"].as_array().expect("array");
    assert_eq!(scenes.len(), 4);
    for s in scenes {
        let o = s.as_object().expect("object");
        let mut keys: Vec<_> = o.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "epoch",
                "moving_to",
                "name",
                "online",
                "population",
                "server",
                "status",
                "tick_p99_ms"
            ]
        );
        assert_eq!(o["server"], "", "unplaced scenes have an empty server");
        assert!(o["moving_to"].is_null());
    }
    let town = scenes.iter().find(|s| s["name"] == "town").expect("town");
    assert_eq!(town["population"], 42);
    assert_eq!(town["status"], "open");
    assert_eq!(town["tick_p99_ms"], 1.5);
    assert_eq!(town["epoch"], 1);
    let late = scenes.iter().find(|s| s["name"] == "late").expect("late");
    assert_eq!(late["epoch"], 0);
}

#[test]
fn status_lists_live_placements() {
    let (st, _, _) = world();
    let status = st.status();
    assert_eq!(
        status.scene_servers,
        vec![
            ServerRow {
                name: "a".into(),
                alive: true,
                scenes: vec!["town".into()],
                draining: false,
                game: String::new(),
            },
            ServerRow {
                name: "b".into(),
                alive: true,
                scenes: vec!["field".into()],
                draining: false,
                game: String::new(),
            },
        ]
    );
    let servers: Vec<_> = status.scenes.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(
        servers,
        ["b", "a"],
        "field on b, town on a (sorted by scene)"
    );
}
