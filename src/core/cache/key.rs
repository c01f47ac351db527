//! CACHE KEYS
//!
//! Which queries the packet cache may answer, and what must be the same for
//! two queries to share an answer.  A query is keyed only when it is a
//! plain QUERY with one question and nothing but an optional EDNS OPT record
//! beside it; anything else (another opcode, several questions, a record in
//! the answer or authority section, a TSIG or SIG(0) signature, an EDNS
//! Client Subnet option, a name that uses compression, a zone transfer)
//! bypasses the cache and goes to a backend as before.
//!
//! The key is a byte string, compared whole (never trusted to a hash alone):
//!
//! | bytes | what |
//! |---|---|
//! | 1 | RD, CD and AD of the header, whether there is EDNS, and its DO bit |
//! | 1 | the client's UDP size class: no EDNS (512), under 1232, under 4096, 4096 or more |
//! | 1 | the EDNS version |
//! | 4 | QTYPE, QCLASS |
//! | n | the name in wire form, ASCII letters folded to lower case |
//! | m | the EDNS options but COOKIE and PADDING, as sent |
//!
//! RD, CD and DO change what a backend answers (recursion, DNSSEC checking
//! and records), AD asks for the AD bit (RFC 6840 5.7), and an option such
//! as NSID asks for something in the answer, so each keys answers apart.
//! The size class keeps an answer made for a large buffer from a client
//! with a small one (and the cache also checks each answer's length against
//! the client's limit).  COOKIE is left out: its value differs per client
//! and per query, and the cache never stores a cookie (see
//! [`super::answer`]).  PADDING (RFC 7830) varies only in length.

/// The header's RD bit (in its third octet).
const RD: u8 = 0x01;
/// The header's AD and CD bits (in its fourth octet).
const AD: u8 = 0x20;
const CD: u8 = 0x10;

/// EDNS option codes the key treats apart.
pub(super) const OPTION_ECS: u16 = 8;
pub(super) const OPTION_COOKIE: u16 = 10;
const OPTION_PADDING: u16 = 12;

/// The OPT pseudo-record's type.
pub(super) const TYPE_OPT: u16 = 41;

/// Zone transfers (RFC 1995, RFC 5936), never cached.
const QTYPE_IXFR: u16 = 251;
const QTYPE_AXFR: u16 = 252;

/// The largest UDP answer to a client that sent no EDNS (RFC 1035).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// What the key reader learned of a keyed query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed {
    /// Where the question's name ends (it starts right after the header).
    pub name_end: usize,
    /// The largest UDP answer the client takes.
    pub udp_limit: usize,
}

/// Why a query bypasses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Not a QUERY, or not one question, or records beside the question
    /// other than one OPT.
    Shape,
    /// A name that uses compression, or a message that does not parse.
    Malformed,
    /// An EDNS Client Subnet option: the answer depends on who asks.
    ClientSubnet,
    /// A signature (TSIG, SIG(0)) or another record where only OPT may be.
    Signed,
    /// A zone transfer (AXFR, IXFR): over TCP one query has many answers.
    Transfer,
}

/// The fixed fields of a DNS header that the cache reads.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    /// The third octet: QR, opcode, AA, TC, RD.
    pub flags: u8,
    /// The fourth octet: RA, Z, AD, CD, RCODE.
    pub flags2: u8,
    pub questions: u16,
    pub answers: u16,
    pub authority: u16,
    pub additional: u16,
}

impl Header {
    /// The header of `msg`, if it has one.
    pub(super) fn of(msg: &[u8]) -> Option<Header> {
        let count = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]));
        Some(Header {
            flags: *msg.get(2)?,
            flags2: *msg.get(3)?,
            questions: count(4)?,
            answers: count(6)?,
            authority: count(8)?,
            additional: count(10)?,
        })
    }

    pub(super) fn opcode(&self) -> u8 {
        (self.flags >> 3) & 0x0f
    }

    /// Records after the question section.
    pub(super) fn records(&self) -> u32 {
        u32::from(self.answers) + u32::from(self.authority) + u32::from(self.additional)
    }
}

