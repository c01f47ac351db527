//! DEMO ZONE
//!
//! The answering code of the demo backend (and of tests and benchmarks): a
//! tiny built-in zone, so a newcomer can put the balancer in front of
//! something real and `dig` it at once.
//!
//! For zone `example.com` it answers:
//! - `A example.com`, `A www.example.com` -> 192.0.2.1; `A aN.example.com`
//!   -> 192.0.2.N (N in 1..=254); `A hN.example.com` -> 10.x.y.z, N's
//!   three low octets (N in 0..=99999: a large set of names, for cache
//!   benchmarks);
//! - `TXT whoami.example.com` -> the backend's name, so anyone can see which
//!   backend served them;
//! - `TXT client.example.com` -> "IP PORT" of the client as the backend saw
//!   it (the balancer passes the real client address on);
//! - `TXT big.example.com` -> about 4 KB of TXT records, too big for UDP, so
//!   the UDP answer is truncated (TC set) and the client retries over TCP;
//! - `TXT mid.example.com` -> about 1,250 bytes of TXT records: whole to a
//!   client with an EDNS buffer of 1,400, truncated below that;
//! - any other name in the zone: NXDOMAIN; outside it: REFUSED.  A name
//!   that exists without the type asked for gets NOERROR and no answer
//!   (NODATA).  Both negative answers carry the zone's SOA in the authority
//!   section (TTL 60, MINIMUM 30), so a cache keeps them 30 s (RFC 2308).
//!
//! And it answers as the RFCs ask, since it is the reference for anyone
//! writing a backend with this library: CD is copied into every answer
//! (RFC 4035 3.1.6), a query with EDNS version above 0 gets BADVERS with an
//! OPT of version 0 (RFC 6891 6.1.3), a query that does not parse gets
//! FORMERR (RFC 1035 4.1.1) with its id, rather than silence, and so does a
//! QUERY with more than one question, or none (RFC 9619), except the one
//! that asks for a Server Cookie: no question and a COOKIE option, answered
//! NOERROR with a Server Cookie (RFC 7873 5.4; [`crate::cookies`]).  Every
//! answer to a query with a Client Cookie carries a Server Cookie, and a
//! COOKIE option of a length RFC 7873 does not allow gets FORMERR.

use std::net::{Ipv4Addr, SocketAddr};

use crate::cookies::{COOKIE_OPTION, CookieSecret, RequestCookie, now_secs};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// TTL of every demo record.
const TTL: u32 = 60;

/// The SOA's MINIMUM: how long a negative answer may be cached.
const NEGATIVE_TTL: u32 = 30;

/// Largest UDP answer without EDNS (RFC 1035).
const CLASSIC_UDP_MAX: usize = 512;

/// The zone and the name this backend answers `whoami` with.
#[derive(Debug, Clone)]
pub struct DemoZone {
    /// The zone's apex, fully qualified and lower case.
    pub origin: Name,
    /// What `TXT whoami.ZONE` answers.
    pub backend_name: String,
    /// Makes and checks Server Cookies.
    cookies: CookieSecret,
    /// The SOA's MINIMUM field: how long a negative answer may be cached
    /// (30 s unless a test sets it).
    pub soa_minimum: u32,
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
            cookies: CookieSecret::random(),
            soa_minimum: NEGATIVE_TTL,
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
        let mut cookie = None;
        let mut badvers = false;
        if let Some(edns) = &req.edns {
            let mut e = hickory_proto::op::Edns::new();
            e.set_max_payload(edns.max_payload().max(512));
            badvers = edns.version() > 0;
            let now = now_secs();
            if let Some(EdnsOption::Unknown(COOKIE_OPTION, data)) =
                edns.options().get(EdnsCode::Cookie)
            {
                let read = self.cookies.read(data, client.ip(), now);
                let client_cookie = match &read {
                    RequestCookie::ClientOnly(c)
                    | RequestCookie::Valid(c)
                    | RequestCookie::Invalid(c) => Some(*c),
                    RequestCookie::Malformed => None,
                };
                if let Some(c) = client_cookie {
                    let server = self.cookies.answer_option(&c, client.ip(), now);
                    e.options_mut()
                        .insert(EdnsOption::Unknown(COOKIE_OPTION, server));
                }
                cookie = Some(read);
            }
            resp.set_edns(e);
        }
        match (req.metadata.op_code, req.queries.first(), &cookie) {
            // RFC 6891 6.1.3: an EDNS version we do not speak.
            _ if badvers => {
                resp.metadata.response_code = ResponseCode::BADVERS;
                resp.metadata.authoritative = false;
            }
            // RFC 7873 5.2.2: a COOKIE option of a length not allowed.
            (_, _, Some(RequestCookie::Malformed)) => {
                resp.metadata.response_code = ResponseCode::FormErr;
                resp.metadata.authoritative = false;
            }
            // RFC 7873 5.4: a request for a Server Cookie.
            (OpCode::Query, None, Some(c)) => {
                resp.metadata.authoritative = false;
                if matches!(c, RequestCookie::Invalid(_)) {
                    resp.metadata.response_code = ResponseCode::BADCOOKIE;
                }
            }
            // RFC 9619: a QUERY has one question.  The questions are not
            // echoed: a message of many could make an answer too big.
            (OpCode::Query, _, _) if req.queries.len() != 1 => {
                resp.metadata.response_code = ResponseCode::FormErr;
                resp.metadata.authoritative = false;
                resp.queries.clear();
            }
            (OpCode::Query, Some(q), _) => {
                let name = q.name().to_lowercase();
                if !self.origin.zone_of(&name) {
                    resp.metadata.response_code = ResponseCode::Refused;
                    resp.metadata.authoritative = false;
                } else {
                    match self.records(&name, q.query_type(), client) {
                        Some(records) if !records.is_empty() => resp.answers = records,
                        Some(_) => resp.authorities = vec![self.soa()],
                        None => {
                            resp.metadata.response_code = ResponseCode::NXDomain;
                            resp.authorities = vec![self.soa()];
                        }
                    }
                }
            }
            _ => {
                resp.metadata.response_code = ResponseCode::NotImp;
                resp.metadata.authoritative = false;
            }
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
        let bytes = short.to_vec().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
        // Questions alone too big (many of them, in a message that is no
        // QUERY): the header says what happened.
        short.queries.clear();
        short.to_vec().ok()
    }

