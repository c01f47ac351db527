//! SYNTHESIZED ANSWERS
//!
//! When the balancer cannot get a backend's answer to a client, it answers
//! itself rather than leave the client to wait out its own timeout: SERVFAIL
//! when a query timed out, and SERVFAIL (or REFUSED, by policy) when no
//! backend is up.  The answer is built from the client's query: same id,
//! opcode and question, QR set, RD and CD copied, and an EDNS OPT record when
//! the query had one (the client's UDP size, its DO bit, no options), as a
//! resolver expects of a server that failed.
//!
//! This runs only on the failure path, so it parses the whole query with
//! hickory-proto and builds the answer with it.
//!
//! Two answers stand in for what a backend would have said to a query the
//! balancer cannot forward, and are built from the query's bytes (hickory
//! cannot decode either query): a query too large for a frame gets TC=1
//! with its question and EDNS OPT echoed ([`oversized_answer`]), so the
//! client asks again over TCP, where it is relayed; a query whose question
//! does not parse gets FORMERR ([`formerr_answer`]), as RFC 1035 4.1.1
//! says, rather than the silence RFC 8906 asks servers not to keep.

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};

use super::intake::{self, DNS_HEADER_LEN};

/// The OPT pseudo-record's type.
const OPT: u16 = 41;

/// The answer header for `query`'s: same id, QR set, opcode, RD and CD
/// copied, with `flags` (TC) and `rcode` added, and the section counts.
fn answer_header(query: &[u8], tc: bool, rcode: u8, qd: u16, ar: u16) -> Option<[u8; 12]> {
    let [id0, id1, f2, f3, ..] = *query else {
        return None;
    };
    if f2 & 0x80 != 0 {
        return None;
    }
    let flags2 = 0x80 | (f2 & 0x79) | if tc { 0x02 } else { 0 };
    let flags3 = (f3 & 0x10) | (rcode & 0x0f);
    let [q0, q1] = qd.to_be_bytes();
    let [a0, a1] = ar.to_be_bytes();
    Some([id0, id1, flags2, flags3, q0, q1, 0, 0, 0, 0, a0, a1])
}

/// TC=1 to a query too large for a frame (`query` is as much of it as was
/// received): its header's id and flags, its question as the client spelled
/// it, and an OPT record when it had one (its UDP size, at least 512, and
/// its DO bit).  `None` if not even its question can be read.
pub fn oversized_answer(query: &[u8]) -> Option<Vec<u8>> {
    let count = |i: usize| Some(u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]));
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    let mut at = DNS_HEADER_LEN;
    for _ in 0..qd {
        at = intake::skip_question(query, at)?;
    }
    let question_end = at;
    // The OPT record, if it lies within what was received.
    let mut opt = None;
    for i in 0..u32::from(an) + u32::from(ns) + u32::from(ar) {
        let Some((end, rtype, class, ttl)) = intake::skip_record(query, at) else {
            break;
        };
        if i >= u32::from(an) + u32::from(ns) && rtype == OPT {
            opt = Some((class.max(512), ttl & 0x8000));
            break;
        }
        at = end;
    }
    let header = answer_header(query, true, 0, qd, u16::from(opt.is_some()))?;
    let mut a = header.to_vec();
    a.extend_from_slice(query.get(DNS_HEADER_LEN..question_end)?);
    if let Some((size, dnssec_ok)) = opt {
        a.extend_from_slice(&[0, 0, 41]);
        a.extend_from_slice(&size.to_be_bytes());
        a.extend_from_slice(&[0, 0]);
        a.extend_from_slice(&(dnssec_ok as u16).to_be_bytes());
        a.extend_from_slice(&[0, 0]);
    }
    Some(a)
}

/// FORMERR to a query whose question does not parse: its id, opcode, RD
/// and CD, and nothing else (the question cannot be echoed).  `None` for a
/// response or anything shorter than a header.
pub fn formerr_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < DNS_HEADER_LEN {
        return None;
    }
    Some(answer_header(query, false, 1, 0, 0)?.to_vec())
}

/// An empty answer to `query` with TC=1 (NOERROR, question echoed): "ask
/// again over TCP".  What a rate-limited client gets now and then
/// (`--rate-limit-slip`), so a real resolver retries over TCP, where its
/// address is proven, while a spoofed victim gets nothing larger than the
/// query.
pub fn truncated_answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut a = Message::from_vec(&error_answer(query, ResponseCode::NoError)?).ok()?;
    a.metadata.truncation = true;
    a.to_vec().ok()
}

