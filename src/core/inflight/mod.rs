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

use super::intake::question_fingerprint;
use crate::backends::BackendId;
use hedges::Settled;

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
    /// The client's address and port.
    pub client: SocketAddr,
    /// The DNS id of its query.
    pub id: u16,
}

/// One query awaiting its answer.
#[derive(Debug)]
pub struct Entry {
    /// Who asked, with which id.
    pub key: QueryKey,
    /// The backend it is in flight to (the second, once replayed).
    pub backend: BackendId,
    /// The reply path of the query (its socket and local address): the
    /// answer leaves the way the query came.
    pub reply_path: usize,
    /// When it was first forwarded: its latency counts from here.
    pub sent_at: Instant,
    /// When it times out; a replay keeps it.
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
    /// Queries in flight at most (`--max-inflight`).
    pub total: usize,
    /// Queries in flight to one backend at most, hedges to it included
    /// (`--max-inflight-per-backend`).
    pub per_backend: u32,
}

/// Why a query could not be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The table is at its total bound.
    Total,
    /// The backend is at its own bound.
    Backend,
}

/// What [`InFlight::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Tracked: no query with its key was in flight.
    New,
    /// The same client, port and id are already in flight (a retransmit):
    /// forward it again, the first answer settles both.
    Duplicate,
}

/// An answer matched to its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The reply path the query came by: the answer leaves by it.
    pub reply_path: usize,
    /// When the query was sent to the backend that answered.
    pub sent_at: Instant,
    /// Whether it was hedged, and who answered first.
    pub hedge: HedgeOutcome,
}

/// For an answered query: whether it had been hedged, and which backend won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeOutcome {
    /// Not hedged: one backend was asked.
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
    /// the slower answer.
    HedgeLoser {
        /// When the query was sent to this backend: its latency counts.
        sent_at: Instant,
    },
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

    /// Queries in flight.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no query is in flight.
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

    /// Match `backend`'s answer `payload` to its query, removing it.
    ///
    /// A hedge's loser may still owe an answer for a key when a newer query
    /// with that key is in flight to it (the client had its answer early
    /// and used its id again).  An answer to the question the loser was
    /// asked is taken for the loser's, as is one that matches nothing
    /// else; the newer query keeps waiting for its own.
    pub fn answer(
        &mut self,
        key: QueryKey,
        backend: BackendId,
        payload: &[u8],
    ) -> Result<Answered, Unmatched> {
        self.answer_and(key, backend, payload, |_| {})
    }

    /// [`InFlight::answer`], calling `with_query` with the client's query
    /// when the answer is matched (the packet cache learns from the pair).
    pub fn answer_and(
        &mut self,
        key: QueryKey,
        backend: BackendId,
        payload: &[u8],
        with_query: impl FnOnce(&[u8]),
    ) -> Result<Answered, Unmatched> {
        if !self.settled.is_empty() && self.settled.get(&key).is_some_and(|s| s.loser == backend) {
            let live = self.index.get(&key).is_some_and(|&slot| {
                let e = &self.slots[slot];
                e.backend == backend || e.hedge.is_some_and(|(h, _)| h == backend)
            });
            let owed = self.settled.get(&key).map(|s| s.question);
            if !live || owed == Some(question_fingerprint(payload)) {
                return Err(self.take_loser(&key));
            }
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
                        let question = question_fingerprint(e.message());
                        self.remember_settled(e.key, e.backend, e.sent_at, question);
                        (at, HedgeOutcome::HedgeWon)
                    }
                    Some((h, at)) => {
                        let question = question_fingerprint(e.message());
                        self.remember_settled(e.key, h, at, question);
                        (e.sent_at, HedgeOutcome::FirstWon)
                    }
                };
                with_query(e.message());
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

    /// The query in flight under `key`, if any.
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

mod hedges;
#[cfg(test)]
mod tests;
