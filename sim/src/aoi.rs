//! Area of interest: a uniform grid rebuilt every tick, and per-observer
//! enter / leave / stay diffs with hysteresis.
//!
//! This module is pure data and functions so that the tick (see
//! [`crate::interest`]) and `tessera aoi` run the very same code.
//!
//! * The grid is rebuilt each tick by a counting sort of all entities into
//!   cells: O(N), no allocation once warm, and every cell's members lie
//!   contiguously in memory for the neighbour scan.
//! * An observer at `p` with radius `r` and hysteresis margin `m` scans the
//!   cells overlapping the square of half-side `r + m`. A target that was not
//!   visible enters at distance `<= r`; a visible one stays while its distance
//!   is `<= r + m` and leaves beyond it. With `m = 0` this is exactly "visible
//!   iff distance `<= r`". An observer never sees itself.
//! * Diffs use epoch stamps in a dense per-thread array indexed by id: O(k)
//!   per observer, no sorting, no hashing. Visible sets and diffs come out in
//!   grid-scan order, which is a function of the input order only, so results
//!   are deterministic; compare them as sets.

/// `true` when `(dx, dy)` lies within the radius whose square is `r2`.
/// Every AOI comparison, and the brute-force reference in the tests, goes
/// through this one function so floating-point rounding is identical.
#[inline]
pub fn within(dx: f32, dy: f32, r2: f32) -> bool {
    dist2(dx, dy) <= r2
}

/// Squared length of `(dx, dy)`.
#[inline]
pub fn dist2(dx: f32, dy: f32) -> f32 {
    dx * dx + dy * dy
}

/// A uniform grid over `[origin, origin + cols*cell] × [origin, origin + rows*cell]`.
/// Points outside the covered area are stored in the nearest edge cell, and
/// queries clamp the same way, so results stay exact for any position; only
/// speed suffers for far-out points.
#[derive(Debug, Clone)]
pub struct Grid {
    cell: f32,
    inv_cell: f32,
    origin: [f32; 2],
    cols: u32,
    rows: u32,
    /// `cell_start[c]..cell_start[c + 1]` are the slots of cell `c`.
    cell_start: Vec<u32>,
    xs: Vec<f32>,
    ys: Vec<f32>,
    ids: Vec<u32>,
    /// One more than the largest id stored.
    id_bound: u32,
    /// Scratch: each input item's cell.
    item_cell: Vec<u32>,
}

impl Grid {
    /// A grid covering `size` from `origin` with square cells of side `cell`.
    /// The cell count is capped (at 4096 per axis) by enlarging cells.
    pub fn new(origin: [f32; 2], size: [f32; 2], cell: f32) -> Self {
        let mut cell = if cell.is_finite() && cell > 0.0 {
            cell
        } else {
            1.0
        };
        let side = size[0].max(size[1]).max(1.0);
        if side / cell > 4096.0 {
            cell = side / 4096.0;
        }
        let cols = ((size[0].max(1.0) / cell).ceil() as u32).max(1);
        let rows = ((size[1].max(1.0) / cell).ceil() as u32).max(1);
        Self {
            cell,
            inv_cell: 1.0 / cell,
            origin,
            cols,
            rows,
            cell_start: vec![0; (cols * rows + 1) as usize],
            xs: Vec::new(),
            ys: Vec::new(),
            ids: Vec::new(),
            id_bound: 0,
            item_cell: Vec::new(),
        }
    }

    /// The cell side used for a query reach: a quarter of it, so the cells a
    /// circle's chords cover hug the circle (fewer wasted distance tests).
    pub fn cell_for_reach(reach: f32) -> f32 {
        (reach / 4.0).max(1.0)
    }

    /// Stored ids in grid order (cell by cell): iterate observers in this
    /// order and consecutive ones share neighbours, so their data is hot in cache.
    pub fn ids_in_cell_order(&self) -> &[u32] {
        &self.ids
    }

    /// One more than the largest id in the grid.
    pub fn id_bound(&self) -> u32 {
        self.id_bound
    }

