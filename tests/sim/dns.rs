//! DNS messages for the simulation: real queries (header and question, as
//! a resolver sends them), the malformed kinds intake must refuse, and a
//! backend's answer (the query echoed with QR set).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::rng::Rng;

/// The names clients ask for.
const NAMES: &[&str] = &["www.example.com", "a1.example.com", "whoami.example.com"];

/// A query for a name in the zone, with id `id`.
pub fn query(id: u16, rng: &mut Rng) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in rng.pick(NAMES).split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

/// What intake must refuse, by the counter that should count it.
#[derive(Debug, Clone, Copy)]
pub enum Bad {
    Short,
    Response,
    Malformed,
    Oversized,
}

/// A datagram of kind `bad`.
pub fn bad(bad: Bad, rng: &mut Rng) -> Vec<u8> {
    match bad {
        Bad::Short => (0..rng.below(12)).map(|_| rng.next() as u8).collect(),
        Bad::Response => {
            let mut m = query(rng.next() as u16, rng);
            m[2] |= 0x80;
            m
        }
        Bad::Malformed => {
            // QDCOUNT 2 with one question.
            let mut m = query(rng.next() as u16, rng);
            m[5] = 2;
            m
        }
        Bad::Oversized => {
            let mut m = query(rng.next() as u16, rng);
            m.resize(1501 + rng.below(1000) as usize, 0);
            m
        }
    }
}

/// The DNS id of a message.
pub fn id_of(m: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*m.first()?, *m.get(1)?]))
}

/// A backend's answer to `query`: the same message with QR set.
pub fn answer_to(query: &[u8]) -> Vec<u8> {
    let mut a = query.to_vec();
    if let Some(flags) = a.get_mut(2) {
        *flags |= 0x80;
    }
    a
}

/// One of the simulation's client hosts: a few dozen IPv4 and IPv6
/// addresses, so remotes repeat and are shared by many queries.
pub fn random_client(rng: &mut Rng) -> SocketAddr {
    let host = rng.below(40) as u8;
    let ip = if rng.chance(20) {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(host) + 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, host / 10, host % 10 + 1))
    };
    SocketAddr::new(ip, 1024 + rng.below(8) as u16)
}
