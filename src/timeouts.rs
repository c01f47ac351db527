//! TIMEOUTS
//!
//! Everything the balancer does on a clock lives here: the named timer
//! defaults (each with the reason for its value), the reconnect back-off
//! rule, and [`Timeouts`], an ordered tree of deadlines that the event loop
//! sleeps on.
//!
//! As in the original's `timeouts.c`, a timeout is identified by a key and
//! has at most one deadline at a time: setting it again moves it, clearing it
//! forgets it.  The tree does no I/O and reads no clock; callers pass `now`,
//! so the policy above it can be tested on a paused or invented clock.

use std::collections::{BTreeSet, HashMap};

use foldhash::fast::RandomState;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Every interval the balancer runs on, set from the command line so tests
/// can run faults in seconds.  [`Timers::default`] gives the original's
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// How often the socket directory is read for new or returning backends.
    /// Binder starts and restarts backend processes rarely; 5 s finds a new
    /// one quickly without reading the directory in a tight loop.
    pub scan_interval: Duration,
    /// How long a new control session may take to connect and say hello.  A
    /// healthy node-mname answers at once; 30 s tolerates a process busy
    /// starting up.
    pub connect_timeout: Duration,
    /// Quiet time after the hello, and after each heartbeat reply, before the
    /// next heartbeat is sent.
    pub heartbeat_interval: Duration,
    /// How long a heartbeat may stay unanswered before the backend is faulted:
    /// three intervals, so one slow garbage-collection pause is forgiven.
    pub heartbeat_timeout: Duration,
    /// First reconnect delay after a failure (a newly found socket is tried
    /// at once).
    pub reconnect_delay: Duration,
    /// Added to the reconnect delay after each failed try.
    pub reconnect_step: Duration,
    /// The reconnect delay never grows past this.
    pub reconnect_max: Duration,
    /// How often remotes are checked for an unfair spread over backends.
    pub rebalance_interval: Duration,
    /// A remote not heard from for longer than this is forgotten.
    pub remote_expiry: Duration,
    /// How often remotes are checked for expiry.
    pub expiry_sweep: Duration,
    /// How long a TCP session may wait for the backend's INBOUND_TCP_OK.  A
    /// backend that cannot accept a session in 10 s is faulted.
    pub tcp_connect_timeout: Duration,
    /// How long a client TCP connection may sit idle (no query outstanding,
    /// no byte either way) before it is closed.  RFC 7766 asks for seconds;
    /// 10 s is Knot's and CoreDNS's choice, between dnsdist's 2 s and
    /// BIND's and Unbound's 30 s: a resolver reusing its connection for a
    /// burst of queries keeps it, and an idle one never holds a slot
    /// another client needs anyway (it is evicted at `--max-tcp-sessions`).
    pub tcp_idle_timeout: Duration,
    /// How long a client's message may take to arrive whole, from its first
    /// byte.  A query is one segment; 5 s allows a slow, lossy path while a
    /// sender that stops half-way ("slowloris") holds its slot no longer.
    pub tcp_read_timeout: Duration,
    /// The "no backends available" error is logged at most this often, so a
    /// total outage cannot fill the disk.
    pub no_backend_log_interval: Duration,
    /// How long a UDP query may wait for its backend's answer before the
    /// balancer gives up on it (and answers SERVFAIL, by default).  Stub
    /// resolvers commonly retry after 1 to 5 s; answering at 2 s lets a
    /// client retry (or give up) before its own timeout.
    pub query_timeout: Duration,
    /// How long a backend may leave queries unanswered while answering none
    /// before it is suspected of hanging and probed with a heartbeat.  A
    /// healthy backend answers in milliseconds.
    pub unanswered_threshold: Duration,
    /// How long a suspected backend has to answer its probe heartbeat
    /// before it is faulted and its queries replayed elsewhere.
    pub probe_timeout: Duration,
    /// After SIGTERM, how long open TCP sessions and queries in flight may
    /// take to finish before the balancer exits anyway.  A DNS exchange
    /// takes milliseconds; 5 s covers a slow zone transfer's tail without
    /// holding up a restart.
    pub drain_timeout: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            scan_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            reconnect_delay: Duration::from_secs(1),
            reconnect_step: Duration::from_secs(2),
            reconnect_max: Duration::from_secs(32),
            rebalance_interval: Duration::from_secs(15),
            remote_expiry: Duration::from_secs(5 * 60),
            expiry_sweep: Duration::from_secs(30),
            tcp_connect_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_read_timeout: Duration::from_secs(5),
            no_backend_log_interval: Duration::from_secs(5),
            query_timeout: Duration::from_secs(2),
            unanswered_threshold: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// The reconnect back-off of one backend.
///
/// A socket seen for the first time (or seen again after it was removed) is
/// tried at once; after that each failed try waits longer, by a fixed step,
/// up to a ceiling; a successful hello starts the sequence again from the
/// first delay.  With the defaults the waits are 0, 1, 3, 5, ... 31, 32, 32 s.
///
/// A socket that has just appeared may not be listening yet (a process
/// binds its socket, which creates the file, and then listens): its first
/// tries are quick, at 0, 25, 50, 100, 200 and 400 ms (0.8 s in all),
/// before the schedule above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    /// Quick tries left.
    quick: u8,
}