    pub fn cell_size(&self) -> f32 {
        self.cell
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    #[inline]
    fn col_of(&self, x: f32) -> u32 {
        // No `floor`: after clamping at 0, `as u32` truncates, which equals
        // floor for every value left (and `floor` is a libm call on baseline
        // x86-64). NaN goes to 0 (`max` ignores it), big values saturate.
        let c = (x - self.origin[0]) * self.inv_cell;
        (c.max(0.0) as u32).min(self.cols - 1)
    }

    #[inline]
    fn row_of(&self, y: f32) -> u32 {
        let r = (y - self.origin[1]) * self.inv_cell;
        (r.max(0.0) as u32).min(self.rows - 1)
    }

    /// Rebuilds the grid from `(id, x, y)` items. Ids must be unique.
    pub fn rebuild(&mut self, items: &[(u32, f32, f32)]) {
        let ncells = (self.cols * self.rows) as usize;
        self.cell_start.clear();
        self.cell_start.resize(ncells + 1, 0);
        self.item_cell.clear();
        self.id_bound = 0;
        for &(id, x, y) in items {
            self.id_bound = self.id_bound.max(id.saturating_add(1));
            let c = self.row_of(y) * self.cols + self.col_of(x);
            self.item_cell.push(c);
            self.cell_start[c as usize + 1] += 1;
        }
        for c in 0..ncells {
            self.cell_start[c + 1] += self.cell_start[c];
        }
        let n = items.len();
        self.xs.resize(n, 0.0);
        self.ys.resize(n, 0.0);
        self.ids.resize(n, 0);
        // Scatter using cell_start[c] as a moving cursor, then shift back.
        for (i, &(id, x, y)) in items.iter().enumerate() {
            let c = self.item_cell[i] as usize;
            let slot = self.cell_start[c] as usize;
            self.cell_start[c] += 1;
            self.xs[slot] = x;
            self.ys[slot] = y;
            self.ids[slot] = id;
        }
        for c in (1..=ncells).rev() {
            self.cell_start[c] = self.cell_start[c - 1];
        }
        self.cell_start[0] = 0;
    }

    /// Calls `f(ids, xs, ys)` for each row's run of contiguous cells that
    /// may hold a point within `reach` of `(x, y)`: per row, only the columns
    /// under the circle's chord across that row. Always a superset of the
    /// points within `reach` (points stored in clamped edge cells included).
    #[inline]
    pub fn for_each_span(
        &self,
        x: f32,
        y: f32,
        reach: f32,
        mut f: impl FnMut(&[u32], &[f32], &[f32]),
    ) {
        let r0 = self.row_of(y - reach);
        let r1 = self.row_of(y + reach);
        let reach2 = reach * reach;
        for row in r0..=r1 {
            // Distance from y to this row's band (0 inside it). Edge rows are
            // open-ended, since clamped points may lie beyond the grid.
            let lo = self.origin[1] + row as f32 * self.cell;
            let hi = lo + self.cell;
            let dy = if y < lo && row > 0 {
                lo - y
            } else if y > hi && row + 1 < self.rows {
                y - hi
            } else {
                0.0
            };
            let half = (reach2 - dy * dy).max(0.0).sqrt();
            let c0 = self.col_of(x - half);
            let c1 = self.col_of(x + half);
            let base = row * self.cols;
            // Cells of one row are contiguous: scan the whole span at once.
            let start = self.cell_start[(base + c0) as usize] as usize;
            let end = self.cell_start[(base + c1 + 1) as usize] as usize;
            f(
                &self.ids[start..end],
                &self.xs[start..end],
                &self.ys[start..end],
            );
        }
    }
}

/// One observer's diff for one tick.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Targets that became visible.
    pub enters: Vec<u32>,
    /// Targets that stopped being visible.
    pub leaves: Vec<u32>,
    /// Number of targets visible both before and now.
    pub stays: u32,
}

impl Diff {
    pub fn clear(&mut self) {
        self.enters.clear();
        self.leaves.clear();
        self.stays = 0;
    }
}

/// Per-thread scratch for [`update_observer`]; reuse it across observers.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Output buffers kept at least as long as the grid, so the branch-free
    /// scan can write every item and advance its cursor only on a hit.
    next: Vec<u32>,
    enters: Vec<u32>,
    /// `stamp[id]`: `epoch` = visible last tick and not yet seen this tick,
    /// `epoch + 1` = seen again. Anything else: not visible last tick.
    stamp: Vec<u32>,
    epoch: u32,
}

impl Scratch {
    /// A fresh pair of stamp values, with buffers sized for `bound` ids and
    /// `items` grid entries.
    fn begin(&mut self, bound: usize, items: usize) -> u32 {
        if self.stamp.len() < bound {
            self.stamp.resize(bound, 0);
        }
        if self.next.len() < items {
            self.next.resize(items, 0);
            self.enters.resize(items, 0);
        }
        if self.epoch >= u32::MAX - 2 {
            self.stamp.fill(0);
            self.epoch = 0;
        }
        self.epoch += 2;
        self.epoch
    }
}

