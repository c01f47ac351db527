//! ASSIGNMENT
//!
//! The one step that gives a client its backend, for UDP and TCP alike:
//! find or create the client's remote (marking it seen), ask it which
//! backend serves it now (sticky: primary, backup, revert; see
//! [`crate::remotes`]), and log what changed in the original's words.
//! When no backend can serve it, "no backends available" is logged, at most
//! once per `no_backend_log_interval`, as the original does.

use std::net::IpAddr;

use slog::{Logger, error, info};
use tokio::time::Instant;

use std::time::Duration;

use super::RateLimit;
use crate::backends::{BackendId, Backends, Need};
use crate::remotes::{Choice, Remote, Remotes};

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
}

/// The remote of `ip`, seen at `now`, and the backend it gets (`None`: no
/// backend can serve it; logged, rate-limited).  The tables are passed
/// apart from the rest of the core so that the caller can go on counting
/// on the remote it gets back.
pub(super) fn assign<'r>(
    remotes: &'r mut Remotes,
    backends: &mut Backends,
    logs: AssignLog<'_>,
    ip: IpAddr,
    now: Instant,
) -> (&'r mut Remote, Option<BackendId>) {
    let (rem, created) = remotes.touch(ip, now);
    if created {
        info!(logs.log, "new remote peer"; "remote_ip" => %ip);
    }
    let choice = rem.choose_backend_for(backends, Need::of(&ip));
    log_reassignment(logs.log, &ip, &choice);
    if choice.backend.is_none() && logs.no_backend.allow(now, logs.no_backend_interval) {
        error!(logs.log, "no backends available");
    }
    (rem, choice.backend)
}
