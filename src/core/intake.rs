//! INTAKE
//!
//! What a datagram must be before it may cost a backend anything.  The
//! balancer reads the DNS header's fixed fields and walks the question
//! section of each client datagram (the rest of the message is
//! never parsed on this path) and drops, counting by reason:
//!
//! - anything shorter than a DNS header;
//! - a response (QR=1): forwarding responses to a name server invites loops
//!   and reflection games;
//! - a question section that does not parse.
//!
//! Every opcode is forwarded (node-mname answers NOTIFY, for one).  A
//! question count of zero is allowed (a DNS COOKIE-only query has none).
//!
//! The question is walked, not decoded: every query pays this check, and
//! hickory's `Query::read` builds a `Name` (copying and case-folding each
//! label) that intake would throw away.  The walk accepts exactly what
//! hickory accepts ([`check_with_hickory`] is the reference; a unit test and
//! the `intake` fuzz target hold the two to the same verdict on every
//! input): labels of at most 63 octets, the 01 and 10 label types refused,
//! compression pointers only to earlier octets and never overlapping, and a
//! name of at most 254 octets in labels and their lengths.

use hickory_proto::op::{Header, MessageType, Query};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// The fixed size of a DNS header.
pub const DNS_HEADER_LEN: usize = 12;

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Shorter than a DNS header.
    Short,
    /// A response (QR=1), not a query.
    Response,
    /// A question section that does not parse.
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
    // The header's fields are at fixed places: the id, the QR bit, and
    // the question count.
    let [id0, id1, flags, _, qd0, qd1, ..] = *datagram else {
        return Err(Refusal::Short);
    };
    if flags & 0x80 != 0 {
        return Err(Refusal::Response);
    }
    let mut at = DNS_HEADER_LEN;
    for _ in 0..u16::from_be_bytes([qd0, qd1]) {
        at = skip_question(datagram, at).ok_or(Refusal::BadQuestion)?;
    }
    Ok(u16::from_be_bytes([id0, id1]))
}

/// [`check`] through hickory's full decoding of each question: the
/// reference the question walk is held to.
#[doc(hidden)]
pub fn check_with_hickory(datagram: &[u8]) -> Result<u16, Refusal> {
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

/// Where the question at `at` ends (name, type, class), if it is whole.
pub(crate) fn skip_question(msg: &[u8], at: usize) -> Option<usize> {
    let after_name = skip_name(msg, at)?;
    let end = after_name.checked_add(4)?;
    (end <= msg.len()).then_some(end)
}

/// The resource record at `at`: where it ends, its type, class and TTL,
/// if it is whole.
pub(crate) fn skip_record(msg: &[u8], at: usize) -> Option<(usize, u16, u16, u32)> {
    let fixed = skip_name(msg, at)?;
    let f = msg.get(fixed..fixed.checked_add(10)?)?;
    let rtype = u16::from_be_bytes([f[0], f[1]]);
    let class = u16::from_be_bytes([f[2], f[3]]);
    let ttl = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
    let end = fixed + 10 + usize::from(u16::from_be_bytes([f[8], f[9]]));
    (end <= msg.len()).then_some((end, rtype, class, ttl))
}

/// Where the name at `at` ends in the message (after its root octet, or
/// after its first compression pointer), if it is a valid name.
pub(crate) fn skip_name(msg: &[u8], start: usize) -> Option<usize> {
    // Octets in labels plus one per label; hickory refuses 255 or more.
    let mut length = 0usize;
    let mut pos = start;
    // Where this stretch of the name began, and (after a pointer) the
    // octet it may not reach.
    let mut stretch = start;
    let mut limit: Option<usize> = None;
    let mut end = None;
    loop {
        if limit.is_some_and(|l| pos >= l) {
            return None;
        }
        let byte = *msg.get(pos)?;
        match byte & 0xc0 {
            0x00 if byte == 0 => return Some(end.unwrap_or(pos + 1)),
            0x00 => {
                let len = usize::from(byte);
                if pos + 1 + len > msg.len() {
                    return None;
                }
                length += len + 1;
                if length > 254 {
                    return None;
                }
                pos += 1 + len;
            }
            0xc0 => {
                let low = *msg.get(pos + 1)?;
                let target = usize::from(u16::from_be_bytes([byte & 0x3f, low]));
                if target >= stretch {
                    return None;
                }
                end.get_or_insert(pos + 2);
                limit = Some(stretch);
                stretch = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// A fingerprint of a message's first question (name, case folded; type;
/// class), 0 if it has none: enough to tell two queries that share a key
/// apart, or an answer from the query it answers.  FNV-1a: not a table
/// key, so nothing gains by aiming collisions at it.
pub fn question_fingerprint(msg: &[u8]) -> u64 {
    let has_question = msg.get(4..6).is_some_and(|c| c != [0, 0]);
    let Some(end) = has_question.then(|| skip_question(msg, 12)).flatten() else {
        return 0;
    };
    msg[12..end].iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
    })
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

    /// The walk and hickory's decoding agree on every message: crafted
    /// names near every limit, and many random mutations of them.
    #[test]
    fn the_question_walk_agrees_with_hickory() {
        let mut seeds: Vec<Vec<u8>> = vec![query(OpCode::Query)];
        let header = |qd: u8| vec![0xbe, 0xef, 1, 0, 0, qd, 0, 0, 0, 0, 0, 0];
        for labels in [
            (63, 3),
            (63, 4),
            (62, 4),
            (50, 5),
            (1, 127),
            (1, 128),
            (64, 1),
        ] {
            let mut m = header(1);
            for _ in 0..labels.1 {
                m.push(labels.0);
                m.extend(std::iter::repeat_n(b'a', usize::from(labels.0)));
            }
            m.extend([0, 0, 1, 0, 1]);
            seeds.push(m);
        }
        // Pointers: back to an earlier name, to itself, forward, chained.
        let mut two = query(OpCode::Query);
        two[5] = 2;
        two.extend([0xc0, 12, 0, 1, 0, 1]);
        seeds.push(two.clone());
        let mut chained = two.clone();
        chained[5] = 3;
        let second = two.len() - 6;
        chained.extend([1, b'x', 0xc0, second as u8, 0, 1, 0, 1]);
        seeds.push(chained);
        let mut own = header(1);
        own.extend([0xc0, 12, 0, 1, 0, 1]);
        seeds.push(own);
        let mut types = header(1);
        types.extend([0x40, 0, 0, 1, 0, 1]);
        seeds.push(types);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut checked = 0;
        for seed in &seeds {
            for _ in 0..3000 {
                let mut m = seed.clone();
                for _ in 0..1 + next() % 3 {
                    let i = (next() as usize) % m.len();
                    match next() % 4 {
                        0 => m[i] = next() as u8,
                        1 => m[i] = [0, 0xc0, 63, 64, 12, 1][(next() % 6) as usize],
                        2 => m.truncate(i.max(12)),
                        _ => m.insert(i, next() as u8),
                    }
                }
                assert_eq!(check(&m), check_with_hickory(&m), "{m:?}");
                checked += 1;
            }
            assert_eq!(check(seed), check_with_hickory(seed), "{seed:?}");
        }
        assert!(checked > 30_000);
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
