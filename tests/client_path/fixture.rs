//! The in-process cluster of the client-path tests: a coordinator, a
//! scene server and a gate on loopback, and a game client over the real
//! gate.

use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tessera_cluster::ClusterConfig;
use tessera_coordinator::login::LoginConfig;
use tessera_coordinator::{AdminToken, Coordinator, CoordinatorConfig, DB_FILE};
use tessera_gate::server::{GateServer, GateServerConfig};
use tessera_gate::token::{CONNECT_TOKEN_BYTES, from_hex, read_standard};
use tessera_gate::{Channel, ClientConfig, ClientEvent, GateClient};
use tessera_persistence::{self as db, NewAvatar, Store};
use tessera_proto::SessionId;
use tessera_proto::client::{CLIENT_PROTOCOL, ChatScope, ClientMsg, ServerMsg};
use tessera_proto::login::{ApiError, LoginRequest, LoginResponse};
use tessera_scene_server::{SceneServer, SceneServerConfig};
use tessera_sim::StatePacket;
use tessera_sim::protocol::Quantizer;
use tessera_wire::Input;
use tessera_wire::Secret;

use crate::common::defs;

pub const SECRET: &str = "client-path-test-secret-0123456789";
pub const PASSWORD: &str = "correct horse battery";
/// The admin API's bearer token (never the cluster secret).
pub const ADMIN_TOKEN: &str = "client-path-test-admin-token";

pub struct Cluster {
    pub _dir: tempfile::TempDir,
    pub data: std::path::PathBuf,
    pub login: LoginConfig,
    pub http: String,
    pub coord: Option<Coordinator>,
    pub scene: SceneServer,
    pub gate: GateServer,
}

impl Cluster {
    /// A coordinator, a scene server and a gate; accounts `names` (lower
    /// case) each with one avatar (capitalised) saved in the field near
    /// (500, 500), 10 units apart.
    pub async fn start(names: &[&str], login: LoginConfig) -> Self {
        Self::start_with_gate_game(names, login, tessera_proto::GameSchema::new("default")).await
    }

