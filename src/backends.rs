//! BACKENDS
//!
//! DNS service is provided by backend processes, each listening on an
//! AF_UNIX socket in the socket directory.  This module keeps the table of
//! known backends and the decisions made about them: which id a socket gets,
//! whether a backend is healthy ("ok"), which backend a new remote is given
//! (round-robin over healthy backends in id order), and when remotes are
//! spread unfairly enough to be rebalanced.
//!
//! It is plain data changed by plain functions.  The core
//! ([`crate::core`]) owns the table and tells it what happened; the shell
//! ([`crate::shell`]) does the I/O.  Backends are never
//! deleted: a socket that disappears is marked removed and is picked up again
//! if it returns, keeping its id and its counters.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use slab::Slab;
use tokio::time::Instant;

pub use crate::latency::{LATENCY_BUCKETS, Latency, SmoothedLatency};
use crate::timeouts::Backoff;
use mname_balancer_protocol::capability;

/// A backend's id.  Sockets named after Binder's ports (5300..5399) keep that
/// number; others are numbered after the largest id in use.  0 means "none".
pub type BackendId = u32;

/// The id that means "no backend".
pub const NO_BACKEND: BackendId = 0;

/// The ids reserved for sockets named after their backend's DNS port.
const PORT_NAMED_IDS: std::ops::RangeInclusive<u32> = 5300..=5399;

/// Where the control session of a backend stands: one enum, so that a
/// state the protocol does not allow (a heartbeat outstanding before
/// hello, capabilities on a closed session) cannot be written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected and no reconnect pending: new, or its socket removed.
    Down,
    /// A reconnect is scheduled after a back-off delay.
    ReconnectPending,
    /// Connecting; CLIENT_HELLO goes out once connected.
    Connecting,
    /// CLIENT_HELLO sent, waiting for SERVER_HELLO.
    AwaitingHello,
    /// Hello exchanged: the backend takes traffic.
    Ready(Ready),
}

/// A backend that said hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// What it said of protocol extensions.
    pub caps: Caps,
    /// Its heartbeat: idle or outstanding.
    pub heartbeat: Heartbeat,
}

/// What the backend said of protocol extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caps {
    /// The second CLIENT_HELLO (which asks for them) is unanswered.
    Asked,
    /// Its [`capability`] bits (0: the original protocol only).
    Known(u32),
}

/// The heartbeat of a ready backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// None outstanding; the next is sent after the heartbeat interval.
    Idle,
    /// One is outstanding.
    Sent {
        /// When it went out: its round trip, and a probe's deadline, count
        /// from here.
        at: Instant,
        /// Sent (or cut short) because the backend left queries
        /// unanswered, so it has only the probe timeout.
        probe: bool,
    },
}

impl Ready {
    /// Just said hello: capabilities asked for, no heartbeat out.
    pub fn new() -> Self {
        Ready {
            caps: Caps::Asked,
            heartbeat: Heartbeat::Idle,
        }
    }
}

impl Default for Ready {
    fn default() -> Self {
        Self::new()
    }
}

/// What a client needs of its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// An IPv4 client: any backend speaks the original protocol.
    Any,
    /// An IPv6 client: only backends that announced the IPv6 extension.
    Ipv6,
}

impl Need {
    /// What a client at `ip` needs: IPv6 for an IPv6 address.
    pub fn of(ip: &std::net::IpAddr) -> Need {
        if ip.is_ipv6() { Need::Ipv6 } else { Need::Any }
    }
}

/// What happened to a backend, counted on the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Control-session and TCP-session connections attempted.
    pub conn_start: u64,
    /// Connections that failed or ended in error.
    pub conn_error: u64,
    /// UDP queries forwarded.
    pub udp: u64,
    /// TCP sessions forwarded.
    pub tcp: u64,
    /// UDP queries dropped because the backend's write queue was full.
    pub stuck: u64,
    /// UDP answers sent back to clients.
    pub udp_replies: u64,
    /// Times this backend was faulted.
    pub faults: u64,
    /// Queries this backend left unanswered past the query timeout.
    pub timeouts: u64,
    /// Faults found by the passive check (queries left unanswered).
    pub passive_faults: u64,
    /// Queries replayed to other backends after this one failed.
    pub replayed_away: u64,
    /// Forward latency of its UDP answers.
    pub latency: Latency,
    /// Its queries hedged to another backend (unanswered after the hedge
    /// delay).
    pub hedged: u64,
    /// The round trip of its last heartbeat reply, in microseconds.
    pub last_heartbeat_rtt_us: Option<u64>,
    /// The round trips of its heartbeat replies.
    pub heartbeat_rtt: Latency,
}

