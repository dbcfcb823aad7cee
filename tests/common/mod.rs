//! Helpers shared by the in-process client-path tests (`client_path.rs`,
//! `portal.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tessera_sim::SceneDef;

/// The repository's scenes (`assets/scenes/*.toml`), by name.
pub fn defs() -> BTreeMap<String, SceneDef> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/scenes");
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

/// Runs `f` on a two-thread runtime and fails the test after `secs`.
pub fn bounded<F: std::future::Future<Output = ()>>(secs: u64, f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .expect("test timed out");
    });
}
