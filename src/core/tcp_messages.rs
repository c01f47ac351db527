//! DNS OVER TCP, AS MESSAGES
//!
//! A client's TCP stream is a sequence of DNS messages, each behind a
//! two-byte length (RFC 1035 4.2.2, RFC 7766).  Reading it as messages
//! rather than as bytes is what lets the balancer apply the same intake
//! rules to TCP as to UDP, and know when a connection is between messages
//! (idle) or in the middle of one (a slow sender, for `--tcp-read-timeout`).
//!
//! [`TcpMessages`] is the pure reader.  Its buffer is also the read buffer:
//! the relay reads the socket straight into it ([`TcpMessages::read_with`]),
//! whole messages are taken out one by one ([`TcpMessages::next_message`])
//! and, once checked, leave toward the backend as they lie in the buffer,
//! length prefixes and all ([`TcpMessages::taken`],
//! [`TcpMessages::forwarded`]): no message is copied on the way.
//!
//! The buffer holds at most one incomplete message (65,537 bytes with its
//! length) plus one read's worth beyond it, and keeps no more: a client
//! cannot make it grow by sending.  A length of zero is an error (no DNS
//! message is empty).  It records when the message now being read started,
//! so the caller can time out a sender that stops half-way.

use tokio::time::Instant;

/// The longest message a length prefix can announce.
pub const MAX_TCP_MESSAGE: usize = u16::MAX as usize;

/// Room made for each read: a resolver's window of queries at once (64
/// queries of a typical 30 to 60 bytes), small enough that a connection
/// costs little.  Made only once a connection sends.
pub const READ_CHUNK: usize = 4096;

/// Why a stream is not DNS over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpMessageError {
    /// A length prefix of 0.
    #[error("a DNS message of length 0")]
    Empty,
}

/// The reader of one connection.
///
/// `buf[..sent]` has left already; `buf[sent..taken]` are whole messages
/// taken out and waiting to leave; `buf[taken..]` is the message now
/// arriving.
#[derive(Debug, Default)]
pub struct TcpMessages {
    buf: Vec<u8>,
    sent: usize,
    taken: usize,
    /// When the first byte of the message now incomplete arrived.
    partial_since: Option<Instant>,
}

impl TcpMessages {
    /// An empty reader: nothing read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read into the buffer with `read` (given the buffer to append to,
    /// it returns how many bytes it appended), at `now`.  Bytes that left
    /// already are dropped first, so the buffer never holds more than one
    /// incomplete message and one read beyond what waits to leave.
    pub fn read_with<E>(
        &mut self,
        now: Instant,
        read: impl FnOnce(&mut Vec<u8>) -> Result<usize, E>,
    ) -> Result<usize, E> {
        if self.sent > 0 {
            self.buf.drain(..self.sent);
            self.taken -= self.sent;
            self.sent = 0;
        }
        let was_between = self.is_between_messages();
        self.buf.reserve(READ_CHUNK);
        let n = read(&mut self.buf)?;
        if n > 0 && was_between {
            self.partial_since = Some(now);
        }
        Ok(n)
    }

    /// Take in `bytes` that arrived at `now` (as [`TcpMessages::read_with`]
    /// with a copy).
    pub fn extend(&mut self, now: Instant, bytes: &[u8]) {
        let _ = self.read_with(now, |buf| {
            buf.extend_from_slice(bytes);
            Ok::<_, ()>(bytes.len())
        });
    }

    /// How many bytes the message now arriving still lacks (or its length
    /// prefix, at least 2).
    pub fn wanted(&self) -> usize {
        let pending = &self.buf[self.taken..];
        match pending {
            [a, b, rest @ ..] => {
                let len = usize::from(u16::from_be_bytes([*a, *b]));
                len.saturating_sub(rest.len()).max(2)
            }
            _ => 2 - pending.len(),
        }
    }

    /// The next whole message, if one has arrived; `Ok(None)` if more bytes
    /// are needed.  It joins [`TcpMessages::taken`].  After an error the
    /// stream is unusable (close it).
    pub fn next_message(&mut self, now: Instant) -> Result<Option<&[u8]>, TcpMessageError> {
        let pending = &self.buf[self.taken..];
        let [a, b, rest @ ..] = pending else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if len == 0 {
            return Err(TcpMessageError::Empty);
        }
        if rest.len() < len {
            return Ok(None);
        }
        let from = self.taken + 2;
        self.taken = from + len;
        // What follows, if anything, is the start of the next message.
        self.partial_since = (self.taken < self.buf.len()).then_some(now);
        Ok(self.buf.get(from..from + len))
    }

    /// Where the next message starts: a mark for
    /// [`TcpMessages::give_back`] and [`TcpMessages::discard_since`].
    pub fn mark(&self) -> usize {
        self.taken
    }

    /// Give back the messages taken since `mark`: they are read again
    /// next time.
    pub fn give_back(&mut self, now: Instant, mark: usize) {
        if mark >= self.sent && mark <= self.taken {
            self.taken = mark;
            self.partial_since = (self.taken < self.buf.len()).then_some(now);
        }
    }

