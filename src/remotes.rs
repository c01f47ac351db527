//! REMOTES
//!
//! Each client host ("remote", known by its IP address; the port is not part
//! of it) is pinned to one backend, so that a client keeps talking to the
//! same DNS server process while that process is up: if you run `dig` from a
//! host, you are answered by the same backend as that host's other queries,
//! which makes behaviour consistent and problems debuggable.
//!
//! A remote has a primary backend and at most one backup.  While the primary
//! is ok it is used (and any backup forgotten).  While it is not ok, a backup
//! is used, chosen afresh if there is none or it is not ok either.  When the
//! primary is ok again the remote returns to it.  If the primary's socket was
//! removed, or the primary is unknown, a new primary is chosen.
//!
//! Remotes live in an ordered map keyed by address, as the original's AVL
//! tree was: two maps in fact, IPv4 addresses as `u32` keys and IPv6 ones as
//! `u128`, so that the millions of IPv4 remotes of a busy server do not each
//! carry the 17 bytes of an `IpAddr` key (with the B-tree's slack, that was
//! 20 bytes of every ~150 per remote).  Together they keep `IpAddr` order:
//! every IPv4 address before every IPv6 one.  A remote not heard from for a while is forgotten
//! ([`Remotes::expire`]), and the periodic rebalance unassigns some remotes of
//! an overfull backend ([`Remotes::unassign`]).  No I/O and no clock: the
//! caller passes `now`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Bound::{Excluded, Unbounded};
use std::time::Duration;

use tokio::time::Instant;

use crate::backends::{BackendId, Backends, NO_BACKEND, Need};

/// What happened to one remote, counted on the remote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// UDP queries forwarded to a backend or answered from the cache.
    pub udp: u64,
    /// UDP queries neither: rate-limited, no backend, or dropped on the way.
    pub udp_drop: u64,
    /// TCP connections relayed to a backend.
    pub tcp: u64,
    /// TCP connections refused: no backend, or no session free.
    pub tcp_drop: u64,
}

/// One client host.  Kept small (64 bytes): a balancer in front of a busy
/// name server tracks hundreds of thousands of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The backend it is pinned to ([`NO_BACKEND`]: none yet, or
    /// unassigned by a rebalance).
    pub primary: BackendId,
    /// The backend it uses while its primary is not ok ([`NO_BACKEND`]:
    /// none).
    pub backup: BackendId,
    /// Milliseconds since the table's epoch ([`Remotes::seen_at`] turns them
    /// back into instants).
    pub first_seen_ms: u64,
    /// When it was last heard from, likewise: what expiry goes by.
    pub last_seen_ms: u64,
    /// What happened to it.
    pub stats: RemoteStats,
    /// The second (of the balancer's clock) the two counts below are for:
    /// answers synthesized for this remote (`--synth-rate`) and queries
    /// it sent (`--max-qps-per-client`).  One window for both keeps a
    /// remote at 64 bytes.
    window_second: u32,
    synth_count: u16,
    query_count: u16,
}

/// What the per-client query rate limit says of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryRate {
    /// Within the rate.
    Within,
    /// The `n`-th query past the rate in this second (1, 2, ...).
    Over(u16),
}

/// A change of assignment worth a log line, in the original's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reassignment {
    /// A primary chosen: it had none, or its primary is gone.
    NewPrimary(BackendId),
    /// A backup chosen while its primary is not ok.
    NewBackup(BackendId),
    /// Its primary is ok again, and its backup forgotten.
    BackToPrimary(BackendId),
}

impl Reassignment {
    /// The log message, as the original wrote it.
    pub fn message(&self) -> &'static str {
        match self {
            Reassignment::NewPrimary(_) => "remote assigned to new primary backend",
            Reassignment::NewBackup(_) => "remote assigned to new backup backend",
            Reassignment::BackToPrimary(_) => "remote assigned to original primary backend",
        }
    }

    /// The backend the remote is assigned to now.
    pub fn backend(&self) -> BackendId {
        match *self {
            Reassignment::NewPrimary(id)
            | Reassignment::NewBackup(id)
            | Reassignment::BackToPrimary(id) => id,
        }
    }
}