/// One backend process, known by its socket path.
#[derive(Debug)]
pub struct Backend {
    /// Its id, kept for good once given.
    pub id: BackendId,
    /// Its socket in the socket directory.
    pub path: PathBuf,
    /// Where its control session stands.
    pub state: LinkState,
    /// Its socket was missing when we last tried to connect.
    pub removed: bool,
    /// The last connect found no socket file; a second miss in a row marks
    /// it removed.  A restarting backend unlinks and re-binds its socket,
    /// and one unlucky connect in between must not re-home its clients.
    pub missing_once: bool,
    /// When to try its socket again after a failed connect.
    pub backoff: Backoff,
    /// Remotes whose primary is this backend.
    pub remotes: u32,
    /// Bumped at every connection attempt so that news from an abandoned
    /// connection is recognised and ignored.
    pub generation: u64,
    /// Since when the backend has left queries unanswered without answering
    /// any; `None` when it owes nothing or has just answered.
    pub unanswered_since: Option<Instant>,
    /// Its recent forward latency, answers sent and hedged-over answers
    /// alike: what its hedge delay is made of.
    pub recent_latency: SmoothedLatency,
    /// What happened to it, for the stats socket and the metrics.
    pub stats: BackendStats,
}

impl Backend {
    /// Healthy: hello exchanged, heartbeats answered.  Only ok backends are
    /// given traffic.
    pub fn is_ok(&self) -> bool {
        matches!(self.state, LinkState::Ready(_))
    }

    /// The protocol extensions its current session announced
    /// ([`capability`] bits; 0 when not ready or not yet known).
    pub fn caps(&self) -> u32 {
        match self.state {
            LinkState::Ready(Ready {
                caps: Caps::Known(c),
                ..
            }) => c,
            _ => 0,
        }
    }

    /// Probed: a heartbeat is out because it left queries unanswered.
    pub fn is_probed(&self) -> bool {
        matches!(
            self.state,
            LinkState::Ready(Ready {
                heartbeat: Heartbeat::Sent { probe: true, .. },
                ..
            })
        )
    }

    /// Ok, and able to serve a client that needs `need`.
    pub fn serves(&self, need: Need) -> bool {
        self.is_ok() && (need == Need::Any || self.caps() & capability::IPV6 != 0)
    }

    /// A short name for the state, for logs and stats.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            LinkState::Down if self.removed => "removed",
            LinkState::Down => "down",
            LinkState::ReconnectPending => "reconnect-wait",
            LinkState::Connecting => "connecting",
            LinkState::AwaitingHello => "awaiting-hello",
            LinkState::Ready(Ready {
                heartbeat: Heartbeat::Sent { .. },
                ..
            }) => "ok-heartbeat-outstanding",
            LinkState::Ready(_) => "ok",
        }
    }
}

/// The table of all backends ever seen.
#[derive(Debug, Default)]
pub struct Backends {
    slab: Slab<Backend>,
    /// Id order, for round-robin and rebalancing.
    by_id: BTreeMap<BackendId, usize>,
    by_path: HashMap<PathBuf, usize>,
    /// The backend most recently given a remote; round-robin resumes after it.
    last_assigned: BackendId,
}

impl Backends {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a backend for a newly seen socket path and return its id.
    pub fn insert(&mut self, path: &Path) -> BackendId {
        let id = self.id_for(path);
        let key = self.slab.insert(Backend {
            id,
            path: path.to_path_buf(),
            state: LinkState::Down,
            removed: false,
            missing_once: false,
            backoff: Backoff::immediate(),
            remotes: 0,
            generation: 0,
            unanswered_since: None,
            recent_latency: SmoothedLatency::new(),
            stats: BackendStats::default(),
        });
        self.by_id.insert(id, key);
        self.by_path.insert(path.to_path_buf(), key);
        id
    }