    /// [`Cluster::start`] with a gate that checks clients' actions against
    /// `game` (the scene and the coordinator run the default game).
    pub async fn start_with_gate_game(
        names: &[&str],
        login: LoginConfig,
        game: tessera_proto::GameSchema,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        {
            let store = Store::open(data.join(DB_FILE)).unwrap();
            let field = store.ensure_scene("field").unwrap();
            for (i, n) in names.iter().enumerate() {
                let account = store
                    .register(&format!("{n}@example.com"), PASSWORD, None)
                    .unwrap();
                let mut name = n.to_string();
                name[..1].make_ascii_uppercase();
                let avatar = store
                    .provision_avatars(
                        account,
                        &[NewAvatar {
                            name,
                            figure: "f".into(),
                            scene: field,
                        }],
                    )
                    .unwrap()[0];
                store
                    .save_batch(&db::SaveBatch {
                        objects: Vec::new(),
                        scene: field,
                        states: vec![db::PcState {
                            game: Vec::new(),
                            avatar,
                            scene: field,
                            position: [500.0 + 10.0 * i as f32, 500.0],
                            heading: 0.0,
                            action: 0,
                            mount: 0,
                            online: false,
                            tick: 1,
                        }],
                    })
                    .unwrap();
            }
        }
        let secret = Secret::new(SECRET);
        let coord = coordinator(&data, "127.0.0.1:0", login.clone()).await;
        let link = coord.link_addr().to_string();
        let scene = SceneServer::start(
            SceneServerConfig {
                coordinator: link.clone(),
                name: "scene-1".into(),
                heartbeat_ms: 100,
                ..SceneServerConfig::default()
            },
            secret.clone(),
            defs(),
            std::sync::Arc::new(tessera_sim::DefaultGame),
        )
        .await
        .unwrap();
        let gate = GateServer::start(
            GateServerConfig {
                coordinator: link,
                name: "gate-1".into(),
                listen: "127.0.0.1:0".into(),
                listeners: 1,
                heartbeat_ms: 100,
                game,
                ..GateServerConfig::default()
            },
            secret,
        )
        .await
        .unwrap();
        let http = format!("http://{}", coord.http_addr());
        let c = Self {
            _dir: dir,
            data,
            login,
            http,
            coord: Some(coord),
            scene,
            gate,
        };
        // Ready when the gate is registered and every scene is placed.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = c.coord().status();
            if s.gates.iter().any(|g| g.alive)
                && s.scenes.iter().all(|r| !r.server.is_empty())
                && !c.scene.placements().is_empty()
            {
                break;
            }
            assert!(Instant::now() < deadline, "cluster not ready: {s:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And the gate's first heartbeat (its addresses) has arrived.
        tokio::time::sleep(Duration::from_millis(300)).await;
        c
    }

    pub fn coord(&self) -> &Coordinator {
        self.coord.as_ref().unwrap()
    }

    /// Stops the coordinator and starts a new one on the same link address
    /// and database (the HTTP port changes).
    pub async fn restart_coordinator(&mut self) {
        self.restart_coordinator_after(|_| {}).await;
    }

    /// [`restart_coordinator`](Self::restart_coordinator), calling
    /// `between` with the data folder while no coordinator runs.
    pub async fn restart_coordinator_after(&mut self, between: impl FnOnce(&Path)) {
        let old = self.coord.take().unwrap();
        let link = old.link_addr().to_string();
        old.shutdown().await;
        between(&self.data);
        let new = coordinator(&self.data, &link, self.login.clone()).await;
        self.http = format!("http://{}", new.http_addr());
        self.coord = Some(new);
    }

    pub async fn stop(self) {
        self.gate.shutdown().await;
        self.scene.shutdown().await.unwrap();
        if let Some(c) = self.coord {
            c.shutdown().await;
        }
    }

    /// Waits (15 s at most) until the scenes count `online` players and a
    /// gate is alive: after a coordinator restart, once the gate replayed.
    pub async fn until_online(&self, online: u32) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.coord().status();
            if s.scenes.iter().map(|r| r.online).sum::<u32>() == online
                && s.gates.iter().any(|g| g.alive)
            {
                return;
            }
            assert!(Instant::now() < deadline, "not {online} online: {s:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn post(&self, path: &str, body: &impl serde::Serialize) -> (u16, serde_json::Value) {
        post(&self.http, path, body, None).await
    }

    /// `GET path` on the public API: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let uri: hyper::Uri = format!("{}{path}", self.http).parse().unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    pub async fn login(
        &self,
        name: &str,
        password: &str,
    ) -> Result<LoginResponse, (u16, ApiError)> {
        let req = LoginRequest {
            email: Some(format!("{name}@example.com")),
            password: Some(password.into()),
            resume_key: None,
            client_version: CLIENT_PROTOCOL,
            game_protocol: None,
        };
        let (status, v) = self.post("/v1/login", &req).await;
        if status == 200 {
            Ok(serde_json::from_value(v).unwrap())
        } else {
            Err((status, serde_json::from_value(v).unwrap()))
        }
    }
}

pub async fn coordinator(data: &Path, listen: &str, login: LoginConfig) -> Coordinator {
    Coordinator::start(
        CoordinatorConfig {
            listen: listen.into(),
            http: "127.0.0.1:0".into(),
            data: data.to_path_buf(),
            heartbeat_ms: 100,
            tick_ms: 50,
            login,
            admin_token: AdminToken::new(ADMIN_TOKEN),
            ..CoordinatorConfig::default()
        },
        ClusterConfig {
            heartbeat_timeout_ms: 1500,
            restart_grace_ms: 1500,
            ..ClusterConfig::default()
        },
        Secret::new(SECRET),
        defs().into_keys().collect(),
    )
    .await
    .unwrap()
}

