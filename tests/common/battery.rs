//! The transparency battery's messages and the ways to send them to a
//! backend directly (INBOUND_UDP frames on a control session, a TCP
//! session), shared by `tests/battery.rs` (the demo backend) and
//! `tests/interop.rs` (node-mname).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use mname_balancer_protocol::{Frame, FrameBuffer};

pub(crate) fn message(
    id: u16,
    name: &str,
    rtype: RecordType,
    edit: impl FnOnce(&mut Message),
) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    edit(&mut m);
    m.to_vec().unwrap()
}

pub(crate) fn edns(version: u8, dnssec_ok: bool, size: u16, options: Vec<EdnsOption>) -> Edns {
    let mut e = Edns::new();
    e.set_version(version)
        .set_dnssec_ok(dnssec_ok)
        .set_max_payload(size);
    for o in options {
        e.options_mut().insert(o);
    }
    e
}

/// A query padded with an EDNS padding option to `size` bytes.
pub(crate) fn padded(id: u16, size: usize) -> Vec<u8> {
    let mut q = message(id, "www.example.com.", RecordType::A, |m| {
        m.set_edns(edns(0, false, 4096, vec![]));
    });
    let pad = size - q.len() - 4;
    let at = q.len() - 2;
    q[at..].copy_from_slice(&((pad + 4) as u16).to_be_bytes());
    q.extend_from_slice(&[0, 12]);
    q.extend_from_slice(&(pad as u16).to_be_bytes());
    q.extend(std::iter::repeat_n(0u8, pad));
    q
}

/// The battery: (what, message).  Ids are distinct.
pub(crate) fn battery() -> Vec<(&'static str, Vec<u8>)> {
    let header = |id: u16, flags: u8, qd: u8| {
        vec![(id >> 8) as u8, id as u8, flags, 0, 0, qd, 0, 0, 0, 0, 0, 0]
    };
    let mut two = message(6, "www.example.com.", RecordType::A, |_| {});
    let q2 = two[12..].to_vec();
    two[5] = 2;
    two.extend_from_slice(&q2);
    let mut one_of_two = message(7, "www.example.com.", RecordType::A, |_| {});
    one_of_two[5] = 2;
    let mut cookie_only = header(8, 1, 0);
    cookie_only[11] = 1; // ARCOUNT 1: an OPT with a client cookie
    cookie_only.extend_from_slice(&[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8]);
    cookie_only.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let longest = format!(
        "{}.example.com.",
        [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(49)
        ]
        .join(".")
    );
    let mut long_label = header(12, 1, 1);
    long_label.push(64);
    long_label.extend([b'x'; 64]);
    long_label.extend([0, 0, 1, 0, 1]);
    vec![
        (
            "plain A",
            message(1, "www.example.com.", RecordType::A, |_| {}),
        ),
        (
            "EDNS, DO, 1232",
            message(2, "www.example.com.", RecordType::A, |m| {
                m.set_edns(edns(0, true, 1232, vec![]));
            }),
        ),
        (
            "EDNS version 1",
            message(3, "www.example.com.", RecordType::A, |m| {
                m.set_edns(edns(1, false, 1232, vec![]));
            }),
        ),
        (
            "EDNS unknown option",
            message(4, "www.example.com.", RecordType::A, |m| {
                m.set_edns(edns(
                    0,
                    false,
                    1232,
                    vec![EdnsOption::Unknown(65001, vec![1, 2, 3])],
                ));
            }),
        ),
        ("unknown opcode", {
            let mut q = message(5, "www.example.com.", RecordType::A, |_| {});
            q[2] = (q[2] & 0x87) | (3 << 3);
            q
        }),
        ("QDCOUNT 2", two),
        ("QDCOUNT 2, one question", one_of_two),
        ("COOKIE only, QDCOUNT 0", cookie_only),
        ("QDCOUNT 0, no OPT", header(9, 1, 0)),
        (
            "0x20 case",
            message(10, "WwW.eXaMpLe.CoM.", RecordType::A, |_| {}),
        ),
        ("longest name", message(11, &longest, RecordType::A, |_| {})),
        ("a 64-octet label", long_label),
        (
            "CD set",
            message(13, "www.example.com.", RecordType::A, |m| {
                m.metadata.checking_disabled = true;
            }),
        ),
        (
            "big answer, no EDNS",
            message(14, "big.example.com.", RecordType::TXT, |_| {}),
        ),
        (
            "big answer, EDNS 4096",
            message(15, "big.example.com.", RecordType::TXT, |m| {
                m.set_edns(edns(0, false, 4096, vec![]));
            }),
        ),
        ("512 bytes", padded(16, 512)),
        ("1232 bytes", padded(17, 1232)),
        ("1500 bytes", padded(18, 1500)),
        (
            "a client cookie",
            message(19, "www.example.com.", RecordType::A, |m| {
                m.set_edns(edns(
                    0,
                    false,
                    1232,
                    vec![EdnsOption::Unknown(u16::from(EdnsCode::Cookie), vec![9; 8])],
                ));
            }),
        ),
    ]
}

