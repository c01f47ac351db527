//! FRAMES
//!
//! The balancer and each backend speak a small framed protocol over AF_UNIX
//! stream sockets (specified in full in `docs/protocol.md` at the root of
//! the mname-balancer repository).  Every integer is a u32, little-endian.
//! Every frame starts with its type; most frames are a fixed length
//! determined by the type, and the two that carry a DNS message
//! (INBOUND_UDP and OUTBOUND_UDP) give the message length in their header.
//!
//! This crate is the codec both sides share: the balancer (`mname-balancer`)
//! and the backend library (`mname-balancer-backend`, which re-exports it
//! as `mname_balancer_backend::frame`) are built on it, so the two ends
//! cannot drift apart.  A backend in Rust normally wants `mname-balancer-backend`, which
//! answers hellos and heartbeats itself; this crate is for those who drive
//! the frames by hand (tests, tools, another I/O layer).
//!
//! It is pure: it turns bytes into [`Frame`]s and frames into bytes,
//! and does no I/O.  Decoding is two-phase in the manner of mini-redis: a
//! buffer that holds only part of a frame yields `Ok(None)` ("need more"),
//! never an error, so a stream cut anywhere decodes the same once the rest
//! arrives.  Lengths are checked against [`MAX_PAYLOAD`] as soon as the header
//! is visible, before anything waits on or buffers the payload.
//!
//! Addresses are IPv4 only in the original protocol.  The address a.b.c.d
//! travels as the integer `a<<24 | b<<16 | c<<8 | d`, written little-endian,
//! so the bytes on the wire are `d c b a`: node-mname reads them that way.
//!
//! Our extension adds IPv6 twins of the three address-carrying frames
//! (INBOUND_UDP6, INBOUND_TCP6, OUTBOUND_UDP6: the 16 address bytes in
//! network order) and SERVER_CAPABILITIES, with which a backend says it
//! understands them.  A backend is asked by a second CLIENT_HELLO; one that
//! knows only the original protocol answers it with a plain SERVER_HELLO, as
//! node-mname does, and is never sent the new frames.  In [`Frame`] an
//! address is an [`IpAddr`](std::net::IpAddr); its family picks the frame
//! type.
//!
//! The modules: [`Frame`] and [`FrameError`] are what a frame is; writing
//! one ([`Frame::encode`], [`udp_header`], [`inbound_tcp`]) and reading one
//! ([`decode()`]) are apart, and [`FrameBuffer`] reassembles frames from a
//! stream.  Frame type numbers and sizes are below, named once.

mod buffer;
mod decode;
mod encode;
mod frame;

pub use buffer::FrameBuffer;
pub use decode::{decode, decode_addr};
pub use encode::{encode_addr, inbound_tcp, udp_header};
pub use frame::{Frame, FrameError};

/// The README's examples, compiled and run by `cargo test --doc` so that
/// they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Frame type numbers, named once.  Types below 1000 travel from the
/// balancer to a backend; types from 1001 travel from a backend to the
/// balancer.
pub mod frame_type {
    /// Balancer -> backend: opens a control session; asked again, it asks
    /// which extensions the backend speaks.
    pub const CLIENT_HELLO: u32 = 1;
    /// Balancer -> backend: a client's DNS query that came over UDP.
    pub const INBOUND_UDP: u32 = 2;
    /// Balancer -> backend: opens a TCP session for the named client.
    pub const INBOUND_TCP: u32 = 3;
    /// Balancer -> backend: are you alive?
    pub const CLIENT_HEARTBEAT: u32 = 4;
    /// Extension: INBOUND_UDP from an IPv6 client.
    pub const INBOUND_UDP6: u32 = 5;
    /// Extension: INBOUND_TCP from an IPv6 client.
    pub const INBOUND_TCP6: u32 = 6;
    /// Backend -> balancer: the answer to CLIENT_HELLO.
    pub const SERVER_HELLO: u32 = 1001;
    /// Backend -> balancer: a DNS answer for a UDP client.
    pub const OUTBOUND_UDP: u32 = 1002;
    /// Backend -> balancer: the TCP session is accepted; from here on the
    /// connection carries the client's DNS-over-TCP bytes verbatim.
    pub const INBOUND_TCP_OK: u32 = 1003;
    /// Backend -> balancer: the answer to CLIENT_HEARTBEAT.
    pub const SERVER_HEARTBEAT: u32 = 1004;
    /// Extension: the backend's answer to a second CLIENT_HELLO.
    pub const SERVER_CAPABILITIES: u32 = 1005;
    /// Extension: OUTBOUND_UDP to an IPv6 client.
    pub const OUTBOUND_UDP6: u32 = 1006;
}

/// Capability bits carried by SERVER_CAPABILITIES.
pub mod capability {
    /// The backend understands INBOUND_UDP6, INBOUND_TCP6 and OUTBOUND_UDP6.
    pub const IPV6: u32 = 1;
}

/// The largest DNS message either side may carry in a UDP frame.  Clients
/// have no reason to send larger datagrams (we do not expect reassembled
/// fragments), and a backend declaring more than this is misbehaving.
pub const MAX_PAYLOAD: usize = 1500;

/// Size of the header of INBOUND_UDP and OUTBOUND_UDP: type, address, port,
/// length.
pub const UDP_HEADER_LEN: usize = 16;

/// Size of the header of INBOUND_UDP6 and OUTBOUND_UDP6: type, 16-byte
/// address, port, length.  The largest UDP header.
pub const UDP6_HEADER_LEN: usize = 28;

/// Size of an INBOUND_TCP frame: type, address, port.
pub const INBOUND_TCP_LEN: usize = 12;

/// Size of an INBOUND_TCP6 frame: type, 16-byte address, port.
pub const INBOUND_TCP6_LEN: usize = 24;

/// Size of a SERVER_CAPABILITIES frame: type, capability bits.
pub const CAPABILITIES_LEN: usize = 8;

/// Size of every frame that is only a type.
pub const BARE_LEN: usize = 4;
