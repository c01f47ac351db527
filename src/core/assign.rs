//! ASSIGNMENT
//!
//! The one step that gives a client its backend, for UDP and TCP alike:
//! find or create the client's remote (marking it seen), ask it which
//! backend serves it now (sticky: primary, backup, revert; see
//! [`crate::remotes`]), and log what changed in the original's words.
//! When no backend can serve it, "no backends available" is logged, at most
//! once per `no_backend_log_interval`, as the original does.
//!
//! The table is bounded (`--max-remotes`): a new client that finds it full
//! is served without a remote, by a hash of its address (see [`assign`]).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Duration;

use foldhash::fast::RandomState;
use slog::{Logger, error, info, warn};
use tokio::time::Instant;

use super::{LogBudget, RateLimit};
use crate::backends::{BackendId, Backends, Need};
use crate::remotes::{Choice, Remote, Remotes};

/// [`assign`] over a core's own tables: a macro, not a method, so that the
/// borrows are of fields and the caller can go on counting (on the remote
/// it gets back, and on the core's counters) while it holds them.
macro_rules! assign_client {
    ($core:ident, $ip:expr, $now:expr) => {
        $crate::core::assign::assign(
            $crate::core::assign::Table {
                remotes: &mut $core.remotes,
                max: $core.cfg.max_remotes,
                hasher: &$core.client_hasher,
            },
            &mut $core.backends,
            $crate::core::assign::AssignLog {
                log: &$core.log,
                no_backend: &mut $core.repeat_logs.no_backend,
                no_backend_interval: $core.cfg.timers.no_backend_log_interval,
                per_client: &mut $core.repeat_logs.per_client,
            },
            $ip,
            $now,
        )
    };
}
pub(super) use assign_client;

/// Say why no backend could take a client, at most once per
/// `no_backend_log_interval`: none is up (the original's error), or, for
/// an IPv6 client, none of those up speaks the IPv6 extension (a warning:
/// the backends are fine, they are too old for the client).
fn log_no_backend(logs: &mut AssignLog<'_>, backends: &Backends, ip: &IpAddr, now: Instant) {
    if !logs.no_backend.allow(now, logs.no_backend_interval) {
        return;
    }
    let up = backends.iter().filter(|b| b.is_ok()).count();
    if up > 0 && Need::of(ip) == Need::Ipv6 {
        warn!(logs.log, "no backend speaks the IPv6 extension (IPv6 client not served)";
            "remote_ip" => %ip, "backends_up" => up);
    } else {
        error!(logs.log, "no backends available");
    }
}

/// Log a change of a remote's backend in the original's words.
pub(super) fn log_reassignment(log: &Logger, ip: &IpAddr, choice: &Choice) {
    if let Some(change) = choice.change {
        info!(log, "{}", change.message(); "remote_ip" => %ip, "be_id" => change.backend());
    }
}

/// Where assignment logs: the core's logger, and the rate limit of "no
/// backends available".
pub(super) struct AssignLog<'a> {
    pub log: &'a Logger,
    pub no_backend: &'a mut RateLimit,
    pub no_backend_interval: Duration,
    /// Per-client records ("new remote peer", a change of backend).
    pub per_client: &'a mut LogBudget,
}

/// What assigning found.
pub(super) struct Assigned<'r> {
    /// The client's remote; `None` when the table is full and the client
    /// is new (it is served without one).
    pub remote: Option<&'r mut Remote>,
    /// Its backend now; `None` when no backend can serve it.
    pub backend: Option<BackendId>,
}

/// The remote table and its bound, as assigning sees them.
pub(super) struct Table<'a> {
    pub remotes: &'a mut Remotes,
    pub max: usize,
    /// Hashes the clients served without a remote.
    pub hasher: &'a RandomState,
}

/// The remote of `ip`, seen at `now`, and the backend it gets (`None`: no
/// backend can serve it; logged, rate-limited).  A new client finding the
/// table at `--max-remotes` gets no remote: its backend is chosen by a hash
/// of its address over the backends that can serve it (see
/// [`Backends::stateless_for`]), so a flood of new addresses cannot grow
/// the table or move the clients already in it.  The tables are passed
/// apart from the rest of the core so that the caller can go on counting
/// on the remote it gets back.
pub(super) fn assign<'r>(
    table: Table<'r>,
    backends: &mut Backends,
    mut logs: AssignLog<'_>,
    ip: IpAddr,
    now: Instant,
) -> Assigned<'r> {
    let remotes = table.remotes;
    if remotes.len() >= table.max && remotes.get(&ip).is_none() {
        let backend = backends.stateless_for(table.hasher.hash_one(ip), Need::of(&ip));
        if backend.is_none() {
            log_no_backend(&mut logs, backends, &ip, now);
        }
        return Assigned {
            remote: None,
            backend,
        };
    }
    let (rem, created) = remotes.touch(ip, now);
    if created && logs.per_client.allow(now) {
        info!(logs.log, "new remote peer"; "remote_ip" => %ip);
    }
    let choice = rem.choose_backend_for(backends, Need::of(&ip));
    if choice.change.is_some() && logs.per_client.allow(now) {
        log_reassignment(logs.log, &ip, &choice);
    }
    if choice.backend.is_none() {
        log_no_backend(&mut logs, backends, &ip, now);
    }
    Assigned {
        remote: Some(rem),
        backend: choice.backend,
    }
}