    /// The zone's SOA, for negative answers (RFC 2308 3).
    fn soa(&self) -> Record {
        let soa = SOA::new(
            self.label("ns"),
            self.label("hostmaster"),
            1,
            3600,
            600,
            86400,
            self.soa_minimum,
        );
        Record::from_rdata(self.origin.clone(), TTL, RData::SOA(soa))
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
        if *name == self.label("mid") {
            let records = (0..11)
                .flat_map(|i| txt(vec![format!("{i:02}-{}", "m".repeat(97))]))
                .collect();
            return want(RecordType::TXT, records);
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
        let one_label = name.num_labels() == self.origin.num_labels() + 1;
        if let Some(n) = host
            .strip_prefix('h')
            .filter(|n| !n.starts_with('+'))
            .and_then(|n| n.parse::<u32>().ok())
            && one_label
            && n <= 99_999
        {
            let [_, x, y, z] = n.to_be_bytes();
            return want(RecordType::A, a(Ipv4Addr::new(10, x, y, z)));
        }
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

    /// A query with EDNS and a COOKIE option `cookie`, and `questions`.
    fn with_cookie(cookie: Option<Vec<u8>>, questions: &[&str]) -> Vec<u8> {
        let mut q = Message::query();
        q.metadata.id = 79;
        for name in questions {
            q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        }
        let mut e = hickory_proto::op::Edns::new();
        if let Some(c) = cookie {
            e.options_mut()
                .insert(EdnsOption::Unknown(COOKIE_OPTION, c));
        }
        q.set_edns(e);
        q.to_vec().unwrap()
    }

    fn answer_cookie(a: &Message) -> Option<Vec<u8>> {
        match a.edns.as_ref()?.options().get(EdnsCode::Cookie)? {
            EdnsOption::Unknown(_, d) => Some(d.clone()),
            _ => None,
        }
    }

    #[test]
    fn cookies_as_rfc_7873_asks() {
        let z = DemoZone::new("example.com", "be1").unwrap();
        let client: SocketAddr = "10.1.2.3:5353".parse().unwrap();
        let ask =
            |m: &[u8]| Message::from_vec(&z.answer(m, client, Transport::Udp).unwrap()).unwrap();
        let cc = vec![1, 2, 3, 4, 5, 6, 7, 8];
        // 5.4: no question and a Client Cookie: NOERROR and a Server Cookie.
        let a = ask(&with_cookie(Some(cc.clone()), &[]));
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.queries.is_empty() && a.answers.is_empty());
        let full = answer_cookie(&a).expect("a COOKIE option");
        assert_eq!((&full[..8], full.len()), (&cc[..], 24));
        // With the Server Cookie we made: NOERROR; with one we did not:
        // BADCOOKIE, and a fresh one to use.
        let a = ask(&with_cookie(Some(full.clone()), &[]));
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        let mut forged = full.clone();
        forged[23] ^= 1;
        let a = ask(&with_cookie(Some(forged), &[]));
        assert_eq!(a.metadata.response_code, ResponseCode::BADCOOKIE);
        assert_eq!(answer_cookie(&a).map(|c| c.len()), Some(24));
        // An ordinary query with a Client Cookie gets its answer and a
        // Server Cookie.
        let a = ask(&with_cookie(Some(cc.clone()), &["www.example.com."]));
        assert_eq!(a.answers.len(), 1);
        assert_eq!(answer_cookie(&a).map(|c| c[..8].to_vec()), Some(cc.clone()));
        // A COOKIE option of a length not allowed: FORMERR (5.2.2).
        let a = ask(&with_cookie(Some(vec![1; 5]), &["www.example.com."]));
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        // RFC 9619: no question and no cookie, or two questions: FORMERR.
        let a = ask(&with_cookie(None, &[]));
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        let two = with_cookie(None, &["www.example.com.", "a1.example.com."]);
        assert_eq!(ask(&two).metadata.response_code, ResponseCode::FormErr);
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
