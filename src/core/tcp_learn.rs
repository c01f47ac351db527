//! TCP ANSWERS FOR THE PACKET CACHE
//!
//! With the packet cache on (`--cache-size`), what a backend answers over
//! TCP is worth keeping as much as what it answers over UDP: a resolver
//! that retried a truncated answer over TCP, or a client that speaks only
//! TCP, asks the same names as everyone else.  A TCP session is still
//! relayed whole to the client's backend (its queries are never answered
//! from the cache); but the answers it carries are learned, and serve a UDP
//! client that asks the same question when they fit that client's buffer
//! (the cache checks every answer against the asker's limit, whichever
//! transport it was learned from).
//!
//! [`TcpLearner`] pairs a connection's cacheable queries with their
//! answers.  It keeps a copy of the queries awaiting an answer (by message
//! id, the latest [`MAX_PENDING`] of them, each at most [`MAX_QUERY`] bytes),
//! copies each answer of at most [`MAX_ANSWER`] bytes whose id matches one,
//! and hands out the pairs ([`TcpLearner::take`]) for the core to learn
//! ([`super::Core::learn_tcp_answer`]).  Zone transfers are never paired
//! (the cache's key bypasses them: one query, many messages).  Everything
//! else (a query past the bound, an answer too large for any UDP client,
//! one that matches no query) is let through unlearned: learning never
//! changes what the client is sent.
//!
//! Learning allocates nothing per query once a connection has warmed up:
//! the copies are made into buffers that come back once the loop has
//! learned their pair ([`TcpAnswer::into_buffers`], [`TcpLearner::restock`]),
//! each connection keeping at most [`MAX_SPARE`] of them.

use tokio::time::Instant;

use super::cache::key;

/// Queries a connection remembers while they await answers.
pub const MAX_PENDING: usize = 16;
/// The largest query remembered (a cacheable query is one question and at
/// most an OPT record).
pub const MAX_QUERY: usize = 512;
/// The largest answer learned: no UDP client is sent more than an EDNS
/// buffer this size holds in practice (RFC 6891 suggests 4096 at most).
pub const MAX_ANSWER: usize = 4096;
/// Pairs held for the loop before the oldest is dropped.
pub const MAX_LEARNED: usize = 16;
/// Empty buffers a connection keeps for its next copies: a query and its
/// answer.  A client with more queries outstanding allocates the rest.
pub const MAX_SPARE: usize = 2;

/// A query and the answer the backend gave it over TCP, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpAnswer {
    /// The client's query.
    pub query: Vec<u8>,
    /// The backend's answer to it, whole.
    pub answer: Vec<u8>,
    /// When the answer's last byte came: the cache ages it from here.
    pub at: Instant,
}

impl TcpAnswer {
    /// The pair's two buffers, to be used again ([`TcpLearner::restock`]).
    pub fn into_buffers(self) -> [Vec<u8>; 2] {
        [self.query, self.answer]
    }
}

/// One connection's pairing of queries with answers.
#[derive(Debug, Default)]
pub struct TcpLearner {
    /// Cacheable queries awaiting an answer: (id, message).
    pending: Vec<(u16, Vec<u8>)>,
    /// The answer being copied, if it may be learned.
    answer: Option<Vec<u8>>,
    /// Pairs ready for the loop.
    learned: Vec<TcpAnswer>,
    /// Pairs dropped because the loop had not taken them.
    dropped: u64,
    key: Vec<u8>,
    /// Empty buffers for the next copies (at most [`MAX_SPARE`]).
    spare: Vec<Vec<u8>>,
}

impl TcpLearner {
    /// Nothing pending, nothing learned.
    pub fn new() -> Self {
        TcpLearner::default()
    }

