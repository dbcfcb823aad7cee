//! The replay of a gate's sessions on a new coordinator link: every open
//! session reaches the coordinator, however many there are (before, those
//! beyond the link's queue were dropped: 512 of 3,000 here).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_link::{Link, LinkConfig, connect};
use tessera_wire::{LinkMsg, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::agent::{Agent, AgentLoop, SessionPhase};
use crate::server::test_links::accept_gate_links;
use crate::server::{GateLimits, GateServerConfig, GateServerStats, Inbox};
use crate::{AdmitAll, Gate, GateConfig};

const SECRET: &str = "replay-test-secret-0123";
/// Far more open sessions than the link's send queue has frames.
const SESSIONS: u64 = 3000;

/// A stand-in coordinator: its end of every gate link goes to the test.
async fn fake_coordinator(stop: CancellationToken) -> (String, mpsc::Receiver<Link>) {
    accept_gate_links(Role::Coordinator, "coordinator", SECRET, stop).await
}

async fn agent_loop(link_cfg: LinkConfig) -> (AgentLoop, mpsc::Receiver<Inbox>) {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let (gate, _events) = Gate::bind(GateConfig::new(1, [7u8; 32]), &[addr], Arc::new(AdmitAll))
        .await
        .expect("gate binds");
    let (inbox_tx, inbox) = mpsc::channel(64);
    let now = Instant::now();
    let agents = (1..=SESSIONS)
        .map(|id| {
            let agent = Agent {
                avatar: Some(id),
                phase: SessionPhase::Open,
                ..Agent::opening(id, &GateLimits::default(), now)
            };
            (id, agent)
        })
        .collect();
    let agents = AgentLoop {
        config: GateServerConfig::default(),
        gate: Arc::new(gate),
        stats: Arc::new(GateServerStats::default()),
        link_cfg,
        inbox_tx,
        coordinator: None,
        scenes: BTreeMap::new(),
        scene_tasks: 0,
        agents,
        kicks: Vec::new(),
        seq: 0,
        inputs: BTreeMap::new(),
        replay: Default::default(),
    };
    (agents, inbox)
}

#[tokio::test]
async fn every_open_session_is_replayed_on_a_new_coordinator_link() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let stop = CancellationToken::new();
        let (addr, mut accepted) = fake_coordinator(stop.clone()).await;
        let link_cfg = LinkConfig::new(Role::Gate, "gate-1", SECRET);
        let (mut agents, _inbox) = agent_loop(link_cfg.clone()).await;
        let link = connect(&addr, &link_cfg).await.expect("link");
        let mut coordinator = accepted.recv().await.expect("accepted");
        let (sender, _receiver) = link.split();
        agents.on_inbox(Inbox::CoordinatorUp(sender));

        // The agent loop's sweeps go on while the coordinator reads; on
        // this one-thread runtime the link's writer runs only between them.
        let (mut opens, mut attaches, mut idle) = (0, 0, 0);
        while (opens < SESSIONS || attaches < SESSIONS) && idle < 20 {
            match tokio::time::timeout(Duration::from_millis(50), coordinator.recv()).await {
                Ok(Some(LinkMsg::OpenSession { .. })) => opens += 1,
                Ok(Some(LinkMsg::AttachAvatar { .. })) => attaches += 1,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    idle += 1;
                    agents.continue_replay();
                }
            }
        }
        assert_eq!((opens, attaches), (SESSIONS, SESSIONS));
        assert!(agents.replay.is_empty());
        stop.cancel();
    })
    .await
    .expect("test timed out");
}
