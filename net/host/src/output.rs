//! The bounded queue between a scene thread and the host's networking side.
//!
//! One entry per tick that produced anything: the tick's replication packets
//! and scene events. The scene thread never waits on it. When it is full the
//! **oldest entry's packets are dropped** (newer packets carry newer absolute
//! states, so the oldest are the least useful), its events are carried into
//! the next entry (events drive the avatar directory — attached, detached,
//! portal — and are not dropped while the event cap allows), and the clients
//! whose packets were dropped are listed in the next entry popped
//! ([`TickBatch::dropped_for`]): replication is a diff against what each
//! client was sent, so such a client may have missed an enter or a leave and
//! needs a resync (detach + attach) from the networking side.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tessera_sim::{ChannelOp, ClientId, GameEventOut, Packets, SceneEvent};

use tessera_wire::Epoch;

/// What one tick of one scene produced for the networking side.
#[derive(Debug, Default)]
pub struct TickBatch {
    pub epoch: Epoch,
    pub tick: u64,
    pub packets: Packets,
    /// Events in order; may include events of older ticks whose packets were dropped.
    pub events: Vec<SceneEvent>,
    /// The tick's game events; dropped with the tick's packets on overflow.
    pub game: Vec<GameEventOut>,
    /// Clients that lost at least one packet to an overflow since the last pop.
    pub dropped_for: Vec<ClientId>,
    /// The game's channel asks in order; like events, carried over an
    /// overflow, and counted against the same cap.
    pub channel_ops: Vec<ChannelOp>,
}

/// Counters of one output queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputStats {
    pub pushed: u64,
    pub popped: u64,
    /// Entries whose packets were dropped because the queue was full.
    pub overflowed: u64,
    pub packets_dropped: u64,
    /// Events dropped because the event cap was reached (the consumer is gone or stuck).
    pub events_dropped: u64,
    /// Game events dropped with their tick's packets.
    pub game_events_dropped: u64,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<TickBatch>,
    events: usize,
    dropped_for: BTreeSet<ClientId>,
    closed: bool,
}

/// A bounded single-consumer queue of [`TickBatch`]es. Pop with
/// [`OutputQueue::try_pop`], [`OutputQueue::pop_timeout`] (blocking) or
/// [`OutputQueue::pop`] (async).
#[derive(Debug)]
pub struct OutputQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    max_events: usize,
    ready: Condvar,
    notify: tokio::sync::Notify,
    pushed: AtomicU64,
    popped: AtomicU64,
    overflowed: AtomicU64,
    packets_dropped: AtomicU64,
    events_dropped: AtomicU64,
    game_events_dropped: AtomicU64,
}

impl OutputQueue {
    /// Holds at most `capacity` ticks (at least 1) and `max_events` events.
    pub fn new(capacity: usize, max_events: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            max_events,
            ready: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            pushed: AtomicU64::new(0),
            popped: AtomicU64::new(0),
            overflowed: AtomicU64::new(0),
            packets_dropped: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            game_events_dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one tick's output; never blocks beyond the lock.
    pub(crate) fn push(&self, mut batch: TickBatch) {
        {
            let mut inner = self.lock();
            if inner.closed {
                return;
            }
            let room = self.max_events.saturating_sub(inner.events);
            if batch.events.len() > room {
                let extra = batch.events.len() - room;
                batch.events.truncate(room);
                self.events_dropped
                    .fetch_add(extra as u64, Ordering::Relaxed);
            }
            inner.events += batch.events.len();
            let room = self.max_events.saturating_sub(inner.events);
            if batch.channel_ops.len() > room {
                let extra = batch.channel_ops.len() - room;
                batch.channel_ops.truncate(room);
                self.events_dropped
                    .fetch_add(extra as u64, Ordering::Relaxed);
            }
            inner.events += batch.channel_ops.len();
            if inner.queue.len() >= self.capacity
                && let Some(old) = inner.queue.pop_front()
            {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
                self.packets_dropped
                    .fetch_add(old.packets.len() as u64, Ordering::Relaxed);
                self.game_events_dropped
                    .fetch_add(old.game.len() as u64, Ordering::Relaxed);
                let lost: Vec<ClientId> = old.packets.iter().map(|(c, _)| *c).collect();
                inner.dropped_for.extend(lost);
                inner.dropped_for.extend(old.dropped_for);
                // Its events go first in the next entry (ordered before it).
                let next = match inner.queue.front_mut() {
                    Some(front) => &mut front.events,
                    None => &mut batch.events,
                };
                next.splice(0..0, old.events);
                let next = match inner.queue.front_mut() {
                    Some(front) => &mut front.channel_ops,
                    None => &mut batch.channel_ops,
                };
                next.splice(0..0, old.channel_ops);
            }
            inner.queue.push_back(batch);
            self.pushed.fetch_add(1, Ordering::Relaxed);
        }
        self.ready.notify_one();
        self.notify.notify_one();
    }

    /// No more entries will come; poppers see `None` once it is empty.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.notify.notify_one();
    }