/// Updates one observer's visible set against the grid and writes its diff.
///
/// `visible` is the set from the previous tick and is replaced by the new
/// one; `diff` is cleared and filled. Ids in `visible` may be ones no longer
/// in the grid (despawned): they leave.
pub fn update_observer(
    grid: &Grid,
    self_id: u32,
    pos: [f32; 2],
    radius: f32,
    margin: f32,
    visible: &mut Vec<u32>,
    diff: &mut Diff,
    scratch: &mut Scratch,
) {
    diff.clear();
    let radius = if radius.is_finite() {
        radius.max(0.0)
    } else {
        0.0
    };
    let margin = if margin.is_finite() {
        margin.max(0.0)
    } else {
        0.0
    };
    let reach = radius + margin;
    let r2 = radius * radius;
    let reach2 = reach * reach;
    let e = scratch.begin(grid.id_bound() as usize, grid.len());
    let Scratch {
        next,
        enters,
        stamp,
        ..
    } = scratch;

    // Mark last tick's set.
    for &v in visible.iter() {
        // A despawned id may lie beyond the current grid's bound.
        if v as usize >= stamp.len() {
            stamp.resize(v as usize + 1, 0);
        }
        stamp[v as usize] = e;
    }

    // One branch-free pass over the cells under the circle: every item is
    // classified against the stamps and written out; the cursors advance only
    // for a stay (visible before, within reach now) or an enter (not visible
    // before, within the enter radius now).
    let (mut n, mut m) = (0usize, 0usize);
    grid.for_each_span(pos[0], pos[1], reach, |ids, xs, ys| {
        for ((&id, &x), &y) in ids.iter().zip(xs).zip(ys) {
            let d2 = dist2(x - pos[0], y - pos[1]);
            let not_self = id != self_id;
            let Some(st) = stamp.get_mut(id as usize) else {
                continue;
            };
            let was = *st == e;
            let stay = was & (d2 <= reach2) & not_self;
            let enter = !was & (d2 <= r2) & not_self;
            *st += stay as u32;
            if let (Some(a), Some(b)) = (next.get_mut(n), enters.get_mut(m)) {
                *a = id;
                *b = id;
            }
            n += (stay | enter) as usize;
            m += enter as usize;
        }
    });
    diff.stays = (n - m) as u32;
    diff.enters.extend_from_slice(&enters[..m]);

    // Visible before and not seen again: leaves.
    for &v in visible.iter() {
        if stamp[v as usize] == e {
            diff.leaves.push(v);
        }
    }
    visible.clear();
    visible.extend_from_slice(&next[..n]);
}

/// Brute-force reference: every pair, same comparisons. For tests and benches.
pub fn brute_force_update(
    items: &[(u32, f32, f32)],
    self_id: u32,
    pos: [f32; 2],
    radius: f32,
    margin: f32,
    visible: &mut Vec<u32>,
    diff: &mut Diff,
) {
    diff.clear();
    let r2 = radius * radius;
    let reach2 = (radius + margin) * (radius + margin);
    let mut next = Vec::new();
    for &(id, x, y) in items {
        if id == self_id {
            continue;
        }
        let (dx, dy) = (x - pos[0], y - pos[1]);
        let was = visible.contains(&id);
        if was && within(dx, dy, reach2) {
            next.push(id);
            diff.stays += 1;
        } else if !was && within(dx, dy, r2) {
            next.push(id);
            diff.enters.push(id);
        }
    }
    for &v in visible.iter() {
        if !next.contains(&v) {
            diff.leaves.push(v);
        }
    }
    *visible = next;
}

/// Totals of AOI events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AoiTotals {
    pub enter: u64,
    pub leave: u64,
    pub stay: u64,
}

impl AoiTotals {
    pub fn add(&mut self, d: &Diff) {
        self.enter += d.enters.len() as u64;
        self.leave += d.leaves.len() as u64;
        self.stay += d.stays as u64;
    }

    pub fn merge(&mut self, o: AoiTotals) {
        self.enter += o.enter;
        self.leave += o.leave;
        self.stay += o.stay;
    }
}

/// A standalone AOI stage over a fixed population where every entity is an
/// observer with the same radius: what `tessera aoi` drives. Observer `i` has
/// id `i`. Runs observers in parallel on bevy's compute task pool.
#[derive(Debug)]
pub struct AoiStage {
    pub grid: Grid,
    pub radius: f32,
    pub margin: f32,
    items: Vec<(u32, f32, f32)>,
    /// Each observer's visible set, by id.
    visible: Vec<Vec<u32>>,
    /// The sets moved out in grid order for one step, then moved back.
    work: Vec<(u32, Vec<u32>)>,
    scratch: Vec<(Scratch, AoiTotals, Diff)>,
}

impl AoiStage {
    pub fn new(
        entities: usize,
        origin: [f32; 2],
        size: [f32; 2],
        radius: f32,
        margin: f32,
    ) -> Self {
        Self {
            grid: Grid::new(origin, size, Grid::cell_for_reach(radius + margin)),
            radius,
            margin,
            items: Vec::with_capacity(entities),
            visible: vec![Vec::new(); entities],
            work: Vec::with_capacity(entities),
            scratch: Vec::new(),
        }
    }

    /// The visible set of observer `i` after the last step.
    pub fn visible(&self, i: usize) -> &[u32] {
        &self.visible[i]
    }