/// The backend chosen for one query, and what changed to choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Where the query goes; `None` when no backend serves the remote.
    pub backend: Option<BackendId>,
    /// The change of assignment made to choose it, if any.
    pub change: Option<Reassignment>,
}

impl Remote {
    fn new(now_ms: u64) -> Self {
        Remote {
            primary: NO_BACKEND,
            backup: NO_BACKEND,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            stats: RemoteStats::default(),
            window_second: 0,
            synth_count: 0,
            query_count: 0,
        }
    }

    /// Whether one more synthesized answer may go to this remote in second
    /// `second`, at most `per_second` a second.  Synthesized answers are no
    /// bigger than the query, but are still limited so the balancer cannot
    /// be used to aim traffic at a spoofed address.
    pub fn allow_synthesized(&mut self, second: u32, per_second: u32) -> bool {
        self.roll_window(second);
        if u32::from(self.synth_count) >= per_second {
            return false;
        }
        self.synth_count = self.synth_count.saturating_add(1);
        true
    }

    /// Count one query in second `second` against `per_second` (at most
    /// 65,535: the count is 16 bits).
    pub fn count_query(&mut self, second: u32, per_second: u32) -> QueryRate {
        self.roll_window(second);
        self.query_count = self.query_count.saturating_add(1);
        match u32::from(self.query_count).checked_sub(per_second) {
            Some(over) if over > 0 => QueryRate::Over(over as u16),
            _ => QueryRate::Within,
        }
    }

    fn roll_window(&mut self, second: u32) {
        if self.window_second != second {
            self.window_second = second;
            self.synth_count = 0;
            self.query_count = 0;
        }
    }

    fn clear_primary(&mut self, backends: &mut Backends) {
        if self.primary != NO_BACKEND {
            backends.drop_remote(self.primary);
            self.primary = NO_BACKEND;
        }
    }

    /// Which backend serves this remote now.  See the module comment.
    pub fn choose_backend(&mut self, backends: &mut Backends) -> Choice {
        self.choose_backend_for(backends, Need::Any)
    }

    /// [`Remote::choose_backend`] for a remote needing `need` of its
    /// backends (IPv6 remotes need the IPv6 extension).
    pub fn choose_backend_for(&mut self, backends: &mut Backends, need: Need) -> Choice {
        let none = |change| Choice {
            backend: None,
            change,
        };
        let primary_usable = backends
            .get(self.primary)
            .map(|be| (!be.removed, be.serves(need)));
        match primary_usable {
            // No primary, an unknown one, or one whose socket was removed:
            // choose a new primary.
            None | Some((false, _)) => {
                self.clear_primary(backends);
                self.backup = NO_BACKEND;
                let Some(id) = backends.select_for(need) else {
                    return none(None);
                };
                self.primary = id;
                backends.add_remote(id);
                Choice {
                    backend: Some(id),
                    change: Some(Reassignment::NewPrimary(id)),
                }
            }
            Some((true, true)) => {
                let change = (self.backup != NO_BACKEND)
                    .then_some(Reassignment::BackToPrimary(self.primary));
                self.backup = NO_BACKEND;
                Choice {
                    backend: Some(self.primary),
                    change,
                }
            }
            Some((true, false)) => {
                if backends.serves(self.backup, need) {
                    return Choice {
                        backend: Some(self.backup),
                        change: None,
                    };
                }
                self.backup = NO_BACKEND;
                let Some(id) = backends.select_for(need) else {
                    return none(None);
                };
                self.backup = id;
                Choice {
                    backend: Some(id),
                    change: Some(Reassignment::NewBackup(id)),
                }
            }
        }
    }
}

/// All remotes, ordered by address.
#[derive(Debug)]
pub struct Remotes {
    v4: BTreeMap<u32, Remote>,
    v6: BTreeMap<u128, Remote>,
    /// Times are kept as milliseconds since this instant.
    epoch: Instant,
}

