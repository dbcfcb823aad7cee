//! The view check: at the end of a run, after a short settle with the bots
//! standing still and no loss, each bot compares its [`WorldView`] with the
//! server's truth (`GET /v1/scenes/{name}/snapshot`, taken twice a moment
//! apart to tell moving entities from still ones).
//!
//! For a bot at `p` with AOI radius `r`, margin `m` and interest cap `K`:
//!
//! * **missing**: an entity within `r` of `p`, among the `K` nearest, that
//!   the view does not hold;
//! * **ghost**: an entity the view holds that does not exist, or lies beyond
//!   `r + m` (plus how far it can have moved, for a moving one);
//! * **stale**: a held entity whose state differs from the truth: for a
//!   still entity (the same in both snapshots) by anything at all; for a
//!   moving one by more than it can move in `|T - t| + STALE_BOUND_TICKS`
//!   ticks at the scene's top speed, `T` the truth's tick and `t` the
//!   view's. The bound is the priority schedule's: an unchanged far entity
//!   is never updated, and a changing one waits at most a few ticks once the
//!   byte budget has room (after a settle it has).
//!
//! A game's replicated components are compared too (the own ones, owner-only
//! included, with the own entity's): exactly, for an entity whose
//! components are the same in both snapshots; one whose components changed
//! between them is not held to them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tessera_proto::NetId;
use tessera_proto::view::WorldView;
use tessera_sim::{SceneSnapshot, SnapshotEntity};

/// Ticks of movement a moving entity's state may lag the truth by, beyond
/// the gap between the two ticks compared.
pub const STALE_BOUND_TICKS: u32 = 10;

/// One scene's truth: the later snapshot, and the ids that moved between
/// the two.
#[derive(Debug, Clone)]
pub struct SceneTruth {
    pub snap: SceneSnapshot,
    pub moving: BTreeSet<NetId>,
    /// Ids whose game components changed between the two snapshots.
    pub game_changing: BTreeSet<NetId>,
}

impl SceneTruth {
    pub fn new(first: &SceneSnapshot, second: SceneSnapshot) -> Self {
        let before: BTreeMap<NetId, &SnapshotEntity> =
            first.entities.iter().map(|e| (e.id, e)).collect();
        let moving = second
            .entities
            .iter()
            .filter(|e| before.get(&e.id).is_none_or(|b| b.q != e.q))
            .map(|e| e.id)
            .collect();
        let game_changing = second
            .entities
            .iter()
            .filter(|e| {
                before
                    .get(&e.id)
                    .is_none_or(|b| b.game != e.game || b.own_game != e.own_game)
            })
            .map(|e| e.id)
            .collect();
        Self {
            snap: second,
            moving,
            game_changing,
        }
    }
}

/// Every scene's truth, by `(scene_tag, epoch)`.
pub type Truth = BTreeMap<(u32, u64), SceneTruth>;

/// The counts of the report's `view` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewCheck {
    /// Bots whose view was compared.
    pub bots: u64,
    /// Bots in a placement no snapshot covered (not compared).
    pub bots_unchecked: u64,
    /// Entities compared (required or held).
    pub checked: u64,
    pub missing: u64,
    pub ghosts: u64,
    pub stale: u64,
    /// The `stale` bound used, in ticks.
    pub stale_bound_ticks: u32,
    /// Held entities that differed from the truth but changed after it was
    /// taken (a third snapshot, after the comparison, tells): the view may
    /// be newer than the truth, so they are not counted `stale`.
    #[serde(default)]
    pub changed_after_truth: u64,
}

impl ViewCheck {
    pub(super) fn add(&mut self, o: &ViewCheck) {
        self.bots += o.bots;
        self.bots_unchecked += o.bots_unchecked;
        self.checked += o.checked;
        self.missing += o.missing;
        self.ghosts += o.ghosts;
        self.stale += o.stale;
        self.changed_after_truth += o.changed_after_truth;
        self.stale_bound_ticks = STALE_BOUND_TICKS;
    }
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
    (dx * dx + dy * dy).sqrt()
}

/// Compares one bot's view with the truth of its placement.
pub fn check(view: &WorldView, truth: &Truth) -> ViewCheck {
    check_listing(view, truth, &mut Vec::new())
}

