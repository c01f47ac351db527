//! PROMETHEUS METRICS
//!
//! `--metrics ADDR:PORT` serves the balancer's counters, gauges and
//! histograms at `http://ADDR:PORT/metrics` for Prometheus (or anything that
//! reads its exposition formats) to scrape.  docs/metrics.md lists every
//! metric; the statics of `families.rs` are the only place their names are
//! written.
//!
//! Why it is built this way:
//!
//! - **Nothing on the hot path.**  The event loop keeps no Prometheus
//!   state.  Each scrape asks it for one [`Summary`] through the
//!   [`StatsHandle`] (the same copy the stats socket serves), and this
//!   module turns that copy into metrics on the sidecar thread
//!   ([`crate::ops::sidecar`]), not the loop's.  Every scrape is therefore
//!   one instant: its counters agree with one another.
//! - **No hand-written formats.**  `prometheus-client` (the Prometheus
//!   project's Rust client) writes the exposition: OpenMetrics 1.0 when the
//!   scraper's `Accept` header offers it (Prometheus does), else the classic
//!   text format 0.0.4.  Each scrape fills a fresh registry with one
//!   [`Collector`] holding the snapshot; histograms are encoded from the
//!   snapshot's bucket arrays.  `hyper` serves HTTP/1.1.
//! - **A scraper cannot pile up work.**  At most [`MAX_CONNECTIONS`]
//!   connections are served at once (more are closed as they are
//!   accepted); the request head must arrive within
//!   [`HEADER_READ_TIMEOUT`] and the whole exchange end within
//!   [`CONNECTION_TIMEOUT`]; one request per connection.
//!
//! The parts: `families` declares every metric ([`ALL`]), `exposition`
//! writes a snapshot in the Prometheus formats ([`render`]), `http` serves
//! it ([`spawn`]).
//!
//! [`Summary`]: crate::core::snapshot::Summary
//! [`StatsHandle`]: crate::shell::stats_requests::StatsHandle
//! [`Collector`]: prometheus_client::collector::Collector

mod exposition;
mod families;
mod http;

pub use exposition::{
    Format, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, coarse_state, prometheus_buckets, render,
};
pub use families::*;
pub use http::{
    CONNECTION_TIMEOUT, HEADER_READ_TIMEOUT, MAX_CONNECTIONS, METRICS_PATH, MetricsListener, bind,
    spawn,
};
