//! DNS messages for the simulation: real queries (header and question, as
//! a resolver sends them, names in random case as 0x20 does), the malformed
//! kinds intake must refuse, and a backend's answer (the query echoed with
//! QR set and one A record naming the backend, with a TTL per name, so
//! that the packet cache has answers to keep).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::rng::Rng;

/// The names clients ask for.
const NAMES: &[&str] = &["www.example.com", "a1.example.com", "whoami.example.com"];

/// A query for a name in the zone, with id `id`.
pub(crate) fn query(id: u16, rng: &mut Rng) -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in rng.pick(NAMES).split('.') {
        m.push(label.len() as u8);
        for &b in label.as_bytes() {
            m.push(if rng.chance(30) {
                b.to_ascii_uppercase()
            } else {
                b
            });
        }
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]);
    m
}

/// What intake must refuse, by the counter that should count it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bad {
    Short,
    Response,
    Malformed,
    Oversized,
}

/// A datagram of kind `bad`.
pub(crate) fn bad(bad: Bad, rng: &mut Rng) -> Vec<u8> {
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
pub(crate) fn id_of(m: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*m.first()?, *m.get(1)?]))
}

/// The TTL the backends give a name's answer: `www` 1 s, `a1` 3 s,
/// `whoami` 0 (never cached).
pub(crate) fn ttl_of(query: &[u8]) -> u32 {
    match query.get(12..16) {
        Some([3, w, _, _]) if w.eq_ignore_ascii_case(&b'w') => 1,
        Some([2, a, _, _]) if a.eq_ignore_ascii_case(&b'a') => 3,
        _ => 0,
    }
}

/// Backend `backend`'s answer to `query`: the same message with QR set
/// and, to a one-question query, an A record 10.0.X.Y naming the backend,
/// with the name's TTL ([`ttl_of`]).
pub(crate) fn answer_to(query: &[u8], backend: u32) -> Vec<u8> {
    let mut a = query.to_vec();
    if let Some(flags) = a.get_mut(2) {
        *flags |= 0x80;
    }
    if a.get(4..12) == Some(&[0, 1, 0, 0, 0, 0, 0, 0]) {
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        a.extend_from_slice(&ttl_of(query).to_be_bytes());
        let [_, _, hi, lo] = backend.to_be_bytes();
        a.extend_from_slice(&[0, 4, 10, 0, hi, lo]);
    }
    a
}

/// Where the question of a one-question message ends.
pub(crate) fn question_end(m: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = usize::from(*m.get(at)?);
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            return (at + 4 <= m.len()).then_some(at + 4);
        }
    }
}

/// One of the simulation's client hosts: a few dozen IPv4 and IPv6
/// addresses, so remotes repeat and are shared by many queries.
pub(crate) fn random_client(rng: &mut Rng) -> SocketAddr {
    let host = rng.below(40) as u8;
    let ip = if rng.chance(20) {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(host) + 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, host / 10, host % 10 + 1))
    };
    SocketAddr::new(ip, 1024 + rng.below(8) as u16)
}
