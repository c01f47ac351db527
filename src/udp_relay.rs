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
//! Answers are gathered per socket and sent with `sendmmsg(2)`.  On a
//! wildcard socket each answer leaves from the address its query was sent
//! to: a query's "listener" is a reply path (socket and local address),
//! see [`UdpRelay`].  Which backend gets the datagram is decided by the
//! event loop ([`crate::balancer`]).  Reading is done in
//! bounded batches so that a flood of queries cannot starve the backends'
//! answers.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::task::Poll;

use foldhash::fast::RandomState;
use tokio::net::UdpSocket;

use crate::frame::{self, MAX_PAYLOAD, UDP6_HEADER_LEN};
use crate::mmsg::{self, LocalAddr, RecvBatch, SendBatch};

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

/// How many distinct (socket, local address) reply paths are remembered.
/// A host has few addresses; past the bound, answers leave as the kernel
/// routes them, as they would without pktinfo.
const MAX_REPLY_PATHS: usize = 4096;

/// Where an answer leaves from: a socket, and on a wildcard socket the
/// address the query was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReplyPath {
    socket: usize,
    local: Option<LocalAddr>,
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
    /// Reply paths by index: the first `sockets.len()` are the sockets
    /// themselves (no source address given); the others are found as
    /// queries arrive on wildcard sockets.  Queries in flight remember an
    /// index (their "listener"), not an address.
    paths: Vec<ReplyPath>,
    path_index: HashMap<(usize, LocalAddr), usize, RandomState>,
}

/// One received datagram, framed in place.
pub struct Datagram<'a> {
    /// The reply path its answer takes (see [`UdpRelay`]).
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
    /// Serve `sockets`, each given a receive buffer of `recv_buffer` bytes
    /// (0: the system's default).  Returns the relay and the receive
    /// buffer size the kernel granted the first socket.
    pub fn new(sockets: Vec<UdpSocket>, recv_buffer: usize) -> io::Result<(Self, Option<usize>)> {
        let mut v6 = Vec::with_capacity(sockets.len());
        let mut granted = None;
        for s in &sockets {
            let local = s.local_addr()?;
            v6.push(local.is_ipv6());
            if recv_buffer > 0 {
                let size = mmsg::set_receive_buffer(s, recv_buffer)?;
                granted.get_or_insert(size);
            }
            if local.ip().is_unspecified() {
                mmsg::enable_pktinfo(s, local.is_ipv6())?;
            }
        }
        let replies = sockets.iter().map(|_| SendBatch::default()).collect();
        let paths = (0..sockets.len())
            .map(|socket| ReplyPath {
                socket,
                local: None,
            })
            .collect();
        let relay = UdpRelay {
            sockets,
            v6,
            batch: RecvBatch::new(UDP6_HEADER_LEN, RECV_ROOM),
            replies,
            paths,
            path_index: HashMap::default(),
        };
        Ok((relay, granted))
    }

    /// Listening sockets (not reply paths).
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

    /// Datagram `i` of the last batch received on socket `socket`.
    pub fn datagram(&mut self, socket: usize, i: usize) -> Option<Datagram<'_>> {
        if i >= self.batch.count() {
            return None;
        }
        let (src, len, buf, local) = self.batch.get_mut(i);
        let src = src?;
        let listener = match local {
            None => socket,
            Some(local) => match self.path_index.get(&(socket, local)) {
                Some(&path) => path,
                None if self.paths.len() < MAX_REPLY_PATHS => {
                    let path = self.paths.len();
                    self.paths.push(ReplyPath {
                        socket,
                        local: Some(local),
                    });
                    self.path_index.insert((socket, local), path);
                    path
                }
                None => socket,
            },
        };
        Some(Datagram {
            listener,
            src,
            ip: src.ip().to_canonical(),
            len,
            buf,
        })
    }

    /// The address to send to `dest` through socket `socket`: on a
    /// dual-stack IPv6 socket an IPv4 client has a v4-mapped address.
    fn wire_dest(&self, socket: usize, dest: SocketAddr) -> SocketAddr {
        match dest {
            SocketAddr::V4(v4) if self.v6.get(socket).copied().unwrap_or(false) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }

    /// Queue an answer to `dest` on reply path `listener`; it leaves at the
    /// next [`UdpRelay::flush_replies`].
    pub fn queue_reply(&mut self, listener: usize, payload: &[u8], dest: SocketAddr) {
        let Some(path) = self.paths.get(listener).copied() else {
            return;
        };
        let dest = self.wire_dest(path.socket, dest);
        if let Some(batch) = self.replies.get_mut(path.socket) {
            batch.push(dest, path.local, payload);
        }
    }

    /// Send every queued answer.  Returns (sent, dropped): what a full
    /// socket buffer could not take is dropped, as UDP may be.
    pub fn flush_replies(&mut self) -> (u64, u64) {
        let (mut sent, mut dropped) = (0, 0);
        for ((socket, batch), &v6) in self
            .sockets
            .iter()
            .zip(self.replies.iter_mut())
            .zip(self.v6.iter())
        {
            if batch.is_empty() {
                continue;
            }
            let queued = batch.len() as u64;
            let n = batch.flush(socket, v6) as u64;
            sent += n;
            dropped += queued - n;
        }
        (sent, dropped)
    }

    /// Send `payload` to `dest` by reply path `listener`, now.  A full
    /// socket buffer drops it (this is UDP).
    pub fn send_to(&self, listener: usize, payload: &[u8], dest: SocketAddr) -> io::Result<()> {
        let not_found = || io::Error::new(io::ErrorKind::NotFound, "no such listener");
        let path = self.paths.get(listener).ok_or_else(not_found)?;
        let socket = self.sockets.get(path.socket).ok_or_else(not_found)?;
        let v6 = self.v6.get(path.socket).copied().unwrap_or(false);
        mmsg::send_one(
            socket,
            v6,
            self.wire_dest(path.socket, dest),
            path.local,
            payload,
        )
    }
}
