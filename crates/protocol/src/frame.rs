//! What a frame is: [`Frame`], one decoded frame of either direction, and
//! [`FrameError`], why bytes are not one.  Writing a frame is in
//! [`crate::encode`], reading one in [`crate::decode()`].

use std::net::IpAddr;

use crate::MAX_PAYLOAD;

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
        /// The [`capability`](crate::capability) bits the backend sets.
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
        use crate::frame_type::*;
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
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::capability;

    /// One frame of every type, both address families, the extreme ports
    /// and payload sizes: what the codec's tests encode and decode.
    pub(crate) fn every_frame() -> Vec<Frame<'static>> {
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
}
