//! ONE CLIENT TCP CONNECTION: WHEN IT IS CLOSED
//!
//! The policy of a relayed TCP connection, in two parts.  [`TcpConn`] is a
//! plain state machine the relay task drives ([`crate::shell::tcp_session`]):
//! it is told of bytes from the client and from the backend, says what may
//! be forwarded, and closes the connection on a bad message.  Its timing is
//! summed up in a [`ConnActivity`], which the task publishes and the core
//! reads when it sweeps the sessions (`core::tcp`): whether a connection
//! has expired, and why, is [`ConnActivity::expired`], a function of that
//! summary, the limits and `now`.  (A timer per connection would cost each
//! query a timer-wheel update; one sweep of the table costs nothing per
//! query, and closes a connection at most a sweep interval late.)
//!
//! - Each query is read as a message ([`TcpMessages`]) and passes the same
//!   intake as a UDP datagram ([`super::intake`]).  A query whose question
//!   does not parse is answered FORMERR by the balancer, as over UDP (and as
//!   the backend would): it is never forwarded, and its answer joins the
//!   client's stream between two of the backend's answers (RFC 7766 lets
//!   answers come in any order).  A message that is short or a response
//!   closes the connection (a client that sends one is not speaking DNS),
//!   and so does a length of zero.
//! - The backend's stream is counted in messages too, so the connection
//!   knows how many queries still await an answer ("outstanding").
//! - With none outstanding and no part of a message arriving, the
//!   connection is idle; after `--tcp-idle-timeout` of that, and no byte
//!   either way, it is closed (RFC 7766 6.2.3: servers may close idle
//!   connections, and should when resources run short).
//! - A message that has started must be whole within `--tcp-read-timeout`
//!   of its first byte (a slow sender holds nothing for long).
//! - With queries outstanding, a backend that sends nothing for
//!   `--tcp-idle-timeout` has stopped answering: the connection is closed
//!   rather than held for ever.
//! - While nothing is outstanding the connection may be evicted to admit a
//!   new one at `--max-tcp-sessions` (`core::tcp`); its activity says
//!   since when ([`ConnActivity::evictable_since`]).  A connection being
//!   answered never is.

use std::time::Duration;

use tokio::time::Instant;

use super::intake::{self, Refusal};
use super::synth;
use super::tcp_learn::{TcpAnswer, TcpLearner};
use super::tcp_messages::{TcpMessageError, TcpMessages};

/// The two limits of a connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConnLimits {
    /// `--tcp-idle-timeout`.
    pub idle: Duration,
    /// `--tcp-read-timeout`.
    pub read: Duration,
}

/// Why a relayed connection closed (each is counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpClose {
    /// The client or the backend ended its stream, and what was asked was
    /// answered.
    Finished,
    /// A socket failed.
    Error,
    /// The backend would not take the session (no INBOUND_TCP_OK).
    Refused,
    /// Idle for `--tcp-idle-timeout`.
    Idle,
    /// A message not whole within `--tcp-read-timeout`.
    ReadTimeout,
    /// Queries outstanding and the backend silent for `--tcp-idle-timeout`.
    Unanswered,
    /// A message that fails intake, or of length zero.
    BadMessage(Refusal),
    /// A length prefix of zero.
    Empty,
    /// Closed to admit a new connection at `--max-tcp-sessions`.
    Evicted,
}

/// Where the backend's stream is between two answers.
#[derive(Debug, Clone, Copy, Default)]
struct AnswerCounter {
    /// Bytes of the length prefix seen (0 or 1), and its first byte.
    prefix: Option<u8>,
    /// Bytes of the current answer still to come.
    body_left: usize,
}

impl AnswerCounter {
    /// Between two answers (none begun and unfinished).
    fn at_boundary(&self) -> bool {
        self.prefix.is_none() && self.body_left == 0
    }

    /// Count the answers `bytes` complete, showing each to `learner`.
    fn feed(
        &mut self,
        mut bytes: &[u8],
        mut learner: Option<&mut TcpLearner>,
        now: Instant,
    ) -> u32 {
        let mut done = 0;
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                if let Some(l) = learner.as_deref_mut() {
                    l.on_answer_bytes(&bytes[..n]);
                }
                bytes = &bytes[n..];
                if self.body_left == 0 {
                    done += 1;
                    if let Some(l) = learner.as_deref_mut() {
                        l.on_answer_end(now);
                    }
                }
                continue;
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            match self.prefix.take() {
                None => self.prefix = Some(byte),
                Some(hi) => {
                    self.body_left = usize::from(u16::from_be_bytes([hi, byte]));
                    if let Some(l) = learner.as_deref_mut() {
                        l.on_answer_start(self.body_left);
                    }
                    if self.body_left == 0 {
                        done += 1;
                    }
                }
            }
        }
        done
    }
}

