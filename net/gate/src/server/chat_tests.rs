//! A chat flood through the gate path: the coordinator's `ChatTo` lines fan
//! out to real clients over real sockets; none is disconnected, the lines
//! that did not fit are shed and counted, and the sessions go on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_link::LinkConfig;
use tessera_proto::ChatScope;
use tessera_wire::{LinkMsg, Role};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::server::agent::{Agent, SessionPhase};
use crate::server::{GateLimits, GateServerConfig, GateServerStats, Inbox};
use crate::token::{TokenIssuer, unix_now};
use crate::{AdmitAll, ClientConfig, ClientEvent, Gate, GateClient, GateConfig, GateEvent};

const KEY: [u8; 32] = [9u8; 32];
const PROTOCOL: u64 = 0x7E55_C4A7;
const LIMIT: Duration = Duration::from_secs(20);
const CLIENTS: u64 = 20;
/// Small queues, so a flood reaches their limits at once.
const CHANNEL_MEMORY: usize = 4 * 1024;

/// A gate whose listener has a `command_queue` and 4 KiB channels, with
/// `CLIENTS` connected clients, and an agent loop with an open session for
/// each (chat lines are not capped per recipient: `limits`).
async fn setup(
    limits: GateLimits,
    command_queue: usize,
) -> (AgentLoop, mpsc::Receiver<GateEvent>, Vec<GateClient>) {
    let mut config = GateConfig::new(PROTOCOL, KEY);
    config.command_queue = command_queue;
    config.server_channel_memory = CHANNEL_MEMORY;
    config.update_interval = Duration::from_millis(10);
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let (gate, mut events) = Gate::bind(config, &[addr], Arc::new(AdmitAll))
        .await
        .expect("gate binds");
    let issuer = TokenIssuer::new(PROTOCOL, KEY, Duration::from_secs(30), 5).expect("token issuer");
    let mut clients = Vec::new();
    for id in 1..=CLIENTS {
        let issued = issuer
            .issue(unix_now(), id, id, &gate.addresses())
            .expect("token");
        let config = ClientConfig {
            receive_memory: CHANNEL_MEMORY,
            ..ClientConfig::default()
        };
        let mut c = GateClient::connect(issued.token, config)
            .await
            .expect("client starts");
        let first = timeout(LIMIT, c.recv()).await.expect("client connects");
        assert_eq!(first, Some(ClientEvent::Connected));
        clients.push(c);
    }
    let mut connected = 0;
    while connected < CLIENTS {
        let e = timeout(LIMIT, events.recv()).await.expect("gate event");
        if let Some(GateEvent::Connected { .. }) = e {
            connected += 1;
        }
    }
    let (inbox_tx, _inbox) = mpsc::channel(4);
    let config = GateServerConfig {
        limits,
        ..GateServerConfig::default()
    };
    let now = Instant::now();
    let agents = (1..=CLIENTS)
        .map(|id| {
            let agent = Agent {
                avatar: Some(id),
                phase: SessionPhase::Open,
                ..Agent::opening(id, &config.limits, now)
            };
            (id, agent)
        })
        .collect();
    let agent_loop = AgentLoop {
        config,
        gate: Arc::new(gate),
        stats: Arc::new(GateServerStats::default()),
        link_cfg: LinkConfig::new(Role::Gate, "gate-1", "chat-test-secret-0123"),
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
    (agent_loop, events, clients)
}

/// Reads `client`'s events until the reliable `Moving` message, failing on
/// a disconnect.
async fn expect_moving(client: &mut GateClient) {
    loop {
        match client.recv().await {
            Some(ClientEvent::Message { payload, .. }) => {
                if let Ok(ServerMsg::Moving { .. }) = ServerMsg::decode(&payload) {
                    return;
                }
            }
            Some(ClientEvent::Connected) => {}
            other => panic!("client {} ended: {other:?}", client.client_id()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_flood_sheds_lines_and_disconnects_no_recipient() {
    timeout(Duration::from_secs(60), async {
        let uncapped = GateLimits {
            chat_received_per_s: 100_000,
            chat_received_burst: 100_000,
            ..GateLimits::default()
        };
        let (mut agents, mut events, mut clients) = setup(uncapped, 1024).await;
        let sessions: Vec<SessionId> = (1..=CLIENTS).map(SessionId).collect();
        // 400 lines of 250 bytes to every client: 100 KB each against 4 KiB
        // channels (2 KiB of it for chat: 8 lines unacknowledged), in
        // bursts of 1,000 sends against a 1,024-command queue (a pause
        // every 50 lines, so the listener drains and sends).
        for line in 0..400u32 {
            agents.on_inbox(Inbox::Coordinator(LinkMsg::ChatTo {
                sessions: sessions.clone(),
                from: "Flooder".into(),
                scope: ChatScope::Global,
                text: format!("{line:04} {}", "x".repeat(245)),
            }));
            if line % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let s = agents.stats.snapshot();
        let t = agents.gate.stats().snapshot();
        assert!(s.chat_delivered > 0, "{s:?}");
        assert!(s.chat_shed_queue_full > 0, "queue sheds counted: {s:?}");
        assert!(t.sheddable_dropped > 0, "channel sheds counted: {t:?}");
        assert_eq!(
            s.chat_delivered + s.chat_shed_queue_full,
            400 * CLIENTS,
            "every line to every recipient delivered or shed"
        );

        // Every session goes on: a reliable message reaches every client.
        for id in 1..=CLIENTS {
            agents.tell(
                id,
                &ServerMsg::Moving {
                    scene: "town".into(),
                },
            );
        }
        for c in &mut clients {
            timeout(LIMIT, expect_moving(c))
                .await
                .expect("told after the flood");
        }
        assert_eq!(agents.gate.connected() as u64, CLIENTS);
        assert_eq!(agents.stats.snapshot().told_dropped, 0);
        assert_eq!(agents.gate.stats().snapshot().kicked_backlogged, 0);
        while let Ok(e) = events.try_recv() {
            assert!(!matches!(e, GateEvent::Disconnected { .. }), "{e:?}");
        }

        for c in clients {
            c.close().await;
        }
        agents.gate.stop();
    })
    .await
    .expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_is_sent_chat_at_its_rate_the_rest_shed() {
    timeout(Duration::from_secs(60), async {
        let capped = GateLimits {
            chat_received_per_s: 1,
            chat_received_burst: 3,
            ..GateLimits::default()
        };
        let (mut agents, _events, clients) = setup(capped, 1024).await;
        let sessions: Vec<SessionId> = (1..=CLIENTS).map(SessionId).collect();
        for line in 0..10u32 {
            agents.on_inbox(Inbox::Coordinator(LinkMsg::ChatTo {
                sessions: sessions.clone(),
                from: "Chatter".into(),
                scope: ChatScope::Scene,
                text: format!("line {line}"),
            }));
        }
        let s = agents.stats.snapshot();
        // Each recipient gets its burst of 3 (and one more per second the
        // loop took); the rest are shed, each counted.
        assert!(s.chat_delivered >= 3 * CLIENTS, "{s:?}");
        assert!(s.chat_shed_recipient_rate > 0, "{s:?}");
        assert_eq!(s.chat_delivered + s.chat_shed_recipient_rate, 10 * CLIENTS);
        for c in clients {
            c.close().await;
        }
        agents.gate.stop();
    })
    .await
    .expect("test exceeded its time bound");
}