/// An answer to `query` that carries only `rcode`.  `None` if the query does
/// not parse (intake lets through only queries whose question parses, but
/// the rest of the message may still be broken).
pub fn error_answer(query: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut a = Message::response(q.metadata.id, q.metadata.op_code);
    a.metadata.recursion_desired = q.metadata.recursion_desired;
    a.metadata.checking_disabled = q.metadata.checking_disabled;
    a.metadata.response_code = rcode;
    a.queries = q.queries;
    if let Some(their) = &q.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(their.max_payload().max(512));
        edns.set_dnssec_ok(their.flags().dnssec_ok);
        a.set_edns(edns);
    }
    a.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    fn query(edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4321;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(
            Name::from_ascii("x.example.com.").unwrap(),
            RecordType::AAAA,
        ));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232).set_dnssec_ok(true);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn servfail_keeps_id_question_and_flags() {
        let a = Message::from_vec(&error_answer(&query(false), ResponseCode::ServFail).unwrap())
            .unwrap();
        assert_eq!(a.metadata.id, 4321);
        assert_eq!(a.metadata.message_type, MessageType::Response);
        assert_eq!(a.metadata.op_code, OpCode::Query);
        assert_eq!(a.metadata.response_code, ResponseCode::ServFail);
        assert!(a.metadata.recursion_desired);
        assert!(!a.metadata.authoritative);
        assert_eq!(a.queries, Message::from_vec(&query(false)).unwrap().queries);
        assert!(a.answers.is_empty() && a.edns.is_none());
    }

    #[test]
    fn truncated_answer_sets_tc_and_nothing_else() {
        let a = Message::from_vec(&truncated_answer(&query(false)).unwrap()).unwrap();
        assert!(a.metadata.truncation);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a.metadata.id, 4321);
        assert!(a.answers.is_empty());
    }

    #[test]
    fn edns_is_echoed() {
        let a =
            Message::from_vec(&error_answer(&query(true), ResponseCode::Refused).unwrap()).unwrap();
        assert_eq!(a.metadata.response_code, ResponseCode::Refused);
        let e = a.edns.expect("OPT echoed");
        assert_eq!(e.max_payload(), 1232);
        assert!(e.flags().dnssec_ok);
    }

    #[test]
    fn an_oversized_query_gets_tc_with_its_question_and_opt() {
        let mut m = Message::query();
        m.metadata.id = 99;
        m.metadata.recursion_desired = true;
        m.metadata.checking_disabled = true;
        m.add_query(Query::query(
            Name::from_ascii("MiXeD.Example.com.").unwrap(),
            RecordType::TXT,
        ));
        let mut e = Edns::new();
        e.set_max_payload(4096).set_dnssec_ok(true);
        m.set_edns(e);
        let mut q = m.to_vec().unwrap();
        // Pad the OPT with an option (code 12, padding) to 1,800 bytes, then
        // keep only what a receiver would: all of it here.
        let pad = 1800 - q.len() - 4;
        let rdlen_at = q.len() - 2;
        q[rdlen_at..].copy_from_slice(&((pad + 4) as u16).to_be_bytes());
        q.extend_from_slice(&[0, 12]);
        q.extend_from_slice(&(pad as u16).to_be_bytes());
        q.extend(std::iter::repeat_n(0u8, pad));
        let a = Message::from_vec(&oversized_answer(&q).unwrap()).unwrap();
        assert!(a.metadata.truncation);
        assert_eq!(a.metadata.id, 99);
        assert_eq!(a.metadata.message_type, MessageType::Response);
        assert!(a.metadata.recursion_desired && a.metadata.checking_disabled);
        assert_eq!(
            a.queries[0].name().to_string(),
            "MiXeD.Example.com.",
            "0x20 kept"
        );
        let e = a.edns.expect("OPT echoed");
        assert_eq!(e.max_payload(), 4096);
        assert!(e.flags().dnssec_ok);
        assert!(e.options().as_ref().is_empty(), "no options");
        // Cut before the OPT: the answer has none.
        let cut = oversized_answer(&q[..q.len() - pad - 4 - 11]).unwrap();
        assert!(Message::from_vec(&cut).unwrap().edns.is_none());
    }

    #[test]
    fn formerr_keeps_the_id_and_flags_only() {
        let mut q = query(false);
        q[12] = 64; // a label too long: the question does not parse
        let a = Message::from_vec(&formerr_answer(&q).unwrap()).unwrap();
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(a.metadata.id, 4321);
        assert!(a.metadata.recursion_desired);
        assert!(a.queries.is_empty());
        let mut response = q.clone();
        response[2] |= 0x80;
        assert_eq!(formerr_answer(&response), None);
        assert_eq!(formerr_answer(&q[..11]), None);
    }

    #[test]
    fn garbage_gets_no_answer() {
        assert_eq!(error_answer(b"nonsense", ResponseCode::ServFail), None);
    }
}
