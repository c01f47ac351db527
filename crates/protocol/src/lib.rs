//! FRAMES
//!
//! The balancer and each backend speak a small framed protocol over AF_UNIX
//! stream sockets (specified in full in `docs/protocol.md` at the root of
//! the mname-balancer repository).  Every integer is a u32, little-endian.
//! Every frame starts with its type; most frames are a fixed length
//! determined by the type, and the two that carry a DNS message
//! (INBOUND_UDP and OUTBOUND_UDP) give the message length in their header.
//!
//! This crate is the codec both sides share: the balancer (`mname-balancer`,
//! which re-exports it as `mname_balancer::frame`) and the backend library
//! (`mname-balancer-backend`) are built on it, so the two ends cannot drift
//! apart.  A backend in Rust normally wants `mname-balancer-backend`, which
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
//! address is an [`IpAddr`]; its family picks the frame type.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// One decoded frame.  UDP payloads borrow from the decode buffer, so decoding
/// never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// CLIENT_HELLO.
    ClientHello,
    /// INBOUND_UDP, or INBOUND_UDP6 for an IPv6 client.
    InboundUdp {
        /// The client's address.
        addr: IpAddr,
        /// The client's UDP port.
        port: u16,
        /// The client's DNS message.
        payload: &'a [u8],
    },
    /// INBOUND_TCP, or INBOUND_TCP6 for an IPv6 client.
    InboundTcp {
        /// The client's address.
        addr: IpAddr,
        /// The client's TCP port.
        port: u16,
    },
    /// CLIENT_HEARTBEAT.
    ClientHeartbeat,
    /// SERVER_HELLO.
    ServerHello,
    /// OUTBOUND_UDP, or OUTBOUND_UDP6 for an IPv6 client.
    OutboundUdp {
        /// The client the answer goes to.
        addr: IpAddr,
        /// The client's UDP port.
        port: u16,
        /// The DNS answer.
        payload: &'a [u8],
    },
    /// INBOUND_TCP_OK.
    InboundTcpOk,
    /// SERVER_HEARTBEAT.
    ServerHeartbeat,
    /// SERVER_CAPABILITIES.
    ServerCapabilities {
        /// The [`capability`] bits the backend sets.
        flags: u32,
    },
}

/// Why a byte stream is not a valid frame stream.  Each is fatal to the
/// session that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame type this protocol does not define.
    #[error("unknown frame type {0}")]
    UnknownType(u32),
    /// A UDP frame declaring a payload larger than [`MAX_PAYLOAD`].
    #[error("frame type {frame_type} declares {len} bytes (limit {MAX_PAYLOAD})")]
    Oversized {
        /// The frame's type.
        frame_type: u32,
        /// The payload length it declares.
        len: u32,
    },
    /// A port field that does not fit in 16 bits.
    #[error("frame type {frame_type} carries port {port}, beyond 65535")]
    BadPort {
        /// The frame's type.
        frame_type: u32,
        /// The port field as sent.
        port: u32,
    },
}

impl Frame<'_> {
    /// The type number of this frame.
    pub fn frame_type(&self) -> u32 {
        use frame_type::*;
        match self {
            Frame::ClientHello => CLIENT_HELLO,
            Frame::InboundUdp { addr, .. } if addr.is_ipv6() => INBOUND_UDP6,
            Frame::InboundUdp { .. } => INBOUND_UDP,
            Frame::InboundTcp { addr, .. } if addr.is_ipv6() => INBOUND_TCP6,
            Frame::InboundTcp { .. } => INBOUND_TCP,
            Frame::ClientHeartbeat => CLIENT_HEARTBEAT,
            Frame::ServerHello => SERVER_HELLO,
            Frame::OutboundUdp { addr, .. } if addr.is_ipv6() => OUTBOUND_UDP6,
            Frame::OutboundUdp { .. } => OUTBOUND_UDP,
            Frame::InboundTcpOk => INBOUND_TCP_OK,
            Frame::ServerHeartbeat => SERVER_HEARTBEAT,
            Frame::ServerCapabilities { .. } => SERVER_CAPABILITIES,
        }
    }

    /// Append the wire form of this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Frame::InboundUdp {
                addr,
                port,
                payload,
            }
            | Frame::OutboundUdp {
                addr,
                port,
                payload,
            } => {
                let inbound = matches!(self, Frame::InboundUdp { .. });
                let (h, n) = udp_header(inbound, addr, port, payload.len());
                out.extend_from_slice(&h[..n]);
                out.extend_from_slice(payload);
            }
            Frame::InboundTcp { addr, port } => {
                let (h, n) = inbound_tcp(addr, port);
                out.extend_from_slice(&h[..n]);
            }
            Frame::ServerCapabilities { flags } => {
                out.extend_from_slice(&self.frame_type().to_le_bytes());
                out.extend_from_slice(&flags.to_le_bytes());
            }
            _ => out.extend_from_slice(&self.frame_type().to_le_bytes()),
        }
    }
}

