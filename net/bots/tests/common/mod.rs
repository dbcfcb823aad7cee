//! What the in-process cluster tests share: scene definitions, a
//! provisioned database, and a coordinator and scene servers on loopback.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tessera_cluster::{ClusterConfig, ClusterStatus};
use tessera_coordinator::{Coordinator, CoordinatorConfig, DB_FILE};
use tessera_persistence::{self as db, NewAvatar, Store};
use tessera_scene_server::{SceneServer, SceneServerConfig};
use tessera_sim::SceneDef;
use tessera_wire::Secret;

pub const SECRET: &str = "cluster-test-secret-0123456789";

pub fn secret() -> Secret {
    Secret::new(SECRET)
}

pub fn defs() -> BTreeMap<String, SceneDef> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/scenes");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p).unwrap();
            let def = SceneDef::from_toml(&p.display().to_string(), &text).unwrap();
            out.insert(def.name.clone(), def);
        }
    }
    out
}

/// One account with one avatar saved in `scene` at `pos`.
pub fn provision(data: &Path, scene: &str, pos: [f32; 2]) -> (u64, u64) {
    std::fs::create_dir_all(data).unwrap();
    let store = Store::open(data.join(DB_FILE)).unwrap();
    let scene_id = store.ensure_scene(scene).unwrap();
    let account = store
        .register("walker@example.com", "correct horse battery", None)
        .unwrap();
    let avatar = store
        .provision_avatars(
            account,
            &[NewAvatar {
                name: "Walker".into(),
                figure: "f".into(),
                scene: scene_id,
            }],
        )
        .unwrap()[0];
    store
        .save_batch(&db::SaveBatch {
            objects: Vec::new(),
            scene: scene_id,
            states: vec![db::PcState {
                game: Vec::new(),
                avatar,
                scene: scene_id,
                position: pos,
                heading: 0.0,
                action: 0,
                mount: 0,
                online: false,
                tick: 1,
            }],
        })
        .unwrap();
    (account, avatar)
}

pub fn cluster_config() -> ClusterConfig {
    ClusterConfig {
        heartbeat_timeout_ms: 1500,
        restart_grace_ms: 1500,
        // The tests choose where scenes are (every one on the first server,
        // the second one a survivor): no hand-off to a server that joins.
        rebalance: false,
        ..ClusterConfig::default()
    }
}

pub async fn coordinator(data: &Path, listen: &str) -> Coordinator {
    let cfg = CoordinatorConfig {
        listen: listen.into(),
        http: "127.0.0.1:0".into(),
        data: data.to_path_buf(),
        heartbeat_ms: 200,
        tick_ms: 50,
        ..CoordinatorConfig::default()
    };
    Coordinator::start(
        cfg,
        cluster_config(),
        secret(),
        defs().into_keys().collect(),
    )
    .await
    .unwrap()
}

pub async fn scene_server(coord: &str, name: &str) -> SceneServer {
    let cfg = SceneServerConfig {
        coordinator: coord.into(),
        name: name.into(),
        heartbeat_ms: 200,
        ..SceneServerConfig::default()
    };
    let game = std::sync::Arc::new(tessera_sim::DefaultGame);
    SceneServer::start(cfg, secret(), defs(), game)
        .await
        .unwrap()
}

/// Polls `status` until `ok` holds, for at most `secs`.
pub async fn until(
    secs: u64,
    what: &str,
    mut status: impl FnMut() -> ClusterStatus,
    ok: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status();
        if ok(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn all_placed(s: &ClusterStatus) -> bool {
    !s.scenes.is_empty() && s.scenes.iter().all(|r| !r.server.is_empty())
}
