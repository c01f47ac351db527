//! ACCESS CONTROL
//!
//! Which clients may use the balancer at all: `--allow CIDR` and
//! `--deny CIDR`, each repeatable, IPv4 and IPv6.  With neither, everyone
//! is allowed, as the original allowed everyone.  A deny wins over an
//! allow; once any allow is given, only the networks allowed are.  (So
//! `--allow 10.0.0.0/8 --deny 10.9.0.0/16` lets 10/8 in but 10.9/16.)
//!
//! A refused client never reaches a backend and never gets a remote entry
//! (so a denied flood costs no state).  Over UDP it is answered REFUSED,
//! rate-limited per address like every answer the balancer makes itself,
//! or nothing at all (`--acl-action refused|drop`); over TCP its
//! connection is closed as soon as it is accepted.  Plain data and one
//! check, a linear scan: ACLs are a handful of networks.

use std::net::IpAddr;

use ipnet::IpNet;

/// `--acl-action`: what a refused UDP client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclAction {
    /// A REFUSED answer (rate-limited per address).
    Refused,
    /// Nothing.
    Drop,
}

/// The access control list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    /// `--allow`: when any is given, only these networks get in.
    pub allow: Vec<IpNet>,
    /// `--deny`: these networks never get in, allowed or not.
    pub deny: Vec<IpNet>,
    /// `--acl-action`: what a refused UDP client gets.
    pub action: AclAction,
}

impl Default for Acl {
    fn default() -> Self {
        Acl {
            allow: Vec::new(),
            deny: Vec::new(),
            action: AclAction::Refused,
        }
    }
}

impl Acl {
    /// Whether `ip` (v4-mapping already undone) may use the balancer.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// True when the list lets everyone in (the default): the check can be
    /// skipped.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// A network as given on the command line: `CIDR`, or a single address
/// (`/32`, `/128`).
pub fn parse_network(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(allow: &[&str], deny: &[&str]) -> Acl {
        let nets = |v: &[&str]| v.iter().filter_map(|s| parse_network(s)).collect();
        Acl {
            allow: nets(allow),
            deny: nets(deny),
            action: AclAction::Refused,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn open_by_default() {
        let a = acl(&[], &[]);
        assert!(a.is_open());
        assert!(a.permits(ip("192.0.2.1")) && a.permits(ip("2001:db8::1")));
    }

    #[test]
    fn deny_wins_and_an_allow_list_closes_the_rest() {
        let a = acl(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.9.0.0/16", "10.1.2.3"],
        );
        assert!(a.permits(ip("10.1.1.1")));
        assert!(!a.permits(ip("10.9.1.1")), "denied within the allowed");
        assert!(!a.permits(ip("10.1.2.3")), "a single address");
        assert!(!a.permits(ip("192.0.2.1")), "not allowed");
        assert!(a.permits(ip("2001:db8::5")));
        assert!(!a.permits(ip("2001:db9::5")));
        let d = acl(&[], &["192.0.2.0/24"]);
        assert!(!d.permits(ip("192.0.2.7")) && d.permits(ip("198.51.100.1")));
    }

    #[test]
    fn networks_parse_as_cidr_or_address() {
        assert_eq!(
            parse_network("10.1.2.3/8")
                .map(|n| n.to_string())
                .as_deref(),
            Some("10.0.0.0/8")
        );
        assert_eq!(
            parse_network("::1").map(|n| n.to_string()).as_deref(),
            Some("::1/128")
        );
        assert!(parse_network("10.0.0.0/33").is_none());
        assert!(parse_network("nope").is_none());
    }
}
