//! STATS REQUESTS
//!
//! How the operator's side asks the event loop about its state.  The stats
//! socket ([`crate::ops::stats_socket`], read by `balstat`) and the
//! Prometheus endpoint ([`crate::ops::metrics`]) run on another thread and
//! never touch the loop's state.  They send a [`StatsRequest`] through a
//! bounded channel ([`StatsHandle`]); the loop answers each one at once
//! with a copy made by the core ([`crate::core::snapshot`]), and goes on.
//! A summary (counters and backends) is small.  Remotes can number a
//! million, so they are asked for in pages ([`StatsRequest::Remotes`],
//! after a cursor): the loop copies one page per request, and a slow
//! reader of the stats socket only slows its own task.  One request
//! changes state: emptying the packet cache ([`StatsRequest::FlushCache`]).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub use crate::core::snapshot::{
    BackendView, HistogramView, RemoteView, STATS_VERSION, Summary, WallClock,
};

/// Requests waiting for the loop.  Askers wait when it is full.
pub const STATS_QUEUE: usize = 64;

/// The largest page of remotes one request may ask for: a page is copied
/// inside the event loop, so its size bounds the time taken from traffic.
pub const MAX_REMOTES_PAGE: usize = 4096;

/// A question for the event loop.
#[derive(Debug)]
pub enum StatsRequest {
    /// Counters and every backend.
    Summary(oneshot::Sender<Summary>),
    /// Up to `limit` remotes in address order, starting after `after`
    /// (from the first when `None`).
    Remotes {
        /// The cursor: the last address of the page before.
        after: Option<IpAddr>,
        /// Remotes at most (no more than [`MAX_REMOTES_PAGE`]).
        limit: usize,
        /// Where the page goes.
        reply: oneshot::Sender<Vec<RemoteView>>,
    },
    /// One remote.
    Remote {
        /// Its address.
        ip: IpAddr,
        /// Where it goes (`None`: no such remote).
        reply: oneshot::Sender<Option<RemoteView>>,
    },
    /// Empty the packet cache; the reply is how many entries it held.
    FlushCache(oneshot::Sender<usize>),
}

/// The askers' end of the channel to the loop.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    tx: mpsc::Sender<StatsRequest>,
}

impl StatsHandle {
    /// A handle sending on `tx`, whose receiver the loop holds.
    pub fn new(tx: mpsc::Sender<StatsRequest>) -> Self {
        StatsHandle { tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> StatsRequest) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// `None` once the loop has stopped.
    pub async fn summary(&self) -> Option<Summary> {
        self.ask(StatsRequest::Summary).await
    }

    /// A page of remotes after `after`, at most `limit` (and
    /// [`MAX_REMOTES_PAGE`]); `None` once the loop has stopped.
    pub async fn remotes(&self, after: Option<IpAddr>, limit: usize) -> Option<Vec<RemoteView>> {
        self.ask(|reply| StatsRequest::Remotes {
            after,
            limit: limit.min(MAX_REMOTES_PAGE),
            reply,
        })
        .await
    }

    /// The remote at `ip` (`Some(None)`: none); `None` once the loop has
    /// stopped.
    pub async fn remote(&self, ip: IpAddr) -> Option<Option<RemoteView>> {
        self.ask(|reply| StatsRequest::Remote { ip, reply }).await
    }

    /// Empty the packet cache: how many entries it held.
    pub async fn flush_cache(&self) -> Option<usize> {
        self.ask(StatsRequest::FlushCache).await
    }
}

/// The wall clock now, for turning the core's instants into Unix times.
pub fn wall_clock_now() -> WallClock {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    WallClock::new(Instant::now(), unix_ms)
}
