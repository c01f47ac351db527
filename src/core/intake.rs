//! INTAKE
//!
//! What a datagram must be before it may cost a backend anything.  The
//! balancer reads the DNS header and the question section of each client
//! datagram (with hickory-proto; the rest of the message is never parsed on
//! this path) and drops, counting by reason:
//!
//! - anything shorter than a DNS header;
//! - a response (QR=1): forwarding responses to a name server invites loops
//!   and reflection games;
//! - a question section that does not parse.
//!
//! Every opcode is forwarded (node-mname answers NOTIFY, for one).  A
//! question count of zero is allowed (a DNS COOKIE-only query has none).

use hickory_proto::op::{Header, MessageType, Query};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// The fixed size of a DNS header.
pub const DNS_HEADER_LEN: usize = 12;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Short,
    Response,
    BadQuestion,
}

impl Refusal {
    /// A stable name, for logs and counters.
    pub fn name(&self) -> &'static str {
        match self {
            Refusal::Short => "short",
            Refusal::Response => "response",
            Refusal::BadQuestion => "malformed",
        }
    }
}

/// Check a client datagram; on success return its DNS id.
pub fn check(datagram: &[u8]) -> Result<u16, Refusal> {
    if datagram.len() < DNS_HEADER_LEN {
        return Err(Refusal::Short);
    }
    let mut decoder = BinDecoder::new(datagram);
    let header = Header::read(&mut decoder).map_err(|_| Refusal::Short)?;
    if header.metadata.message_type == MessageType::Response {
        return Err(Refusal::Response);
    }
    for _ in 0..header.counts.queries {
        Query::read(&mut decoder).map_err(|_| Refusal::BadQuestion)?;
    }
    Ok(header.metadata.id)
}

/// The DNS id of a message (its first two bytes), if it has one.
pub fn dns_id(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.first()?, *message.get(1)?]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::{Name, RecordType};

    fn query(op: OpCode) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0xbeef;
        m.metadata.op_code = op;
        m.add_query(Query::query(
            Name::from_ascii("www.example.com.").unwrap(),
            RecordType::A,
        ));
        m.to_vec().unwrap()
    }

    #[test]
    fn queries_pass_with_their_id() {
        assert_eq!(check(&query(OpCode::Query)), Ok(0xbeef));
        assert_eq!(
            check(&query(OpCode::Notify)),
            Ok(0xbeef),
            "NOTIFY is forwarded"
        );
        assert_eq!(check(&query(OpCode::Update)), Ok(0xbeef));
    }

    #[test]
    fn short_response_and_malformed_are_refused() {
        assert_eq!(check(&[0u8; 11]), Err(Refusal::Short));
        assert_eq!(check(b""), Err(Refusal::Short));
        let mut r = query(OpCode::Query);
        r[2] |= 0x80;
        assert_eq!(check(&r), Err(Refusal::Response));
        let q = query(OpCode::Query);
        assert_eq!(
            check(&q[..q.len() - 3]),
            Err(Refusal::BadQuestion),
            "cut question"
        );
        let mut lying = q.clone();
        lying[5] = 2; // two questions, one present
        assert_eq!(check(&lying), Err(Refusal::BadQuestion));
        let mut bad_label = q;
        bad_label[12] = 0xc0; // a compression pointer to itself
        bad_label[13] = 12;
        assert_eq!(check(&bad_label), Err(Refusal::BadQuestion));
    }

    #[test]
    fn header_only_query_is_allowed() {
        let mut h = query(OpCode::Query)[..12].to_vec();
        h[5] = 0;
        assert_eq!(check(&h), Ok(0xbeef));
        assert_eq!(dns_id(&h), Some(0xbeef));
        assert_eq!(dns_id(&[1]), None);
    }
}
