//! The in-flight table's side of hedging ([`crate::core::hedge`]): which
//! queries are due for a hedge, sending one to a second backend, and
//! recognising the answer that loses the race when it comes.

use std::time::Duration;

use tokio::time::Instant;

use super::{Entry, InFlight, QueryKey, RECENTLY_SETTLED, Unmatched};
use crate::backends::BackendId;

/// Hedged queries of one key settled by one backend: the other's answers
/// are expected (more than one when the client used the key again).
#[derive(Debug, Clone, Copy)]
pub(super) struct Settled {
    pub(super) loser: BackendId,
    pub(super) sent_at: Instant,
    pub(super) serial: u64,
    pub(super) pending: u32,
    /// The question it asked ([`question_fingerprint`]).
    pub(super) question: u64,
}

impl InFlight {
    /// Backend `gone` failed: the answers it owed as a hedge's loser will
    /// never come (its link is closed), and must not be waited for.
    pub fn forget_losers(&mut self, gone: BackendId) {
        self.settled.retain(|_, s| s.loser != gone);
    }

    pub(super) fn take_loser(&mut self, key: &QueryKey) -> Unmatched {
        let Some(s) = self.settled.get_mut(key) else {
            return Unmatched::Unsolicited;
        };
        let sent_at = s.sent_at;
        s.pending = s.pending.saturating_sub(1);
        if s.pending == 0 {
            self.settled.remove(key);
        }
        Unmatched::HedgeLoser { sent_at }
    }

    pub(super) fn remember_settled(
        &mut self,
        key: QueryKey,
        loser: BackendId,
        sent_at: Instant,
        question: u64,
    ) {
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
                question,
            },
        );
        self.settled_order.push_back((key, serial));
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
}

/// Whether a query in `backend`'s hedge queue may still be hedged: still
/// with that backend, and never sent to a second one.
fn hedgeable(e: &Entry, backend: BackendId) -> bool {
    e.backend == backend && !e.replayed
}
