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

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};

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
    fn garbage_gets_no_answer() {
        assert_eq!(error_answer(b"nonsense", ResponseCode::ServFail), None);
    }
}