    /// The id a new backend at `path` gets: its file name if that is a free
    /// number in 5300..5399 (Binder names sockets after ports, which keeps
    /// logs readable), else one more than the largest id in use.
    fn id_for(&self, path: &Path) -> BackendId {
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| PORT_NAMED_IDS.contains(n) && !self.by_id.contains_key(n));
        match named {
            Some(id) => id,
            None => self.by_id.keys().next_back().map_or(1, |max| max + 1),
        }
    }

    /// The backend with id `id`.
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.by_id.get(&id).map(|&k| &self.slab[k])
    }

    /// The backend with id `id`, to change.
    pub fn get_mut(&mut self, id: BackendId) -> Option<&mut Backend> {
        self.by_id.get(&id).map(|&k| &mut self.slab[k])
    }

    /// The backend whose socket is `path`.
    pub fn by_path(&self, path: &Path) -> Option<&Backend> {
        self.by_path.get(path).map(|&k| &self.slab[k])
    }

    /// Backends in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Backend> {
        self.by_id.values().map(|&k| &self.slab[k])
    }

    /// How many backends were ever seen, removed ones included.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether no backend was ever seen.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Whether `id` names a backend that can take traffic now.
    pub fn is_ok(&self, id: BackendId) -> bool {
        self.get(id).is_some_and(Backend::is_ok)
    }

    /// Whether `id` names a backend that can serve a client needing `need`.
    pub fn serves(&self, id: BackendId, need: Need) -> bool {
        self.get(id).is_some_and(|be| be.serves(need))
    }

    /// Choose a backend for a new assignment: round-robin in id order,
    /// starting after the one chosen last, skipping backends that are not ok.
    pub fn select(&mut self) -> Option<BackendId> {
        self.select_for(Need::Any)
    }

    /// [`Backends::select`] among the backends that serve `need`.
    pub fn select_for(&mut self, need: Need) -> Option<BackendId> {
        let chosen = self.next_serving(need, None)?;
        self.last_assigned = chosen;
        Some(chosen)
    }

    /// The backend [`Backends::select_for`] would choose next, other than
    /// `other_than`, without choosing it: where a client of `other_than`
    /// would go if it failed now.
    pub fn next_serving(&self, need: Need, other_than: Option<BackendId>) -> Option<BackendId> {
        let after = self
            .by_id
            .range(self.last_assigned.saturating_add(1)..)
            .chain(self.by_id.range(..=self.last_assigned));
        after
            .filter(|&(&id, _)| Some(id) != other_than)
            .find(|&(_, &k)| self.slab[k].serves(need))
            .map(|(&id, _)| id)
    }

    /// A backend for a client that is not tracked (the remote table is
    /// full): the `hash`-th of the backends serving `need`, in id order.
    /// The same client gets the same backend while the set of healthy
    /// backends stays the same; nothing is remembered.
    pub fn stateless_for(&self, hash: u64, need: Need) -> Option<BackendId> {
        let serving = || {
            self.by_id
                .iter()
                .filter(|&(_, &k)| self.slab.get(k).is_some_and(|be| be.serves(need)))
        };
        let n = serving().count() as u64;
        if n == 0 {
            return None;
        }
        serving().nth((hash % n) as usize).map(|(&id, _)| id)
    }

    /// Count one more remote on `id` (as its primary).
    pub fn add_remote(&mut self, id: BackendId) {
        if let Some(be) = self.get_mut(id) {
            be.remotes += 1;
        }
    }

    /// Count one remote fewer on `id`.
    pub fn drop_remote(&mut self, id: BackendId) {
        if let Some(be) = self.get_mut(id) {
            be.remotes = be.remotes.saturating_sub(1);
        }
    }

    /// Decide whether remotes are spread unfairly over the ok backends.
    ///
    /// If the fullest ok backend has more than "number of ok backends"
    /// remotes beyond the emptiest, returns that backend and how many of its
    /// remotes to unassign: the spread minus the number of ok backends.
    /// Unassigned remotes choose again, round-robin, on their next query.
    pub fn rebalance_plan(&self) -> Option<RebalancePlan> {
        let mut ok = self.iter().filter(|be| be.is_ok());
        let first = ok.next()?;
        let (mut fullest, mut min, mut n) = (first, first.remotes, 1u32);
        for be in ok {
            n += 1;
            if be.remotes > fullest.remotes {
                fullest = be;
            }
            min = min.min(be.remotes);
        }
        let spread = fullest.remotes - min;
        (spread > n).then(|| RebalancePlan {
            backend: fullest.id,
            unassign: spread - n,
            spread,
            ok_backends: n,
        })
    }
}

