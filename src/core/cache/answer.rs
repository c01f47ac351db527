//! CACHEABLE ANSWERS
//!
//! Which of a backend's answers the cache keeps, for how long, and how a
//! kept answer is given to the next client that asks.
//!
//! An answer is kept only when it answers the query it was matched to
//! (same question, case aside), is a whole QUERY answer (TC clear), says
//! NOERROR or NXDOMAIN (not SERVFAIL, REFUSED, FORMERR or any extended
//! RCODE such as BADCOOKIE), carries no EDNS Client Subnet option and no
//! signature, and parses to its last octet.
//!
//! How long: a positive answer for the smallest TTL of its records (the OPT
//! pseudo-record aside), at most `--cache-max-ttl`; a negative one
//! (NXDOMAIN, or NOERROR with no answer records) for the smaller of its
//! SOA's TTL and MINIMUM field (RFC 2308 5), at most
//! `--cache-max-negative-ttl`, and not at all without an SOA.  A TTL of 0
//! is not kept.
//!
//! A Server Cookie is made for one client (RFC 7873, RFC 9018), so the
//! COOKIE option is taken out of the OPT record of a kept answer; a client
//! that sent a cookie gets a cached answer without one, as from a server
//! that does not do cookies.  (When the OPT record is not the last record,
//! taking the option out could move names other records point at, so such
//! an answer with a cookie is not kept.)
//!
//! Served ([`render`]), the answer gets the client's id and its question as
//! the client spelled it (0x20 case), and every TTL less the entry's age in
//! whole seconds, or, served stale, `--stale-ttl` (RFC 8767 4).  A stale
//! answer to a client that sent EDNS also says it is stale: an Extended
//! DNS Error option, "Stale Answer" (3) or "Stale NXDOMAIN Answer" (19)
//! (RFC 8914), when it fits the client's buffer ([`mark_stale`]).

use super::key::{Header, OPTION_COOKIE, OPTION_ECS, Options, TYPE_OPT, opt_fields, options_fit};
use crate::core::intake::skip_name;

/// Record types that sign a message: an answer carrying one is not kept.
const TYPE_SIG: u16 = 24;
const TYPE_TSIG: u16 = 250;
const TYPE_SOA: u16 = 6;

/// RCODEs that are kept.
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

/// The TTL bounds, from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlLimits {
    /// `--cache-max-ttl`, seconds.
    pub max: u32,
    /// `--cache-max-negative-ttl`, seconds.
    pub max_negative: u32,
}

/// An answer fit to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The answer as it will be served (COOKIE option taken out).
    pub bytes: Vec<u8>,
    /// Where each record's TTL field lies in `bytes` (OPT's aside).
    pub ttl_offsets: Vec<u16>,
    /// How long it may be served, in seconds (at least 1).
    pub ttl: u32,
}

/// Why an answer is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKept {
    /// Does not parse, or answers another question.
    Malformed,
    /// TC set: the client is to ask again over TCP.
    Truncated,
    /// An RCODE other than NOERROR and NXDOMAIN.
    Rcode,
    /// Negative without an SOA to say for how long.
    NoSoa,
    /// A TTL of 0.
    ZeroTtl,
    /// An EDNS Client Subnet option, a signature, or a cookie that cannot
    /// be taken out.
    PerClient,
    /// Larger than `--cache-max-bytes` alone.
    TooLarge,
}