/// The wire form of an address: `a.b.c.d` as `a<<24|b<<16|c<<8|d`, LE.
pub fn encode_addr(addr: Ipv4Addr) -> [u8; 4] {
    u32::from(addr).to_le_bytes()
}

/// The inverse of [`encode_addr`].
pub fn decode_addr(bytes: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_le_bytes(bytes))
}

/// The header of a UDP-carrying frame (INBOUND_UDP when `inbound`, else
/// OUTBOUND_UDP; their IPv6 twins for an IPv6 address), and its length.
/// The relay writes this in front of a datagram it has already received in
/// place, so that forwarding costs one copy.
pub fn udp_header(
    inbound: bool,
    addr: IpAddr,
    port: u16,
    len: usize,
) -> ([u8; UDP6_HEADER_LEN], usize) {
    use frame_type::*;
    let mut h = [0u8; UDP6_HEADER_LEN];
    let (t, at) = match addr {
        IpAddr::V4(v4) => {
            h[4..8].copy_from_slice(&encode_addr(v4));
            (if inbound { INBOUND_UDP } else { OUTBOUND_UDP }, 8)
        }
        IpAddr::V6(v6) => {
            h[4..20].copy_from_slice(&v6.octets());
            (if inbound { INBOUND_UDP6 } else { OUTBOUND_UDP6 }, 20)
        }
    };
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[at..at + 4].copy_from_slice(&u32::from(port).to_le_bytes());
    // The payload is at most MAX_PAYLOAD; callers check before framing.
    h[at + 4..at + 8].copy_from_slice(&(len as u32).to_le_bytes());
    (h, at + 8)
}

/// The whole INBOUND_TCP (or INBOUND_TCP6) frame, and its length.
pub fn inbound_tcp(addr: IpAddr, port: u16) -> ([u8; INBOUND_TCP6_LEN], usize) {
    let mut h = [0u8; INBOUND_TCP6_LEN];
    let (t, at) = match addr {
        IpAddr::V4(v4) => {
            h[4..8].copy_from_slice(&encode_addr(v4));
            (frame_type::INBOUND_TCP, 8)
        }
        IpAddr::V6(v6) => {
            h[4..20].copy_from_slice(&v6.octets());
            (frame_type::INBOUND_TCP6, 20)
        }
    };
    h[0..4].copy_from_slice(&t.to_le_bytes());
    h[at..at + 4].copy_from_slice(&u32::from(port).to_le_bytes());
    (h, at + 4)
}

fn u32_at(buf: &[u8], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[offset..offset + 4]);
    u32::from_le_bytes(b)
}

fn port_at(buf: &[u8], offset: usize, frame_type: u32) -> Result<u16, FrameError> {
    let port = u32_at(buf, offset);
    u16::try_from(port).map_err(|_| FrameError::BadPort { frame_type, port })
}

/// Decode the frame at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, or
/// `Ok(Some((frame, consumed)))` with the number of bytes the frame took.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    use frame_type::*;
    if buf.len() < BARE_LEN {
        return Ok(None);
    }
    let t = u32_at(buf, 0);
    let bare = |f| Ok(Some((f, BARE_LEN)));
    match t {
        CLIENT_HELLO => bare(Frame::ClientHello),
        CLIENT_HEARTBEAT => bare(Frame::ClientHeartbeat),
        SERVER_HELLO => bare(Frame::ServerHello),
        INBOUND_TCP_OK => bare(Frame::InboundTcpOk),
        SERVER_HEARTBEAT => bare(Frame::ServerHeartbeat),
        SERVER_CAPABILITIES => {
            if buf.len() < CAPABILITIES_LEN {
                return Ok(None);
            }
            let flags = u32_at(buf, 4);
            Ok(Some((
                Frame::ServerCapabilities { flags },
                CAPABILITIES_LEN,
            )))
        }
        INBOUND_TCP | INBOUND_TCP6 => {
            let Some((addr, at)) = addr_at(buf, t == INBOUND_TCP6) else {
                return Ok(None);
            };
            if buf.len() < at + 4 {
                return Ok(None);
            }
            let port = port_at(buf, at, t)?;
            Ok(Some((Frame::InboundTcp { addr, port }, at + 4)))
        }
        INBOUND_UDP | OUTBOUND_UDP | INBOUND_UDP6 | OUTBOUND_UDP6 => {
            let v6 = t == INBOUND_UDP6 || t == OUTBOUND_UDP6;
            let Some((addr, at)) = addr_at(buf, v6) else {
                return Ok(None);
            };
            let header_len = at + 8;
            if buf.len() < header_len {
                return Ok(None);
            }
            let len = u32_at(buf, at + 4);
            if len as usize > MAX_PAYLOAD {
                return Err(FrameError::Oversized { frame_type: t, len });
            }
            let port = port_at(buf, at, t)?;
            let end = header_len + len as usize;
            if buf.len() < end {
                return Ok(None);
            }
            let payload = &buf[header_len..end];
            let frame = if t == INBOUND_UDP || t == INBOUND_UDP6 {
                Frame::InboundUdp {
                    addr,
                    port,
                    payload,
                }
            } else {
                Frame::OutboundUdp {
                    addr,
                    port,
                    payload,
                }
            };
            Ok(Some((frame, end)))
        }
        other => Err(FrameError::UnknownType(other)),
    }
}

