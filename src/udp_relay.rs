//! UDP RELAY
//!
//! DNS queries mostly arrive as UDP datagrams on the listening sockets (one
//! per `-b` address).  Each is wrapped in an INBOUND_UDP frame (client
//! address and port, length, datagram; INBOUND_UDP6 for an IPv6 client) and
//! queued toward the client's backend; each OUTBOUND_UDP a backend sends
//! back becomes a datagram to the address and port in the frame, from the
//! socket that received the query.
//!
//! This module owns the sockets and the receive buffers.  Datagrams are
//! received in batches with `recvmmsg(2)` ([`crate::mmsg`]), each directly
//! behind room for the largest frame header, so framing one costs writing
//! the header and one copy into the backend's queue; the buffers are reused.
//! Answers are gathered per socket and sent with `sendmmsg(2)`.  Which backend gets the datagram is
//! decided by the event loop ([`crate::balancer`]).  Reading is done in
//! bounded batches so that a flood of queries cannot starve the backends'
//! answers.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::task::Poll;

use tokio::net::UdpSocket;

use crate::frame::{self, MAX_PAYLOAD, UDP6_HEADER_LEN};
use crate::mmsg::{RecvBatch, SendBatch};

/// Receive calls (of up to [`crate::mmsg::BATCH`] datagrams each) per
/// socket per turn of the event loop before other work gets a turn.
pub const RECV_CALLS: usize = 4;

/// Room for one datagram: more than [`MAX_PAYLOAD`], so an oversized one is
/// seen to be oversized rather than silently cut to size.
const RECV_ROOM: usize = 4096;

/// UDP traffic counters for the whole balancer, kept by the event loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    pub received: u64,
    pub forwarded: u64,
    pub dropped_oversized: u64,
    pub dropped_short: u64,
    pub dropped_response: u64,
    pub dropped_malformed: u64,
    pub dropped_no_backend: u64,
    pub dropped_stuck: u64,
    pub dropped_inflight_full: u64,
    /// Answers synthesized because no backend could take the query.
    pub no_backend_answers: u64,
    /// No-backend answers withheld by the per-remote rate limit.
    pub no_backend_rate_limited: u64,
    /// Queries unanswered by their deadline.
    pub timeouts: u64,
    /// SERVFAILs sent for timed-out queries.
    pub timeout_answers: u64,
    /// Answers that arrived after their query timed out.
    pub late_answers: u64,
    /// Answers that matched no query in flight (not sent).
    pub unsolicited_answers: u64,
    /// Queries sent once more after their backend failed.
    pub replayed: u64,
    pub replies: u64,
    pub replies_failed: u64,
}

/// The listening UDP sockets, the reusable receive buffers and the answers
/// waiting to be sent.
pub struct UdpRelay {
    sockets: Vec<UdpSocket>,
    /// Per socket: IPv6 (dual-stack), so IPv4 clients have mapped addresses.
    v6: Vec<bool>,
    batch: RecvBatch,
    /// Per socket: answers gathered for one `sendmmsg`.
    replies: Vec<SendBatch>,
}

/// One received datagram, framed in place.
pub struct Datagram<'a> {
    /// Index of the socket that received it.
    pub listener: usize,
    pub src: SocketAddr,
    /// The source address with any v4-mapping undone.
    pub ip: IpAddr,
    pub len: usize,
    buf: &'a mut [u8],
}

impl Datagram<'_> {
    pub fn is_oversized(&self) -> bool {
        self.len > MAX_PAYLOAD
    }

    /// The DNS message (at most the receive room).
    pub fn payload(&self) -> &[u8] {
        let end = UDP6_HEADER_LEN + self.len.min(RECV_ROOM);
        &self.buf[UDP6_HEADER_LEN..end]
    }

    /// The INBOUND_UDP (or INBOUND_UDP6) frame for this datagram, and the
    /// length of its header.  Only for datagrams within the size limit.
    pub fn inbound_frame(&mut self) -> Option<(&[u8], usize)> {
        if self.is_oversized() {
            return None;
        }
        let (h, n) = frame::udp_header(true, self.ip, self.src.port(), self.len);
        let start = UDP6_HEADER_LEN - n;
        self.buf[start..UDP6_HEADER_LEN].copy_from_slice(&h[..n]);
        Some((&self.buf[start..UDP6_HEADER_LEN + self.len], n))
    }
}

impl UdpRelay {
    pub fn new(sockets: Vec<UdpSocket>) -> io::Result<Self> {
        let v6 = sockets
            .iter()
            .map(|s| Ok(s.local_addr()?.is_ipv6()))
            .collect::<io::Result<_>>()?;
        let replies = sockets.iter().map(|_| SendBatch::default()).collect();
        Ok(UdpRelay {
            sockets,
            v6,
            batch: RecvBatch::new(UDP6_HEADER_LEN, RECV_ROOM),
            replies,
        })
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Wait until some socket has a datagram waiting.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| {
            for s in &self.sockets {
                if let Poll::Ready(r) = s.poll_recv_ready(cx) {
                    return Poll::Ready(r);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Receive a batch of waiting datagrams from socket `listener` without
    /// blocking; how many (0 when none is waiting).  Take them with
    /// [`UdpRelay::datagram`].
    pub fn recv_batch(&mut self, listener: usize) -> io::Result<usize> {
        match self.sockets.get(listener) {
            Some(socket) => self.batch.recv(socket),
            None => Ok(0),
        }
    }

    /// Datagram `i` of the last batch received on `listener`.
    pub fn datagram(&mut self, listener: usize, i: usize) -> Option<Datagram<'_>> {
        if i >= self.batch.count() {
            return None;
        }
        let (src, len, buf) = self.batch.get_mut(i);
        let src = src?;
        Some(Datagram {
            listener,
            src,
            ip: src.ip().to_canonical(),
            len,
            buf,
        })
    }

    /// The address to send to `dest` through socket `listener`: on a
    /// dual-stack IPv6 socket an IPv4 client has a v4-mapped address.
    fn wire_dest(&self, listener: usize, dest: SocketAddr) -> SocketAddr {
        match dest {
            SocketAddr::V4(v4) if self.v6.get(listener).copied().unwrap_or(false) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }

    /// Queue an answer to `dest` on socket `listener`; it leaves at the next
    /// [`UdpRelay::flush_replies`].
    pub fn queue_reply(&mut self, listener: usize, payload: &[u8], dest: SocketAddr) {
        let dest = self.wire_dest(listener, dest);
        if let Some(batch) = self.replies.get_mut(listener) {
            batch.push(dest, payload);
        }
    }

    /// Send every queued answer.  Returns (sent, dropped): what a full
    /// socket buffer could not take is dropped, as UDP may be.
    pub fn flush_replies(&mut self) -> (u64, u64) {
        let (mut sent, mut dropped) = (0, 0);
        for (socket, batch) in self.sockets.iter().zip(self.replies.iter_mut()) {
            if batch.is_empty() {
                continue;
            }
            let queued = batch.len() as u64;
            let n = batch.flush(socket) as u64;
            sent += n;
            dropped += queued - n;
        }
        (sent, dropped)
    }

    /// Send `payload` to `dest` from socket `listener`.  A full socket
    /// buffer drops it (this is UDP).
    pub fn send_to(&self, listener: usize, payload: &[u8], dest: SocketAddr) -> io::Result<()> {
        let socket = self
            .sockets
            .get(listener)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such listener"))?;
        socket
            .try_send_to(payload, self.wire_dest(listener, dest))
            .map(|_| ())
    }
}
