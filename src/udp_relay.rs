//! UDP RELAY
//!
//! DNS queries mostly arrive as UDP datagrams on the listening sockets (one
//! per `-b` address).  Each is wrapped in an INBOUND_UDP frame (client
//! address and port, length, datagram; INBOUND_UDP6 for an IPv6 client) and
//! queued toward the client's backend; each OUTBOUND_UDP a backend sends
//! back becomes a datagram to the address and port in the frame, from the
//! socket that received the query.
//!
//! This module owns the sockets and the receive buffer.  A datagram is
//! received directly behind room for the largest frame header, so framing it
//! costs writing the header and one copy into the backend's queue; the
//! buffer is reused for every datagram.  Which backend gets the datagram is
//! decided by the event loop ([`crate::balancer`]).  Reading is done in
//! bounded batches so that a flood of queries cannot starve the backends'
//! answers.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::task::Poll;

use tokio::net::UdpSocket;

use crate::frame::{self, MAX_PAYLOAD, UDP6_HEADER_LEN};

/// Datagrams read per socket per turn of the event loop before other work
/// gets a turn.
pub const RECV_BATCH: usize = 64;

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

/// The listening UDP sockets and the reusable receive buffer.
pub struct UdpRelay {
    sockets: Vec<UdpSocket>,
    /// Per socket: IPv6 (dual-stack), so IPv4 clients have mapped addresses.
    v6: Vec<bool>,
    buf: Box<[u8; UDP6_HEADER_LEN + RECV_ROOM]>,
}

/// One received datagram, framed in place.
pub struct Datagram<'a> {
    /// Index of the socket that received it.
    pub listener: usize,
    pub src: SocketAddr,
    /// The source address with any v4-mapping undone.
    pub ip: IpAddr,
    pub len: usize,
    buf: &'a mut [u8; UDP6_HEADER_LEN + RECV_ROOM],
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
        Ok(UdpRelay {
            sockets,
            v6,
            buf: Box::new([0u8; UDP6_HEADER_LEN + RECV_ROOM]),
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

    /// Receive one waiting datagram from socket `listener` without
    /// blocking.  `Ok(None)` when none is waiting.
    pub fn try_recv(&mut self, listener: usize) -> io::Result<Option<Datagram<'_>>> {
        let Some(socket) = self.sockets.get(listener) else {
            return Ok(None);
        };
        match socket.try_recv_from(&mut self.buf[UDP6_HEADER_LEN..]) {
            Ok((len, src)) => Ok(Some(Datagram {
                listener,
                src,
                ip: src.ip().to_canonical(),
                len,
                buf: &mut self.buf,
            })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Send `payload` to `dest` from socket `listener`.  A full socket
    /// buffer drops it (this is UDP).
    pub fn send_to(&self, listener: usize, payload: &[u8], dest: SocketAddr) -> io::Result<()> {
        let socket = self
            .sockets
            .get(listener)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such listener"))?;
        // On a dual-stack IPv6 socket an IPv4 client has a v4-mapped address.
        let dest = match dest {
            SocketAddr::V4(v4) if self.v6[listener] => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        };
        socket.try_send_to(payload, dest).map(|_| ())
    }
}