/// Write the cache key of `query` into `key` (cleared first).
pub fn key_of(query: &[u8], key: &mut Vec<u8>) -> Result<Keyed, Bypass> {
    key.clear();
    let h = Header::of(query).ok_or(Bypass::Malformed)?;
    let (flags, flags2, additional) = (h.flags, h.flags2, h.additional);
    let counts = [h.questions, h.answers, h.authority];
    if h.opcode() != 0 || counts != [1, 0, 0] || additional > 1 {
        return Err(Bypass::Shape);
    }
    // Room for the fixed part; filled in once the OPT record is read.
    key.extend_from_slice(&[0; 7]);
    let name_end = lowered_name(query, key).ok_or(Bypass::Malformed)?;
    let question = query.get(name_end..name_end + 4).ok_or(Bypass::Malformed)?;
    if matches!(
        u16::from_be_bytes([question[0], question[1]]),
        QTYPE_IXFR | QTYPE_AXFR
    ) {
        return Err(Bypass::Transfer);
    }
    key[3..7].copy_from_slice(question);
    let mut bits = flags & RD;
    bits |= flags2 & (AD | CD);
    let mut udp_limit = CLASSIC_UDP_LIMIT;
    let (mut class, mut version) = (0u8, 0u8);
    let at = name_end + 4;
    if additional == 1 {
        let opt = read_opt(query, at)?;
        bits |= 0x40 | if opt.dnssec_ok { 0x80 } else { 0 };
        version = opt.version;
        udp_limit = usize::from(opt.udp_size).max(CLASSIC_UDP_LIMIT);
        class = match opt.udp_size {
            0..1232 => 1,
            1232..4096 => 2,
            _ => 3,
        };
        for (code, data) in Options(opt.rdata) {
            match code {
                OPTION_ECS => return Err(Bypass::ClientSubnet),
                OPTION_COOKIE | OPTION_PADDING => {}
                _ => {
                    key.extend_from_slice(&code.to_be_bytes());
                    key.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    key.extend_from_slice(data);
                }
            }
        }
    } else if at != query.len() {
        return Err(Bypass::Malformed);
    }
    key[0] = bits;
    key[1] = class;
    key[2] = version;
    Ok(Keyed {
        name_end,
        udp_limit,
    })
}

/// Append the question's name at offset 12, lower-cased, to `key`; return
/// where it ends.  `None` for a pointer or a label type other than 00.
fn lowered_name(msg: &[u8], key: &mut Vec<u8>) -> Option<usize> {
    let mut at = 12;
    loop {
        let len = *msg.get(at)?;
        if len & 0xc0 != 0 {
            return None;
        }
        let end = at + 1 + usize::from(len);
        let label = msg.get(at..end)?;
        key.extend(label.iter().map(u8::to_ascii_lowercase));
        at = end;
        if len == 0 {
            return (at - 12 <= 255).then_some(at);
        }
    }
}

/// An OPT record's fields.
#[derive(Debug)]
pub(super) struct Opt<'a> {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// The extended RCODE's upper eight bits.
    pub extended_rcode: u8,
    pub rdata: &'a [u8],
}

/// The OPT record at `at`, which must be the last thing in `query`.
fn read_opt(query: &[u8], at: usize) -> Result<Opt<'_>, Bypass> {
    // Root name (one zero octet), then the fixed fields.
    let f = query.get(at..at + 11).ok_or(Bypass::Malformed)?;
    if f[0] != 0 || u16::from_be_bytes([f[1], f[2]]) != TYPE_OPT {
        return Err(Bypass::Signed);
    }
    let rdlen = usize::from(u16::from_be_bytes([f[9], f[10]]));
    let rdata = query
        .get(at + 11..at + 11 + rdlen)
        .ok_or(Bypass::Malformed)?;
    if at + 11 + rdlen != query.len() {
        return Err(Bypass::Malformed);
    }
    Ok(opt_fields(&f[1..], rdata))
}

/// The fields of an OPT record from its fixed part (`f`: type, class,
/// TTL, RDLENGTH) and its RDATA.
pub(super) fn opt_fields<'a>(f: &[u8], rdata: &'a [u8]) -> Opt<'a> {
    Opt {
        udp_size: u16::from_be_bytes([f[2], f[3]]),
        extended_rcode: f[4],
        version: f[5],
        dnssec_ok: f[6] & 0x80 != 0,
        rdata,
    }
}

/// The options in an OPT record's RDATA: (code, data) pairs, up to the
/// first that does not fit.
pub(super) struct Options<'a>(pub &'a [u8]);

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let [c0, c1, l0, l1, ..] = *self.0 else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let data = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some((u16::from_be_bytes([c0, c1]), data))
    }
}

