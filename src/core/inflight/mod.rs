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
//! - measure each backend's forward latency;
//! - hedge: send a query its backend is slow to answer to a second one,
//!   take whichever answer comes first and recognise the other.
//!
//! The table is bounded in total and per backend; at a bound new queries are
//! refused (the caller drops and counts them) and memory never grows past it.
//! The hot path is one insert and one removal: a hash map from (client,
//! id) to a slab slot, a FIFO of deadlines (every query gets the same
//! timeout, so send order is deadline order) and frame buffers reused from a
//! free list, so a steady load allocates nothing.  With hedging on, each
//! backend also keeps a FIFO of its queries in send order: its hedge delay
//! is the same for all of them, so the front is the first due.  The maps use foldhash,
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

/// How many hedged queries settled by one backend's answer are remembered,
/// so that the other backend's answer, when it comes, is recognised and
/// dropped as the hedge's loser rather than taken for an answer nobody
/// asked for.  Hedges are few (the budget) and a backend that never
/// answers is faulted within a second or so, closing its link.
const RECENTLY_SETTLED: usize = 16384;

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
    /// Already sent to a second backend: replayed after its first failed,
    /// or hedged.  A query goes to two backends at most.
    pub replayed: bool,
    /// Sent once more, to this backend at this time, because `backend` was
    /// slow to answer (a hedge): either answer settles it.
    pub hedge: Option<(BackendId, Instant)>,
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
    /// When the query was sent to the backend that answered.
    pub sent_at: Instant,
    /// Whether it was hedged, and who answered first.
    pub hedge: HedgeOutcome,
}

/// For an answered query: whether it had been hedged, and which backend won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeOutcome {
    NotHedged,
    /// The backend first asked answered first.
    FirstWon,
    /// The backend the hedge went to answered first.
    HedgeWon,
}

/// An answer that matched nothing in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Its query timed out a moment ago.
    Late,
    /// Its query was hedged and the other backend answered first; this is
    /// the slower answer.  Sent at `sent_at`, for the backend's latency.
    HedgeLoser { sent_at: Instant },
    /// No such query was asked of this backend.
    Unsolicited,
}

/// What the table keeps per backend.
#[derive(Debug, Default)]
struct PerBackend {
    /// Queries in flight to it (hedges to it included).
    count: u32,
    /// With hedging on: its queries in send order (send time, slot,
    /// serial); entries answered meanwhile are skipped when met.
    hedge_queue: VecDeque<(Instant, usize, u64)>,
}

/// Hedged queries of one key settled by one backend: the other's answers
/// are expected (more than one when the client used the key again).
#[derive(Debug, Clone, Copy)]
struct Settled {
    loser: BackendId,
    sent_at: Instant,
    serial: u64,
    pending: u32,
}

/// The table.
#[derive(Debug)]
pub struct InFlight {
    slots: Slab<Entry>,
    /// Keyed by what clients choose (address, port, id), so the hasher is
    /// randomly seeded: no one can aim collisions at it.
    index: HashMap<QueryKey, usize, RandomState>,
    deadlines: VecDeque<(Instant, usize, u64)>,
    per_backend: HashMap<BackendId, PerBackend, RandomState>,
    spare: Vec<Vec<u8>>,
    limits: Limits,
    serial: u64,
    expired_keys: HashSet<QueryKey, RandomState>,
    expired_order: VecDeque<QueryKey>,
    /// Keep the per-backend hedge queues.
    hedging: bool,
    settled: HashMap<QueryKey, Settled, RandomState>,
    settled_order: VecDeque<(QueryKey, u64)>,
}