    /// One tick: rebuild the grid from `positions` (one per entity) and diff
    /// every observer. Returns the tick's totals.
    pub fn step(&mut self, positions: &[[f32; 2]]) -> AoiTotals {
        self.items.clear();
        self.items.extend(
            positions
                .iter()
                .enumerate()
                .map(|(i, p)| (i as u32, p[0], p[1])),
        );
        self.grid.rebuild(&self.items);
        let grid = &self.grid;
        let (radius, margin) = (self.radius, self.margin);
        // Observers run in grid order (consecutive ones share neighbours, so
        // their data is hot in cache): their sets are moved (not copied) into
        // a work list in that order, split across threads, and moved back.
        self.work.clear();
        for &id in grid.ids_in_cell_order() {
            if let Some(v) = self.visible.get_mut(id as usize) {
                self.work.push((id, std::mem::take(v)));
            }
        }
        crate::par_chunks(
            &mut self.work,
            &mut self.scratch,
            |(scratch, totals, diff), chunk| {
                for (id, vis) in chunk {
                    let p = positions[*id as usize];
                    update_observer(grid, *id, p, radius, margin, vis, diff, scratch);
                    totals.add(diff);
                }
            },
        );
        for (id, vis) in self.work.drain(..) {
            self.visible[id as usize] = vis;
        }
        let mut totals = AoiTotals::default();
        for (_, t, _) in self.scratch.iter_mut() {
            totals.merge(std::mem::take(t));
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid_with(items: &[(u32, f32, f32)], cell: f32) -> Grid {
        let mut g = Grid::new([0.0, 0.0], [100.0, 100.0], cell);
        g.rebuild(items);
        g
    }

    #[test]
    fn sees_within_radius_not_itself() {
        let items = [
            (0, 10.0, 10.0),
            (1, 15.0, 10.0),
            (2, 30.0, 10.0),
            (3, 10.0, 20.0),
        ];
        let g = grid_with(&items, 10.0);
        let (mut vis, mut diff, mut s) = (Vec::new(), Diff::default(), Scratch::default());
        update_observer(&g, 0, [10.0, 10.0], 10.0, 0.0, &mut vis, &mut diff, &mut s);
        vis.sort_unstable();
        assert_eq!(vis, vec![1, 3]); // 3 is exactly on the radius
        assert_eq!(diff.enters.len(), 2);
        assert!(diff.leaves.is_empty());
    }

    #[test]
    fn hysteresis_keeps_until_beyond_margin() {
        let (mut vis, mut diff, mut s) = (Vec::new(), Diff::default(), Scratch::default());
        // Target starts inside r=10.
        let g = grid_with(&[(0, 50.0, 50.0), (1, 58.0, 50.0)], 12.0);
        update_observer(&g, 0, [50.0, 50.0], 10.0, 2.0, &mut vis, &mut diff, &mut s);
        assert_eq!(diff.enters, vec![1]);
        // Moves to 11.5: beyond r but within r + m: stays.
        let g = grid_with(&[(0, 50.0, 50.0), (1, 61.5, 50.0)], 12.0);
        update_observer(&g, 0, [50.0, 50.0], 10.0, 2.0, &mut vis, &mut diff, &mut s);
        assert_eq!((diff.stays, diff.leaves.len()), (1, 0));
        // Moves to 12.5: leaves.
        let g = grid_with(&[(0, 50.0, 50.0), (1, 62.5, 50.0)], 12.0);
        update_observer(&g, 0, [50.0, 50.0], 10.0, 2.0, &mut vis, &mut diff, &mut s);
        assert_eq!(diff.leaves, vec![1]);
        // Back to 11.5: not visible, so does not enter until within r.
        let g = grid_with(&[(0, 50.0, 50.0), (1, 61.5, 50.0)], 12.0);
        update_observer(&g, 0, [50.0, 50.0], 10.0, 2.0, &mut vis, &mut diff, &mut s);
        assert!(diff.enters.is_empty() && vis.is_empty());
    }

    #[test]
    fn far_outside_points_are_still_exact() {
        let items = [(0, -500.0, -500.0), (1, -495.0, -500.0), (2, 5000.0, 5.0)];
        let g = grid_with(&items, 10.0);
        let (mut vis, mut diff, mut s) = (Vec::new(), Diff::default(), Scratch::default());
        update_observer(
            &g,
            0,
            [-500.0, -500.0],
            6.0,
            0.0,
            &mut vis,
            &mut diff,
            &mut s,
        );
        assert_eq!(vis, vec![1]);
        update_observer(
            &g,
            2,
            [5000.0, 5.0],
            6.0,
            0.0,
            &mut Vec::new(),
            &mut diff,
            &mut s,
        );
        assert!(diff.enters.is_empty());
    }
}