/// The state of one relayed connection.
#[derive(Debug)]
pub struct TcpConn {
    queries: TcpMessages,
    answers: AnswerCounter,
    outstanding: u32,
    /// The last byte either way (or the start).
    last_activity: Instant,
    /// The last byte from the backend, or when queries became outstanding.
    answer_progress: Instant,
    /// The balancer's own answers (FORMERR), framed, waiting to be put in
    /// the client's stream at the next boundary between answers.
    synthesized: Vec<u8>,
    /// Answers the balancer made on this connection.
    synthesized_count: u32,
    /// With the packet cache on: the queries and answers to learn.
    learner: Option<TcpLearner>,
}

/// Bytes of the balancer's own answers a connection may hold for a client
/// that does not read them (about 70 FORMERRs); past it the connection
/// closes as malformed.
const MAX_SYNTHESIZED: usize = 1024;

impl TcpConn {
    /// A connection just accepted at `now`: nothing read, nothing owed.
    pub fn new(now: Instant) -> Self {
        TcpConn {
            queries: TcpMessages::new(),
            answers: AnswerCounter::default(),
            outstanding: 0,
            last_activity: now,
            answer_progress: now,
            synthesized: Vec::new(),
            synthesized_count: 0,
            learner: None,
        }
    }

    /// Pair queries with answers for the packet cache
    /// ([`TcpConn::take_learned`]).
    pub fn with_learning(mut self) -> Self {
        self.learner = Some(TcpLearner::new());
        self
    }

    /// Whether answers to learn are waiting.
    pub fn has_learned(&self) -> bool {
        self.learner.as_ref().is_some_and(TcpLearner::has_learned)
    }

    /// Move the answers to learn into `out`; returns how many were dropped
    /// because they were not taken in time.
    pub fn take_learned(&mut self, out: &mut Vec<TcpAnswer>) -> u64 {
        self.learner.as_mut().map_or(0, |l| l.take(out))
    }

    /// Give the learner empty buffers from `pool` for its next copies
    /// ([`TcpLearner::restock`]).
    pub fn restock_learning(&mut self, pool: &mut Vec<Vec<u8>>) {
        if let Some(l) = &mut self.learner {
            l.restock(pool);
        }
    }

    /// Read client bytes with `read` (see [`TcpMessages::read_with`]).
    pub fn read_client<E>(
        &mut self,
        now: Instant,
        read: impl FnOnce(&mut Vec<u8>) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let n = self.queries.read_with(now, read)?;
        if n > 0 {
            self.last_activity = now;
        }
        Ok(n)
    }

    /// Check the whole queries that arrived; they join
    /// [`TcpConn::to_forward`].  A query whose question does not parse
    /// is answered FORMERR (the `synthesized` buffer) and not forwarded;
    /// the queries before it leave first, so call again once
    /// [`TcpConn::to_forward`] is empty.  An error says to close the
    /// connection.
    pub fn take_queries(&mut self, now: Instant) -> Result<(), TcpClose> {
        loop {
            let mark = self.queries.mark();
            let message = match self.queries.next_message(now) {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(TcpMessageError::Empty) => return Err(TcpClose::Empty),
            };
            match intake::check(message) {
                Ok(_) => {
                    if let Some(l) = &mut self.learner {
                        l.on_query(message);
                    }
                    if self.outstanding == 0 {
                        self.answer_progress = now;
                    }
                    self.outstanding = self.outstanding.saturating_add(1);
                }
                Err(Refusal::BadQuestion) => {
                    let answer = synth::formerr_answer(message);
                    if !self.queries.discard_since(mark) {
                        // Queries before it are still to leave.
                        self.queries.give_back(now, mark);
                        return Ok(());
                    }
                    let answer = answer.ok_or(TcpClose::BadMessage(Refusal::BadQuestion))?;
                    if self.synthesized.len() + 2 + answer.len() > MAX_SYNTHESIZED {
                        return Err(TcpClose::BadMessage(Refusal::BadQuestion));
                    }
                    self.synthesized
                        .extend_from_slice(&(answer.len() as u16).to_be_bytes());
                    self.synthesized.extend_from_slice(&answer);
                    self.synthesized_count += 1;
                }
                Err(refusal) => return Err(TcpClose::BadMessage(refusal)),
            }
        }
    }

    /// Whether the balancer's own answers may join the client's stream now
    /// (some wait, and the backend's stream is between two answers).
    pub fn synthesized_ready(&self) -> bool {
        !self.synthesized.is_empty() && self.answers.at_boundary()
    }

