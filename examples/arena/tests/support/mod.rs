//! What the arena's cluster tests share: a provisioned database, and
//! reading back what it saved.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;

use tessera_arena::SHRINE_KEY;
use tessera_coordinator::DB_FILE;
use tessera_persistence::{self as db, GameField, NewAvatar, Store};

/// Accounts `name@example.com`, each with one avatar in `field` at its
/// position; their (account, avatar) ids.
pub fn provision(data: &Path, who: &[(&str, [f32; 2])]) -> Vec<(u64, u64)> {
    let who: Vec<(&str, &str, [f32; 2])> = who.iter().map(|&(n, p)| (n, "field", p)).collect();
    provision_in(data, &who)
}

/// [`provision`] with each avatar in a scene of its own choosing.
pub fn provision_in(data: &Path, who: &[(&str, &str, [f32; 2])]) -> Vec<(u64, u64)> {
    std::fs::create_dir_all(data).unwrap();
    let store = Store::open(data.join(DB_FILE)).unwrap();
    who.iter()
        .map(|(name, scene, pos)| {
            let field = store.ensure_scene(scene).unwrap();
            let account = store
                .register(
                    &format!("{name}@example.com"),
                    "correct horse battery",
                    None,
                )
                .unwrap();
            let avatar = store
                .provision_avatars(
                    account,
                    &[NewAvatar {
                        name: name.to_string(),
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
                        position: *pos,
                        heading: 0.0,
                        action: 0,
                        mount: 0,
                        online: false,
                        tick: 1,
                    }],
                })
                .unwrap();
            (account, avatar)
        })
        .collect()
}

/// A saved field's value, decoded as the arena encodes it (postcard).
pub fn field<T: serde::de::DeserializeOwned>(game: &[GameField], name: &str) -> Option<T> {
    let f = game.iter().find(|f| f.name == name && f.version == 1)?;
    postcard::from_bytes(&f.bytes).ok()
}

/// The avatar's saved hit points in `scene`, and the shrine's saved owner.
pub fn saved(data: &Path, scene: &str, avatar: u64) -> (Option<u16>, Option<u64>) {
    let store = Store::open_existing(data.join(DB_FILE)).unwrap();
    let id = store.scene_by_name(scene).unwrap().unwrap().id;
    let hp = store
        .load_scene(id)
        .unwrap()
        .into_iter()
        .find(|s| s.avatar == avatar)
        .and_then(|s| field::<tessera_arena::Hp>(&s.game, "hp"))
        .map(|h| h.0);
    let field_id = store.scene_by_name("field").unwrap().unwrap().id;
    let owner = store
        .load_scene_objects(field_id)
        .unwrap()
        .into_iter()
        .find(|o| o.key == SHRINE_KEY)
        .and_then(|o| field::<tessera_arena::ShrineOwner>(&o.game, "shrine_owner"))
        .map(|o| o.0);
    (hp, owner)
}

/// The arena's actions by name, as the schema numbers them.
pub fn action(name: &str) -> u16 {
    let schema = tessera_sim::game::game_schema(&tessera_arena::Arena).unwrap();
    schema.action(name).unwrap() as u16
}
