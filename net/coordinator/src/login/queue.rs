//! The login queue: first come, first served, one place per account.
//!
//! A poll finds its ticket, and how many tickets are ahead of it, in
//! O(log n): places are numbered in arrival order and counted in a Fenwick
//! tree over a ring of numbers. Tickets that stop polling leave oldest
//! first, so no call sweeps the whole queue.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
struct Place {
    ticket: String,
    account: u64,
    last_poll_ms: u64,
}

/// Why a place left the queue without being admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// It stopped polling for longer than the queue timeout.
    TimedOut,
}

/// Queued logins by arrival. **Invariant:** every index holds the same
/// places, and the live place numbers span fewer than the ring's size.
#[derive(Debug)]
pub(crate) struct Queue {
    capacity: usize,
    timeout_ms: u64,
    /// Place number → place; the first is the head of the line.
    places: BTreeMap<u64, Place>,
    by_ticket: BTreeMap<String, u64>,
    by_account: BTreeMap<u64, u64>,
    /// (last poll, place number): who stopped polling first.
    by_poll: BTreeSet<(u64, u64)>,
    /// 1 at `n % ring` for each live place number `n`.
    counts: Fenwick,
    next: u64,
}

impl Queue {
    /// A queue of at most `capacity` places; a place that has not polled
    /// for `timeout_ms` is dropped.
    pub(crate) fn new(capacity: usize, timeout_ms: u64) -> Self {
        Self {
            capacity,
            timeout_ms,
            places: BTreeMap::new(),
            by_ticket: BTreeMap::new(),
            by_account: BTreeMap::new(),
            by_poll: BTreeSet::new(),
            counts: Fenwick::new((2 * capacity).next_power_of_two()),
            next: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.places.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.places.len() >= self.capacity
    }

    /// Drops the places that stopped polling by `now_ms`, each handed to
    /// `gone`; costs only what it drops.
    pub(crate) fn expire(&mut self, now_ms: u64, mut gone: impl FnMut(Left)) {
        while let Some(&(last, n)) = self.by_poll.first()
            && now_ms.saturating_sub(last) > self.timeout_ms
        {
            self.remove(n);
            gone(Left::TimedOut);
        }
    }

    /// Queues `account` under `ticket`, or, if it already waits, gives its
    /// place the new ticket (the old one stops working). Its 1-based
    /// position; `None` if the queue is full.
    pub(crate) fn push(&mut self, account: u64, ticket: String, now_ms: u64) -> Option<u64> {
        if let Some(&n) = self.by_account.get(&account) {
            let place = self.places.get_mut(&n)?;
            let old = std::mem::replace(&mut place.ticket, ticket.clone());
            self.by_ticket.remove(&old);
            self.by_ticket.insert(ticket, n);
            self.touch(n, now_ms);
            return Some(self.ahead(n) + 1);
        }
        if self.is_full() {
            return None;
        }
        if let Some(&head) = self.places.keys().next()
            && self.next - head >= self.counts.len() as u64
        {
            self.renumber();
        }
        let n = self.next;
        self.next += 1;
        self.places.insert(
            n,
            Place {
                ticket: ticket.clone(),
                account,
                last_poll_ms: now_ms,
            },
        );
        self.by_ticket.insert(ticket, n);
        self.by_account.insert(account, n);
        self.by_poll.insert((now_ms, n));
        self.counts.add(self.slot(n), 1);
        Some(self.ahead(n) + 1)
    }

    /// A poll of `ticket`: its place number and how many wait ahead of it.
    pub(crate) fn poll(&mut self, ticket: &str, now_ms: u64) -> Option<(u64, u64)> {
        let n = *self.by_ticket.get(ticket)?;
        self.touch(n, now_ms);
        Some((n, self.ahead(n)))
    }

    /// The account waiting at place `n`.
    pub(crate) fn account(&self, n: u64) -> Option<u64> {
        self.places.get(&n).map(|p| p.account)
    }

    /// Place `n` leaves the queue (admitted).
    pub(crate) fn remove(&mut self, n: u64) {
        let Some(place) = self.places.remove(&n) else {
            return;
        };
        self.by_ticket.remove(&place.ticket);
        self.by_account.remove(&place.account);
        self.by_poll.remove(&(place.last_poll_ms, n));
        self.counts.add(self.slot(n), -1);
    }

    /// The account's place leaves the queue; whether it had one.
    pub(crate) fn remove_account(&mut self, account: u64) -> bool {
        let Some(&n) = self.by_account.get(&account) else {
            return false;
        };
        self.remove(n);
        true
    }

    fn touch(&mut self, n: u64, now_ms: u64) {
        if let Some(place) = self.places.get_mut(&n) {
            self.by_poll.remove(&(place.last_poll_ms, n));
            place.last_poll_ms = now_ms;
            self.by_poll.insert((now_ms, n));
        }
    }

    fn slot(&self, n: u64) -> usize {
        (n % self.counts.len() as u64) as usize
    }

    /// Live places numbered below `n` (all of them lie in one turn of the
    /// ring, from the head).
    fn ahead(&self, n: u64) -> u64 {
        let Some(&head) = self.places.keys().next() else {
            return 0;
        };
        let (h, s) = (self.slot(head), self.slot(n));
        let count = if h <= s {
            self.counts.prefix(s) - self.counts.prefix(h)
        } else {
            self.counts.total() - (self.counts.prefix(h) - self.counts.prefix(s))
        };
        count as u64
    }

    /// Numbers the places from 0 again, in the same order: called when
    /// the numbers would span the ring (a head that stays while places
    /// behind it come and go); at most once per `capacity` arrivals, so
    /// it costs O(log n) per arrival on average.
    fn renumber(&mut self) {
        let places = std::mem::take(&mut self.places);
        self.by_ticket.clear();
        self.by_account.clear();
        self.by_poll.clear();
        self.counts = Fenwick::new(self.counts.len());
        for (n, place) in places.into_values().enumerate() {
            let n = n as u64;
            self.by_ticket.insert(place.ticket.clone(), n);
            self.by_account.insert(place.account, n);
            self.by_poll.insert((place.last_poll_ms, n));
            self.counts.add(self.slot(n), 1);
            self.places.insert(n, place);
        }
        self.next = self.places.len() as u64;
    }
}

/// A Fenwick (binary indexed) tree of counts: add and prefix sums in
/// O(log n).
#[derive(Debug)]
struct Fenwick(Vec<i32>);

impl Fenwick {
    fn new(len: usize) -> Self {
        Self(vec![0; len.max(1)])
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn add(&mut self, at: usize, delta: i32) {
        let mut i = at + 1;
        while i <= self.0.len() {
            self.0[i - 1] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// The sum of the counts below `end`.
    fn prefix(&self, end: usize) -> i64 {
        let mut i = end.min(self.0.len());
        let mut sum = 0;
        while i > 0 {
            sum += i64::from(self.0[i - 1]);
            i -= i & i.wrapping_neg();
        }
        sum
    }

    fn total(&self) -> i64 {
        self.prefix(self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The position of each account, by brute force over arrival order.
    fn positions(q: &Queue) -> Vec<(u64, u64)> {
        q.places
            .values()
            .enumerate()
            .map(|(i, p)| (p.account, i as u64))
            .collect()
    }

    #[test]
    fn positions_count_only_live_places_ahead() {
        let mut q = Queue::new(8, 1000);
        for a in 1..=5 {
            assert_eq!(q.push(a, format!("t{a}"), 0), Some(a));
        }
        // The second and fourth leave: the fifth is third in line.
        let (n2, _) = q.poll("t2", 1).expect("queued");
        q.remove(n2);
        assert!(q.remove_account(4));
        assert_eq!(q.poll("t5", 1).map(|(_, ahead)| ahead), Some(2));
        assert_eq!(q.poll("t1", 1).map(|(_, ahead)| ahead), Some(0));
        assert_eq!(q.poll("t2", 1), None);
    }

    #[test]
    fn an_account_keeps_one_place_and_its_newest_ticket() {
        let mut q = Queue::new(8, 1000);
        q.push(1, "a".into(), 0);
        q.push(2, "b".into(), 0);
        assert_eq!(q.push(1, "a2".into(), 5), Some(1), "same place");
        assert_eq!(q.len(), 2);
        assert_eq!(q.poll("a", 5), None, "the old ticket stops working");
        assert_eq!(q.poll("a2", 5).map(|(_, ahead)| ahead), Some(0));
    }

    #[test]
    fn full_and_timed_out() {
        let mut q = Queue::new(2, 100);
        q.push(1, "a".into(), 0);
        q.push(2, "b".into(), 50);
        assert_eq!(q.push(3, "c".into(), 50), None, "full");
        let mut gone = 0;
        q.expire(100, |_| gone += 1);
        assert_eq!(gone, 0, "exactly the timeout is still in");
        q.expire(101, |_| gone += 1);
        assert_eq!(gone, 1);
        assert_eq!(q.poll("a", 101), None);
        assert_eq!(q.poll("b", 101).map(|(_, ahead)| ahead), Some(0));
    }

    /// A head that stays while thousands come and go behind it: the
    /// numbers wrap the ring many times and every position stays exact.
    #[test]
    fn positions_stay_exact_across_renumbering() {
        let mut q = Queue::new(4, u64::MAX);
        q.push(0, "head".into(), 0);
        for a in 1..2000u64 {
            assert!(q.push(a, format!("t{a}"), 0).is_some());
            if a % 3 != 0 {
                q.remove_account(a);
            }
            if q.is_full() {
                let second = positions(&q)[1].0;
                q.remove_account(second);
            }
            for (account, ahead) in positions(&q) {
                let n = q.by_account[&account];
                assert_eq!(q.ahead(n), ahead, "account {account} after {a}");
            }
        }
        assert_eq!(q.poll("head", 0).map(|(_, ahead)| ahead), Some(0));
    }
}