    /// Move the balancer's own answers into `out` (for the client).
    pub fn take_synthesized(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.synthesized);
    }

    /// Answers the balancer made on this connection so far.
    pub fn synthesized_count(&self) -> u32 {
        self.synthesized_count
    }

    /// Checked queries not yet written to the backend, as they arrived.
    pub fn to_forward(&self) -> &[u8] {
        self.queries.taken()
    }

    /// `n` bytes of [`TcpConn::to_forward`] were written.
    pub fn forwarded(&mut self, n: usize) {
        self.queries.forwarded(n);
    }

    /// Bytes from the backend, on their way to the client.
    pub fn on_answer_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.last_activity = now;
        self.answer_progress = now;
        let answered = self.answers.feed(bytes, self.learner.as_mut(), now);
        // A zone transfer answers one query with many messages.
        self.outstanding = self.outstanding.saturating_sub(answered);
    }

    /// Bytes of an answer were written to the client (a client reading a
    /// long answer slowly is not idle).
    pub fn on_client_took(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// Queries sent and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// The connection's timing, as the core needs it.
    pub fn activity(&self) -> ConnActivity {
        ConnActivity {
            last_activity: self.last_activity,
            partial_since: self.queries.partial_since(),
            answering_since: (self.outstanding > 0
                || !self.to_forward().is_empty()
                || !self.synthesized.is_empty())
            .then_some(self.answer_progress),
            synthesized: self.synthesized_count,
        }
    }
}

/// What the core knows of a connection's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnActivity {
    /// The last byte either way (or the start).
    pub last_activity: Instant,
    /// When the message now arriving started, if one is.
    pub partial_since: Option<Instant>,
    /// While queries are outstanding: the backend's last byte, or when they
    /// became outstanding.
    pub answering_since: Option<Instant>,
    /// Answers the balancer made on the connection (FORMERR), to be
    /// counted when it closes.
    pub synthesized: u32,
}

impl ConnActivity {
    /// A connection that has done nothing since `now`.
    pub fn idle_from(now: Instant) -> Self {
        ConnActivity {
            last_activity: now,
            partial_since: None,
            answering_since: None,
            synthesized: 0,
        }
    }

    /// Whether the connection must close at `now`, and why.
    pub fn expired(&self, limits: TcpConnLimits, now: Instant) -> Option<TcpClose> {
        if let Some(since) = self.partial_since
            && now >= since + limits.read
        {
            return Some(TcpClose::ReadTimeout);
        }
        match self.answering_since {
            Some(since) => (now >= since + limits.idle).then_some(TcpClose::Unanswered),
            None => (now >= self.last_activity + limits.idle).then_some(TcpClose::Idle),
        }
    }