impl InFlight {
    /// A table within `limits`; `hedging` keeps what hedging needs.
    pub fn new(limits: Limits, hedging: bool) -> Self {
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
            hedging,
            settled: HashMap::default(),
            settled_order: VecDeque::new(),
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
        self.per_backend.get(&backend).map_or(0, |b| b.count)
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
        let per_backend = self.per_backend.entry(backend).or_default();
        if per_backend.count >= self.limits.per_backend {
            return Err(Full::Backend);
        }
        per_backend.count += 1;
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
            hedge: None,
            serial: self.serial,
            frame: buf,
            header_len,
        });
        self.index.insert(key, slot);
        self.deadlines.push_back((deadline, slot, self.serial));
        if self.hedging {
            let queue = &mut per_backend.hedge_queue;
            queue.push_back((now, slot, self.serial));
            if queue.len() > 2 * per_backend.count as usize + 1024 {
                let slots = &self.slots;
                queue.retain(|&(_, slot, serial)| {
                    slots
                        .get(slot)
                        .is_some_and(|e| e.serial == serial && e.backend == backend)
                });
            }
        }
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
        self.uncount(e.backend);
        if let Some((h, _)) = e.hedge {
            self.uncount(h);
        }
        e
    }

    fn uncount(&mut self, backend: BackendId) {
        if let Some(b) = self.per_backend.get_mut(&backend) {
            b.count = b.count.saturating_sub(1);
        }
    }

    /// Match an answer from `backend` to its query, removing it.
    ///
    /// The answer a hedge's loser still owes for a key comes before any
    /// answer of the same backend to a newer query with that key (a client
    /// that had its answer early uses its id again): backends answer a
    /// key's queries in order, so it is taken for the loser's, and the
    /// newer query keeps waiting for its own.
    pub fn answer(&mut self, key: QueryKey, backend: BackendId) -> Result<Answered, Unmatched> {
        if !self.settled.is_empty()
            && let Some(s) = self.settled.get_mut(&key)
            && s.loser == backend
        {
            let sent_at = s.sent_at;
            s.pending -= 1;
            if s.pending == 0 {
                self.settled.remove(&key);
            }
            return Err(Unmatched::HedgeLoser { sent_at });
        }
        match self.index.get(&key) {
            Some(&slot)
                if self.slots[slot].backend == backend
                    || self.slots[slot].hedge.is_some_and(|(h, _)| h == backend) =>
            {
                let e = self.take(slot);
                let (sent_at, hedge) = match e.hedge {
                    None => (e.sent_at, HedgeOutcome::NotHedged),
                    Some((h, at)) if h == backend => {
                        self.remember_settled(e.key, e.backend, e.sent_at);
                        (at, HedgeOutcome::HedgeWon)
                    }
                    Some((h, at)) => {
                        self.remember_settled(e.key, h, at);
                        (e.sent_at, HedgeOutcome::FirstWon)
                    }
                };
                let answered = Answered {
                    reply_path: e.reply_path,
                    sent_at,
                    hedge,
                };
                self.recycle(e);
                Ok(answered)
            }
            _ if self.expired_keys.contains(&key) => Err(Unmatched::Late),
            _ => Err(Unmatched::Unsolicited),
        }
    }

    /// Backend `gone` failed: the answers it owed as a hedge's loser will
    /// never come (its link is closed), and must not be waited for.
    pub fn forget_losers(&mut self, gone: BackendId) {
        self.settled.retain(|_, s| s.loser != gone);
    }

    fn remember_settled(&mut self, key: QueryKey, loser: BackendId, sent_at: Instant) {
        if self.settled_order.len() >= RECENTLY_SETTLED
            && let Some((old, serial)) = self.settled_order.pop_front()
            && self.settled.get(&old).is_some_and(|s| s.serial == serial)
        {
            self.settled.remove(&old);
        }
        self.serial += 1;
        let serial = self.serial;
        let pending = match self.settled.get(&key) {
            Some(s) if s.loser == loser => s.pending + 1,
            _ => 1,
        };
        self.settled.insert(
            key,
            Settled {
                loser,
                sent_at,
                serial,
                pending,
            },
        );
        self.settled_order.push_back((key, serial));
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

    /// The queries in flight to `backend` (hedges to it included), oldest
    /// first.
    pub fn keys_for(&self, backend: BackendId) -> Vec<QueryKey> {
        let mut v: Vec<(u64, QueryKey)> = self
            .slots
            .iter()
            .filter(|(_, e)| e.backend == backend || e.hedge.is_some_and(|(h, _)| h == backend))
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
        if let Some(b) = self.per_backend.get_mut(&e.backend) {
            b.count = b.count.saturating_sub(1);
        }
        self.per_backend.entry(to).or_default().count += 1;
        e.backend = to;
        e.replayed = true;
        Some(&e.frame)
    }

    /// A hedged query's backend `gone` failed: the other one it was sent
    /// to answers it alone.  False if the query was not hedged to `gone`.
    pub fn forget_hedge_backend(&mut self, key: &QueryKey, gone: BackendId) -> bool {
        let Some(&slot) = self.index.get(key) else {
            return false;
        };
        let e = &mut self.slots[slot];
        let Some((h, at)) = e.hedge else {
            return false;
        };
        if h == gone {
            e.hedge = None;
        } else if e.backend == gone {
            e.backend = h;
            e.sent_at = at;
            e.hedge = None;
        } else {
            return false;
        }
        self.uncount(gone);
        true
    }

    /// The earliest moment a query becomes due for a hedge: its send time
    /// plus its backend's `delay`.
    pub fn next_hedge(&mut self, delay: impl Fn(BackendId) -> Duration) -> Option<Instant> {
        let slots = &self.slots;
        let mut earliest: Option<Instant> = None;
        for (&backend, b) in self.per_backend.iter_mut() {
            while let Some(&(at, slot, serial)) = b.hedge_queue.front() {
                if slots
                    .get(slot)
                    .is_some_and(|e| e.serial == serial && hedgeable(e, backend))
                {
                    let due = at + delay(backend);
                    earliest = Some(earliest.map_or(due, |t| t.min(due)));
                    break;
                }
                b.hedge_queue.pop_front();
            }
        }
        earliest
    }

    /// Put into `due` every query due for a hedge at `now` (send time plus
    /// its backend's `delay`), oldest first per backend.
    pub fn hedges_due(
        &mut self,
        now: Instant,
        delay: impl Fn(BackendId) -> Duration,
        due: &mut Vec<QueryKey>,
    ) {
        let slots = &self.slots;
        for (&backend, b) in self.per_backend.iter_mut() {
            let d = delay(backend);
            while let Some(&(at, slot, serial)) = b.hedge_queue.front() {
                match slots.get(slot) {
                    Some(e) if e.serial == serial && hedgeable(e, backend) => {
                        if at + d > now {
                            break;
                        }
                        due.push(e.key);
                    }
                    _ => {}
                }
                b.hedge_queue.pop_front();
            }
        }
    }

    /// Send the query `key` once more, to `to`, now: returns its frame, or
    /// `None` if it is gone, hedged already or `to` is at its bound.
    pub fn hedge(&mut self, key: &QueryKey, to: BackendId, now: Instant) -> Option<&[u8]> {
        let &slot = self.index.get(key)?;
        if self.count_for(to) >= self.limits.per_backend {
            return None;
        }
        let e = &mut self.slots[slot];
        if e.replayed || e.backend == to {
            return None;
        }
        e.hedge = Some((to, now));
        e.replayed = true;
        self.per_backend.entry(to).or_default().count += 1;
        Some(&self.slots[slot].frame)
    }

    /// Undo [`InFlight::hedge`] when the frame could not be sent.
    pub fn unhedge(&mut self, key: &QueryKey) {
        let Some(&slot) = self.index.get(key) else {
            return;
        };
        let e = &mut self.slots[slot];
        if let Some((h, _)) = e.hedge.take() {
            e.replayed = false;
            self.uncount(h);
        }
    }

    /// Hand back memory kept from a busier moment: spare buffers and map
    /// capacity beyond what is in use now.
    pub fn shrink(&mut self) {
        self.spare = Vec::new();
        self.index.shrink_to_fit();
        for b in self.per_backend.values_mut() {
            b.hedge_queue.shrink_to_fit();
        }
        self.settled.shrink_to_fit();
        self.settled_order.shrink_to_fit();
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

/// Whether a query in `backend`'s hedge queue may still be hedged: still
/// with that backend, and never sent to a second one.
fn hedgeable(e: &Entry, backend: BackendId) -> bool {
    e.backend == backend && !e.replayed
}

#[cfg(test)]
mod tests;