/// Send `msg` on `sock` to `to`; the first datagram back within `wait`.
pub(crate) async fn udp_exchange(
    sock: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    msg: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    sock.send_to(msg, to).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(wait, sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(without_server_cookie(buf))
}

/// `answer` with the Server Cookie of any COOKIE option zeroed: it is made
/// from the client's address and the time (RFC 9018), which differ between
/// asking a backend directly and through the balancer; the Client Cookie
/// and the option's length are kept, and compared.
pub(crate) fn without_server_cookie(mut answer: Vec<u8>) -> Vec<u8> {
    fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
        loop {
            let len = *m.get(at)?;
            if len == 0 {
                return Some(at + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            at += 1 + usize::from(len);
        }
    }
    let count = |m: &[u8], i: usize| usize::from(u16::from_be_bytes([m[i], m[i + 1]]));
    let Some(cookie) = (|| {
        let m = &answer;
        let mut at = 12;
        for _ in 0..count(m, 4) {
            at = skip_name(m, at)? + 4;
        }
        for _ in 0..count(m, 6) + count(m, 8) + count(m, 10) {
            let fixed = skip_name(m, at)?;
            let rtype = u16::from_be_bytes([*m.get(fixed)?, *m.get(fixed + 1)?]);
            let rdlen = usize::from(u16::from_be_bytes([*m.get(fixed + 8)?, *m.get(fixed + 9)?]));
            let rdata = fixed + 10;
            if rtype == 41 {
                let mut o = rdata;
                while o + 4 <= rdata + rdlen {
                    let code = u16::from_be_bytes([m[o], m[o + 1]]);
                    let len = usize::from(u16::from_be_bytes([m[o + 2], m[o + 3]]));
                    if code == 10 && len > 8 {
                        return Some((o + 4 + 8, o + 4 + len));
                    }
                    o += 4 + len;
                }
            }
            at = rdata + rdlen;
        }
        None
    })() else {
        return answer;
    };
    if let Some(server) = answer.get_mut(cookie.0..cookie.1) {
        server.fill(0);
    }
    answer
}

pub(crate) fn put(s: &mut UnixStream, f: Frame<'_>) {
    let mut b = Vec::new();
    f.encode(&mut b);
    s.write_all(&b).unwrap();
}

/// Each message's answer from the backend at `path`, sent in an
/// INBOUND_UDP frame as from 127.0.0.77:5353.
pub(crate) fn direct_udp(path: &Path, messages: &[(&str, Vec<u8>)]) -> Vec<Option<Vec<u8>>> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    put(&mut s, Frame::ClientHello);
    let mut buf = FrameBuffer::new();
    let mut chunk = [0u8; 65536];
    let mut next = |s: &mut UnixStream, buf: &mut FrameBuffer| -> Option<(u32, Vec<u8>)> {
        loop {
            if let Ok(Some(f)) = buf.next_frame() {
                let payload = match f {
                    Frame::OutboundUdp { payload, .. } => payload.to_vec(),
                    _ => Vec::new(),
                };
                return Some((f.frame_type(), payload));
            }
            let n = s.read(&mut chunk).ok().filter(|n| *n > 0)?;
            buf.extend(&chunk[..n]);
        }
    };
    assert!(next(&mut s, &mut buf).is_some(), "SERVER_HELLO");
    messages
        .iter()
        .map(|(_, m)| {
            put(
                &mut s,
                Frame::InboundUdp {
                    addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77)),
                    port: 5353,
                    payload: m,
                },
            );
            next(&mut s, &mut buf).map(|(_, p)| without_server_cookie(p))
        })
        .collect()
}

/// The DNS-over-TCP answers of a stream, by id.
pub(crate) fn answers_by_id(stream: &[u8]) -> std::collections::BTreeMap<u16, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = stream;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        let Some(m) = tail.get(..len) else { break };
        out.insert(
            u16::from_be_bytes([m[0], m[1]]),
            without_server_cookie(m.to_vec()),
        );
        rest = &tail[len..];
    }
    out
}

pub(crate) fn framed_all(messages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    messages
        .iter()
        .flat_map(|(_, m)| {
            let mut f = (m.len() as u16).to_be_bytes().to_vec();
            f.extend_from_slice(m);
            f
        })
        .collect()
}

/// A backend's TCP answers to every message, pipelined in one write.
pub(crate) fn direct_tcp(path: &Path, messages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    put(
        &mut s,
        Frame::InboundTcp {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77)),
            port: 5353,
        },
    );
    let mut ok = [0u8; 4];
    s.read_exact(&mut ok).unwrap();
    s.write_all(&framed_all(messages)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
    }
    got
}
