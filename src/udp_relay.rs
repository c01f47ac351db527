//! UDP RELAY
//!
//! DNS queries mostly arrive as UDP datagrams on the listening socket.  Each
//! is wrapped in an INBOUND_UDP frame (client address and port, length,
//! datagram) and queued toward the client's backend; each OUTBOUND_UDP the
//! backend sends back becomes a datagram from the listening socket to the
//! address and port in the frame.
//!
//! This module owns the socket and the receive buffer.  A datagram is
//! received directly behind room for the frame header, so framing it costs
//! writing 16 bytes and one copy into the backend's queue; the buffer is
//! reused for every datagram.  Which backend gets the datagram is decided by
//! the event loop ([`crate::balancer`]).  Reading is done in bounded batches
//! so that a flood of queries cannot starve the backends' replies.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use tokio::net::UdpSocket;

use crate::frame::{self, MAX_PAYLOAD, UDP_HEADER_LEN};

/// Datagrams read per turn of the event loop before other work gets a turn.
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
    pub dropped_ipv6_unsupported: u64,
    pub dropped_no_backend: u64,
    pub dropped_stuck: u64,
    pub replies: u64,
    pub replies_failed: u64,
}

/// The listening UDP socket and its reusable receive buffer.
pub struct UdpRelay {
    socket: UdpSocket,
    /// Whether the socket is IPv6 (dual-stack): IPv4 clients then have
    /// v4-mapped addresses, and replies must use them.
    v6_socket: bool,
    buf: Box<[u8; UDP_HEADER_LEN + RECV_ROOM]>,
}

/// One received datagram, framed in place.
pub struct Datagram<'a> {
    pub src: SocketAddr,
    /// The source address with any v4-mapping undone.
    pub ip: IpAddr,
    pub len: usize,
    buf: &'a mut [u8; UDP_HEADER_LEN + RECV_ROOM],
}

impl Datagram<'_> {
    pub fn is_oversized(&self) -> bool {
        self.len > MAX_PAYLOAD
    }

    /// The INBOUND_UDP frame for this datagram.  Only for IPv4 sources
    /// within the size limit.
    pub fn inbound_frame(&mut self) -> Option<&[u8]> {
        let IpAddr::V4(v4) = self.ip else {
            return None;
        };
        if self.is_oversized() {
            return None;
        }
        let h = frame::udp_header(
            frame::frame_type::INBOUND_UDP,
            v4,
            self.src.port(),
            self.len,
        );
        self.buf[..UDP_HEADER_LEN].copy_from_slice(&h);
        Some(&self.buf[..UDP_HEADER_LEN + self.len])
    }
}

impl UdpRelay {
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        let v6_socket = socket.local_addr()?.is_ipv6();
        Ok(UdpRelay {
            socket,
            v6_socket,
            buf: Box::new([0u8; UDP_HEADER_LEN + RECV_ROOM]),
        })
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Receive one waiting datagram without blocking.  `Ok(None)` when none
    /// is waiting.
    pub fn try_recv(&mut self) -> io::Result<Option<Datagram<'_>>> {
        match self.socket.try_recv_from(&mut self.buf[UDP_HEADER_LEN..]) {
            Ok((len, src)) => Ok(Some(Datagram {
                src,
                ip: src.ip().to_canonical(),
                len,
                buf: &mut self.buf,
            })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Send a backend's answer to `dest`.  A full socket buffer drops the
    /// answer (this is UDP); the count says so.
    pub fn send_reply(&self, payload: &[u8], dest: SocketAddr) -> io::Result<()> {
        let dest = match dest {
            SocketAddr::V4(v4) if self.v6_socket => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        };
        self.socket.try_send_to(payload, dest).map(|_| ())
    }
}