impl Remotes {
    /// An empty table; times are kept relative to `epoch` (the core's
    /// start).
    pub fn new(epoch: Instant) -> Self {
        Remotes {
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
            epoch,
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant a remote's `*_seen_ms` stands for.
    pub fn seen_at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// The remote for `ip`, created if new; marks it seen at `now`.  The
    /// boolean says whether it was created.
    pub fn touch(&mut self, ip: IpAddr, now: Instant) -> (&mut Remote, bool) {
        let now_ms = self.ms(now);
        let mut created = false;
        let new = || {
            created = true;
            Remote::new(now_ms)
        };
        let rem = match ip {
            IpAddr::V4(a) => self.v4.entry(u32::from(a)).or_insert_with(new),
            IpAddr::V6(a) => self.v6.entry(u128::from(a)).or_insert_with(new),
        };
        rem.last_seen_ms = now_ms;
        (rem, created)
    }

    /// The remote for `ip`, if it is tracked.
    pub fn get(&self, ip: &IpAddr) -> Option<&Remote> {
        match *ip {
            IpAddr::V4(a) => self.v4.get(&u32::from(a)),
            IpAddr::V6(a) => self.v6.get(&u128::from(a)),
        }
    }

    /// The remote for `ip`, if it is tracked, to change.
    pub fn get_mut(&mut self, ip: &IpAddr) -> Option<&mut Remote> {
        match *ip {
            IpAddr::V4(a) => self.v4.get_mut(&u32::from(a)),
            IpAddr::V6(a) => self.v6.get_mut(&u128::from(a)),
        }
    }

    /// Every remote in address order.
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &Remote)> {
        self.after(None)
    }

    /// Remotes in address order after `after` (from the first if `None`):
    /// the pages of a stats dump, which may span changes to the table.
    pub fn after(&self, after: Option<IpAddr>) -> impl Iterator<Item = (IpAddr, &Remote)> {
        let (v4_from, v6_from) = match after {
            None => (Some(Unbounded), Unbounded),
            Some(IpAddr::V4(a)) => (Some(Excluded(u32::from(a))), Unbounded),
            Some(IpAddr::V6(a)) => (None, Excluded(u128::from(a))),
        };
        let v4 = v4_from
            .into_iter()
            .flat_map(|from| self.v4.range((from, Unbounded)))
            .map(|(k, r)| (IpAddr::V4(Ipv4Addr::from(*k)), r));
        let v6 = self
            .v6
            .range((v6_from, Unbounded))
            .map(|(k, r)| (IpAddr::V6(Ipv6Addr::from(*k)), r));
        v4.chain(v6)
    }

    /// How many remotes are tracked.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether no remote is tracked.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Forget remotes not heard from for longer than `max_age` (a remote
    /// exactly `max_age` old stays; ages are in whole milliseconds),
    /// calling `on_expire` for each.
    pub fn expire(
        &mut self,
        now: Instant,
        max_age: Duration,
        backends: &mut Backends,
        mut on_expire: impl FnMut(&IpAddr),
    ) -> usize {
        let before = self.len();
        let now_ms = self.ms(now);
        let max_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        let mut keep = |ip: IpAddr, rem: &mut Remote| {
            if now_ms.saturating_sub(rem.last_seen_ms) > max_ms {
                on_expire(&ip);
                rem.clear_primary(backends);
                false
            } else {
                true
            }
        };
        self.v4
            .retain(|k, rem| keep(IpAddr::V4(Ipv4Addr::from(*k)), rem));
        self.v6
            .retain(|k, rem| keep(IpAddr::V6(Ipv6Addr::from(*k)), rem));
        before - self.len()
    }

    /// Unassign up to `count` remotes whose primary is `backend`, in address
    /// order, so that they choose again on their next query.
    pub fn unassign(
        &mut self,
        backend: BackendId,
        count: u32,
        backends: &mut Backends,
        mut on_unassign: impl FnMut(&IpAddr),
    ) -> u32 {
        let mut done = 0;
        let v4 = self
            .v4
            .iter_mut()
            .map(|(k, r)| (IpAddr::V4(Ipv4Addr::from(*k)), r));
        let v6 = self
            .v6
            .iter_mut()
            .map(|(k, r)| (IpAddr::V6(Ipv6Addr::from(*k)), r));
        for (ip, rem) in v4.chain(v6) {
            if done == count {
                break;
            }
            if rem.primary == backend {
                on_unassign(&ip);
                rem.clear_primary(backends);
                rem.backup = NO_BACKEND;
                done += 1;
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::LinkState;
    use crate::backends::tests::{ready, table};

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[tokio::test(start_paused = true)]
    async fn primary_then_backup_then_revert() {
        let mut b = table(&["5300", "5301", "5302"]);
        let mut r = Remotes::new(Instant::now());
        let now = Instant::now();
        let (rem, created) = r.touch(ip(1), now);
        assert!(created);
        let c = rem.choose_backend(&mut b);
        assert_eq!(c.backend, Some(5300));
        assert_eq!(c.change, Some(Reassignment::NewPrimary(5300)));
        assert_eq!(b.get(5300).unwrap().remotes, 1);
        // Sticky while the primary is ok.
        let c = rem.choose_backend(&mut b);
        assert_eq!((c.backend, c.change), (Some(5300), None));

        // Primary fails: a backup is chosen round-robin and kept.
        b.get_mut(5300).unwrap().state = LinkState::ReconnectPending;
        let c = rem.choose_backend(&mut b);
        assert_eq!(c.change, Some(Reassignment::NewBackup(5301)));
        assert_eq!(rem.choose_backend(&mut b).backend, Some(5301));
        assert_eq!(b.get(5300).unwrap().remotes, 1, "backup does not count");

        // Backup fails too: another backup.
        b.get_mut(5301).unwrap().state = LinkState::Down;
        let c = rem.choose_backend(&mut b);
        assert_eq!(c.change, Some(Reassignment::NewBackup(5302)));

        // Primary returns: back to it, backup forgotten.
        b.get_mut(5300).unwrap().state = ready();
        let c = rem.choose_backend(&mut b);
        assert_eq!(c.backend, Some(5300));
        assert_eq!(c.change, Some(Reassignment::BackToPrimary(5300)));
        assert_eq!(rem.backup, NO_BACKEND);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_primary_is_replaced() {
        let mut b = table(&["5300", "5301"]);
        let mut r = Remotes::new(Instant::now());
        let (rem, _) = r.touch(ip(1), Instant::now());
        assert_eq!(rem.choose_backend(&mut b).backend, Some(5300));
        let be = b.get_mut(5300).unwrap();
        be.state = LinkState::Down;
        be.removed = true;
        let c = rem.choose_backend(&mut b);
        assert_eq!(c.change, Some(Reassignment::NewPrimary(5301)));
        assert_eq!(rem.primary, 5301);
        assert_eq!(b.get(5300).unwrap().remotes, 0);
        assert_eq!(b.get(5301).unwrap().remotes, 1);
        // When the removed socket returns, the remote stays on its new primary.
        let be = b.get_mut(5300).unwrap();
        be.removed = false;
        be.state = ready();
        assert_eq!(rem.choose_backend(&mut b).backend, Some(5301));
    }

    #[tokio::test(start_paused = true)]
    async fn ipv4_and_ipv6_remotes_keep_address_order_across_pages() {
        let mut r = Remotes::new(Instant::now());
        let now = Instant::now();
        let ips: Vec<IpAddr> = ["::1", "10.0.0.2", "2001:db8::1", "10.0.0.1", "192.0.2.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        for ip in &ips {
            r.touch(*ip, now);
        }
        let mut sorted = ips.clone();
        sorted.sort();
        let all: Vec<IpAddr> = r.iter().map(|(ip, _)| ip).collect();
        assert_eq!(all, sorted);
        assert_eq!(r.len(), 5);
        // Paging resumes after the cursor, across the IPv4/IPv6 boundary.
        let after = |ip: &str| -> Vec<IpAddr> {
            r.after(Some(ip.parse().unwrap()))
                .map(|(ip, _)| ip)
                .collect()
        };
        assert_eq!(after("10.0.0.2"), sorted[2..]);
        assert_eq!(after("192.0.2.1"), sorted[3..]);
        assert_eq!(after("::1"), sorted[4..]);
        assert!(after("2001:db8::1").is_empty());
        assert!(r.get(&"::1".parse().unwrap()).is_some());
        assert!(r.get(&"::2".parse().unwrap()).is_none());
    }

    #[test]
    fn a_remote_is_small() {
        assert!(
            std::mem::size_of::<Remote>() <= 64,
            "{}",
            std::mem::size_of::<Remote>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn synthesized_answers_are_rate_limited_per_second() {
        let mut r = Remotes::new(Instant::now());
        let (rem, _) = r.touch(ip(1), Instant::now());
        let allowed = (0..10).filter(|_| rem.allow_synthesized(7, 3)).count();
        assert_eq!(allowed, 3);
        assert!(rem.allow_synthesized(8, 3), "a new second, a new allowance");
    }

    #[tokio::test(start_paused = true)]
    async fn no_backend_ok_gives_none() {
        let mut b = table(&["5300"]);
        b.get_mut(5300).unwrap().state = LinkState::AwaitingHello;
        let mut r = Remotes::new(Instant::now());
        let (rem, _) = r.touch(ip(1), Instant::now());
        assert_eq!(rem.choose_backend(&mut b).backend, None);
        assert_eq!(rem.primary, NO_BACKEND);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_at_exactly_the_configured_age() {
        let mut b = table(&["5300"]);
        let mut r = Remotes::new(Instant::now());
        let t0 = Instant::now();
        let age = Duration::from_secs(300);
        r.touch(ip(1), t0).0.choose_backend(&mut b);
        r.touch(ip(2), t0 + Duration::from_secs(1));
        assert_eq!(b.get(5300).unwrap().remotes, 1);
        let mut gone = Vec::new();
        assert_eq!(r.expire(t0 + age, age, &mut b, |ip| gone.push(*ip)), 0);
        assert_eq!(r.len(), 2, "exactly max_age old: kept");
        let n = r.expire(t0 + age + Duration::from_millis(1), age, &mut b, |ip| {
            gone.push(*ip)
        });
        assert_eq!(n, 1);
        assert_eq!(gone, [ip(1)]);
        assert_eq!(b.get(5300).unwrap().remotes, 0, "its backend count drops");
        // Being heard from keeps a remote alive.
        r.touch(ip(2), t0 + age);
        assert_eq!(r.expire(t0 + age + age, age, &mut b, |_| {}), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn rebalance_unassigns_surplus_of_fullest_in_address_order() {
        let mut b = table(&["5300", "5301", "5302"]);
        let mut r = Remotes::new(Instant::now());
        let now = Instant::now();
        // Eight remotes, all on 5300 while the others were down.
        for id in [5301, 5302] {
            b.get_mut(id).unwrap().state = LinkState::Down;
        }
        for n in 1..=8 {
            r.touch(ip(n), now).0.choose_backend(&mut b);
        }
        for id in [5301, 5302] {
            b.get_mut(id).unwrap().state = ready();
        }
        let plan = b.rebalance_plan().unwrap();
        assert_eq!((plan.backend, plan.unassign), (5300, 5));
        let mut moved = Vec::new();
        let n = r.unassign(plan.backend, plan.unassign, &mut b, |ip| moved.push(*ip));
        assert_eq!(n, 5);
        assert_eq!(moved, (1..=5).map(ip).collect::<Vec<_>>());
        assert_eq!(b.get(5300).unwrap().remotes, 3);
        // Their next queries spread them round-robin over the others.
        for n in 1..=5 {
            r.touch(ip(n), now).0.choose_backend(&mut b);
        }
        let counts: Vec<u32> = b.iter().map(|be| be.remotes).collect();
        assert_eq!(counts.iter().sum::<u32>(), 8);
        assert!(b.rebalance_plan().is_none(), "balanced now: {counts:?}");
    }
}
