//! DNS COOKIES, THE SERVER'S SIDE
//!
//! DNS Cookies (RFC 7873) let a server recognise a client that has talked
//! to it before: the client sends a random Client Cookie in an EDNS COOKIE
//! option, the server answers with a Server Cookie made from it, and the
//! client sends both from then on.  The demo backend supports them, as a
//! backend written with this library should, and so answers the one query
//! that only a cookie-aware server answers well: a QUERY with no question
//! and a COOKIE option (RFC 7873 section 5.4; the only QDCOUNT of 0 RFC 9619
//! allows), which asks for a Server Cookie.
//!
//! Server Cookies are built as RFC 9018 says, so that servers sharing a
//! secret would recognise each other's: version 1, three reserved bytes,
//! a 32-bit timestamp and SipHash-2-4 over the Client Cookie, those eight
//! bytes and the client's address.  The secret is drawn at start; a
//! restarted backend gives out new cookies, which clients take in their
//! stride.

use std::hash::Hasher;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use siphasher::sip::SipHasher24;

/// The EDNS option code of COOKIE.
pub const COOKIE_OPTION: u16 = 10;

/// A Server Cookie older than this is not valid (RFC 9018 section 4.3).
const MAX_AGE_SECS: u32 = 3600;

/// A Server Cookie from further in the future than this is not valid.
const MAX_AHEAD_SECS: u32 = 300;

/// What a request's COOKIE option says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestCookie {
    /// A Client Cookie alone: the client does not know our Server Cookie.
    ClientOnly([u8; 8]),
    /// A Client Cookie and a Server Cookie we made (and not too old).
    Valid([u8; 8]),
    /// A Client Cookie and a Server Cookie we did not make, or an old one.
    Invalid([u8; 8]),
    /// An option of a length RFC 7873 does not allow: FORMERR (5.2.2).
    Malformed,
}

/// The server's secret, and the cookies made with it.
#[derive(Debug, Clone)]
pub struct CookieSecret {
    key: [u8; 16],
}

impl CookieSecret {
    /// A fresh random secret (from the operating system's generator).
    pub fn random() -> Self {
        let mut key = [0u8; 16];
        // Without randomness the secret is still private to the process
        // (its address space layout and start time); cookies are a
        // lightweight defence, not a credential.
        if getrandom::fill(&mut key).is_err() {
            let fallback = std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                SystemTime::now(),
            );
            key[..8].copy_from_slice(&fallback.to_le_bytes());
        }
        CookieSecret { key }
    }

    /// A fixed secret (tests).
    pub fn from_key(key: [u8; 16]) -> Self {
        CookieSecret { key }
    }

    fn hash(&self, client: &[u8; 8], head: &[u8; 8], ip: IpAddr) -> [u8; 8] {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(client);
        h.write(head);
        match ip {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        h.finish().to_le_bytes()
    }

    /// The COOKIE option's data for an answer to `ip`, made at `now`
    /// (seconds since the Unix epoch): the Client Cookie and a new Server
    /// Cookie (RFC 9018 section 4).
    pub fn answer_option(&self, client: &[u8; 8], ip: IpAddr, now: u32) -> Vec<u8> {
        let mut head = [1u8, 0, 0, 0, 0, 0, 0, 0];
        head[4..].copy_from_slice(&now.to_be_bytes());
        let mut out = Vec::with_capacity(24);
        out.extend_from_slice(client);
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.hash(client, &head, ip));
        out
    }

    /// Read a request's COOKIE option data, sent from `ip`, at `now`.
    pub fn read(&self, data: &[u8], ip: IpAddr, now: u32) -> RequestCookie {
        let Some(client) = data.get(..8).and_then(|c| <[u8; 8]>::try_from(c).ok()) else {
            return RequestCookie::Malformed;
        };
        match data.len() {
            8 => RequestCookie::ClientOnly(client),
            24 => {
                let head: [u8; 8] = data[8..16].try_into().unwrap_or_default();
                let when = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
                let fresh = head[0] == 1
                    && when <= now.saturating_add(MAX_AHEAD_SECS)
                    && now.saturating_sub(when) <= MAX_AGE_SECS;
                if fresh && data[16..24] == self.hash(&client, &head, ip) {
                    RequestCookie::Valid(client)
                } else {
                    RequestCookie::Invalid(client)
                }
            }
            // Another server's cookie (another format): well formed, but
            // not ours.
            16..=40 => RequestCookie::Invalid(client),
            _ => RequestCookie::Malformed,
        }
    }
}

/// Seconds since the Unix epoch, as a Server Cookie's timestamp
/// (wrapping in 2106, as RFC 9018 allows for).
pub fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn a_server_cookie_we_made_is_valid_for_its_client_and_an_hour() {
        let s = CookieSecret::from_key([7; 16]);
        let client = [1, 2, 3, 4, 5, 6, 7, 8];
        let t = 1_700_000_000;
        let opt = s.answer_option(&client, IP, t);
        assert_eq!(opt.len(), 24);
        assert_eq!(&opt[..8], &client);
        assert_eq!(&opt[8..12], &[1, 0, 0, 0], "version 1, reserved");
        assert_eq!(s.read(&opt, IP, t + 10), RequestCookie::Valid(client));
        assert_eq!(s.read(&opt, IP, t + 3601), RequestCookie::Invalid(client));
        assert_eq!(s.read(&opt, IP, t - 301), RequestCookie::Invalid(client));
        let other_ip = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));
        assert_eq!(s.read(&opt, other_ip, t), RequestCookie::Invalid(client));
        let other_secret = CookieSecret::from_key([8; 16]);
        assert_eq!(
            other_secret.read(&opt, IP, t),
            RequestCookie::Invalid(client)
        );
    }

    #[test]
    fn option_lengths_follow_rfc_7873() {
        let s = CookieSecret::from_key([7; 16]);
        assert_eq!(s.read(&[9; 8], IP, 0), RequestCookie::ClientOnly([9; 8]));
        assert_eq!(s.read(&[9; 16], IP, 0), RequestCookie::Invalid([9; 8]));
        assert_eq!(s.read(&[9; 40], IP, 0), RequestCookie::Invalid([9; 8]));
        for bad in [0, 7, 9, 15, 41] {
            assert_eq!(
                s.read(&vec![9; bad], IP, 0),
                RequestCookie::Malformed,
                "{bad}"
            );
        }
    }
}