    fn take(&self, inner: &mut Inner) -> Option<TickBatch> {
        let mut b = inner.queue.pop_front()?;
        inner.events -= b.events.len() + b.channel_ops.len();
        if !inner.dropped_for.is_empty() {
            b.dropped_for = std::mem::take(&mut inner.dropped_for).into_iter().collect();
        }
        self.popped.fetch_add(1, Ordering::Relaxed);
        Some(b)
    }

    pub fn try_pop(&self) -> Option<TickBatch> {
        let mut inner = self.lock();
        self.take(&mut inner)
    }

    /// Waits up to `timeout` for an entry; `None` on timeout or when closed and empty.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<TickBatch> {
        let until = Instant::now() + timeout;
        let mut inner = self.lock();
        loop {
            if let Some(b) = self.take(&mut inner) {
                return Some(b);
            }
            let left = until.checked_duration_since(Instant::now())?;
            if inner.closed || left.is_zero() {
                return None;
            }
            inner = self
                .ready
                .wait_timeout(inner, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits for an entry; `None` once closed and empty. One consumer at a time.
    pub async fn pop(&self) -> Option<TickBatch> {
        loop {
            {
                let mut inner = self.lock();
                if let Some(b) = self.take(&mut inner) {
                    return Some(b);
                }
                if inner.closed {
                    return None;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push
            // between the check above and this await is not missed.
            self.notify.notified().await;
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> OutputStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        OutputStats {
            pushed: g(&self.pushed),
            popped: g(&self.popped),
            overflowed: g(&self.overflowed),
            packets_dropped: g(&self.packets_dropped),
            events_dropped: g(&self.events_dropped),
            game_events_dropped: g(&self.game_events_dropped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(tick: u64, clients: &[ClientId], events: usize) -> TickBatch {
        let mut packets = Packets::default();
        let buf = vec![7u8; clients.len()];
        packets.push_buffer(
            buf,
            clients.iter().enumerate().map(|(i, c)| (*c, i as u32, 1)),
        );
        TickBatch {
            tick,
            packets,
            events: (0..events)
                .map(|i| SceneEvent::Detached {
                    client: tick * 100 + i as u64,
                    state: Default::default(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn host_output_keeps_channel_asks_over_an_overflow_within_the_cap() {
        let q = OutputQueue::new(1, 3);
        let ask = |avatar| ChannelOp::Add {
            channel: "party".into(),
            avatar,
        };
        let mut first = batch(1, &[10], 0);
        first.channel_ops = vec![ask(1), ask(2)];
        q.push(first);
        let mut second = batch(2, &[11], 0);
        second.channel_ops = vec![ask(3), ask(4)];
        q.push(second);
        let b = q.try_pop().expect("entry");
        assert_eq!(b.tick, 2);
        assert_eq!(b.channel_ops, vec![ask(1), ask(2), ask(3)]);
        assert_eq!(q.stats().events_dropped, 1, "the ask over the cap");
    }

    #[test]
    fn host_output_drops_oldest_packets_but_keeps_events_in_order() {
        let q = OutputQueue::new(2, 100);
        q.push(batch(1, &[10, 11], 1));
        q.push(batch(2, &[12], 1));
        q.push(batch(3, &[13], 1));
        let s = q.stats();
        assert_eq!((s.pushed, s.overflowed, s.packets_dropped), (3, 1, 2));
        let b = q.try_pop().expect("entry");
        assert_eq!(b.tick, 2);
        assert_eq!(b.dropped_for, vec![10, 11]);
        let clients: Vec<ClientId> = b
            .events
            .iter()
            .map(|e| match e {
                SceneEvent::Detached { client, .. } => *client,
                _ => 0,
            })
            .collect();
        assert_eq!(clients, vec![100, 200], "tick 1's event before tick 2's");
        let b = q.try_pop().expect("entry");
        assert_eq!((b.tick, b.dropped_for.len(), b.events.len()), (3, 0, 1));
        assert!(q.try_pop().is_none());
    }

    #[test]
    fn host_output_caps_events_and_counts() {
        let q = OutputQueue::new(1, 3);
        q.push(batch(1, &[], 2));
        q.push(batch(2, &[], 2));
        assert_eq!(q.stats().events_dropped, 1);
        let b = q.try_pop().expect("entry");
        assert_eq!(b.events.len(), 3);
        q.close();
        assert!(q.pop_timeout(Duration::from_secs(5)).is_none());
        q.push(batch(3, &[1], 0));
        assert!(q.try_pop().is_none(), "closed queues take nothing");
    }
}
