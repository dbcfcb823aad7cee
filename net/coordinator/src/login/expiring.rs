//! A map of credentials with one entry per account and an expiry each:
//! pending connect tokens (by nonce) and resume keys. Every operation is a
//! few `BTreeMap` steps; expired entries leave oldest first, so no call
//! ever sweeps the whole map.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One credential: whose, until when, and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<V> {
    pub(crate) account: u64,
    pub(crate) expires: Duration,
    pub(crate) value: V,
}

/// Credentials by key, at most one per account.
#[derive(Debug)]
pub(crate) struct Expiring<K, V> {
    by_key: BTreeMap<K, Entry<V>>,
    by_account: BTreeMap<u64, K>,
    by_expiry: BTreeSet<(Duration, K)>,
}

impl<K: Ord + Clone, V> Default for Expiring<K, V> {
    fn default() -> Self {
        Self {
            by_key: BTreeMap::new(),
            by_account: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone, V> Expiring<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&Entry<V>>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.by_key.get(key)
    }

    /// The account's key and entry.
    #[cfg(test)]
    pub(crate) fn of_account(&self, account: u64) -> Option<(&K, &Entry<V>)> {
        let key = self.by_account.get(&account)?;
        self.by_key.get(key).map(|e| (key, e))
    }

    /// Adds `key` for `entry.account`, replacing (and returning) the
    /// account's previous entry: one credential per account.
    pub(crate) fn insert(&mut self, key: K, entry: Entry<V>) -> Option<(K, Entry<V>)> {
        let old = self.remove_account(entry.account);
        if let Some(stale) = self.by_key.remove(&key) {
            // The same key again (never, for random keys): forget it first.
            self.by_account.remove(&stale.account);
            self.by_expiry.remove(&(stale.expires, key.clone()));
        }
        self.by_account.insert(entry.account, key.clone());
        self.by_expiry.insert((entry.expires, key.clone()));
        self.by_key.insert(key, entry);
        old
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<Entry<V>> {
        let entry = self.by_key.remove(key)?;
        self.by_account.remove(&entry.account);
        self.by_expiry.remove(&(entry.expires, key.clone()));
        Some(entry)
    }

    /// The account's entry, removed.
    pub(crate) fn remove_account(&mut self, account: u64) -> Option<(K, Entry<V>)> {
        let key = self.by_account.get(&account)?.clone();
        self.remove(&key).map(|e| (key, e))
    }

    /// The entry that expires first, removed.
    pub(crate) fn pop_oldest(&mut self) -> Option<(K, Entry<V>)> {
        let (_, key) = self.by_expiry.first()?.clone();
        self.remove(&key).map(|e| (key, e))
    }

    /// Removes every entry that expired by `now` (oldest first), handing
    /// each to `gone`; costs only what it removes.
    pub(crate) fn expire(&mut self, now: Duration, mut gone: impl FnMut(K, Entry<V>)) {
        while let Some((expires, _)) = self.by_expiry.first()
            && *expires <= now
        {
            if let Some((key, entry)) = self.pop_oldest() {
                gone(key, entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(account: u64, expires_s: u64) -> Entry<()> {
        Entry {
            account,
            expires: Duration::from_secs(expires_s),
            value: (),
        }
    }

    #[test]
    fn one_entry_per_account_and_every_index_agrees() {
        let mut m = Expiring::default();
        assert!(m.insert("a", entry(1, 10)).is_none());
        assert!(m.insert("b", entry(2, 5)).is_none());
        let (old, _) = m.insert("c", entry(1, 20)).expect("replaced");
        assert_eq!(old, "a");
        assert_eq!(m.len(), 2);
        assert!(m.get(&"a").is_none());
        assert_eq!(m.get(&"c").map(|e| e.account), Some(1));
        assert_eq!(m.remove_account(2).map(|(k, _)| k), Some("b"));
        assert!(m.remove_account(2).is_none());
        assert_eq!(m.pop_oldest().map(|(k, _)| k), Some("c"));
        assert_eq!(m.len(), 0);
        assert!(m.by_account.is_empty() && m.by_expiry.is_empty());
    }

    #[test]
    fn expiry_removes_only_what_expired_oldest_first() {
        let mut m = Expiring::default();
        for (k, exp) in [("x", 30), ("y", 10), ("z", 20)] {
            m.insert(k, entry(exp, exp));
        }
        let mut gone = Vec::new();
        m.expire(Duration::from_secs(20), |k, _| gone.push(k));
        assert_eq!(gone, ["y", "z"]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.by_expiry.len(), 1);
        assert_eq!(m.by_account.len(), 1);
    }
}