/// Decide whether `answer`, a backend's answer to `query` (whose question
/// name ends at `name_end`), is kept, and prepare it.
pub fn learn(
    query: &[u8],
    name_end: usize,
    answer: &[u8],
    limits: TtlLimits,
) -> Result<Learned, NotKept> {
    let h = Header::of(answer).ok_or(NotKept::Malformed)?;
    let (flags, flags2) = (h.flags, h.flags2);
    if flags & 0x80 == 0 || h.opcode() != 0 || h.questions != 1 {
        return Err(NotKept::Malformed);
    }
    if flags & 0x02 != 0 {
        return Err(NotKept::Truncated);
    }
    let rcode = flags2 & 0x0f;
    if rcode != NOERROR && rcode != NXDOMAIN {
        return Err(NotKept::Rcode);
    }
    // The question must be the query's, case aside (the name at 12 is never
    // compressed: nothing lies before it to point at).
    let question = query.get(12..name_end + 4).ok_or(NotKept::Malformed)?;
    let echoed = answer
        .get(12..12 + question.len())
        .ok_or(NotKept::Malformed)?;
    if !question.eq_ignore_ascii_case(echoed) {
        return Err(NotKept::Malformed);
    }
    let (answers, authority, total) = (h.answers, h.authority, h.records());
    let mut at = 12 + question.len();
    let mut ttl_offsets = Vec::new();
    let mut min_ttl = u32::MAX;
    let mut soa_ttl: Option<u32> = None;
    // The OPT record's RDLENGTH offset and RDATA, when it carries a cookie.
    let mut cookie_in: Option<(usize, usize, usize)> = None;
    for i in 0..total {
        let fixed = skip_name(answer, at).ok_or(NotKept::Malformed)?;
        let f = answer.get(fixed..fixed + 10).ok_or(NotKept::Malformed)?;
        let rtype = u16::from_be_bytes([f[0], f[1]]);
        let ttl = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
        let rdata_at = fixed + 10;
        let end = rdata_at + usize::from(u16::from_be_bytes([f[8], f[9]]));
        let rdata = answer.get(rdata_at..end).ok_or(NotKept::Malformed)?;
        match rtype {
            TYPE_OPT => {
                let opt = opt_fields(f, rdata);
                if opt.extended_rcode != 0 {
                    return Err(NotKept::Rcode);
                }
                if !options_fit(rdata) {
                    return Err(NotKept::Malformed);
                }
                for (code, _) in Options(rdata) {
                    match code {
                        OPTION_ECS => return Err(NotKept::PerClient),
                        OPTION_COOKIE => cookie_in = Some((fixed + 8, rdata_at, end)),
                        _ => {}
                    }
                }
            }
            TYPE_SIG | TYPE_TSIG => return Err(NotKept::PerClient),
            _ => {
                let offset = u16::try_from(fixed + 4).map_err(|_| NotKept::Malformed)?;
                ttl_offsets.push(offset);
                min_ttl = min_ttl.min(ttl);
                let in_authority =
                    i >= u32::from(answers) && i < u32::from(answers) + u32::from(authority);
                if rtype == TYPE_SOA && in_authority && rdata.len() >= 22 {
                    let m = &rdata[rdata.len() - 4..];
                    let minimum = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
                    soa_ttl = Some(ttl.min(minimum));
                }
            }
        }
        at = end;
    }
    if at != answer.len() {
        return Err(NotKept::Malformed);
    }
    let negative = rcode == NXDOMAIN || answers == 0;
    let ttl = if negative {
        soa_ttl.ok_or(NotKept::NoSoa)?.min(limits.max_negative)
    } else {
        min_ttl.min(limits.max)
    };
    if ttl == 0 {
        return Err(NotKept::ZeroTtl);
    }
    let bytes = match cookie_in {
        None => answer.to_vec(),
        Some((_, _, end)) if end != answer.len() => return Err(NotKept::PerClient),
        Some((rdlen_at, rdata_at, end)) => {
            let mut out = answer[..rdata_at].to_vec();
            for (code, data) in Options(&answer[rdata_at..end]) {
                if code != OPTION_COOKIE {
                    out.extend_from_slice(&code.to_be_bytes());
                    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    out.extend_from_slice(data);
                }
            }
            let rdlen = (out.len() - rdata_at) as u16;
            out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
            out
        }
    };
    Ok(Learned {
        bytes,
        ttl_offsets,
        ttl,
    })
}

/// Write the kept answer `stored` for `query` (its name ending at
/// `name_end`) into `out`: the query's id and question, and each TTL at
/// `ttl_offsets` replaced by `ttl(stored TTL)`.
pub fn render(
    stored: &[u8],
    ttl_offsets: &[u16],
    query: &[u8],
    name_end: usize,
    ttl: impl Fn(u32) -> u32,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(stored);
    if let (Some(id), Some(dst)) = (query.get(..2), out.get_mut(..2)) {
        dst.copy_from_slice(id);
    }
    // Same name case aside, so the same length (the key says so).
    if let (Some(name), Some(dst)) = (query.get(12..name_end), out.get_mut(12..name_end)) {
        dst.copy_from_slice(name);
    }
    for &at in ttl_offsets {
        let at = usize::from(at);
        if let Some(field) = out.get_mut(at..at + 4) {
            let old = u32::from_be_bytes([field[0], field[1], field[2], field[3]]);
            field.copy_from_slice(&ttl(old).to_be_bytes());
        }
    }
}

/// The Extended DNS Error option (RFC 8914 2).
const OPTION_EDE: u16 = 15;
/// Its INFO-CODEs for a stale answer (RFC 8914 4.4, 4.20).
const EDE_STALE_ANSWER: u16 = 3;
const EDE_STALE_NXDOMAIN: u16 = 19;

