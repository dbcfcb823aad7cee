//! Scenes and the PC state each scene owns: load a scene's PCs, save batches of PC states.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use crate::error::*;
use crate::schema::{self, *};
use crate::store::{Store, next_id, now_ms};
use crate::types::{ObjectState, PcState, SaveBatch, SaveReport, Scene, SceneId, SceneStatus};
use crate::validate;

/// Inserts a scene and its name index row. Used by creation and import.
pub(crate) fn insert_scene(txn: &WriteTransaction, scene: &Scene) -> Result<(), CreateSceneError> {
    validate::check_scene_name(&scene.name)?;
    let mut names = txn.open_table(SCENE_NAMES)?;
    if names.get(scene.name.as_str())?.is_some() {
        return Err(CreateSceneError::DuplicateName {
            name: scene.name.clone(),
        });
    }
    names.insert(scene.name.as_str(), scene.id)?;
    txn.open_table(SCENES)?
        .insert(scene.id, schema::encode(scene)?.as_slice())?;
    Ok(())
}

/// Writes PC states and scene objects into one open transaction; returns what was written
/// and refused.
pub(crate) fn write_states(
    txn: &WriteTransaction,
    batch: &SaveBatch,
) -> Result<SaveReport, SaveError> {
    if txn.open_table(SCENES)?.get(batch.scene)?.is_none() {
        return Err(SaveError::UnknownScene(batch.scene));
    }
    let membership = txn.open_table(AVATAR_SCENE)?;
    let mut pcs = txn.open_table(PC_STATES)?;
    let mut report = SaveReport::default();
    // A PC record is ~20 bytes; 64 leaves room for every varint at its widest.
    let mut buf = [0u8; 64];
    for state in &batch.states {
        let finite = state.position.iter().all(|c| c.is_finite()) && state.heading.is_finite();
        let member = state.scene == batch.scene
            && membership.get(state.avatar)?.map(|g| g.value()) == Some(batch.scene);
        if !finite || !member || !validate::game_fits(&state.game) {
            report.refused += 1;
            continue;
        }
        let record = PcRecord::from_state(state);
        if record.game.is_empty() {
            let bytes = postcard::to_slice(&(SCHEMA_VERSION, &record), &mut buf)
                .map_err(|e| StoreError::Encode(e.to_string()))?;
            pcs.insert((batch.scene, state.avatar), &*bytes)?;
        } else {
            pcs.insert(
                (batch.scene, state.avatar),
                schema::encode(&record)?.as_slice(),
            )?;
        }
        report.written += 1;
    }
    if !batch.objects.is_empty() {
        let mut objects = txn.open_table(SCENE_OBJECTS)?;
        for o in &batch.objects {
            if !validate::game_fits(&o.game) {
                report.refused += 1;
                continue;
            }
            if o.game.is_empty() {
                objects.remove((batch.scene, o.key))?;
            } else {
                let record = ObjectRecord {
                    tick: o.tick,
                    game: o.game.clone(),
                };
                objects.insert((batch.scene, o.key), schema::encode(&record)?.as_slice())?;
            }
            report.objects += 1;
        }
    }
    Ok(report)
}

impl Store {
    /// Creates a scene.
    pub fn create_scene(&self, name: &str) -> Result<SceneId, CreateSceneError> {
        let txn = self.write_txn()?;
        let id = next_id(&mut txn.open_table(META)?, META_NEXT_SCENE, FIRST_SCENE_ID)?;
        insert_scene(
            &txn,
            &Scene {
                id,
                name: name.to_string(),
                status: SceneStatus::Open,
                created_ms: now_ms(),
            },
        )?;
        txn.commit()?;
        Ok(id)
    }

    /// The scene with this name, created if it does not exist.
    pub fn ensure_scene(&self, name: &str) -> Result<SceneId, CreateSceneError> {
        if let Some(scene) = self.scene_by_name(name)? {
            return Ok(scene.id);
        }
        match self.create_scene(name) {
            Err(CreateSceneError::DuplicateName { .. }) => self
                .scene_by_name(name)?
                .map(|s| s.id)
                .ok_or_else(|| StoreError::corrupt("scene_names", "scene vanished").into()),
            other => other,
        }
    }

    pub fn scene(&self, id: SceneId) -> Result<Option<Scene>, StoreError> {
        let read = self.db.begin_read()?;
        read.open_table(SCENES)?
            .get(id)?
            .map(|g| schema::decode_scene(g.value()))
            .transpose()
    }