/// The outcome of [`Backends::rebalance_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebalancePlan {
    /// The ok backend with the most remotes.
    pub backend: BackendId,
    /// How many of its remotes to unassign.
    pub unassign: u32,
    /// Its remotes beyond the emptiest ok backend's.
    pub spread: u32,
    /// How many backends are ok.
    pub ok_backends: u32,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ready() -> LinkState {
        LinkState::Ready(Ready::new())
    }

    pub(crate) fn table(names: &[&str]) -> Backends {
        let mut b = Backends::new();
        for n in names {
            let id = b.insert(Path::new(&format!("/sock/{n}")));
            b.get_mut(id).unwrap().state = ready();
        }
        b
    }

    #[test]
    fn ids_follow_binder_port_names_else_count_up() {
        let mut b = Backends::new();
        assert_eq!(b.insert(Path::new("/s/5301")), 5301);
        assert_eq!(b.insert(Path::new("/s/5300")), 5300);
        assert_eq!(b.insert(Path::new("/s/other")), 5302);
        assert_eq!(b.insert(Path::new("/s/5400")), 5303, "outside 5300..5399");
        let mut c = Backends::new();
        assert_eq!(
            c.insert(Path::new("/s/a")),
            1,
            "first id is 1: 0 means none"
        );
        assert_eq!(c.insert(Path::new("/s/b")), 2);
        assert_eq!(c.by_path(Path::new("/s/b")).unwrap().id, 2);
    }

    #[test]
    fn round_robin_in_id_order_skipping_unhealthy() {
        let mut b = table(&["5300", "5301", "5302"]);
        let picks: Vec<_> = (0..4).map(|_| b.select().unwrap()).collect();
        assert_eq!(picks, [5300, 5301, 5302, 5300]);
        b.get_mut(5301).unwrap().state = LinkState::AwaitingHello;
        let picks: Vec<_> = (0..3).map(|_| b.select().unwrap()).collect();
        assert_eq!(picks, [5302, 5300, 5302]);
        for id in [5300, 5302] {
            b.get_mut(id).unwrap().state = LinkState::ReconnectPending;
        }
        assert_eq!(b.select(), None);
        b.get_mut(5301).unwrap().state = ready();
        assert_eq!(b.select(), Some(5301));
    }

    #[test]
    fn ipv6_clients_only_get_backends_that_announced_it() {
        let mut b = table(&["5300", "5301", "5302"]);
        assert_eq!(b.select_for(Need::Ipv6), None, "none announced");
        b.get_mut(5302).unwrap().state = LinkState::Ready(Ready {
            caps: Caps::Known(capability::IPV6),
            heartbeat: Heartbeat::Idle,
        });
        assert_eq!(b.select_for(Need::Ipv6), Some(5302));
        assert_eq!(b.select_for(Need::Ipv6), Some(5302));
        assert_eq!(
            b.select_for(Need::Any),
            Some(5300),
            "IPv4 clients: everyone"
        );
    }

    #[test]
    fn rebalance_arithmetic() {
        let mut b = table(&["5300", "5301", "5302"]);
        let set = |b: &mut Backends, counts: [u32; 3]| {
            for (id, n) in [5300, 5301, 5302].into_iter().zip(counts) {
                b.get_mut(id).unwrap().remotes = n;
            }
        };
        set(&mut b, [10, 7, 8]);
        assert_eq!(
            b.rebalance_plan(),
            None,
            "spread 3 is not more than 3 backends"
        );
        set(&mut b, [10, 6, 8]);
        assert_eq!(
            b.rebalance_plan(),
            Some(RebalancePlan {
                backend: 5300,
                unassign: 1,
                spread: 4,
                ok_backends: 3
            })
        );
        set(&mut b, [0, 20, 9]);
        assert_eq!(
            b.rebalance_plan().map(|p| (p.backend, p.unassign)),
            Some((5301, 17))
        );
        // A backend that is not ok does not count, neither as a backend nor
        // as the emptiest.
        b.get_mut(5300).unwrap().state = LinkState::Down;
        assert_eq!(
            b.rebalance_plan().map(|p| (p.backend, p.unassign)),
            Some((5301, 9))
        );
        for id in [5301, 5302] {
            b.get_mut(id).unwrap().state = LinkState::Down;
        }
        assert_eq!(b.rebalance_plan(), None, "no ok backend: nothing to do");
    }
}
