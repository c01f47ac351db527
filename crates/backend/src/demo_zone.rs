//! DEMO ZONE
//!
//! The answering code of the demo backend (and of tests and benchmarks): a
//! tiny built-in zone, so a newcomer can put the balancer in front of
//! something real and `dig` it at once.
//!
//! For zone `example.com` it answers:
//! - `A example.com`, `A www.example.com` -> 192.0.2.1; `A aN.example.com`
//!   -> 192.0.2.N (N in 1..=254);
//! - `TXT whoami.example.com` -> the backend's name, so anyone can see which
//!   backend served them;
//! - `TXT client.example.com` -> "IP PORT" of the client as the backend saw
//!   it (the balancer passes the real client address on);
//! - `TXT big.example.com` -> about 4 KB of TXT records, too big for UDP, so
//!   the UDP answer is truncated (TC set) and the client retries over TCP;
//! - any other name in the zone: NXDOMAIN; outside it: REFUSED.
//!
//! And it answers as the RFCs ask, since it is the reference for anyone
//! writing a backend with this library: CD is copied into every answer
//! (RFC 4035 3.1.6), a query with EDNS version above 0 gets BADVERS with an
//! OPT of version 0 (RFC 6891 6.1.3), and a query that does not parse gets
//! FORMERR (RFC 1035 4.1.1) with its id, rather than silence.

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// TTL of every demo record.
const TTL: u32 = 60;

/// Largest UDP answer without EDNS (RFC 1035).
const CLASSIC_UDP_MAX: usize = 512;

/// The zone and the name this backend answers `whoami` with.
#[derive(Debug, Clone)]
pub struct DemoZone {
    /// The zone's apex, fully qualified and lower case.
    pub origin: Name,
    /// What `TXT whoami.ZONE` answers.
    pub backend_name: String,
}

/// Which transport a query came over: UDP answers are truncated to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Over UDP: an answer too big for the client is truncated (TC set).
    Udp,
    /// Over TCP: answers go whole, up to 65535 bytes.
    Tcp,
}

impl DemoZone {
    /// The zone `origin` (`example.com`), answering `whoami` with
    /// `backend_name`.  Fails on a name that is not a valid domain name.
    pub fn new(origin: &str, backend_name: &str) -> Result<Self, String> {
        let mut origin = Name::from_ascii(origin).map_err(|e| format!("bad zone {origin}: {e}"))?;
        origin.set_fqdn(true);
        Ok(DemoZone {
            origin: origin.to_lowercase(),
            backend_name: backend_name.to_string(),
        })
    }

    fn label(&self, rel: &str) -> Name {
        Name::from_ascii(rel)
            .ok()
            .and_then(|n| n.append_domain(&self.origin).ok())
            .unwrap_or_else(|| self.origin.clone())
    }

    /// Answer the DNS message `query` from `client`.  `None` when the bytes
    /// are not a query at all (a response, or shorter than a header).
    pub fn answer(
        &self,
        query: &[u8],
        client: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let Ok(req) = Message::from_vec(query) else {
            return formerr(query);
        };
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        resp.metadata.authoritative = true;
        resp.queries = req.queries.clone();
        if let Some(edns) = &req.edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(edns.max_payload().max(512));
            resp.set_edns(e);
            if edns.version() > 0 {
                resp.metadata.response_code = ResponseCode::BADVERS;
                resp.metadata.authoritative = false;
                return resp.to_vec().ok();
            }
        }
        match (req.metadata.op_code, req.queries.first()) {
            (OpCode::Query, Some(q)) if req.queries.len() == 1 => {
                let name = q.name().to_lowercase();
                if !self.origin.zone_of(&name) {
                    resp.metadata.response_code = ResponseCode::Refused;
                    resp.metadata.authoritative = false;
                } else {
                    match self.records(&name, q.query_type(), client) {
                        Some(records) => resp.answers = records,
                        None => resp.metadata.response_code = ResponseCode::NXDomain,
                    }
                }
            }
            _ => resp.metadata.response_code = ResponseCode::NotImp,
        }
        let bytes = resp.to_vec().ok()?;
        let limit = match (&req.edns, transport) {
            (_, Transport::Tcp) => usize::from(u16::MAX),
            (Some(e), Transport::Udp) => usize::from(e.max_payload()).clamp(512, 1400),
            (None, Transport::Udp) => CLASSIC_UDP_MAX,
        };
        if bytes.len() <= limit {
            return Some(bytes);
        }
        let mut short = resp.truncate();
        short.answers.clear();
        short.to_vec().ok()
    }

    /// The records for `name`/`rtype`, `None` if the name does not exist.
    fn records(&self, name: &Name, rtype: RecordType, client: SocketAddr) -> Option<Vec<Record>> {
        let txt = |strings: Vec<String>| {
            vec![Record::from_rdata(
                name.clone(),
                TTL,
                RData::TXT(TXT::new(strings)),
            )]
        };
        let a = |ip: Ipv4Addr| vec![Record::from_rdata(name.clone(), TTL, RData::A(A(ip)))];
        let want = |t: RecordType, records: Vec<Record>| {
            Some(if rtype == t || rtype == RecordType::ANY {
                records
            } else {
                Vec::new()
            })
        };
        if *name == self.origin || *name == self.label("www") {
            return want(RecordType::A, a(Ipv4Addr::new(192, 0, 2, 1)));
        }
        if *name == self.label("whoami") {
            return want(RecordType::TXT, txt(vec![self.backend_name.clone()]));
        }
        if *name == self.label("client") {
            let seen = format!("{} {}", client.ip(), client.port());
            return want(RecordType::TXT, txt(vec![seen]));
        }
        if *name == self.label("big") {
            let strings = (0..40)
                .map(|i| format!("{i:02}-{}", "x".repeat(97)))
                .collect::<Vec<_>>();
            let records = strings.into_iter().flat_map(|s| txt(vec![s])).collect();
            return want(RecordType::TXT, records);
        }
        let first = name.iter().next()?;
        let host = std::str::from_utf8(first).ok()?;
        let numbered = host.strip_prefix('a').and_then(|n| n.parse::<u8>().ok());
        if let Some(n) = numbered
            && name.num_labels() == self.origin.num_labels() + 1
            && (1..=254).contains(&n)
        {
            return want(RecordType::A, a(Ipv4Addr::new(192, 0, 2, n)));
        }
        None
    }
}

