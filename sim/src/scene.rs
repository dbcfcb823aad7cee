//! Scene definitions: bounds, spawn points, static obstacles, portals and NPC
//! spawners, parsed from TOML (`assets/scenes/*.toml`).
//!
//! `sim` does no file I/O: the caller reads the file and hands the text and its
//! path here, so that every error names the file and the field.

use serde::Deserialize;

/// A 2D point or vector in scene units.
pub type Vec2 = [f32; 2];

#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    #[error("{file}: not a valid scene definition: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: field `{field}`: {reason}")]
    Invalid {
        file: String,
        field: String,
        reason: String,
    },
}

/// An axis-aligned rectangle, `min` inclusive corner to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rect {
    pub min: Vec2,
    pub max: Vec2,
}

impl Rect {
    pub fn contains(&self, p: Vec2) -> bool {
        p[0] >= self.min[0] && p[0] <= self.max[0] && p[1] >= self.min[1] && p[1] <= self.max[1]
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnPoint {
    pub pos: Vec2,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Portal {
    /// The trigger area: a PC that walks into it is handed to the host for transfer.
    pub area: Rect,
    /// Name of the target scene.
    pub target: String,
    /// Where the avatar arrives in the target scene.
    pub target_pos: Vec2,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpcSpawner {
    pub center: Vec2,
    /// NPCs spawn uniformly in this radius around `center` and wander inside it.
    pub radius: f32,
    pub count: u32,
    /// Wander speed in units per second. Default 2.
    #[serde(default = "default_npc_speed")]
    pub speed: f32,
    /// Appearance id sent to clients on enter. Default 0.
    #[serde(default)]
    pub figure: u32,
}

fn default_npc_speed() -> f32 {
    2.0
}

/// A scene as written in its TOML file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneDef {
    pub name: String,
    /// Width and height; the scene spans `[0, width] × [0, height]`.
    pub size: Vec2,
    /// Tick rate in Hz. Default 20.
    #[serde(default = "default_tick_hz")]
    pub tick_hz: u32,
    #[serde(default)]
    pub spawn: Vec<SpawnPoint>,
    #[serde(default)]
    pub obstacle: Vec<Rect>,
    #[serde(default)]
    pub portal: Vec<Portal>,
    #[serde(default)]
    pub npc_spawner: Vec<NpcSpawner>,
    /// Mount ids a PC may ride in this scene (`mounts = [1, 2]`); any other
    /// mount an input asks for is refused (the PC moves on foot, see
    /// `movement::mount_allowed`). Default none.
    #[serde(default)]
    pub mounts: Vec<u8>,
}

fn default_tick_hz() -> u32 {
    20
}

/// The largest scene side accepted; positions quantize to 16 bits over it.
pub const MAX_SCENE_SIDE: f32 = 65_536.0;

impl SceneDef {
    /// Parses and validates a scene. `file` names the source in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, SceneError> {
        let def: SceneDef = toml::from_str(text).map_err(|e| SceneError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        def.validate(file)?;
        Ok(def)
    }

    /// An open, empty square field (no obstacles), for tests and benches.
    pub fn open_field(name: &str, side: f32) -> Self {
        SceneDef {
            name: name.to_owned(),
            size: [side, side],
            tick_hz: 20,
            spawn: vec![SpawnPoint {
                pos: [side / 2.0, side / 2.0],
            }],
            obstacle: Vec::new(),
            portal: Vec::new(),
            npc_spawner: Vec::new(),
            mounts: Vec::new(),
        }
    }

    pub fn validate(&self, file: &str) -> Result<(), SceneError> {
        let bad = |field: String, reason: &str| SceneError::Invalid {
            file: file.to_owned(),
            field,
            reason: reason.to_owned(),
        };
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(bad("name".into(), "must be 1 to 64 characters"));
        }
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "name".into(),
                "may hold only ASCII letters, digits, '_' and '-'",
            ));
        }
        for (i, side) in self.size.iter().enumerate() {
            if !side.is_finite() || *side < 1.0 || *side > MAX_SCENE_SIDE {
                return Err(bad(
                    format!("size[{i}]"),
                    "must be a number from 1 to 65536",
                ));
            }
        }
        if self.tick_hz == 0 || self.tick_hz > 1000 {
            return Err(bad("tick_hz".into(), "must be from 1 to 1000"));
        }
        let inside = |p: Vec2| {
            p[0].is_finite()
                && p[1].is_finite()
                && (0.0..=self.size[0]).contains(&p[0])
                && (0.0..=self.size[1]).contains(&p[1])
        };
        let check_rect = |field: String, r: &Rect| -> Result<(), SceneError> {
            if !inside(r.min) || !inside(r.max) {
                return Err(bad(field, "corners must lie inside the scene"));
            }
            if r.min[0] >= r.max[0] || r.min[1] >= r.max[1] {
                return Err(bad(field, "`min` must be less than `max` on both axes"));
            }
            Ok(())
        };
        if self.spawn.is_empty() {
            return Err(bad("spawn".into(), "at least one spawn point is required"));
        }
        for (i, s) in self.spawn.iter().enumerate() {
            if !inside(s.pos) {
                return Err(bad(format!("spawn[{i}].pos"), "must lie inside the scene"));
            }
            if self.obstacle.iter().any(|o| o.contains(s.pos)) {
                return Err(bad(format!("spawn[{i}].pos"), "lies inside an obstacle"));
            }
        }
        for (i, o) in self.obstacle.iter().enumerate() {
            check_rect(format!("obstacle[{i}]"), o)?;
        }
        for (i, p) in self.portal.iter().enumerate() {
            check_rect(format!("portal[{i}].area"), &p.area)?;
            if p.target.is_empty() {
                return Err(bad(format!("portal[{i}].target"), "must name a scene"));
            }
            if !p.target_pos.iter().all(|v| v.is_finite() && *v >= 0.0) {
                return Err(bad(
                    format!("portal[{i}].target_pos"),
                    "must be finite and non-negative",
                ));
            }
        }
        for (i, n) in self.npc_spawner.iter().enumerate() {
            if !inside(n.center) {
                return Err(bad(
                    format!("npc_spawner[{i}].center"),
                    "must lie inside the scene",
                ));
            }
            if !n.radius.is_finite() || n.radius < 0.0 {
                return Err(bad(
                    format!("npc_spawner[{i}].radius"),
                    "must be finite and >= 0",
                ));
            }
            if n.count > 100_000 {
                return Err(bad(
                    format!("npc_spawner[{i}].count"),
                    "must be at most 100000",
                ));
            }
            if !n.speed.is_finite() || n.speed < 0.0 || n.speed > 100.0 {
                return Err(bad(
                    format!("npc_spawner[{i}].speed"),
                    "must be from 0 to 100",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
size = [100.0, 50.0]
[[spawn]]
pos = [10.0, 10.0]
[[obstacle]]
min = [20.0, 20.0]
max = [30.0, 30.0]
"#;

    #[test]
    fn parses_a_good_scene() {
        let s = SceneDef::from_toml("t.toml", GOOD).unwrap();
        assert_eq!(s.size, [100.0, 50.0]);
        assert_eq!(s.tick_hz, 20);
        assert_eq!(s.obstacle.len(), 1);
    }

    fn err(text: &str) -> String {
        SceneDef::from_toml("bad.toml", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = err(&GOOD.replace("size = [100.0, 50.0]", "size = [100.0, -5.0]"));
        assert!(e.contains("bad.toml") && e.contains("size[1]"), "{e}");
        let e = err(&GOOD.replace("max = [30.0, 30.0]", "max = [15.0, 30.0]"));
        assert!(e.contains("obstacle[0]") && e.contains("min"), "{e}");
        let e = err(&GOOD.replace("name = \"t\"", "name = \"t\"\nsizee = 3"));
        assert!(e.contains("bad.toml") && e.contains("sizee"), "{e}");
        let e = err(&GOOD.replace("size = [100.0, 50.0]\n", ""));
        assert!(e.contains("bad.toml") && e.contains("size"), "{e}");
        let e = err(&GOOD.replace("pos = [10.0, 10.0]", "pos = [25.0, 25.0]"));
        assert!(e.contains("spawn[0].pos") && e.contains("obstacle"), "{e}");
        let e = err("this is = = not toml");
        assert!(e.contains("bad.toml"), "{e}");
        let e = err(&GOOD.replace("size = [100.0, 50.0]", "size = [100.0, nan]"));
        assert!(e.contains("size[1]"), "{e}");
    }
}
