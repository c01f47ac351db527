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
//! received in batches with `recvmmsg(2)` ([`super::mmsg`]), each directly
//! behind room for the largest frame header, so framing one costs writing
//! the header and one copy into the backend's queue; the buffers are reused.
//! Answers are gathered per socket and sent with `sendmmsg(2)`.  On a
//! wildcard socket each answer leaves from the address its query was sent
//! to: a query remembers its reply path (socket and local address),
//! see [`UdpRelay`].  Which backend gets the datagram is decided by the
//! core ([`crate::core`]).  Reading is done in
//! bounded batches so that a flood of queries cannot starve the backends'
//! answers.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::task::{Context, Poll};

use foldhash::fast::RandomState;

use super::mmsg::{self, ListenUdp, LocalAddr, RecvBatch, SendBatch};
use crate::core::Datagram;
use mname_balancer_protocol::UDP6_HEADER_LEN;

/// Receive calls (of up to [`super::mmsg::BATCH`] datagrams each) per
/// socket per turn of the event loop before other work gets a turn.
pub const RECV_CALLS: usize = 4;

/// Room for one datagram: more than the frame limit, so an oversized one is
/// seen to be oversized rather than silently cut to size
/// ([`mname_balancer_protocol::MAX_PAYLOAD`]).
const RECV_ROOM: usize = 4096;

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

/// The listening UDP sockets and the reusable receive buffers.
pub struct UdpRelay {
    batch: RecvBatch,
    out: UdpOut,
}

/// The sending side: sockets, reply paths and the answers waiting to be
/// sent.  Kept apart from the receive buffers so that a datagram (which
/// borrows its buffer) can be answered while it is being handled.
pub struct UdpOut {
    sockets: Vec<ListenUdp>,
    /// Per socket: IPv6 (dual-stack), so IPv4 clients have mapped addresses.
    v6: Vec<bool>,
    /// Per socket: answers gathered for one `sendmmsg`.
    replies: Vec<SendBatch>,
    /// Reply paths by index: the first `sockets.len()` are the sockets
    /// themselves (no source address given); the others are found as
    /// queries arrive on wildcard sockets.  Queries in flight remember an
    /// index (their reply path), not an address.
    paths: Vec<ReplyPath>,
    path_index: HashMap<(usize, LocalAddr), usize, RandomState>,
}

impl UdpRelay {
    /// Serve `sockets`, each given a receive buffer of `recv_buffer` bytes
    /// (0: the system's default).  Returns the relay and the receive
    /// buffer size the kernel granted the first socket.
    pub fn new(sockets: Vec<ListenUdp>, recv_buffer: usize) -> io::Result<(Self, Option<usize>)> {
        let mut v6 = Vec::with_capacity(sockets.len());
        let mut granted = None;
        for s in &sockets {
            let local = s.get_ref().local_addr()?;
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
            batch: RecvBatch::new(UDP6_HEADER_LEN, RECV_ROOM),
            out: UdpOut {
                sockets,
                v6,
                replies,
                paths,
                path_index: HashMap::default(),
            },
        };
        Ok((relay, granted))
    }

    /// Listening sockets (not reply paths).
    pub fn len(&self) -> usize {
        self.out.sockets.len()
    }

    /// Whether there is no listening socket.
    pub fn is_empty(&self) -> bool {
        self.out.sockets.is_empty()
    }

    /// The sending side.
    pub fn out(&mut self) -> &mut UdpOut {
        &mut self.out
    }

    /// Register interest in every socket's readability; Ready if one has a
    /// datagram waiting.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        for s in &self.out.sockets {
            if let Poll::Ready(r) = s.poll_read_ready(cx) {
                return Poll::Ready(r.map(|_ready| ()));
            }
        }
        Poll::Pending
    }

    /// Receive a batch of waiting datagrams from socket `socket` without
    /// blocking and hand each to `handle` with the sending side; returns
    /// how many (0 when none was waiting).
    pub fn recv_batch(
        &mut self,
        socket: usize,
        mut handle: impl FnMut(&mut Datagram<'_>, &mut UdpOut),
    ) -> io::Result<usize> {
        let n = match self.out.sockets.get(socket) {
            Some(s) => self.batch.recv(s)?,
            None => return Ok(0),
        };
        for i in 0..n {
            let (src, len, buf, local) = self.batch.get_mut(i);
            let Some(src) = src else {
                continue;
            };
            let reply_path = self.out.path_of(socket, local);
            let mut dgram = Datagram::new(reply_path, src, len, buf);
            handle(&mut dgram, &mut self.out);
        }
        Ok(n)
    }
}

impl UdpOut {
    /// The reply path of a datagram received on `socket`, sent to `local`.
    fn path_of(&mut self, socket: usize, local: Option<LocalAddr>) -> usize {
        let Some(local) = local else {
            return socket;
        };
        if let Some(&path) = self.path_index.get(&(socket, local)) {
            return path;
        }
        if self.paths.len() >= MAX_REPLY_PATHS {
            return socket;
        }
        let path = self.paths.len();
        self.paths.push(ReplyPath {
            socket,
            local: Some(local),
        });
        self.path_index.insert((socket, local), path);
        path
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

    /// Queue an answer to `dest` on reply path `reply_path`; it leaves at the
    /// next [`UdpOut::flush_replies`].
    pub fn queue_reply(&mut self, reply_path: usize, payload: &[u8], dest: SocketAddr) {
        let Some(path) = self.paths.get(reply_path).copied() else {
            return;
        };
        let dest = self.wire_dest(path.socket, dest);
        if let Some(batch) = self.replies.get_mut(path.socket) {
            batch.push(dest, path.local, payload);
        }
    }

    /// Whether answers wait to be sent.
    pub fn has_replies(&self) -> bool {
        self.replies.iter().any(|b| !b.is_empty())
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

    /// Send `payload` to `dest` by reply path `reply_path`, now.  A full
    /// socket buffer drops it (this is UDP).
    pub fn send_to(&self, reply_path: usize, payload: &[u8], dest: SocketAddr) -> io::Result<()> {
        let not_found = || io::Error::new(io::ErrorKind::NotFound, "no such reply path");
        let path = self.paths.get(reply_path).ok_or_else(not_found)?;
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