    pub fn scene_by_name(&self, name: &str) -> Result<Option<Scene>, StoreError> {
        let read = self.db.begin_read()?;
        let Some(id) = read.open_table(SCENE_NAMES)?.get(name)?.map(|g| g.value()) else {
            return Ok(None);
        };
        read.open_table(SCENES)?
            .get(id)?
            .map(|g| schema::decode_scene(g.value()))
            .transpose()
    }

    /// Every scene, by id.
    pub fn list_scenes(&self) -> Result<Vec<Scene>, StoreError> {
        let read = self.db.begin_read()?;
        let mut out = Vec::new();
        for row in read.open_table(SCENES)?.iter()? {
            out.push(schema::decode_scene(row?.1.value())?);
        }
        Ok(out)
    }

    /// Durably records `scene`'s latest placement epoch (the coordinator's
    /// fencing token; see `tessera_cluster`). Epochs only go up: a
    /// lower `epoch` than the stored one leaves the stored one.
    pub fn set_scene_epoch(&self, scene: &str, epoch: u64) -> Result<(), StoreError> {
        validate::check_scene_name(scene).map_err(|e| StoreError::Encode(e.to_string()))?;
        let key = format!("{META_EPOCH_PREFIX}{scene}");
        let txn = self.write_txn()?;
        {
            let mut meta = txn.open_table(META)?;
            let old = meta.get(key.as_str())?.map(|g| g.value()).unwrap_or(0);
            if epoch > old {
                meta.insert(key.as_str(), epoch)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every scene's stored placement epoch, by scene name.
    pub fn scene_epochs(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let read = self.db.begin_read()?;
        let meta = read.open_table(META)?;
        let mut out = Vec::new();
        for row in meta.range(META_EPOCH_PREFIX..)? {
            let (k, v) = row?;
            let Some(scene) = k.value().strip_prefix(META_EPOCH_PREFIX) else {
                break;
            };
            out.push((scene.to_owned(), v.value()));
        }
        Ok(out)
    }

    /// Every PC state a scene holds, online and offline, by avatar id.
    pub fn load_scene(&self, scene: SceneId) -> Result<Vec<PcState>, LoadError> {
        let read = self.db.begin_read()?;
        if read.open_table(SCENES)?.get(scene)?.is_none() {
            return Err(LoadError::UnknownScene(scene));
        }
        let mut out = Vec::new();
        for row in read
            .open_table(PC_STATES)?
            .range((scene, 0)..=(scene, u64::MAX))?
        {
            let (k, v) = row?;
            out.push(schema::decode_pc(v.value())?.into_state(scene, k.value().1));
        }
        Ok(out)
    }

    /// Every saved object of a scene, by key.
    pub fn load_scene_objects(&self, scene: SceneId) -> Result<Vec<ObjectState>, LoadError> {
        let read = self.db.begin_read()?;
        if read.open_table(SCENES)?.get(scene)?.is_none() {
            return Err(LoadError::UnknownScene(scene));
        }
        let mut out = Vec::new();
        for row in read
            .open_table(SCENE_OBJECTS)?
            .range((scene, 0)..=(scene, u64::MAX))?
        {
            let (k, v) = row?;
            out.push(schema::decode_object(v.value())?.into_state(k.value().1));
        }
        Ok(out)
    }

    /// Writes one batch of PC states in one durable transaction (`Durability::Immediate`,
    /// quick repair on): after this returns, a killed process loses none of it, and a crash
    /// before it returns leaves none of it. States of avatars not in the batch's scene, and
    /// non-finite states, are refused and counted, not written.
    pub fn save_batch(&self, batch: &SaveBatch) -> Result<SaveReport, SaveError> {
        self.save_batches(std::slice::from_ref(batch))
    }

    /// Writes several scenes' batches in one durable transaction: all or nothing.
    pub fn save_batches(&self, batches: &[SaveBatch]) -> Result<SaveReport, SaveError> {
        let txn = self.write_txn()?;
        let mut total = SaveReport::default();
        for batch in batches {
            let r = write_states(&txn, batch)?;
            total.written += r.written;
            total.refused += r.refused;
            total.objects += r.objects;
        }
        txn.commit()?;
        Ok(total)
    }
}
