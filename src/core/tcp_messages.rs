//! DNS OVER TCP, AS MESSAGES
//!
//! A client's TCP stream is a sequence of DNS messages, each behind a
//! two-byte length (RFC 1035 4.2.2, RFC 7766).  Reading it as messages
//! rather than as bytes is what lets the balancer apply the same intake
//! rules to TCP as to UDP, know when a connection is between messages (idle)
//! or in the middle of one (a slow sender, for `--tcp-read-timeout`), and
//! later replay what a failed backend held.
//!
//! [`TcpMessages`] is the pure reader: bytes go in as they arrive, whole
//! messages come out, borrowed from its buffer.  The buffer holds at most
//! one message and its length (65,537 bytes) beyond what was taken, and
//! keeps no more: a client cannot make it grow by sending.  A length of
//! zero is an error (no DNS message is empty).  It records when the
//! message now being read started, so the caller can time out a sender that
//! stops half-way.

use tokio::time::Instant;

/// The longest message a length prefix can announce.
pub const MAX_TCP_MESSAGE: usize = u16::MAX as usize;

/// Why a stream is not DNS over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpMessageError {
    /// A length prefix of 0.
    #[error("a DNS message of length 0")]
    Empty,
}

/// The reader of one connection.
#[derive(Debug, Default)]
pub struct TcpMessages {
    buf: Vec<u8>,
    /// Bytes before this offset were handed out already.
    start: usize,
    /// When the first byte of the message now incomplete arrived.
    partial_since: Option<Instant>,
}

impl TcpMessages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Take in `bytes` that arrived at `now`.  Bytes already handed out are
    /// dropped first, so the buffer never holds more than one message
    /// beyond what was taken.
    pub fn extend(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.is_empty() {
            self.partial_since = Some(now);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes to read next at most: the rest of the message being
    /// read (or a length prefix), so that a reader taking only this much
    /// never holds more than one message.
    pub fn wanted(&self) -> usize {
        let pending = &self.buf[self.start..];
        match pending {
            [a, b, rest @ ..] => {
                let len = usize::from(u16::from_be_bytes([*a, *b]));
                len.saturating_sub(rest.len()).max(2)
            }
            _ => 2 - pending.len(),
        }
    }

    /// The next whole message, if one has arrived; `Ok(None)` if more bytes
    /// are needed.  After an error the stream is unusable (close it).
    pub fn next_message(&mut self, now: Instant) -> Result<Option<&[u8]>, TcpMessageError> {
        let pending = &self.buf[self.start..];
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
        let from = self.start + 2;
        self.start = from + len;
        // What follows, if anything, is the start of the next message.
        self.partial_since = (self.start < self.buf.len()).then_some(now);
        Ok(self.buf.get(from..from + len))
    }

    /// No part of a message is waiting: the connection is between messages.
    pub fn is_between_messages(&self) -> bool {
        self.start >= self.buf.len()
    }

    /// When the message now incomplete started arriving, if one is.
    pub fn partial_since(&self) -> Option<Instant> {
        if self.is_between_messages() {
            None
        } else {
            self.partial_since
        }
    }

    /// Bytes held (a bound: at most a message and its length beyond what
    /// was taken, plus what the caller read past [`TcpMessages::wanted`]).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
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
            for chunk in stream.chunks(step) {
                r.extend(now, chunk);
                while let Ok(Some(m)) = r.next_message(now) {
                    got.push(m.to_vec());
                }
            }
            assert_eq!(got.len(), 3, "step {step}");
            assert_eq!(got[0], b"first message");
            assert_eq!(got[2], vec![7u8; 300]);
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
        }
        assert!(
            r.buf.len() <= 2 + 1000,
            "taken bytes are dropped: {}",
            r.buf.len()
        );
    }
}
