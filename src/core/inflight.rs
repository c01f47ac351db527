//! IN-FLIGHT QUERIES
//!
//! Every UDP query forwarded to a backend is remembered here until its
//! answer passes back or its deadline passes: the client's address and port,
//! the DNS id, the backend, when it was sent, and a copy of the frame that
//! carried it.  Knowing which answers it owes lets the balancer
//!
//! - replay the queries held by a backend that fails, so a crash loses
//!   nothing another backend could answer;
//! - answer SERVFAIL when a query times out instead of leaving the client
//!   to wait;
//! - refuse to send an answer nobody asked for (a buggy or hostile backend
//!   cannot aim the balancer's socket at an address that never queried);
//! - measure each backend's forward latency.
//!
//! The table is bounded in total and per backend; at a bound new queries are
//! refused (the caller drops and counts them) and memory never grows past it.
//! The hot path is one insert and one removal: a hash map from (client,
//! id) to a slab slot, a FIFO of deadlines (every query gets the same
//! timeout, so send order is deadline order) and frame buffers reused from a
//! free list, so a steady load allocates nothing.  The maps use foldhash,
//! several times cheaper than std's SipHash and still randomly seeded.

use std::collections::{HashMap, HashSet, VecDeque};

use foldhash::fast::RandomState;
use std::net::SocketAddr;
use std::time::Duration;

use slab::Slab;
use tokio::time::Instant;

use crate::backends::BackendId;

/// How many recently timed-out queries are remembered, so that an answer
/// arriving after its query's deadline is counted as late rather than as
/// unsolicited.
const RECENTLY_EXPIRED: usize = 4096;

/// Identifies a query: who asked, and the DNS id they used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub client: SocketAddr,
    pub id: u16,
}

/// One query awaiting its answer.
#[derive(Debug)]
pub struct Entry {
    pub key: QueryKey,
    pub backend: BackendId,
    /// The reply path of the query (its socket and local address): the
    /// answer leaves the way the query came.
    pub reply_path: usize,
    pub sent_at: Instant,
    pub deadline: Instant,
    /// Already sent once more after its first backend failed.
    pub replayed: bool,
    serial: u64,
    /// The frame as sent to the backend; the DNS message starts at
    /// `header_len`.
    frame: Vec<u8>,
    header_len: usize,
}

impl Entry {
    /// The frame that carried the query, ready to send to another backend.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// The client's DNS message.
    pub fn message(&self) -> &[u8] {
        &self.frame[self.header_len..]
    }
}

/// The bounds of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub total: usize,
    pub per_backend: u32,
}

/// Why a query could not be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    Backend,
}

/// What [`InFlight::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The same client, port and id are already in flight (a retransmit):
    /// forward it again, the first answer settles both.
    Duplicate,
}

/// An answer matched to its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub reply_path: usize,
    pub sent_at: Instant,
}

/// An answer that matched nothing in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Its query timed out a moment ago.
    Late,
    /// No such query was asked of this backend.
    Unsolicited,
}

/// The table.
#[derive(Debug)]
pub struct InFlight {
    slots: Slab<Entry>,
    /// Keyed by what clients choose (address, port, id), so the hasher is
    /// randomly seeded: no one can aim collisions at it.
    index: HashMap<QueryKey, usize, RandomState>,
    deadlines: VecDeque<(Instant, usize, u64)>,
    per_backend: HashMap<BackendId, u32, RandomState>,
    spare: Vec<Vec<u8>>,
    limits: Limits,
    serial: u64,
    expired_keys: HashSet<QueryKey, RandomState>,
    expired_order: VecDeque<QueryKey>,
}

impl InFlight {
    pub fn new(limits: Limits) -> Self {
        InFlight {
            slots: Slab::new(),
            index: HashMap::default(),
            deadlines: VecDeque::new(),
            per_backend: HashMap::default(),
            spare: Vec::new(),
            limits,
            serial: 0,
            expired_keys: HashSet::default(),
            expired_order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Queries in flight to `backend`.
    pub fn count_for(&self, backend: BackendId) -> u32 {
        self.per_backend.get(&backend).copied().unwrap_or(0)
    }

    /// Remember a query sent to `backend` now, due by `now + timeout`.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        key: QueryKey,
        backend: BackendId,
        reply_path: usize,
        now: Instant,
        timeout: Duration,
        frame: &[u8],
        header_len: usize,
    ) -> Result<Inserted, Full> {
        if self.index.contains_key(&key) {
            return Ok(Inserted::Duplicate);
        }
        if self.slots.len() >= self.limits.total {
            return Err(Full::Total);
        }
        let count = self.per_backend.entry(backend).or_insert(0);
        if *count >= self.limits.per_backend {
            return Err(Full::Backend);
        }
        *count += 1;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.serial += 1;
        let deadline = now + timeout;
        let slot = self.slots.insert(Entry {
            key,
            backend,
            reply_path,
            sent_at: now,
            deadline,
            replayed: false,
            serial: self.serial,
            frame: buf,
            header_len,
        });
        self.index.insert(key, slot);
        self.deadlines.push_back((deadline, slot, self.serial));
        // Answered queries leave their deadline behind until it reaches the
        // front; one slow query at the front must not let them pile up, so
        // the FIFO is compacted when it is mostly dead (amortised O(1)).
        if self.deadlines.len() > 2 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.deadlines
                .retain(|&(_, slot, serial)| slots.get(slot).is_some_and(|e| e.serial == serial));
        }
        Ok(Inserted::New)
    }