/// The quick tries after a socket appears.
const QUICK_TRIES: u8 = 6;

/// The second quick try's delay; each next one doubles it.
const QUICK_FIRST: Duration = Duration::from_millis(25);

impl Backoff {
    /// A back-off whose next try is immediate.
    pub fn immediate() -> Self {
        Backoff {
            next: Duration::ZERO,
            quick: QUICK_TRIES,
        }
    }

    /// Make the next try immediate, and the few after it quick (a socket
    /// newly found in the directory, or created anew).
    pub fn reset_immediate(&mut self) {
        self.next = Duration::ZERO;
        self.quick = QUICK_TRIES;
    }

    /// After a successful hello: the next failure waits the first delay.
    pub fn reset_after_success(&mut self, timers: &Timers) {
        self.next = timers.reconnect_delay;
        self.quick = 0;
    }

    /// The delay before the next try; advances the sequence.
    pub fn next_delay(&mut self, timers: &Timers) -> Duration {
        let now = self.next;
        if self.quick > 0 {
            self.quick -= 1;
            self.next = match self.quick {
                0 => timers.reconnect_delay,
                _ => (now * 2).max(QUICK_FIRST),
            };
            return now;
        }
        self.next = if now.is_zero() {
            timers.reconnect_delay
        } else {
            (now + timers.reconnect_step).min(timers.reconnect_max)
        };
        now
    }
}

/// An ordered tree of deadlines, one at most per key.
#[derive(Debug)]
pub struct Timeouts<K> {
    by_deadline: BTreeSet<(Instant, u64, K)>,
    by_key: HashMap<K, (Instant, u64), RandomState>,
    seq: u64,
}

impl<K: Ord + Hash + Copy> Default for Timeouts<K> {
    fn default() -> Self {
        Timeouts {
            by_deadline: BTreeSet::new(),
            by_key: HashMap::default(),
            seq: 0,
        }
    }
}

impl<K: Ord + Hash + Copy> Timeouts<K> {
    /// No deadline armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arm `key` to fire at `at`, replacing any earlier deadline it had.
    pub fn set(&mut self, key: K, at: Instant) {
        self.clear(key);
        // The sequence number keeps equal deadlines in the order they were
        // set, so timers due together fire in a predictable order.
        self.seq += 1;
        self.by_deadline.insert((at, self.seq, key));
        self.by_key.insert(key, (at, self.seq));
    }

    /// Forget `key`'s deadline, if it has one.
    pub fn clear(&mut self, key: K) {
        if let Some((at, seq)) = self.by_key.remove(&key) {
            self.by_deadline.remove(&(at, seq, key));
        }
    }

    /// Whether `key` is armed.
    pub fn is_set(&self, key: K) -> bool {
        self.by_key.contains_key(&key)
    }

    /// When `key` fires, if it is armed.
    pub fn deadline_of(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).map(|(at, _)| *at)
    }

    /// The earliest deadline of all, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _, _)| *at)
    }

    /// Take the earliest key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let (at, _, key) = *self.by_deadline.first()?;
        if at > now {
            return None;
        }
        self.clear(key);
        Some(key)
    }

    /// How many keys are armed.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is armed.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_sequence() {
        let t = Timers::default();
        let mut b = Backoff::immediate();
        let quick: Vec<u128> = (0..6).map(|_| b.next_delay(&t).as_millis()).collect();
        assert_eq!(
            quick,
            [0, 25, 50, 100, 200, 400],
            "a new socket: quick tries"
        );
        let secs: Vec<u64> = (0..19).map(|_| b.next_delay(&t).as_secs()).collect();
        assert_eq!(
            secs,
            [
                1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 32, 32, 32
            ]
        );
        b.reset_after_success(&t);
        assert_eq!(b.next_delay(&t), Duration::from_secs(1), "no quick tries");
        assert_eq!(b.next_delay(&t), Duration::from_secs(3));
        b.reset_immediate();
        assert_eq!(b.next_delay(&t), Duration::ZERO);
        assert_eq!(b.next_delay(&t), Duration::from_millis(25));
    }

    #[test]
    fn backoff_follows_configured_values() {
        let t = Timers {
            reconnect_delay: Duration::from_millis(100),
            reconnect_step: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(220),
            ..Timers::default()
        };
        let mut b = Backoff::immediate();
        let ms: Vec<u128> = (0..11).map(|_| b.next_delay(&t).as_millis()).collect();
        assert_eq!(ms, [0, 25, 50, 100, 200, 400, 100, 150, 200, 220, 220]);
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_fire_in_order_and_can_move() {
        let t0 = Instant::now();
        let mut to = Timeouts::new();
        to.set("b", t0 + Duration::from_secs(2));
        to.set("a", t0 + Duration::from_secs(1));
        to.set("c", t0 + Duration::from_secs(3));
        to.set("c", t0 + Duration::from_millis(500));
        assert_eq!(to.len(), 3);
        assert_eq!(to.next_deadline(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(to.pop_due(t0), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert_eq!(to.pop_due(now), Some("c"));
        assert_eq!(
            to.pop_due(now),
            Some("a"),
            "a deadline exactly at now is due"
        );
        assert_eq!(to.pop_due(now), None);
        to.clear("b");
        assert!(to.is_empty());
        assert_eq!(to.next_deadline(), None);
    }
}
