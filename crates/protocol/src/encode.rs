//! Writing frames: [`Frame::encode`] appends a whole frame to a buffer,
//! and the header writers ([`udp_header`], [`inbound_tcp`]) build a header
//! in a fixed array so that the relay can put it in front of a datagram
//! it already holds, without copying the payload twice.

use std::net::{IpAddr, Ipv4Addr};

use crate::frame::Frame;
use crate::{INBOUND_TCP6_LEN, UDP6_HEADER_LEN, frame_type};

impl Frame<'_> {
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
    use crate::frame_type::*;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