/// [`check`], listing in `stale` the ids of the entities found stale (the
/// own one among them).
pub fn check_listing(view: &WorldView, truth: &Truth, stale: &mut Vec<NetId>) -> ViewCheck {
    let unchecked = ViewCheck {
        bots_unchecked: 1,
        ..ViewCheck::default()
    };
    let Some(scene) = view.placement().and_then(|p| truth.get(&p)) else {
        return unchecked;
    };
    let Some((own, _)) = view.own() else {
        return unchecked;
    };
    let snap = &scene.snap;
    let by_id: BTreeMap<NetId, &SnapshotEntity> = snap.entities.iter().map(|e| (e.id, e)).collect();
    let Some(me) = by_id.get(&own) else {
        return unchecked;
    };
    let lag = snap.tick.abs_diff(view.tick()) + STALE_BOUND_TICKS;
    let slack = snap.max_speed * lag as f32 / snap.tick_hz.max(1) as f32;
    // Required: within r, the K nearest (the server's key: f32 squared
    // distance truncated, ties by id).
    let r = snap.aoi_radius;
    let mut near: Vec<(u32, NetId)> = snap
        .entities
        .iter()
        .filter(|e| e.id != own)
        .filter_map(|e| {
            let (dx, dy) = (e.pos[0] - me.pos[0], e.pos[1] - me.pos[1]);
            let d2 = dx * dx + dy * dy;
            (d2 <= r * r).then(|| (d2.min(4.0e9) as u32, e.id))
        })
        .collect();
    near.sort_unstable();
    near.truncate(snap.max_interest as usize);
    let required: BTreeSet<NetId> = near.into_iter().map(|e| e.1).collect();
    let mut c = ViewCheck {
        bots: 1,
        stale_bound_ticks: STALE_BOUND_TICKS,
        ..ViewCheck::default()
    };
    let mut held = BTreeSet::new();
    for (id, e) in view.entities() {
        held.insert(id);
        let Some(t) = by_id.get(&id) else {
            c.ghosts += 1;
            continue;
        };
        let moving = scene.moving.contains(&id);
        let reach = r + snap.aoi_margin + if moving { slack } else { 0.0 };
        if dist(t.pos, me.pos) > reach {
            c.ghosts += 1;
            continue;
        }
        let same_kind = e.kind == t.kind && e.figure == t.figure;
        let fresh = if moving {
            let pos = [
                e.q.x as f32 * snap.size[0] / 65535.0,
                e.q.y as f32 * snap.size[1] / 65535.0,
            ];
            dist(pos, t.pos) <= slack + 0.1
        } else {
            e.q == t.q
        };
        let game_fresh = scene.game_changing.contains(&id) || view.game(id) == t.game;
        if !(same_kind && fresh && game_fresh) {
            c.stale += 1;
            stale.push(id);
        }
    }
    if !scene.game_changing.contains(&own) && *view.you_game() != me.own_game {
        c.stale += 1;
        stale.push(own);
    }
    c.missing = required.difference(&held).count() as u64;
    c.checked = required.union(&held).count() as u64;
    c
}

