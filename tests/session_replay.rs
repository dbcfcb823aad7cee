//! A gate's replay of its sessions after a coordinator restart, in process
//! with the real gate and clients: a replayed attach the scene already had
//! leaves the client in the world (no second `Entered`, which would start
//! its view afresh while the scene replicates on from what it had sent),
//! and a replay the coordinator refuses kicks the client with the reason.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "client_path/fixture.rs"]
#[allow(dead_code)] // Helpers the other users of the fixture need.
mod fixture;
use common::bounded;
use fixture::*;

use std::time::{Duration, Instant};

use tessera_coordinator::DB_FILE;
use tessera_coordinator::login::LoginConfig;
use tessera_persistence::Store;
use tessera_proto::client::ServerMsg;

/// Alice is kicked with a reason saying `why` and let go; Bob plays on, and
/// the counts agree on one player.
async fn kicked_while_bob_plays_on(c: &Cluster, alice: &mut Player, bob: &mut Player, why: &str) {
    let kick = alice
        .until(10, "the kick", |m| matches!(m, ServerMsg::Kicked { .. }))
        .await;
    let ServerMsg::Kicked { reason } = kick else {
        unreachable!()
    };
    assert!(reason.contains(why), "{reason}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !alice.disconnected {
        assert!(Instant::now() < deadline, "alice still connected");
        alice.pump(50).await;
    }
    c.until_online(1).await;
    bob.pump(10).await;
    assert!(!bob.disconnected);
}

#[test]
fn a_replayed_attach_does_not_enter_the_client_again() {
    bounded(90, async {
        let mut c = Cluster::start(&["alice", "bob"], LoginConfig::default()).await;
        let mut alice = Player::connect(&c.login("alice", PASSWORD).await.unwrap()).await;
        let mut bob = Player::connect(&c.login("bob", PASSWORD).await.unwrap()).await;
        alice.enter().await;
        bob.enter().await;
        let net_id = alice.net_id;
        c.restart_coordinator().await;
        c.until_online(2).await;
        // Past the grace period (1.5 s), whose end syncs every scene.
        alice.pump(2000).await;
        bob.pump(10).await;
        assert_eq!((alice.entries, bob.entries), (1, 1));
        assert_eq!(alice.net_id, net_id);
        assert!(!alice.disconnected && !bob.disconnected);
        c.stop().await;
    });
}

#[test]
fn a_replay_the_coordinator_refuses_kicks_the_client_with_the_reason() {
    bounded(90, async {
        let mut c = Cluster::start(&["alice", "bob"], LoginConfig::default()).await;
        let mut alice = Player::connect(&c.login("alice", PASSWORD).await.unwrap()).await;
        let mut bob = Player::connect(&c.login("bob", PASSWORD).await.unwrap()).await;
        alice.enter().await;
        bob.enter().await;
        // Alice's account is locked while the coordinator is down.
        c.restart_coordinator_after(|data| {
            let store = Store::open(data.join(DB_FILE)).unwrap();
            let id = store.account_by_email("alice@example.com").unwrap().id;
            store.lock_account(id).unwrap();
        })
        .await;
        kicked_while_bob_plays_on(&c, &mut alice, &mut bob, "locked").await;
        c.stop().await;
    });
}

#[test]
fn a_replayed_attach_the_coordinator_refuses_kicks_the_client_with_the_reason() {
    bounded(90, async {
        let mut c = Cluster::start(&["alice", "bob"], LoginConfig::default()).await;
        let mut alice = Player::connect(&c.login("alice", PASSWORD).await.unwrap()).await;
        let mut bob = Player::connect(&c.login("bob", PASSWORD).await.unwrap()).await;
        let avatar = alice.enter().await;
        bob.enter().await;
        // Alice's session replays (her account is fine) but her avatar is
        // deleted while the coordinator is down: its attach is refused.
        c.restart_coordinator_after(|data| {
            let store = Store::open(data.join(DB_FILE)).unwrap();
            store.delete_avatar(avatar).unwrap();
        })
        .await;
        kicked_while_bob_plays_on(&c, &mut alice, &mut bob, "could not be restored").await;
        c.stop().await;
    });
}

/// The other side of the first test: a client that selects the avatar it
/// has again asked for it, and is told `Entered` again.
#[test]
fn a_client_that_selects_its_avatar_again_is_entered_again() {
    bounded(60, async {
        let c = Cluster::start(&["alice"], LoginConfig::default()).await;
        let mut alice = Player::connect(&c.login("alice", PASSWORD).await.unwrap()).await;
        let avatar = alice.enter().await;
        let net_id = alice.net_id;
        alice.send(&tessera_proto::client::ClientMsg::Select { avatar });
        alice
            .until(5, "entered again", |m| {
                matches!(m, ServerMsg::Entered { .. })
            })
            .await;
        assert_eq!((alice.entries, alice.net_id), (2, net_id));
        c.stop().await;
    });
}