    /// A query that passed intake is on its way to the backend.
    pub fn on_query(&mut self, query: &[u8]) {
        if query.len() > MAX_QUERY || key::key_of(query, &mut self.key).is_err() {
            return;
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        // A client that reuses an id before its answer came: the later
        // query is the one remembered.
        if let Some(i) = self.pending.iter().position(|(p, _)| *p == id) {
            let (_, old) = self.pending.remove(i);
            self.give_back(old);
        }
        if self.pending.len() >= MAX_PENDING {
            // The oldest is likely never to be answered (the backend
            // dropped it): it gives way, so one lost answer does not stop
            // a long-lived connection from ever teaching the cache again.
            let (_, old) = self.pending.remove(0);
            self.give_back(old);
        }
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.extend_from_slice(query);
        self.pending.push((id, copy));
    }

    /// An answer of `len` bytes begins in the backend's stream.
    pub fn on_answer_start(&mut self, len: usize) {
        if let Some(unfinished) = self.answer.take() {
            self.give_back(unfinished);
        }
        if (12..=MAX_ANSWER).contains(&len) && !self.pending.is_empty() {
            let mut copy = self.spare.pop().unwrap_or_default();
            copy.reserve(len);
            self.answer = Some(copy);
        }
    }

    /// Bytes of the answer that began.
    pub fn on_answer_bytes(&mut self, bytes: &[u8]) {
        if let Some(a) = &mut self.answer {
            a.extend_from_slice(bytes);
        }
    }

    /// The answer that began is whole, at `now`.
    pub fn on_answer_end(&mut self, now: Instant) {
        let Some(answer) = self.answer.take() else {
            return;
        };
        let id = u16::from_be_bytes([answer[0], answer[1]]);
        let Some(i) = self.pending.iter().position(|(p, _)| *p == id) else {
            self.give_back(answer);
            return;
        };
        let (_, query) = self.pending.swap_remove(i);
        if self.learned.len() >= MAX_LEARNED {
            let [q, a] = self.learned.remove(0).into_buffers();
            self.give_back(q);
            self.give_back(a);
            self.dropped += 1;
        }
        self.learned.push(TcpAnswer {
            query,
            answer,
            at: now,
        });
    }

    /// Whether pairs wait for the loop.
    pub fn has_learned(&self) -> bool {
        !self.learned.is_empty()
    }

    /// Move the pairs ready into `out`; returns how many were dropped
    /// since the last call (the loop had not taken them in time).
    pub fn take(&mut self, out: &mut Vec<TcpAnswer>) -> u64 {
        out.append(&mut self.learned);
        std::mem::take(&mut self.dropped)
    }

    /// Take empty buffers from `pool` until this connection holds
    /// [`MAX_SPARE`].
    pub fn restock(&mut self, pool: &mut Vec<Vec<u8>>) {
        while self.spare.len() < MAX_SPARE
            && let Some(b) = pool.pop()
        {
            self.give_back(b);
        }
    }

    /// Keep `buf`, emptied, for a later copy (if room).
    fn give_back(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < MAX_SPARE && buf.capacity() <= MAX_ANSWER {
            buf.clear();
            self.spare.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    fn answer_to(q: &[u8]) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] |= 0x80;
        a
    }

    fn feed(l: &mut TcpLearner, answer: &[u8], now: Instant) {
        l.on_answer_start(answer.len());
        let (a, b) = answer.split_at(answer.len() / 2);
        l.on_answer_bytes(a);
        l.on_answer_bytes(b);
        l.on_answer_end(now);
    }

    #[test]
    fn answers_pair_with_their_queries_by_id_in_any_order() {
        let now = Instant::now();
        let mut l = TcpLearner::new();
        let (q1, q2) = (query(1, "a.example", 1), query(2, "b.example", 1));
        l.on_query(&q1);
        l.on_query(&q2);
        feed(&mut l, &answer_to(&q2), now);
        feed(&mut l, &answer_to(&q1), now);
        let mut out = Vec::new();
        assert_eq!(l.take(&mut out), 0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].query, q2);
        assert_eq!(out[0].answer, answer_to(&q2));
        assert_eq!(out[1].query, q1);
        assert!(!l.has_learned());
    }

    #[test]
    fn transfers_oversized_answers_and_strangers_are_not_paired() {
        let now = Instant::now();
        let mut l = TcpLearner::new();
        // AXFR: one query, many messages; never paired.
        let axfr = query(1, "example", 252);
        l.on_query(&axfr);
        feed(&mut l, &answer_to(&axfr), now);
        // An answer larger than any UDP client takes.
        let q = query(2, "big.example", 16);
        l.on_query(&q);
        let mut big = answer_to(&q);
        big.resize(MAX_ANSWER + 1, 0);
        feed(&mut l, &big, now);
        // An answer to no query of this connection.
        feed(&mut l, &answer_to(&query(3, "c.example", 1)), now);
        let mut out = Vec::new();
        l.take(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn buffers_the_loop_gives_back_carry_the_next_pair() {
        let now = Instant::now();
        let mut l = TcpLearner::new();
        let q1 = query(1, "a.example", 1);
        l.on_query(&q1);
        feed(&mut l, &answer_to(&q1), now);
        let mut out = Vec::new();
        l.take(&mut out);
        let [q, a] = out.pop().expect("a pair").into_buffers();
        let (qp, ap) = (q.as_ptr(), a.as_ptr());
        // The loop has learned the pair and hands its buffers back.
        let mut pool = vec![q, a];
        l.restock(&mut pool);
        assert!(pool.is_empty());
        let q2 = query(2, "b.example", 1);
        l.on_query(&q2);
        feed(&mut l, &answer_to(&q2), now);
        l.take(&mut out);
        let pair = out.pop().expect("a pair");
        assert_eq!(
            (pair.query.clone(), pair.answer.clone()),
            (q2.clone(), answer_to(&q2))
        );
        let mut used = [pair.query.as_ptr(), pair.answer.as_ptr()];
        used.sort();
        let mut given = [qp, ap];
        given.sort();
        assert_eq!(used, given, "the copies went into the buffers given back");
        // A connection keeps no more than MAX_SPARE, whatever it is offered.
        let mut many: Vec<Vec<u8>> = (0..10).map(|_| Vec::with_capacity(64)).collect();
        l.restock(&mut many);
        assert_eq!(many.len(), 10 - MAX_SPARE);
        assert_eq!(l.spare.len(), MAX_SPARE);
    }

    #[test]
    fn memory_is_bounded_whatever_the_client_sends() {
        let now = Instant::now();
        let mut l = TcpLearner::new();
        for id in 0..1000u16 {
            l.on_query(&query(id, "a.example", 1));
        }
        assert_eq!(l.pending.len(), MAX_PENDING);
        // The newest are the ones remembered.
        assert_eq!(l.pending[0].0, 1000 - MAX_PENDING as u16);
        let mut long = query(5000, "a.example", 1);
        long.resize(MAX_QUERY + 1, 0);
        l.on_query(&long);
        assert_eq!(l.pending.len(), MAX_PENDING);
        // Answers to all of them, never taken: the oldest pairs go.
        for id in (1000 - MAX_PENDING as u16)..1000 {
            feed(&mut l, &answer_to(&query(id, "a.example", 1)), now);
        }
        let mut out = Vec::new();
        assert_eq!(l.take(&mut out), 0);
        assert_eq!(out.len(), MAX_LEARNED.min(MAX_PENDING));
        for id in 0..(MAX_LEARNED as u16 + 3) {
            l.on_query(&query(id, "a.example", 1));
            feed(&mut l, &answer_to(&query(id, "a.example", 1)), now);
        }
        out.clear();
        assert_eq!(l.take(&mut out), 3);
        assert_eq!(out.len(), MAX_LEARNED);
    }
}