pub async fn post(
    base: &str,
    path: &str,
    body: &impl serde::Serialize,
    bearer: Option<&str>,
) -> (u16, serde_json::Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req =
        hyper::Request::post(format!("{base}{path}")).header("content-type", "application/json");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let req = req
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// A game client over the real gate.
pub struct Player {
    pub client: GateClient,
    pub session: SessionId,
    pub net_id: u32,
    pub scene: String,
    /// Last own position replicated.
    pub me: Option<[f32; 2]>,
    /// Entities seen entering, by net id.
    pub seen: std::collections::BTreeSet<u32>,
    pub chat: Vec<(String, ChatScope, String)>,
    pub kicked: Option<String>,
    pub disconnected: bool,
    /// `Entered` messages received.
    pub entries: u32,
}

pub fn token(resp: &LoginResponse) -> tessera_gate::ConnectToken {
    let LoginResponse::Ok { token, .. } = resp else {
        panic!("not admitted: {resp:?}");
    };
    // The login hands out the netcode standard's 2,048-byte token.
    let bytes = from_hex(token).unwrap();
    assert_eq!(bytes.len(), CONNECT_TOKEN_BYTES);
    read_standard(&bytes).unwrap()
}

impl Player {
    /// Connects with a login answer and waits for the welcome.
    pub async fn connect(resp: &LoginResponse) -> Self {
        let client = GateClient::connect(token(resp), ClientConfig::default())
            .await
            .unwrap();
        let mut p = Self {
            client,
            session: SessionId(0),
            net_id: 0,
            scene: String::new(),
            me: None,
            seen: Default::default(),
            chat: Vec::new(),
            kicked: None,
            disconnected: false,
            entries: 0,
        };
        let welcome = p
            .until(5, "welcome", |m| matches!(m, ServerMsg::Welcome { .. }))
            .await;
        let ServerMsg::Welcome { session, .. } = welcome else {
            unreachable!()
        };
        p.session = session;
        p
    }

    pub fn send(&self, m: &ClientMsg) {
        let ch = if matches!(m, ClientMsg::Input(_)) {
            Channel::Unreliable
        } else {
            Channel::Reliable
        };
        self.client.send(ch, m.encode()).unwrap();
    }

    /// Reads until a reliable message `pred` accepts (bookkeeping the rest).
    pub async fn until(
        &mut self,
        secs: u64,
        what: &str,
        mut pred: impl FnMut(&ServerMsg) -> bool,
    ) -> ServerMsg {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let ev = tokio::time::timeout_at(deadline, self.client.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
            let Some(ev) = ev else {
                panic!("client stopped while waiting for {what}");
            };
            if let Some(m) = self.handle(ev)
                && pred(&m)
            {
                return m;
            }
            if self.disconnected {
                panic!(
                    "disconnected while waiting for {what} (kicked: {:?})",
                    self.kicked
                );
            }
        }
    }

    /// Reads whatever arrives for `ms`.
    pub async fn pump(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.client.recv()).await {
            self.handle(ev);
        }
    }

    pub fn handle(&mut self, ev: ClientEvent) -> Option<ServerMsg> {
        match ev {
            ClientEvent::Message {
                channel: Channel::Unreliable,
                payload,
            } => {
                if let Ok(p) = StatePacket::decode(&payload) {
                    let q = Quantizer::new([1000.0, 1000.0]);
                    if let Some(you) = p.you {
                        self.me = Some(q.position(&you.q));
                    }
                    for e in p.enters {
                        self.seen.insert(e.id);
                    }
                }
                None
            }
            ClientEvent::Message { payload, .. } => {
                let m = ServerMsg::decode(&payload).unwrap();
                match &m {
                    ServerMsg::Chat { from, scope, text } => {
                        self.chat.push((from.clone(), scope.clone(), text.clone()));
                    }
                    ServerMsg::Kicked { reason } => self.kicked = Some(reason.clone()),
                    ServerMsg::Entered { net_id, scene, .. } => {
                        self.entries += 1;
                        self.net_id = *net_id;
                        self.scene = scene.clone();
                    }
                    _ => {}
                }
                Some(m)
            }
            ClientEvent::Disconnected(_) => {
                self.disconnected = true;
                None
            }
            ClientEvent::Connected => None,
        }
    }

    /// Selects the first avatar of the list (creating one if none).
    pub async fn enter(&mut self) -> u64 {
        let list = self
            .until(5, "avatars", |m| matches!(m, ServerMsg::Avatars(_)))
            .await;
        let ServerMsg::Avatars(list) = list else {
            unreachable!()
        };
        let avatar = list[0].id;
        self.send(&ClientMsg::Select { avatar });
        self.until(5, "entered", |m| matches!(m, ServerMsg::Entered { .. }))
            .await;
        avatar
    }

    pub async fn walk(&mut self, dir: [f32; 2], ms: u64) {
        let start = Instant::now();
        let mut seq = 0;
        while start.elapsed() < Duration::from_millis(ms) {
            seq += 1;
            self.send(&ClientMsg::Input(Input {
                seq,
                dir,
                ..Input::default()
            }));
            self.pump(50).await;
        }
        self.send(&ClientMsg::Input(Input {
            seq: seq + 1,
            dir: [0.0, 0.0],
            ..Input::default()
        }));
        self.pump(300).await;
    }
}