    fn take(&mut self, slot: usize) -> Entry {
        let e = self.slots.remove(slot);
        self.index.remove(&e.key);
        if let Some(c) = self.per_backend.get_mut(&e.backend) {
            *c = c.saturating_sub(1);
        }
        e
    }

    /// Match an answer from `backend` to its query, removing it.
    pub fn answer(&mut self, key: QueryKey, backend: BackendId) -> Result<Answered, Unmatched> {
        match self.index.get(&key) {
            Some(&slot) if self.slots[slot].backend == backend => {
                let e = self.take(slot);
                let answered = Answered {
                    reply_path: e.reply_path,
                    sent_at: e.sent_at,
                };
                self.recycle(e);
                Ok(answered)
            }
            _ if self.expired_keys.contains(&key) => Err(Unmatched::Late),
            _ => Err(Unmatched::Unsolicited),
        }
    }

    /// Give a finished entry's buffer back for reuse.
    pub fn recycle(&mut self, e: Entry) {
        // Keep at most as many spare buffers as the table can hold.
        if self.spare.len() < self.limits.total {
            self.spare.push(e.frame);
        }
    }

    /// The earliest deadline of any query in flight.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&(at, slot, serial)) = self.deadlines.front() {
            if self.slots.get(slot).is_some_and(|e| e.serial == serial) {
                return Some(at);
            }
            // Answered already: forget its deadline.
            self.deadlines.pop_front();
        }
        None
    }

    /// Take one query whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Entry> {
        let at = self.next_deadline()?;
        if at > now {
            return None;
        }
        let (_, slot, _) = self.deadlines.pop_front()?;
        let e = self.take(slot);
        if self.expired_order.len() >= RECENTLY_EXPIRED
            && let Some(old) = self.expired_order.pop_front()
        {
            self.expired_keys.remove(&old);
        }
        self.expired_order.push_back(e.key);
        self.expired_keys.insert(e.key);
        Some(e)
    }

    /// The queries in flight to `backend`, oldest first.
    pub fn keys_for(&self, backend: BackendId) -> Vec<QueryKey> {
        let mut v: Vec<(u64, QueryKey)> = self
            .slots
            .iter()
            .filter(|(_, e)| e.backend == backend)
            .map(|(_, e)| (e.serial, e.key))
            .collect();
        v.sort_unstable_by_key(|(serial, _)| *serial);
        v.into_iter().map(|(_, k)| k).collect()
    }

    pub fn get(&self, key: &QueryKey) -> Option<&Entry> {
        self.index.get(key).map(|&slot| &self.slots[slot])
    }

    /// Move a query to another backend after its first one failed; it keeps
    /// its deadline.  Returns its frame to send; `None` when the query is
    /// gone or `to` is at its bound.
    pub fn reassign(&mut self, key: &QueryKey, to: BackendId) -> Option<&[u8]> {
        let &slot = self.index.get(key)?;
        // The new backend's bound holds for replays too: a query that does
        // not fit stays where it is and meets its deadline.
        if self.count_for(to) >= self.limits.per_backend {
            return None;
        }
        let e = &mut self.slots[slot];
        if let Some(c) = self.per_backend.get_mut(&e.backend) {
            *c = c.saturating_sub(1);
        }
        *self.per_backend.entry(to).or_insert(0) += 1;
        e.backend = to;
        e.replayed = true;
        Some(&e.frame)
    }

    /// Hand back memory kept from a busier moment: spare buffers and map
    /// capacity beyond what is in use now.
    pub fn shrink(&mut self) {
        self.spare = Vec::new();
        self.index.shrink_to_fit();
        self.per_backend.shrink_to_fit();
        self.deadlines.shrink_to_fit();
        self.slots.shrink_to_fit();
    }

    /// Forget a query (it could not be replayed and will not be answered).
    pub fn remove(&mut self, key: &QueryKey) -> Option<Entry> {
        let &slot = self.index.get(key)?;
        Some(self.take(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, id: u16) -> QueryKey {
        QueryKey {
            client: SocketAddr::from(([10, 0, 0, 1], port)),
            id,
        }
    }

    const T: Duration = Duration::from_secs(2);
    const LIMITS: Limits = Limits {
        total: 4,
        per_backend: 3,
    };

    #[tokio::test(start_paused = true)]
    async fn insert_answer_and_reuse() {
        let mut t = InFlight::new(LIMITS);
        let now = Instant::now();
        assert_eq!(
            t.insert(key(1, 7), 5300, 0, now, T, b"hdrQ", 3),
            Ok(Inserted::New)
        );
        assert_eq!(t.get(&key(1, 7)).unwrap().message(), b"Q");
        assert_eq!(
            t.insert(key(1, 7), 5300, 0, now, T, b"hdrQ", 3),
            Ok(Inserted::Duplicate)
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.answer(key(1, 7), 5301),
            Err(Unmatched::Unsolicited),
            "wrong backend"
        );
        assert_eq!(
            t.answer(key(1, 7), 5300),
            Ok(Answered {
                reply_path: 0,
                sent_at: now
            })
        );
        assert_eq!(
            t.answer(key(1, 7), 5300),
            Err(Unmatched::Unsolicited),
            "only once"
        );
        assert!(t.is_empty());
        assert_eq!(t.count_for(5300), 0);
        assert_eq!(t.spare.len(), 1, "buffer kept for reuse");
        assert_eq!(t.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_in_total_and_per_backend() {
        let mut t = InFlight::new(LIMITS);
        let now = Instant::now();
        for id in 0..3 {
            t.insert(key(1, id), 5300, 0, now, T, b"q", 0).unwrap();
        }
        assert_eq!(
            t.insert(key(1, 3), 5300, 0, now, T, b"q", 0),
            Err(Full::Backend)
        );
        t.insert(key(1, 4), 5301, 0, now, T, b"q", 0).unwrap();
        assert_eq!(
            t.insert(key(1, 5), 5302, 0, now, T, b"q", 0),
            Err(Full::Total)
        );
        assert_eq!(t.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_in_send_order_and_late_answers() {
        let mut t = InFlight::new(LIMITS);
        let t0 = Instant::now();
        t.insert(key(1, 1), 5300, 0, t0, T, b"a", 0).unwrap();
        tokio::time::advance(Duration::from_millis(10)).await;
        t.insert(key(1, 2), 5300, 0, Instant::now(), T, b"b", 0)
            .unwrap();
        t.answer(key(1, 1), 5300).unwrap();
        assert_eq!(t.next_deadline(), Some(t0 + T + Duration::from_millis(10)));
        assert!(t.pop_expired(t0 + T).is_none());
        let e = t.pop_expired(t0 + T + Duration::from_millis(10)).unwrap();
        assert_eq!(e.key, key(1, 2));
        assert_eq!(e.message(), b"b");
        t.recycle(e);
        assert_eq!(t.answer(key(1, 2), 5300), Err(Unmatched::Late));
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_fifo_stays_bounded_behind_a_slow_query() {
        let mut t = InFlight::new(Limits {
            total: 10,
            per_backend: 10,
        });
        let now = Instant::now();
        t.insert(key(1, 0), 5300, 0, now, T, b"slow", 0).unwrap();
        for i in 1..100_000u32 {
            let k = key(2, i as u16);
            t.insert(k, 5300, 0, now, T, b"q", 0).unwrap();
            t.answer(k, 5300).unwrap();
        }
        assert!(
            t.deadlines.len() <= 2 * t.len() + 1025,
            "{}",
            t.deadlines.len()
        );
        assert_eq!(
            t.next_deadline(),
            Some(now + T),
            "the slow query still counts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reassign_moves_queries_once() {
        let mut t = InFlight::new(LIMITS);
        let now = Instant::now();
        t.insert(key(1, 1), 5300, 0, now, T, b"a", 0).unwrap();
        t.insert(key(2, 1), 5301, 0, now, T, b"b", 0).unwrap();
        t.insert(key(3, 1), 5300, 0, now, T, b"c", 0).unwrap();
        assert_eq!(t.keys_for(5300), [key(1, 1), key(3, 1)]);
        assert_eq!(t.reassign(&key(1, 1), 5302), Some(&b"a"[..]));
        assert!(t.get(&key(1, 1)).unwrap().replayed);
        assert_eq!((t.count_for(5300), t.count_for(5302)), (1, 1));
        assert_eq!(t.answer(key(1, 1), 5300), Err(Unmatched::Unsolicited));
        assert!(t.answer(key(1, 1), 5302).is_ok());
        assert!(t.remove(&key(3, 1)).is_some());
        assert_eq!(t.count_for(5300), 0);
    }
}
