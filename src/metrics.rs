//! PROMETHEUS METRICS (being written)
//!
//! `--metrics ADDR:PORT` serves the balancer's counters, gauges and
//! histograms in the Prometheus text exposition format at `/metrics`.

use std::io;
use std::net::SocketAddr;

use slog::Logger;
use tokio::task::AbortHandle;

use crate::stats::StatsHandle;

/// A bound metrics listener.
pub struct MetricsListener {
    listener: tokio::net::TcpListener,
}

/// Bind the metrics listener (before the loop starts, so that a bad
/// address is an error at start-up).
pub fn bind(addr: SocketAddr) -> io::Result<MetricsListener> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    Ok(MetricsListener {
        listener: tokio::net::TcpListener::from_std(std_listener)?,
    })
}

/// Serve `/metrics` until the returned task is aborted.
pub fn spawn(listener: MetricsListener, stats: StatsHandle, log: Logger) -> AbortHandle {
    let _ = (stats, log);
    tokio::spawn(async move {
        let _listener = listener.listener;
        std::future::pending::<()>().await
    })
    .abort_handle()
}
