//! Finding and loading scene definitions from `assets/scenes`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tessera_sim::SceneDef;

/// The scenes folder: `$TESSERA_ASSETS/scenes`, else `./assets/scenes`, else
/// the one in the source tree this binary was built from.
pub fn scenes_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TESSERA_ASSETS") {
        return Path::new(&dir).join("scenes");
    }
    let local = Path::new("assets/scenes");
    if local.is_dir() {
        return local.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/scenes")
}

/// Loads a scene by name (`field` → `assets/scenes/field.toml`) or by path.
pub fn load(name_or_path: &str) -> anyhow::Result<SceneDef> {
    let as_path = Path::new(name_or_path);
    let path = if name_or_path.ends_with(".toml") || as_path.components().count() > 1 {
        as_path.to_path_buf()
    } else {
        scenes_dir().join(format!("{name_or_path}.toml"))
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read scene file {}", path.display()))?;
    Ok(SceneDef::from_toml(&path.display().to_string(), &text)?)
}