/// Add an Extended DNS Error "Stale Answer" ("Stale NXDOMAIN Answer" for
/// NXDOMAIN) to a rendered `answer` whose last record is its OPT, if the
/// answer stays within `limit` bytes.  Otherwise leave it as it is: an
/// answer without EDNS cannot carry one.
pub fn mark_stale(answer: &mut Vec<u8>, limit: usize) {
    let Some(rdlen_at) = last_opt_rdlength(answer) else {
        return;
    };
    if answer.len() + 6 > limit {
        return;
    }
    let code = match answer.get(3).map(|f| f & 0x0f) {
        Some(NXDOMAIN) => EDE_STALE_NXDOMAIN,
        _ => EDE_STALE_ANSWER,
    };
    let old = u16::from_be_bytes([answer[rdlen_at], answer[rdlen_at + 1]]);
    let Some(new) = old.checked_add(6) else {
        return;
    };
    answer[rdlen_at..rdlen_at + 2].copy_from_slice(&new.to_be_bytes());
    answer.extend_from_slice(&OPTION_EDE.to_be_bytes());
    answer.extend_from_slice(&2u16.to_be_bytes());
    answer.extend_from_slice(&code.to_be_bytes());
}

/// Where the RDLENGTH of `msg`'s OPT record lies, if that record is the
/// last one and ends the message.
fn last_opt_rdlength(msg: &[u8]) -> Option<usize> {
    let h = Header::of(msg)?;
    let mut at = 12;
    for _ in 0..h.questions {
        at = crate::core::intake::skip_question(msg, at)?;
    }
    let mut last = None;
    for _ in 0..h.records() {
        let fixed = skip_name(msg, at)?;
        let f = msg.get(fixed..fixed + 10)?;
        let end = fixed + 10 + usize::from(u16::from_be_bytes([f[8], f[9]]));
        last = Some((u16::from_be_bytes([f[0], f[1]]), fixed + 8));
        at = end;
    }
    match last {
        Some((TYPE_OPT, rdlen_at)) if at == msg.len() => Some(rdlen_at),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TtlLimits = TtlLimits {
        max: 86400,
        max_negative: 3600,
    };

    /// `www.example A` with RD, id 0x1234, optionally with an OPT record.
    fn query(opt: bool) -> (Vec<u8>, usize) {
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(opt)];
        q.extend_from_slice(b"\x03www\x07example\x00\x00\x01\x00\x01");
        if opt {
            q.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        (q, 12 + 13)
    }

    /// An answer to [`query`] with `rcode`, answer records of the given TTLs
    /// (A, name compressed), an SOA in authority (ttl, minimum) and an OPT
    /// with the given options.
    fn answer(rcode: u8, ttls: &[u32], soa: Option<(u32, u32)>, opt: Option<&[u8]>) -> Vec<u8> {
        let mut a = vec![0xab, 0xcd, 0x85, rcode, 0, 1, 0, ttls.len() as u8, 0];
        a.push(u8::from(soa.is_some()));
        a.extend_from_slice(&[0, u8::from(opt.is_some())]);
        a.extend_from_slice(b"\x03WWW\x07example\x00\x00\x01\x00\x01");
        for ttl in ttls {
            a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            a.extend_from_slice(&ttl.to_be_bytes());
            a.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
        }
        if let Some((ttl, minimum)) = soa {
            a.extend_from_slice(&[0xc0, 16, 0, 6, 0, 1]);
            a.extend_from_slice(&ttl.to_be_bytes());
            a.extend_from_slice(&[0, 22, 0, 0]);
            a.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
            a.extend_from_slice(&minimum.to_be_bytes());
        }
        if let Some(options) = opt {
            a.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0]);
            a.extend_from_slice(&(options.len() as u16).to_be_bytes());
            a.extend_from_slice(options);
        }
        a
    }

    #[test]
    fn positive_answers_live_for_their_smallest_ttl_capped() {
        let (q, end) = query(false);
        let l = learn(&q, end, &answer(0, &[300, 60, 120], None, None), LIMITS);
        assert_eq!(l.as_ref().map(|l| l.ttl), Ok(60));
        assert_eq!(l.map(|l| l.ttl_offsets.len()), Ok(3));
        let capped = TtlLimits { max: 10, ..LIMITS };
        let l = learn(&q, end, &answer(0, &[300], None, None), capped);
        assert_eq!(l.map(|l| l.ttl), Ok(10));
    }

    #[test]
    fn negative_answers_live_for_the_soa_minimum() {
        let (q, end) = query(false);
        for rcode in [NXDOMAIN, NOERROR] {
            let a = answer(rcode, &[], Some((600, 30)), None);
            assert_eq!(learn(&q, end, &a, LIMITS).map(|l| l.ttl), Ok(30));
            let a = answer(rcode, &[], Some((20, 300)), None);
            assert_eq!(learn(&q, end, &a, LIMITS).map(|l| l.ttl), Ok(20));
            let capped = TtlLimits {
                max_negative: 5,
                ..LIMITS
            };
            assert_eq!(learn(&q, end, &a, capped).map(|l| l.ttl), Ok(5));
            let a = answer(rcode, &[], None, None);
            assert_eq!(learn(&q, end, &a, LIMITS), Err(NotKept::NoSoa));
        }
    }

    #[test]
    fn what_is_not_kept() {
        let (q, end) = query(false);
        let mut tc = answer(0, &[60], None, None);
        tc[2] |= 2;
        assert_eq!(learn(&q, end, &tc, LIMITS), Err(NotKept::Truncated));
        for rcode in [1, 2, 5] {
            let a = answer(rcode, &[60], None, None);
            assert_eq!(learn(&q, end, &a, LIMITS), Err(NotKept::Rcode));
        }
        let a = answer(0, &[0, 60], None, None);
        assert_eq!(learn(&q, end, &a, LIMITS), Err(NotKept::ZeroTtl));
        let ecs = [0, 8, 0, 4, 0, 1, 0, 0];
        let a = answer(0, &[60], None, Some(&ecs));
        assert_eq!(learn(&q, end, &a, LIMITS), Err(NotKept::PerClient));
        let mut other = answer(0, &[60], None, None);
        other[14] = b'x';
        assert_eq!(learn(&q, end, &other, LIMITS), Err(NotKept::Malformed));
        let mut badcookie = answer(0, &[60], None, Some(&[]));
        let ext = badcookie.len() - 6;
        badcookie[ext] = 1;
        assert_eq!(learn(&q, end, &badcookie, LIMITS), Err(NotKept::Rcode));
        let mut cut = answer(0, &[60], None, None);
        cut.pop();
        assert_eq!(learn(&q, end, &cut, LIMITS), Err(NotKept::Malformed));
    }

    #[test]
    fn cookies_are_taken_out_and_other_options_kept() {
        let (q, end) = query(true);
        let mut options = vec![0, 10, 0, 24];
        options.extend_from_slice(&[7; 24]);
        options.extend_from_slice(&[0, 3, 0, 2, b'b', b'1']);
        let a = answer(0, &[60], None, Some(&options));
        let l = learn(&q, end, &a, LIMITS).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(l.bytes.len(), a.len() - 28);
        assert!(l.bytes.ends_with(&[0, 6, 0, 3, 0, 2, b'b', b'1']));
    }

    #[test]
    fn stale_answers_with_edns_say_so() {
        let (q, end) = query(true);
        let a = answer(0, &[60], None, Some(&[]));
        let l = learn(&q, end, &a, LIMITS).unwrap_or_else(|e| panic!("{e:?}"));
        let mut out = l.bytes.clone();
        mark_stale(&mut out, 1232);
        assert_eq!(out.len(), a.len() + 6);
        assert!(out.ends_with(&[0, 6, 0, 15, 0, 2, 0, 3]), "{out:?}");
        let mut nx = answer(NXDOMAIN, &[], Some((60, 30)), Some(&[]));
        mark_stale(&mut nx, 1232);
        assert!(nx.ends_with(&[0, 15, 0, 2, 0, 19]));
        // No room, or no OPT: unchanged.
        let mut full = l.bytes.clone();
        mark_stale(&mut full, l.bytes.len() + 5);
        assert_eq!(full, l.bytes);
        let mut plain = answer(0, &[60], None, None);
        let before = plain.clone();
        mark_stale(&mut plain, 1232);
        assert_eq!(plain, before);
    }

    #[test]
    fn rendering_takes_the_clients_id_spelling_and_age() {
        let (mut q, end) = query(false);
        q[0..2].copy_from_slice(&[0x55, 0x66]);
        q[13..16].copy_from_slice(b"wWw");
        let a = answer(0, &[300, 60], None, None);
        let l = learn(&q, end, &a, LIMITS).unwrap_or_else(|e| panic!("{e:?}"));
        let mut out = Vec::new();
        render(&l.bytes, &l.ttl_offsets, &q, end, |t| t - 7, &mut out);
        assert_eq!(&out[..2], &[0x55, 0x66]);
        assert_eq!(&out[12..end], &q[12..end]);
        let ttls: Vec<u32> = l
            .ttl_offsets
            .iter()
            .map(|&o| {
                let o = usize::from(o);
                u32::from_be_bytes([out[o], out[o + 1], out[o + 2], out[o + 3]])
            })
            .collect();
        assert_eq!(ttls, vec![293, 53]);
        assert_eq!(out.len(), a.len());
    }
}