/// Whether `options` (an OPT's RDATA) lists exactly as many bytes as it
/// holds.
pub(super) fn options_fit(options: &[u8]) -> bool {
    let mut rest = options;
    while let [_, _, l0, l1, ..] = *rest {
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        match rest.get(4 + len..) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (dotted, no trailing dot) type A with header
    /// flags `f2`/`f3` and an optional OPT (size, DO, options).
    pub(crate) fn query(name: &str, f2: u8, f3: u8, opt: Option<(u16, bool, &[u8])>) -> Vec<u8> {
        let mut q = vec![
            0x12,
            0x34,
            f2,
            f3,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(opt.is_some()),
        ];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if let Some((size, dnssec_ok, options)) = opt {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
            q.extend_from_slice(&(options.len() as u16).to_be_bytes());
            q.extend_from_slice(options);
        }
        q
    }

    fn key(q: &[u8]) -> Result<Vec<u8>, Bypass> {
        let mut k = Vec::new();
        key_of(q, &mut k).map(|_| k)
    }

    #[test]
    fn case_folds_the_name_only() {
        let a = key(&query("WwW.Example.COM", 1, 0, None));
        assert_eq!(a, key(&query("www.example.com", 1, 0, None)));
        assert_ne!(a, key(&query("www.example.org", 1, 0, None)));
    }

    #[test]
    fn bits_and_buffer_classes_key_apart() {
        let plain = key(&query("a.example", 1, 0, None)).unwrap_or_default();
        for other in [
            query("a.example", 0, 0, None),                     // RD clear
            query("a.example", 1, CD, None),                    // CD
            query("a.example", 1, AD, None),                    // AD
            query("a.example", 1, 0, Some((1232, false, &[]))), // EDNS
            query("a.example", 1, 0, Some((1232, true, &[]))),  // DO
            query("a.example", 1, 0, Some((512, false, &[]))),  // small buffer
            query("a.example", 1, 0, Some((4096, false, &[]))), // large buffer
            query("a.example", 1, 0, Some((1232, false, &[0, 3, 0, 0]))), // NSID
        ] {
            assert_ne!(key(&other).unwrap_or_default(), plain, "{other:?}");
        }
        // Sizes within one class share a key; cookies and padding do not count.
        assert_eq!(
            key(&query("a.example", 1, 0, Some((1400, false, &[])))),
            key(&query(
                "a.example",
                1,
                0,
                Some((
                    1232,
                    false,
                    &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 12, 0, 1, 0]
                ))
            ))
        );
    }

    #[test]
    fn limits_follow_the_client_buffer() {
        let mut k = Vec::new();
        let q = query("a.example", 1, 0, None);
        assert_eq!(key_of(&q, &mut k).map(|k| k.udp_limit), Ok(512));
        let q = query("a.example", 1, 0, Some((100, false, &[])));
        assert_eq!(key_of(&q, &mut k).map(|k| k.udp_limit), Ok(512));
        let q = query("a.example", 1, 0, Some((1400, false, &[])));
        assert_eq!(key_of(&q, &mut k).map(|k| k.udp_limit), Ok(1400));
        assert_eq!(key_of(&q, &mut k).map(|k| k.name_end), Ok(12 + 11));
    }

    #[test]
    fn what_bypasses() {
        let ecs = [0, 8, 0, 4, 0, 1, 0, 0];
        assert_eq!(
            key(&query("a.example", 1, 0, Some((1232, false, &ecs)))),
            Err(Bypass::ClientSubnet)
        );
        let mut notify = query("a.example", 1, 0, None);
        notify[2] |= 4 << 3;
        assert_eq!(key(&notify), Err(Bypass::Shape));
        let mut two = query("a.example", 1, 0, None);
        two[5] = 2;
        assert_eq!(key(&two), Err(Bypass::Shape));
        let mut tsig = query("a.example", 1, 0, Some((1232, false, &[])));
        let at = tsig.len() - 10;
        tsig[at] = 250;
        assert_eq!(key(&tsig), Err(Bypass::Signed));
        let mut trailing = query("a.example", 1, 0, None);
        trailing.push(0);
        assert_eq!(key(&trailing), Err(Bypass::Malformed));
        let mut pointer = query("a.example", 1, 0, None);
        pointer[12] = 0xc0;
        assert_eq!(key(&pointer), Err(Bypass::Malformed));
        assert_eq!(key(&[0; 5]), Err(Bypass::Malformed));
        for transfer in [251u8, 252] {
            let mut q = query("a.example", 1, 0, None);
            let at = q.len() - 3;
            q[at] = transfer;
            assert_eq!(key(&q), Err(Bypass::Transfer));
        }
    }
}
