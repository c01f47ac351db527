//! Reading frames: [`decode`] takes the frame at the start of a buffer,
//! in two phases in the manner of mini-redis.  A buffer that holds only
//! part of a frame is `Ok(None)` ("need more"), never an error; a UDP
//! frame's declared length is checked against [`MAX_PAYLOAD`] as soon as
//! its header is visible, before anything waits for the payload.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::frame::{Frame, FrameError};
use crate::{BARE_LEN, CAPABILITIES_LEN, MAX_PAYLOAD};

/// The inverse of [`encode_addr`](crate::encode_addr).
pub fn decode_addr(bytes: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_le_bytes(bytes))
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
    use crate::frame_type::*;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::every_frame;
    use crate::{frame_type, udp_header};

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
}