/// The address after the type field, and the offset just past it; `None`
/// if the buffer does not hold it yet.
fn addr_at(buf: &[u8], v6: bool) -> Option<(IpAddr, usize)> {
    if v6 {
        let b: [u8; 16] = buf.get(4..20)?.try_into().ok()?;
        Some((IpAddr::V6(Ipv6Addr::from(b)), 20))
    } else {
        let b: [u8; 4] = buf.get(4..8)?.try_into().ok()?;
        Some((IpAddr::V4(decode_addr(b)), 8))
    }
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
///
/// Bytes are appended with [`FrameBuffer::extend`]; complete frames are then
/// taken with [`FrameBuffer::next_frame`].  The buffer never holds more than
/// one incomplete frame plus what the last read brought, because frames are
/// taken as soon as they are complete and a header declaring an oversized
/// payload is an error at once.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Take the next complete frame, if any.
    #[allow(clippy::should_implement_trait)]
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        match decode(&self.buf[self.start..])? {
            None => Ok(None),
            Some((_, used)) => {
                let at = self.start;
                self.start += used;
                // Decode again from the stable slice so the frame borrows
                // `self.buf` for the caller.
                Ok(decode(&self.buf[at..at + used])?.map(|(f, _)| f))
            }
        }
    }

    /// Bytes held that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Give up whatever is buffered and hand back the unparsed bytes.  Used
    /// when a session stops being framed (after INBOUND_TCP).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_frame() -> Vec<Frame<'static>> {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        let six: IpAddr = "2001:db8::53".parse().unwrap();
        vec![
            Frame::ClientHello,
            Frame::InboundUdp {
                addr: a,
                port: 53000,
                payload: b"\x12\x34query",
            },
            Frame::InboundTcp { addr: a, port: 1 },
            Frame::ClientHeartbeat,
            Frame::ServerHello,
            Frame::OutboundUdp {
                addr: a,
                port: 65535,
                payload: &[0xab; MAX_PAYLOAD],
            },
            Frame::InboundTcpOk,
            Frame::ServerHeartbeat,
            Frame::InboundUdp {
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port: 0,
                payload: b"",
            },
            Frame::InboundUdp {
                addr: six,
                port: 40000,
                payload: b"\x00\x01six",
            },
            Frame::InboundTcp {
                addr: six,
                port: 53,
            },
            Frame::OutboundUdp {
                addr: six,
                port: 40000,
                payload: b"answer",
            },
            Frame::ServerCapabilities {
                flags: capability::IPV6,
            },
        ]
    }

    #[test]
    fn every_frame_type_round_trips() {
        for f in every_frame() {
            let mut wire = Vec::new();
            f.encode(&mut wire);
            let (back, used) = decode(&wire).unwrap().unwrap();
            assert_eq!(back, f);
            assert_eq!(used, wire.len());
        }
    }

    #[test]
    fn address_travels_as_d_c_b_a() {
        let mut wire = Vec::new();
        Frame::InboundTcp {
            addr: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            port: 5353,
        }
        .encode(&mut wire);
        assert_eq!(
            wire,
            [3, 0, 0, 0, 3, 2, 1, 10, 0xe9, 0x14, 0, 0],
            "type 3, then 10.1.2.3 as bytes 03 02 01 0a, then port 5353 LE"
        );
    }

    #[test]
    fn ipv6_address_travels_in_network_order() {
        let mut wire = Vec::new();
        Frame::InboundTcp {
            addr: "2001:db8::1".parse().unwrap(),
            port: 53,
        }
        .encode(&mut wire);
        let mut want = vec![6, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8];
        want.extend_from_slice(&[0; 11]);
        want.extend_from_slice(&[1, 53, 0, 0, 0]);
        assert_eq!(wire, want);
        let mut caps = Vec::new();
        Frame::ServerCapabilities { flags: 1 }.encode(&mut caps);
        assert_eq!(caps, [0xed, 3, 0, 0, 1, 0, 0, 0], "type 1005, flags 1");
    }

    #[test]
    fn stream_cut_at_every_byte_boundary_decodes_the_same() {
        let frames = every_frame();
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        for cut in 0..=wire.len() {
            let mut fb = FrameBuffer::new();
            let mut got = Vec::new();
            for piece in [&wire[..cut], &wire[cut..]] {
                fb.extend(piece);
                while let Some(f) = fb.next_frame().unwrap() {
                    let mut re = Vec::new();
                    f.encode(&mut re);
                    got.push(re);
                }
            }
            let want: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| {
                    let mut v = Vec::new();
                    f.encode(&mut v);
                    v
                })
                .collect();
            assert_eq!(got, want, "cut at byte {cut}");
            assert_eq!(fb.pending(), 0);
        }
    }

    #[test]
    fn byte_at_a_time_decodes_the_same() {
        let mut wire = Vec::new();
        for f in every_frame() {
            f.encode(&mut wire);
        }
        let mut fb = FrameBuffer::new();
        let mut n = 0;
        for b in &wire {
            fb.extend(std::slice::from_ref(b));
            while fb.next_frame().unwrap().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, every_frame().len());
    }

    #[test]
    fn truncated_header_is_need_more_not_error() {
        for len in 0..BARE_LEN {
            assert_eq!(decode(&[1, 0, 0, 0][..len]), Ok(None));
        }
        for f in every_frame() {
            let mut wire = Vec::new();
            f.encode(&mut wire);
            for len in 0..wire.len() {
                assert_eq!(
                    decode(&wire[..len]),
                    Ok(None),
                    "{f:?}: prefix of {len} bytes"
                );
            }
        }
    }

    #[test]
    fn unknown_type_is_a_typed_error() {
        assert_eq!(decode(&[9, 0, 0, 0]), Err(FrameError::UnknownType(9)));
        assert_eq!(
            decode(&1007u32.to_le_bytes()),
            Err(FrameError::UnknownType(1007))
        );
    }

    #[test]
    fn oversized_length_is_rejected_from_the_header_alone() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (h, n) = udp_header(false, lo, 53, 1501);
        assert_eq!(
            decode(&h[..n]),
            Err(FrameError::Oversized {
                frame_type: frame_type::OUTBOUND_UDP,
                len: 1501
            })
        );
        let (h, n) = udp_header(true, lo, 53, u32::MAX as usize);
        assert!(matches!(decode(&h[..n]), Err(FrameError::Oversized { .. })));
        let (h, n) = udp_header(false, "::1".parse().unwrap(), 53, 1501);
        assert!(matches!(
            decode(&h[..n]),
            Err(FrameError::Oversized {
                frame_type: frame_type::OUTBOUND_UDP6,
                len: 1501
            })
        ));
    }

    #[test]
    fn port_beyond_16_bits_is_a_typed_error() {
        let (mut h, n) = udp_header(false, IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0);
        h[8..12].copy_from_slice(&70000u32.to_le_bytes());
        assert_eq!(
            decode(&h[..n]),
            Err(FrameError::BadPort {
                frame_type: frame_type::OUTBOUND_UDP,
                port: 70000
            })
        );
    }

    #[test]
    fn error_messages_keep_their_texts() {
        assert_eq!(
            FrameError::UnknownType(9).to_string(),
            "unknown frame type 9"
        );
        assert_eq!(
            FrameError::Oversized {
                frame_type: 1002,
                len: 1501
            }
            .to_string(),
            "frame type 1002 declares 1501 bytes (limit 1500)"
        );
        assert_eq!(
            FrameError::BadPort {
                frame_type: 2,
                port: 70000
            }
            .to_string(),
            "frame type 2 carries port 70000, beyond 65535"
        );
    }

    #[test]
    fn take_remaining_returns_bytes_after_the_last_frame() {
        let mut fb = FrameBuffer::new();
        let (h, n) = inbound_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
        let mut wire = h[..n].to_vec();
        wire.extend_from_slice(b"\x00\x1drest");
        fb.extend(&wire);
        assert!(matches!(
            fb.next_frame(),
            Ok(Some(Frame::InboundTcp { .. }))
        ));
        assert_eq!(fb.take_remaining(), b"\x00\x1drest");
    }
}