/// FORMERR to a query that does not parse: its id, opcode, RD and CD, and
/// nothing else.  `None` for a response or less than a header.
fn formerr(query: &[u8]) -> Option<Vec<u8>> {
    let [id0, id1, f2, f3, _, _, _, _, _, _, _, _, ..] = *query else {
        return None;
    };
    if f2 & 0x80 != 0 {
        return None;
    }
    Some(vec![
        id0,
        id1,
        0x80 | (f2 & 0x79),
        (f3 & 0x10) | 1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn ask(zone: &DemoZone, name: &str, t: RecordType, tr: Transport) -> Message {
        let mut q = Message::query();
        q.metadata.id = 77;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let client: SocketAddr = "10.1.2.3:5353".parse().unwrap();
        Message::from_vec(&zone.answer(&q.to_vec().unwrap(), client, tr).unwrap()).unwrap()
    }

    #[test]
    fn answers_the_demo_names() {
        let z = DemoZone::new("example.com", "be1").unwrap();
        let r = ask(&z, "www.example.com.", RecordType::A, Transport::Udp);
        assert_eq!(r.metadata.id, 77);
        assert_eq!(r.answers.len(), 1);
        let r = ask(&z, "whoami.example.com.", RecordType::TXT, Transport::Udp);
        assert_eq!(r.answers[0].data.to_string(), "be1");
        let r = ask(&z, "client.example.com.", RecordType::TXT, Transport::Udp);
        assert_eq!(r.answers[0].data.to_string(), "10.1.2.3 5353");
        let r = ask(&z, "a7.example.com.", RecordType::A, Transport::Udp);
        assert_eq!(r.answers[0].data.to_string(), "192.0.2.7");
        let r = ask(&z, "nope.example.com.", RecordType::A, Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = ask(&z, "example.org.", RecordType::A, Transport::Udp);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn answers_as_the_rfcs_ask() {
        let z = DemoZone::new("example.com", "be1").unwrap();
        let client: SocketAddr = "10.1.2.3:5353".parse().unwrap();
        let mut q = Message::query();
        q.metadata.id = 78;
        q.metadata.checking_disabled = true;
        q.add_query(Query::query(
            Name::from_ascii("www.example.com.").unwrap(),
            RecordType::A,
        ));
        let a = Message::from_vec(
            &z.answer(&q.to_vec().unwrap(), client, Transport::Udp)
                .unwrap(),
        )
        .unwrap();
        assert!(a.metadata.checking_disabled, "CD copied");

        let mut e = hickory_proto::op::Edns::new();
        e.set_version(1);
        q.set_edns(e);
        let a = Message::from_vec(
            &z.answer(&q.to_vec().unwrap(), client, Transport::Udp)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(u16::from(a.metadata.response_code), 16, "BADVERS");
        assert_eq!(a.edns.expect("OPT").version(), 0);
        assert!(a.answers.is_empty());

        let mut bad = q.to_vec().unwrap();
        bad[12] = 64; // a label too long
        let a = Message::from_vec(&z.answer(&bad, client, Transport::Udp).unwrap()).unwrap();
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(a.metadata.id, 78);
        assert!(a.metadata.checking_disabled);
        assert_eq!(z.answer(&bad[..11], client, Transport::Udp), None);
    }

    #[test]
    fn big_answer_is_truncated_over_udp_only() {
        let z = DemoZone::new("example.com", "be1").unwrap();
        let r = ask(&z, "big.example.com.", RecordType::TXT, Transport::Udp);
        assert!(r.metadata.truncation);
        assert!(r.answers.is_empty());
        let r = ask(&z, "big.example.com.", RecordType::TXT, Transport::Tcp);
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 40);
    }
}
