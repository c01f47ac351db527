//! THE CACHE'S TABLE
//!
//! Kept answers by key, bounded in entries (`--cache-size`) and in bytes
//! (`--cache-max-bytes`), evicting the least recently used.  Every
//! operation is O(1): a hash map from the key's hash to a slab slot, and a
//! list threaded through the slots in order of use (the most recent at the
//! head).  The map holds the key's 64-bit hash, not the key: the entry
//! holds the key and a lookup compares it whole, so a hash collision is a
//! miss, never a wrong answer.  The hash is foldhash, randomly seeded per
//! process, so a client cannot aim collisions.
//!
//! An entry's size, counted against the byte bound, is its key, its answer
//! and its TTL offsets plus [`ENTRY_OVERHEAD`], the table's own bytes per
//! entry.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use slab::Slab;
use tokio::time::Instant;

/// No slot (the ends of the list).
const NIL: usize = usize::MAX;

/// What the table itself spends per entry besides the key, the answer and
/// the offsets: the slot, the map's entry and its control byte, and the
/// three boxes' allocator headers (a rough 16 bytes each).
pub const ENTRY_OVERHEAD: usize =
    std::mem::size_of::<Entry>() + std::mem::size_of::<(u64, usize)>() + 1 + 3 * 16;

/// One kept answer.
#[derive(Debug)]
pub struct Entry {
    key: Box<[u8]>,
    hash: u64,
    /// The answer as served (its id and TTLs rewritten per client).
    pub answer: Box<[u8]>,
    /// Where its TTL fields are.
    pub ttl_offsets: Box<[u16]>,
    /// When it was stored: TTLs are aged from here.
    pub stored_at: Instant,
    /// Served fresh before this; stale (if allowed) after.
    pub fresh_until: Instant,
    prev: usize,
    next: usize,
}

impl Entry {
    fn size(&self) -> usize {
        self.key.len() + self.answer.len() + 2 * self.ttl_offsets.len() + ENTRY_OVERHEAD
    }
}

/// The table.
#[derive(Debug)]
pub struct Store {
    slots: Slab<Entry>,
    index: HashMap<u64, usize, RandomState>,
    hasher: RandomState,
    head: usize,
    tail: usize,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
}

impl Store {
    /// An empty table of at most `max_entries` entries and `max_bytes`.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Store {
            slots: Slab::new(),
            index: HashMap::default(),
            hasher: RandomState::default(),
            head: NIL,
            tail: NIL,
            max_entries,
            max_bytes,
            bytes: 0,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes held, as counted against the bound.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bound on entries.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The bound on bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The slot of `key`'s entry, if there is one; it becomes the most
    /// recently used.
    pub fn find(&mut self, key: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        let slot = *self.index.get(&hash)?;
        if *self.slots.get(slot)?.key != *key {
            return None;
        }
        self.unlink(slot);
        self.push_front(slot);
        Some(slot)
    }

    /// The entry in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Entry> {
        self.slots.get(slot)
    }

    /// Keep `answer` under `key`, replacing what was there; evict the least
    /// recently used until it fits.  Returns how many were evicted, or
    /// `None` if the entry alone is larger than the byte bound.
    pub fn insert(
        &mut self,
        key: &[u8],
        answer: Vec<u8>,
        ttl_offsets: Vec<u16>,
        stored_at: Instant,
        fresh_until: Instant,
    ) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        let entry = Entry {
            key: key.into(),
            hash,
            answer: answer.into_boxed_slice(),
            ttl_offsets: ttl_offsets.into_boxed_slice(),
            stored_at,
            fresh_until,
            prev: NIL,
            next: NIL,
        };
        let size = entry.size();
        if size > self.max_bytes || self.max_entries == 0 {
            return None;
        }
        if let Some(&old) = self.index.get(&hash) {
            self.remove(old);
        }
        let mut evicted = 0;
        while self.tail != NIL
            && (self.slots.len() >= self.max_entries || self.bytes + size > self.max_bytes)
        {
            self.remove(self.tail);
            evicted += 1;
        }
        let slot = self.slots.insert(entry);
        self.index.insert(hash, slot);
        self.bytes += size;
        self.push_front(slot);
        Some(evicted)
    }

    /// Forget the entry in `slot`.
    pub fn remove(&mut self, slot: usize) {
        if !self.slots.contains(slot) {
            return;
        }
        self.unlink(slot);
        let e = self.slots.remove(slot);
        self.index.remove(&e.hash);
        self.bytes -= e.size();
    }

    /// Forget everything; returns how many entries there were.
    pub fn clear(&mut self) -> usize {
        let n = self.slots.len();
        self.slots = Slab::new();
        self.index = HashMap::default();
        self.head = NIL;
        self.tail = NIL;
        self.bytes = 0;
        n
    }

    fn unlink(&mut self, slot: usize) {
        let (prev, next) = match self.slots.get(slot) {
            Some(e) => (e.prev, e.next),
            None => return,
        };
        match self.slots.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, slot: usize) {
        let old_head = self.head;
        if let Some(e) = self.slots.get_mut(slot) {
            e.prev = NIL;
            e.next = old_head;
        }
        match self.slots.get_mut(old_head) {
            Some(h) => h.prev = slot,
            None => self.tail = slot,
        }
        self.head = slot;
    }

    /// The keys from most to least recently used (tests).
    #[cfg(test)]
    fn order(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = self.head;
        while let Some(e) = self.slots.get(at) {
            out.push(e.key.to_vec());
            at = e.next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(s: &mut Store, key: &[u8], len: usize) -> Option<u64> {
        let now = Instant::now();
        s.insert(key, vec![0; len], vec![], now, now)
    }

    #[test]
    fn evicts_the_least_recently_used_at_the_entry_bound() {
        let mut s = Store::new(3, usize::MAX);
        for k in [b"a", b"b", b"c"] {
            assert_eq!(put(&mut s, k, 10), Some(0));
        }
        assert!(s.find(b"a").is_some());
        assert_eq!(put(&mut s, b"d", 10), Some(1));
        assert_eq!(s.order(), vec![b"d".to_vec(), b"a".to_vec(), b"c".to_vec()]);
        assert!(s.find(b"b").is_none());
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn evicts_to_fit_the_byte_bound_and_counts_bytes_exactly() {
        let one = 100 + 1 + ENTRY_OVERHEAD;
        let mut s = Store::new(100, 3 * one);
        for k in [b"a", b"b", b"c"] {
            put(&mut s, k, 100);
        }
        assert_eq!(s.bytes(), 3 * one);
        assert_eq!(put(&mut s, b"d", 150), Some(2), "room for 150 more");
        assert_eq!(s.len(), 2);
        assert_eq!(s.bytes(), one + 150 + 1 + ENTRY_OVERHEAD);
        assert_eq!(put(&mut s, b"e", 4 * one), None, "larger than the bound");
        s.clear();
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn replaces_an_entry_with_the_same_key() {
        let mut s = Store::new(10, usize::MAX);
        put(&mut s, b"a", 10);
        put(&mut s, b"a", 20);
        assert_eq!(s.len(), 1);
        let slot = s.find(b"a").unwrap_or(NIL);
        assert_eq!(s.get(slot).map(|e| e.answer.len()), Some(20));
        s.remove(slot);
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
    }
}
