//! Scene server links are kept up while sessions are routed there: a lost
//! link is made again without a new `Routed`, and an unused one is closed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tessera_link::{CloseReason, Link, LinkConfig};
use tessera_wire::Role;
use tokio::sync::mpsc;

use super::*;
use crate::server::agent::{Agent, SessionPhase};
use crate::server::test_links::accept_gate_links;
use crate::server::{GateServerConfig, GateServerStats, Inbox};
use crate::{AdmitAll, Gate, GateConfig};

const SECRET: &str = "routes-test-secret-0123";

/// A stand-in scene server: every gate link it accepts goes to the test.
async fn fake_scene_server(stop: CancellationToken) -> (String, mpsc::Receiver<Link>) {
    accept_gate_links(Role::SceneServer, "scene-a", SECRET, stop).await
}

async fn agent_loop() -> (AgentLoop, mpsc::Receiver<Inbox>) {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let (gate, _events) = Gate::bind(GateConfig::new(1, [7u8; 32]), &[addr], Arc::new(AdmitAll))
        .await
        .expect("gate binds");
    let mut link_cfg = LinkConfig::new(Role::Gate, "gate-1", SECRET);
    link_cfg.backoff.initial = Duration::from_millis(20);
    link_cfg.backoff.max = Duration::from_millis(200);
    let (inbox_tx, inbox) = mpsc::channel(64);
    let agents = AgentLoop {
        config: GateServerConfig::default(),
        gate: Arc::new(gate),
        stats: Arc::new(GateServerStats::default()),
        link_cfg,
        inbox_tx,
        coordinator: None,
        scenes: BTreeMap::new(),
        scene_tasks: 0,
        agents: BTreeMap::new(),
        kicks: Vec::new(),
        seq: 0,
        inputs: BTreeMap::new(),
        replay: Default::default(),
    };
    (agents, inbox)
}

/// Hands the link tasks' reports to the loop until `ok` holds.
async fn pump_until(
    agents: &mut AgentLoop,
    inbox: &mut mpsc::Receiver<Inbox>,
    ok: impl Fn(&AgentLoop) -> bool,
) {
    while !ok(agents) {
        let m = inbox.recv().await.expect("inbox open");
        agents.on_inbox(m);
    }
}

fn link_up(agents: &AgentLoop) -> bool {
    agents
        .scenes
        .get("scene-a")
        .is_some_and(|l| l.sender.is_some())
}

#[tokio::test]
async fn a_lost_scene_link_is_made_again_while_a_session_is_routed_there() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let stop = CancellationToken::new();
        let (addr, mut accepted) = fake_scene_server(stop.clone()).await;
        let (mut agents, mut inbox) = agent_loop().await;
        let now = Instant::now();
        agents.agents.insert(
            7,
            Agent {
                avatar: Some(70),
                phase: SessionPhase::Open,
                ..Agent::opening(1, &crate::server::GateLimits::default(), now)
            },
        );
        agents.on_routed(7, "field".into(), 1, "scene-a".into(), &addr);
        let first = accepted.recv().await.expect("first link");
        pump_until(&mut agents, &mut inbox, link_up).await;

        // The scene server's end goes away (as a half-open link that timed
        // out would): no new `Routed` comes, yet the gate links again.
        drop(first);
        pump_until(&mut agents, &mut inbox, |a| !link_up(a)).await;
        let second = accepted.recv().await.expect("the gate reconnects");
        pump_until(&mut agents, &mut inbox, link_up).await;
        assert_eq!(agents.scene_tasks, 1, "the same task reconnected");

        // Once no session is routed there, the link is closed.
        agents.agents.clear();
        agents.close_unused_scene_links();
        assert!(agents.scenes.is_empty());
        assert_eq!(second.closed().await, CloseReason::PeerClosed);
        stop.cancel();
    })
    .await
    .expect("test timed out");
}