    /// Drop the messages taken since `mark`, which must be all that waits
    /// to leave (nothing taken before it is still waiting): they never
    /// leave.  False, and nothing dropped, otherwise.
    pub fn discard_since(&mut self, mark: usize) -> bool {
        if self.sent != mark || mark > self.taken {
            return false;
        }
        self.sent = self.taken;
        true
    }

    /// The whole messages taken out and not yet gone, as they arrived
    /// (length prefixes included).
    pub fn taken(&self) -> &[u8] {
        &self.buf[self.sent..self.taken]
    }

    /// `n` bytes of [`TcpMessages::taken`] have left.
    pub fn forwarded(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.taken);
    }

    /// No part of a message is arriving: the connection is between messages.
    pub fn is_between_messages(&self) -> bool {
        self.taken >= self.buf.len()
    }

    /// When the message now incomplete started arriving, if one is.
    pub fn partial_since(&self) -> Option<Instant> {
        if self.is_between_messages() {
            None
        } else {
            self.partial_since
        }
    }

    /// Bytes not yet taken out (a bound: at most a message and its length,
    /// plus one read).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(msgs: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            out.extend_from_slice(&(m.len() as u16).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_cut() {
        let stream = framed(&[b"first message", b"2", &[7u8; 300]]);
        for step in 1..=stream.len() {
            let now = Instant::now();
            let mut r = TcpMessages::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(step) {
                r.extend(now, chunk);
                while let Ok(Some(m)) = r.next_message(now) {
                    got.push(m.to_vec());
                }
                out.extend_from_slice(r.taken());
                r.forwarded(r.taken().len());
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(got[0], b"first message");
            assert_eq!(got[2], vec![7u8; 300]);
            assert_eq!(out, stream, "forwarded as it came, step {step}");
            assert!(r.is_between_messages());
        }
    }

    #[test]
    fn a_partial_message_is_timed_from_its_first_byte() {
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_secs(3);
        let mut r = TcpMessages::new();
        assert_eq!(r.partial_since(), None);
        r.extend(t0, &[0, 10, 1, 2]);
        assert_eq!(r.next_message(t0), Ok(None));
        r.extend(later, &[3, 4]);
        assert_eq!(r.partial_since(), Some(t0), "from the first byte");
        assert_eq!(r.wanted(), 6);
        r.extend(later, &[5, 6, 7, 8, 9, 10, 0]);
        assert_eq!(
            r.next_message(later).map(|m| m.map(<[u8]>::len)),
            Ok(Some(10))
        );
        assert_eq!(r.partial_since(), Some(later), "the next one started");
        assert!(!r.is_between_messages());
    }

    #[test]
    fn an_empty_message_is_an_error_and_the_buffer_stays_bounded() {
        let now = Instant::now();
        let mut r = TcpMessages::new();
        r.extend(now, &[0, 0]);
        assert_eq!(r.next_message(now), Err(TcpMessageError::Empty));
        let mut r = TcpMessages::new();
        for _ in 0..100 {
            r.extend(now, &framed(&[&[1u8; 1000]]));
            assert!(matches!(r.next_message(now), Ok(Some(_))));
            r.forwarded(1002);
        }
        assert!(
            r.buf.len() <= 2 + 1000,
            "sent bytes are dropped: {}",
            r.buf.len()
        );
    }

    #[test]
    fn a_message_can_be_given_back_or_discarded() {
        let now = Instant::now();
        let mut r = TcpMessages::new();
        r.extend(now, &framed(&[b"abc", b"bad", b"de"]));
        assert_eq!(r.next_message(now), Ok(Some(&b"abc"[..])));
        let mark = r.mark();
        assert_eq!(r.next_message(now), Ok(Some(&b"bad"[..])));
        assert!(!r.discard_since(mark), "abc still waits to leave");
        r.give_back(now, mark);
        assert_eq!(r.taken(), &framed(&[b"abc"])[..]);
        r.forwarded(5);
        let mark = r.mark();
        assert_eq!(r.next_message(now), Ok(Some(&b"bad"[..])));
        assert!(r.discard_since(mark));
        assert!(r.taken().is_empty(), "bad never leaves");
        assert_eq!(r.next_message(now), Ok(Some(&b"de"[..])));
        assert_eq!(r.taken(), &framed(&[b"de"])[..]);
    }

    #[test]
    fn taken_messages_wait_until_forwarded() {
        let now = Instant::now();
        let mut r = TcpMessages::new();
        r.extend(now, &framed(&[b"abc", b"de"]));
        r.extend(now, &[0]);
        while let Ok(Some(_)) = r.next_message(now) {}
        assert_eq!(r.taken(), &framed(&[b"abc", b"de"])[..]);
        r.forwarded(5);
        assert_eq!(r.taken(), &framed(&[b"de"])[..]);
        r.extend(now, &[3, b'f', b'g', b'h']);
        assert_eq!(r.taken(), &framed(&[b"de"])[..], "kept across a read");
        assert_eq!(r.next_message(now), Ok(Some(&b"fgh"[..])));
        r.forwarded(100);
        assert!(r.taken().is_empty());
    }
}