    /// Since when the connection could be closed without cutting an
    /// answer: `None` while queries are outstanding.
    pub fn evictable_since(&self) -> Option<Instant> {
        match self.answering_since {
            Some(_) => None,
            None => Some(self.last_activity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    const LIMITS: TcpConnLimits = TcpConnLimits {
        idle: Duration::from_secs(10),
        read: Duration::from_secs(3),
    };

    fn query() -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("a.example.").unwrap(),
            RecordType::A,
        ));
        let body = m.to_vec().unwrap();
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn give(c: &mut TcpConn, now: Instant, bytes: &[u8]) -> Result<(), TcpClose> {
        c.read_client(now, |b| {
            b.extend_from_slice(bytes);
            Ok::<_, ()>(bytes.len())
        })
        .unwrap();
        c.take_queries(now)
    }

    #[test]
    fn queries_are_checked_and_counted_until_answered() {
        let t0 = Instant::now();
        let mut c = TcpConn::new(t0);
        let two = [query(), query()].concat();
        give(&mut c, t0, &two).unwrap();
        assert_eq!(c.outstanding(), 2);
        assert_eq!(c.to_forward(), &two[..]);
        assert_eq!(c.activity().evictable_since(), None, "being answered");
        c.forwarded(two.len());
        // The answers arrive cut anywhere.
        let answers = [query(), query()].concat();
        let (a, b) = answers.split_at(5);
        c.on_answer_bytes(t0, a);
        assert_eq!(c.outstanding(), 2);
        c.on_answer_bytes(t0, b);
        assert_eq!(c.outstanding(), 0);
        assert_eq!(c.activity().evictable_since(), Some(t0));
    }

    #[test]
    fn a_bad_message_closes_by_its_reason() {
        let t0 = Instant::now();
        let mut response = query();
        response[4] |= 0x80;
        assert_eq!(
            give(&mut TcpConn::new(t0), t0, &response),
            Err(TcpClose::BadMessage(Refusal::Response))
        );
        assert_eq!(
            give(&mut TcpConn::new(t0), t0, &[0, 3, 1, 2, 3]),
            Err(TcpClose::BadMessage(Refusal::Short))
        );
        assert_eq!(
            give(&mut TcpConn::new(t0), t0, &[0, 0]),
            Err(TcpClose::Empty)
        );
        let mut cut = query();
        cut[1] -= 3;
        cut.truncate(cut.len() - 3);
        let mut c = TcpConn::new(t0);
        assert_eq!(give(&mut c, t0, &cut), Ok(()), "answered, not closed");
        assert!(c.to_forward().is_empty(), "never forwarded");
        assert!(c.synthesized_ready());
    }

    #[test]
    fn a_question_that_does_not_parse_is_answered_formerr_in_turn() {
        let t0 = Instant::now();
        let mut bad = query();
        bad[2] = 0x12; // id 0x1234 for the FORMERR
        bad[3] = 0x34;
        bad[14] = 64; // the first label claims 64 octets
        let (q1, q2) = (query(), query());
        let mut c = TcpConn::new(t0);
        give(&mut c, t0, &[q1.clone(), bad, q2.clone()].concat()).unwrap();
        assert_eq!(c.to_forward(), &q1[..], "the query before it leaves first");
        assert!(!c.synthesized_ready());
        c.forwarded(q1.len());
        c.take_queries(t0).unwrap();
        assert_eq!(c.to_forward(), &q2[..], "then the one after it");
        assert_eq!(c.outstanding(), 2);
        // Mid-answer from the backend, nothing may be put in.
        c.on_answer_bytes(t0, &[0, 30, 1]);
        assert!(!c.synthesized_ready());
        c.on_answer_bytes(t0, &[0; 29]);
        assert!(c.synthesized_ready());
        let mut out = Vec::new();
        c.take_synthesized(&mut out);
        assert_eq!(&out[..4], &[0, 12, 0x12, 0x34]);
        assert_eq!(out[5] & 0x0f, 1, "FORMERR");
        assert_eq!(c.synthesized_count(), 1);
    }

    #[test]
    fn a_client_that_never_reads_its_formerrs_is_closed() {
        let t0 = Instant::now();
        let mut bad = query();
        bad[14] = 64;
        let mut c = TcpConn::new(t0);
        let mut closed = None;
        for _ in 0..100 {
            if let Err(e) = give(&mut c, t0, &bad) {
                closed = Some(e);
                break;
            }
        }
        assert_eq!(closed, Some(TcpClose::BadMessage(Refusal::BadQuestion)));
        assert!(c.synthesized_count() < 100);
    }

    #[test]
    fn idle_and_slow_senders_time_out() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let c = TcpConn::new(t0);
        assert_eq!(c.activity(), ConnActivity::idle_from(t0));
        assert_eq!(c.activity().expired(LIMITS, t0 + s(9)), None);
        assert_eq!(
            c.activity().expired(LIMITS, t0 + s(10)),
            Some(TcpClose::Idle)
        );

        let mut c = TcpConn::new(t0);
        give(&mut c, t0 + s(1), &[0xff, 0xff, 1, 2]).unwrap();
        give(&mut c, t0 + s(3), &[3]).unwrap();
        assert_eq!(
            c.activity().partial_since,
            Some(t0 + s(1)),
            "from its first byte"
        );
        assert_eq!(c.activity().expired(LIMITS, t0 + s(3)), None);
        assert_eq!(
            c.activity().expired(LIMITS, t0 + s(4)),
            Some(TcpClose::ReadTimeout)
        );
        assert_eq!(
            c.activity().evictable_since(),
            Some(t0 + s(3)),
            "not being answered"
        );
    }

    #[test]
    fn a_silent_backend_closes_the_connection() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = TcpConn::new(t0);
        give(&mut c, t0, &query()).unwrap();
        c.forwarded(usize::MAX);
        let a = c.activity();
        assert_eq!(a.expired(LIMITS, t0 + s(9)), None);
        assert_eq!(a.expired(LIMITS, t0 + s(10)), Some(TcpClose::Unanswered));
        assert_eq!(a.evictable_since(), None, "being answered");
        c.on_answer_bytes(t0 + s(9), &[0]);
        assert_eq!(
            c.activity().expired(LIMITS, t0 + s(10)),
            None,
            "the backend is answering"
        );
    }

    #[test]
    fn answer_counting_survives_any_cut() {
        let stream = [&[0u8, 2, 9, 9][..], &[0, 0], &[1, 0], &[7; 256]].concat();
        for step in 1..stream.len() {
            let mut a = AnswerCounter::default();
            let n: u32 = stream
                .chunks(step)
                .map(|c| a.feed(c, None, Instant::now()))
                .sum();
            assert_eq!(n, 3, "step {step}");
        }
    }
}