/// Whether entity `id` of `later` differs from the truth's: gone, moved, or
/// its game components changed.
pub fn changed_since(truth: &SceneSnapshot, later: &SceneSnapshot, id: NetId) -> bool {
    let find = |s: &SceneSnapshot| s.entities.iter().find(|e| e.id == id).cloned();
    match (find(truth), find(later)) {
        (Some(a), Some(b)) => a.q != b.q || a.game != b.game || a.own_game != b.own_game,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::state::{EnterState, Quantized, StatePacket, UpdateState};

    fn entity(id: NetId, x: f32) -> SnapshotEntity {
        SnapshotEntity {
            id,
            kind: 0,
            figure: 0,
            q: Quantized {
                x: (x / 1000.0 * 65535.0).round() as u16,
                ..Default::default()
            },
            pos: [x, 0.0],
            game: Default::default(),
            own_game: Default::default(),
        }
    }

    fn snapshot(tick: u32, entities: Vec<SnapshotEntity>) -> SceneSnapshot {
        SceneSnapshot {
            scene: "s".into(),
            scene_tag: 5,
            epoch: 1,
            tick,
            aoi_radius: 50.0,
            aoi_margin: 5.0,
            max_interest: 256,
            size: [1000.0, 1000.0],
            tick_hz: 20,
            max_speed: 12.0,
            entities,
            tick_ns: 0,
            obstacles: Vec::new(),
        }
    }

    /// A view holding `held` (as enters) at tick 100, itself entity 0.
    fn view(held: &[SnapshotEntity]) -> WorldView {
        view_of(held, tessera_proto::GameWire::default(), &[])
    }

    /// [`view`] of a game with components `wire`, the held entities'
    /// values in `game` (one block each) and the own ones empty.
    fn view_of(
        held: &[SnapshotEntity],
        wire: tessera_proto::GameWire,
        game: &[tessera_proto::GameBlock],
    ) -> WorldView {
        let mut v = WorldView::with_game(wire.clone());
        v.enter(5, 1, 0);
        v.apply(&StatePacket {
            scene: 5,
            epoch: 1,
            tick: 100,
            you: Some(UpdateState {
                id: 0,
                q: Quantized::default(),
            }),
            enters: held
                .iter()
                .map(|e| EnterState {
                    id: e.id,
                    kind: e.kind,
                    figure: e.figure,
                    q: e.q,
                })
                .collect(),
            you_game: wire.enabled().then(Default::default),
            enter_game: game.to_vec(),
            ..Default::default()
        });
        v
    }

    /// A game component is compared exactly while it holds still, and not
    /// at all while it changes between the snapshots.
    #[test]
    fn game_components_are_checked() {
        use tessera_proto::{GameBlock, GameVals, GameWire};
        let wire = GameWire {
            widths: vec![2],
            public: 1,
        };
        let hp = |v: u8| GameVals {
            present: 1,
            bytes: vec![v, 0],
        };
        let me = entity(0, 100.0);
        let mut near = entity(1, 120.0);
        near.game = hp(50);
        let snap = snapshot(100, vec![me.clone(), near.clone()]);
        let mut truth = Truth::new();
        truth.insert((5, 1), SceneTruth::new(&snap.clone(), snap.clone()));
        let block = |v: u8| GameBlock {
            carried: 1,
            present: 1,
            bytes: vec![v, 0],
        };
        let right = view_of(std::slice::from_ref(&near), wire.clone(), &[block(50)]);
        assert_eq!(check(&right, &truth).stale, 0);
        let wrong = view_of(std::slice::from_ref(&near), wire.clone(), &[block(49)]);
        assert_eq!(check(&wrong, &truth).stale, 1);
        // Changing between the two snapshots: not held to it.
        let mut before = snap.clone();
        before.entities[1].game = hp(60);
        truth.insert((5, 1), SceneTruth::new(&before, snap));
        assert_eq!(check(&wrong, &truth).stale, 0);
    }

    #[test]
    fn missing_ghosts_and_stale_entities_are_found() {
        let me = entity(0, 100.0);
        let near = entity(1, 120.0);
        let far = entity(2, 400.0);
        let still = entity(3, 110.0);
        let snap = snapshot(100, vec![me, near.clone(), far.clone(), still.clone()]);
        let mut truth = Truth::new();
        truth.insert((5, 1), SceneTruth::new(&snap.clone(), snap));
        // Exact view: nothing wrong.
        let good = check(&view(&[near, still.clone()]), &truth);
        assert_eq!((good.bots, good.checked), (1, 2));
        assert_eq!((good.missing, good.ghosts, good.stale), (0, 0, 0));
        // `near` missing, `far` (beyond r + m) and id 9 (gone) ghosts, `still`
        // one quantum off: stale.
        let mut moved = still;
        moved.q.x += 1;
        let ghost = entity(9, 105.0);
        let bad = check(&view(&[far, ghost, moved]), &truth);
        assert_eq!((bad.missing, bad.ghosts, bad.stale), (1, 2, 1), "{bad:?}");
        // Another placement is not compared.
        let mut other = WorldView::new();
        other.enter(5, 2, 0);
        assert_eq!(check(&other, &truth).bots_unchecked, 1);
    }

    /// A stale entity that moved, or whose components changed, after the
    /// truth is not held to it; one that stayed is.
    #[test]
    fn changes_after_the_truth_are_told_apart() {
        let a = snapshot(100, vec![entity(0, 100.0), entity(1, 120.0)]);
        let mut b = a.clone();
        assert!(!changed_since(&a, &b, 1));
        b.entities[1].q.x += 1;
        assert!(changed_since(&a, &b, 1));
        let mut c = a.clone();
        c.entities[1].game.present = 1;
        assert!(changed_since(&a, &c, 1));
        c.entities.truncate(1);
        assert!(changed_since(&a, &c, 1), "gone");
        let mut stale = Vec::new();
        let mut moved = entity(1, 120.0);
        moved.q.x += 1;
        let mut truth = Truth::new();
        truth.insert((5, 1), SceneTruth::new(&a.clone(), a));
        let v = check_listing(&view(&[moved]), &truth, &mut stale);
        assert_eq!((v.stale, stale), (1, vec![1]));
    }
}
