//! PROMETHEUS METRICS
//!
//! `--metrics ADDR:PORT` serves the balancer's counters, gauges and
//! histograms at `http://ADDR:PORT/metrics` for Prometheus (or anything that
//! reads its exposition formats) to scrape.  docs/metrics.md lists every
//! metric; the statics below are the only place their names are written.
//!
//! Why it is built this way:
//!
//! - **Nothing on the hot path.**  The event loop keeps no Prometheus
//!   state.  Each scrape asks it for one [`Summary`] through the
//!   [`StatsHandle`] (the same copy the stats socket serves), and this
//!   module turns that copy into metrics on the sidecar thread
//!   ([`crate::sidecar`]), not the loop's.  Every scrape is therefore one
//!   instant: its counters agree with one another.
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

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet, prometheus_text, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use slog::{Logger, debug, error, info, warn};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::core::snapshot::{BackendView, HistogramView, Summary};
use crate::shell::stats_requests::StatsHandle;

/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// Connections served at once; more are closed as soon as they are
/// accepted.
pub const MAX_CONNECTIONS: usize = 8;

/// The request line and headers must arrive this soon after connecting.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection is closed this long after it was accepted, whatever it is
/// doing: a scraper that stops reading cannot hold one of the
/// [`MAX_CONNECTIONS`].
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head read (hyper's minimum buffer).
const MAX_REQUEST_BUF: usize = 8192;

/// After a failed accept (out of file descriptors, say), wait this long
/// before the next, and log at most this often.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The content type of the OpenMetrics text written by
/// [`prometheus_client::encoding::text`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text format (version 0.0.4).
pub const TEXT_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

// ---- the metrics -----------------------------------------------------------

/// One metric family: everything about it but its values.
#[derive(Debug)]
pub struct Metric {
    /// The family name, without the suffixes the encoder adds: the unit
    /// (`_seconds`, from [`Metric::unit`]), `_total` on counter samples and
    /// `_info` on info samples.
    pub name: &'static str,
    pub kind: MetricType,
    pub unit: Option<Unit>,
    /// Label names, in the order written.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

impl Metric {
    /// The name of the family as exposed (with its unit).
    pub fn family_name(&self) -> String {
        match &self.unit {
            Some(u) => format!("{}_{}", self.name, u.as_str()),
            None => self.name.to_string(),
        }
    }

    /// The name its samples carry (histograms add `_bucket`, `_sum` and
    /// `_count` to it).
    pub fn sample_name(&self) -> String {
        let family = self.family_name();
        match self.kind {
            MetricType::Counter => format!("{family}_total"),
            MetricType::Info => format!("{family}_info"),
            _ => family,
        }
    }
}

const COUNTER: MetricType = MetricType::Counter;
const GAUGE: MetricType = MetricType::Gauge;
const INFO: MetricType = MetricType::Info;
const HISTOGRAM: MetricType = MetricType::Histogram;

/// Declares each metric as a `pub static` [`Metric`] (`IDENT: KIND "name"
/// UNIT, [labels] "help";`), and [`ALL`] listing them.
macro_rules! metrics {
    ($($id:ident: $kind:ident $name:literal $unit:expr, [$($label:literal),*] $help:literal;)*) => {
        $(
            pub static $id: Metric = Metric {
                name: $name,
                kind: $kind,
                unit: $unit,
                labels: &[$($label),*],
                help: $help,
            };
        )*

        /// Every metric, in the order written.
        pub static ALL: &[&Metric] = &[$(&$id),*];
    };
}

metrics! {
    BUILD: INFO "mname_balancer_build" None, ["version"]
        "The balancer's version.";
    START_TIME: GAUGE "mname_balancer_start_time" Some(Unit::Seconds), []
        "When the balancer started, in seconds since the Unix epoch.";
    DRAINING: GAUGE "mname_balancer_draining" None, []
        "1 once a SIGTERM came and the balancer is finishing its work, else 0.";
    REMOTES_TRACKED: GAUGE "mname_balancer_remotes_tracked" None, []
        "Client hosts (remotes) known now.";
    INFLIGHT: GAUGE "mname_balancer_inflight_queries" None, []
        "UDP queries forwarded and not yet answered or timed out.";
    TCP_SESSIONS_OPEN: GAUGE "mname_balancer_tcp_sessions_open" None, []
        "Client TCP connections being relayed now.";
    UDP_RECEIVED: COUNTER "mname_balancer_udp_received" None, []
        "Client datagrams read.";
    UDP_FORWARDED: COUNTER "mname_balancer_udp_forwarded" None, []
        "Client queries sent to a backend (a replay is not counted again).";
    UDP_DROPPED: COUNTER "mname_balancer_udp_dropped" None, ["reason"]
        "Client datagrams not forwarded, by reason.";
    UDP_TIMEOUTS: COUNTER "mname_balancer_udp_timeouts" None, []
        "Queries left unanswered by --query-timeout.";
    UDP_REPLIES: COUNTER "mname_balancer_udp_replies" None, []
        "Backend answers sent to clients (synthesized ones are counted apart).";
    UDP_REPLIES_FAILED: COUNTER "mname_balancer_udp_replies_failed" None, []
        "Datagrams to clients that the kernel would not send.";
    ANSWERS_DROPPED: COUNTER "mname_balancer_answers_dropped" None, ["reason"]
        "Backend answers not sent to any client, by reason.";
    SYNTHESIZED: COUNTER "mname_balancer_synthesized_answers" None, ["reason"]
        "Error answers the balancer made itself and sent, by reason.";
    SYNTHESIZED_RATE_LIMITED: COUNTER "mname_balancer_synthesized_rate_limited" None, []
        "No-backend answers withheld by --synth-rate.";
    REPLAYED: COUNTER "mname_balancer_replayed" None, []
        "Queries sent once more, to another backend, after theirs failed.";
    TCP_ACCEPTED: COUNTER "mname_balancer_tcp_accepted" None, []
        "Client TCP connections accepted.";
    TCP_DROPPED: COUNTER "mname_balancer_tcp_dropped" None, ["reason"]
        "Client TCP connections closed at once, by reason.";
    BACKEND_STATE: INFO "mname_balancer_backend_state" None, ["backend", "state", "path", "ipv6"]
        "Each backend's connection state, socket and whether it speaks the IPv6 extension.";
    BACKEND_UP: GAUGE "mname_balancer_backend_up" None, ["backend"]
        "1 while the backend is given traffic (hello done, heartbeats answered), else 0.";
    BACKEND_REMOTES: GAUGE "mname_balancer_backend_remotes" None, ["backend"]
        "Remotes whose primary backend it is.";
    BACKEND_INFLIGHT: GAUGE "mname_balancer_backend_inflight_queries" None, ["backend"]
        "UDP queries in flight to the backend now.";
    BACKEND_REQUESTS: COUNTER "mname_balancer_backend_requests" None, ["backend", "proto"]
        "Work given to the backend: UDP queries forwarded (replays included), TCP sessions relayed.";
    BACKEND_ANSWERS: COUNTER "mname_balancer_backend_answers" None, ["backend", "proto"]
        "The backend's UDP answers sent to clients.";
    BACKEND_STUCK: COUNTER "mname_balancer_backend_stuck" None, ["backend"]
        "UDP queries dropped because the backend was not reading.";
    BACKEND_TIMEOUTS: COUNTER "mname_balancer_backend_timeouts" None, ["backend"]
        "The backend's queries that met --query-timeout.";
    BACKEND_CONNECTS: COUNTER "mname_balancer_backend_connects" None, ["backend"]
        "Connections to the backend attempted (control and TCP sessions).";
    BACKEND_CONNECT_ERRORS: COUNTER "mname_balancer_backend_connect_errors" None, ["backend"]
        "Connections to the backend that failed or ended in error.";
    BACKEND_FAULTS: COUNTER "mname_balancer_backend_faults" None, ["backend"]
        "Times the backend was faulted (reset and reconnected).";
    BACKEND_PASSIVE_FAULTS: COUNTER "mname_balancer_backend_passive_faults" None, ["backend"]
        "Faults found by the passive check (queries owed, none answered).";
    BACKEND_REPLAYED_AWAY: COUNTER "mname_balancer_backend_replayed_away" None, ["backend"]
        "Queries in flight to the backend replayed elsewhere when it failed.";
    BACKEND_LAST_HEARTBEAT_RTT: GAUGE "mname_balancer_backend_last_heartbeat_rtt" Some(Unit::Seconds), ["backend"]
        "Round trip of the backend's last heartbeat answered (absent until one is).";
    BACKEND_HEARTBEAT_RTT: HISTOGRAM "mname_balancer_backend_heartbeat_rtt" Some(Unit::Seconds), ["backend"]
        "Round trips of the backend's heartbeats.";
    BACKEND_FORWARD_LATENCY: HISTOGRAM "mname_balancer_backend_forward_latency" Some(Unit::Seconds), ["backend"]
        "Time from a client's query read to the backend's answer sent, through the backend.";
}

// ---- encoding a snapshot ---------------------------------------------------

/// One value to write.
enum Sample<'a> {
    Counter(u64),
    Gauge(u64),
    GaugeF(f64),
    Histogram(&'a HistogramView),
}

impl Sample<'_> {
    fn kind(&self) -> MetricType {
        match self {
            Sample::Counter(_) => COUNTER,
            Sample::Gauge(_) | Sample::GaugeF(_) => GAUGE,
            Sample::Histogram(_) => HISTOGRAM,
        }
    }

    fn encode(&self, m: &mut MetricEncoder<'_>) -> fmt::Result {
        match self {
            Sample::Counter(v) => m.encode_counter::<NoLabelSet, u64, u64>(v, None),
            Sample::Gauge(v) => m.encode_gauge(v),
            Sample::GaugeF(v) => m.encode_gauge(v),
            Sample::Histogram(h) => {
                let (sum, count, buckets) = prometheus_buckets(h);
                m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
            }
        }
    }
}

/// A snapshot's histogram as Prometheus has it: the sum in seconds, the
/// count, and the buckets as (upper bound in seconds, count in that bucket
/// alone), ending with +Inf.  The encoder makes the buckets cumulative.
///
/// The snapshot's bucket `i` counts durations shorter than `le_us[i]`, so
/// each is also at most the bound Prometheus reads (`le`).  The count is
/// the buckets' total, so that the +Inf bucket always equals it.
pub fn prometheus_buckets(h: &HistogramView) -> (f64, u64, Vec<(f64, u64)>) {
    let mut buckets: Vec<(f64, u64)> = h
        .le_us
        .iter()
        .zip(&h.buckets)
        .map(|(&le, &n)| (seconds(le), n))
        .collect();
    let rest: u64 = h.buckets.iter().skip(h.le_us.len()).sum();
    buckets.push((f64::INFINITY, rest));
    let count = buckets.iter().map(|&(_, n)| n).sum();
    (seconds(h.sum_us), count, buckets)
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Write one family with one unlabelled sample.
fn one(enc: &mut DescriptorEncoder<'_>, m: &'static Metric, sample: Sample<'_>) -> fmt::Result {
    debug_assert!(m.labels.is_empty() && m.kind == sample.kind(), "{}", m.name);
    let mut family = enc.encode_descriptor(m.name, m.help, m.unit.as_ref(), m.kind)?;
    sample.encode(&mut family)
}

/// Write one family with a sample per label set.
fn labelled<'a, L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder<'_>,
    m: &'static Metric,
    rows: impl IntoIterator<Item = (L, Sample<'a>)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(m.name, m.help, m.unit.as_ref(), m.kind)?;
    for (labels, sample) in rows {
        debug_assert_eq!(m.kind, sample.kind(), "{}", m.name);
        sample.encode(&mut family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Write a per-backend family: one sample per backend, labelled `backend`.
fn per_backend<'a>(
    enc: &mut DescriptorEncoder<'_>,
    m: &'static Metric,
    backends: &'a [(String, &'a BackendView)],
    sample: impl Fn(&'a BackendView) -> Option<Sample<'a>>,
) -> fmt::Result {
    debug_assert_eq!(m.labels, ["backend"], "{}", m.name);
    labelled(
        enc,
        m,
        backends
            .iter()
            .filter_map(|(id, be)| Some(([("backend", id.as_str())], sample(be)?))),
    )
}

/// A backend's state for the `state` label: the stats socket's, except
/// that `ok-heartbeat-outstanding` is `ok`.  A heartbeat is outstanding for
/// part of every heartbeat interval, and a label that flipped with each one
/// would make a new series every few seconds.
pub fn coarse_state(state: &'static str) -> &'static str {
    match state {
        "ok-heartbeat-outstanding" => "ok",
        s => s,
    }
}

/// A scrape: the snapshot it shows, as a [`Collector`] of a fresh registry.
#[derive(Debug)]
struct Snapshot(Summary);

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        encode_summary(&self.0, &mut enc)
    }
}

fn encode_summary(s: &Summary, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
    use Sample::{Counter, Gauge, GaugeF, Histogram};
    let c = &s.counters;
    {
        let mut family =
            enc.encode_descriptor(BUILD.name, BUILD.help, BUILD.unit.as_ref(), BUILD.kind)?;
        family.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
    }
    one(enc, &START_TIME, GaugeF(s.started_ms as f64 / 1e3))?;
    one(enc, &DRAINING, Gauge(u64::from(s.draining)))?;
    one(enc, &REMOTES_TRACKED, Gauge(s.remotes_tracked as u64))?;
    one(enc, &INFLIGHT, Gauge(s.inflight as u64))?;
    one(enc, &TCP_SESSIONS_OPEN, Gauge(s.tcp_sessions_open as u64))?;
    one(enc, &UDP_RECEIVED, Counter(c.udp_received))?;
    one(enc, &UDP_FORWARDED, Counter(c.udp_forwarded))?;
    // The rows of each labelled family come from the counters' one
    // declaration (crate::core::counters).
    let reasons = |m: &Metric| {
        c.reasons_of(m.name)
            .into_iter()
            .map(|(reason, n)| ([("reason", reason)], Counter(n)))
            .collect::<Vec<_>>()
    };
    labelled(enc, &UDP_DROPPED, reasons(&UDP_DROPPED))?;
    one(enc, &UDP_TIMEOUTS, Counter(c.timeouts))?;
    one(enc, &UDP_REPLIES, Counter(c.udp_replies))?;
    one(enc, &UDP_REPLIES_FAILED, Counter(c.udp_replies_failed))?;
    labelled(enc, &ANSWERS_DROPPED, reasons(&ANSWERS_DROPPED))?;
    labelled(enc, &SYNTHESIZED, reasons(&SYNTHESIZED))?;
    one(
        enc,
        &SYNTHESIZED_RATE_LIMITED,
        Counter(c.no_backend_rate_limited),
    )?;
    one(enc, &REPLAYED, Counter(c.replayed))?;
    one(enc, &TCP_ACCEPTED, Counter(c.tcp_accepted))?;
    labelled(enc, &TCP_DROPPED, reasons(&TCP_DROPPED))?;

    let backends: Vec<(String, &BackendView)> =
        s.backends.iter().map(|b| (b.id.to_string(), b)).collect();
    {
        let m = &BACKEND_STATE;
        let mut family = enc.encode_descriptor(m.name, m.help, m.unit.as_ref(), m.kind)?;
        for (id, be) in &backends {
            let path = be.path.display().to_string();
            let ipv6 = if be.caps & mname_balancer_protocol::capability::IPV6 != 0 {
                "true"
            } else {
                "false"
            };
            family.encode_info(&[
                ("backend", id.as_str()),
                ("state", coarse_state(be.state)),
                ("path", path.as_str()),
                ("ipv6", ipv6),
            ])?;
        }
    }
    per_backend(enc, &BACKEND_UP, &backends, |b| {
        Some(Gauge(u64::from(b.ok)))
    })?;
    per_backend(enc, &BACKEND_REMOTES, &backends, |b| {
        Some(Gauge(u64::from(b.remotes)))
    })?;
    per_backend(enc, &BACKEND_INFLIGHT, &backends, |b| {
        Some(Gauge(b.inflight as u64))
    })?;
    labelled(
        enc,
        &BACKEND_REQUESTS,
        backends.iter().flat_map(|(id, b)| {
            [
                ([("backend", id.as_str()), ("proto", "udp")], Counter(b.udp)),
                ([("backend", id.as_str()), ("proto", "tcp")], Counter(b.tcp)),
            ]
        }),
    )?;
    labelled(
        enc,
        &BACKEND_ANSWERS,
        backends.iter().map(|(id, b)| {
            (
                [("backend", id.as_str()), ("proto", "udp")],
                Counter(b.udp_replies),
            )
        }),
    )?;
    per_backend(enc, &BACKEND_STUCK, &backends, |b| Some(Counter(b.stuck)))?;
    per_backend(enc, &BACKEND_TIMEOUTS, &backends, |b| {
        Some(Counter(b.timeouts))
    })?;
    per_backend(enc, &BACKEND_CONNECTS, &backends, |b| {
        Some(Counter(b.conn_start))
    })?;
    per_backend(enc, &BACKEND_CONNECT_ERRORS, &backends, |b| {
        Some(Counter(b.conn_error))
    })?;
    per_backend(enc, &BACKEND_FAULTS, &backends, |b| Some(Counter(b.faults)))?;
    per_backend(enc, &BACKEND_PASSIVE_FAULTS, &backends, |b| {
        Some(Counter(b.passive_faults))
    })?;
    per_backend(enc, &BACKEND_REPLAYED_AWAY, &backends, |b| {
        Some(Counter(b.replayed_away))
    })?;
    per_backend(enc, &BACKEND_LAST_HEARTBEAT_RTT, &backends, |b| {
        b.last_heartbeat_rtt_us.map(|us| GaugeF(seconds(us)))
    })?;
    per_backend(enc, &BACKEND_HEARTBEAT_RTT, &backends, |b| {
        Some(Histogram(&b.heartbeat_rtt))
    })?;
    per_backend(enc, &BACKEND_FORWARD_LATENCY, &backends, |b| {
        Some(Histogram(&b.forward_latency))
    })?;
    Ok(())
}

/// The exposition formats served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (ends with `# EOF`).
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Text,
}

impl Format {
    /// OpenMetrics when the `Accept` headers offer it, else text 0.0.4.
    pub fn negotiate(headers: &HeaderMap) -> Format {
        let offered = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("application/openmetrics-text"));
        if offered {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => TEXT_CONTENT_TYPE,
        }
    }
}

/// The exposition of `summary` in `format`.
pub fn render(summary: Summary, format: Format) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(summary)));
    let mut out = String::new();
    match format {
        Format::OpenMetrics => text::encode(&mut out, &registry)?,
        Format::Text => prometheus_text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

// ---- HTTP ------------------------------------------------------------------

/// A bound metrics listener, not yet tied to a runtime: it is bound on the
/// event loop's thread and served on the sidecar's ([`crate::sidecar`]).
pub struct MetricsListener {
    listener: std::net::TcpListener,
}

impl MetricsListener {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Bind the metrics listener (before the loop starts, so that a bad
/// address is an error at start-up).  Port 0 takes a free port, logged by
/// [`spawn`].
pub fn bind(addr: SocketAddr) -> io::Result<MetricsListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(MetricsListener { listener })
}

/// Serve `/metrics` on the current runtime until the returned task is
/// aborted (which also ends every connection being served).
pub fn spawn(listener: MetricsListener, stats: StatsHandle, log: Logger) -> AbortHandle {
    let addr = listener.local_addr();
    let listener = match TcpListener::from_std(listener.listener) {
        Ok(l) => l,
        Err(e) => {
            error!(log, "metrics listener failed"; "strerror" => e.to_string());
            return tokio::spawn(async {}).abort_handle();
        }
    };
    match addr {
        Ok(addr) => info!(log, "metrics listening";
            "address" => addr.ip().to_string(), "port" => addr.port().to_string(),
            "url" => format!("http://{addr}{METRICS_PATH}")),
        Err(e) => warn!(log, "metrics listening (address unknown)"; "strerror" => e.to_string()),
    }
    tokio::spawn(serve(listener, stats, log)).abort_handle()
}

async fn serve(listener: TcpListener, stats: StatsHandle, log: Logger) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_BUF);
    // Dropped with this task, aborting every connection still served.
    let mut connections = JoinSet::new();
    let mut accept_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                let now = Instant::now();
                if accept_logged.is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_INTERVAL) {
                    accept_logged = Some(now);
                    warn!(log, "metrics accept failed"; "strerror" => e.to_string());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(log, "metrics: too many connections (closing)";
                "remote_ip" => %peer.ip(), "remote_port" => peer.port());
            continue;
        };
        let stats = stats.clone();
        let service = service_fn(move |req| {
            let stats = stats.clone();
            async move { Ok::<_, Infallible>(respond(req, &stats).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let log = log.clone();
        connections.spawn(async move {
            let _permit = permit;
            let error = match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connection timeout".to_string(),
            };
            debug!(log, "metrics connection closed"; "error" => error,
                "remote_ip" => %peer.ip(), "remote_port" => peer.port());
        });
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn respond(req: Request<Incoming>, stats: &StatsHandle) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.uri().path() != METRICS_PATH {
        return response(
            StatusCode::NOT_FOUND,
            PLAIN,
            format!("not found; metrics are at {METRICS_PATH}\n"),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let format = Format::negotiate(req.headers());
    let Some(summary) = stats.summary().await else {
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "the balancer is stopping\n".into(),
        );
    };
    match render(summary, format) {
        Ok(body) => response(StatusCode::OK, format.content_type(), body),
        Err(fmt::Error) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            PLAIN,
            "could not encode the metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Latency;

    #[test]
    fn histogram_buckets_end_at_inf_with_the_count() {
        let mut l = Latency::default();
        for us in [10, 40, 40, 1_000, 5_000_000] {
            l.record(Duration::from_micros(us));
        }
        let (sum, count, buckets) = prometheus_buckets(&HistogramView::from(&l));
        assert_eq!(count, 5);
        assert!((sum - 5.00109).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (32e-6, 1));
        assert_eq!(buckets[1], (64e-6, 2));
        let last = buckets.last().copied().unwrap_or_default();
        assert_eq!(last, (f64::INFINITY, 1));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn openmetrics_is_served_when_offered() {
        let mut h = HeaderMap::new();
        assert_eq!(Format::negotiate(&h), Format::Text);
        h.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
            ),
        );
        assert_eq!(Format::negotiate(&h), Format::OpenMetrics);
    }

    #[test]
    fn names_are_unique_prefixed_and_conventional() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(m.name.starts_with("mname_balancer_"), "{}", m.name);
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(
                !m.name.ends_with("_total"),
                "{}: the encoder adds _total",
                m.name
            );
            if m.kind == HISTOGRAM {
                assert!(m.family_name().ends_with("_seconds"), "{}", m.name);
            }
            assert!(m.help.ends_with('.'), "{}", m.name);
        }
    }

    /// Every counter of the core is a sample of a declared family: a
    /// family with a `reason` label when the counter names a reason, one
    /// without otherwise; and a scrape shows each reason row.
    #[test]
    fn every_counter_is_exposed_once() {
        use crate::core::Counters;
        for info in Counters::INFO {
            let family = ALL.iter().find(|m| m.name == info.metric);
            let family =
                family.unwrap_or_else(|| panic!("{}: no family {}", info.name, info.metric));
            assert_eq!(
                family.labels.contains(&"reason"),
                info.reason.is_some(),
                "{}",
                info.name
            );
        }
        let mut pairs = std::collections::HashSet::new();
        for info in Counters::INFO {
            assert!(
                pairs.insert((info.metric, info.reason)),
                "{} twice",
                info.name
            );
        }
    }

    /// docs/metrics.md names every metric, and nothing else.
    #[test]
    fn docs_list_every_metric() {
        let doc = include_str!("../../docs/metrics.md");
        for m in ALL {
            let start = format!("| `{}` |", m.sample_name());
            let row = doc.lines().find(|l| l.starts_with(&start));
            let row = row.unwrap_or_else(|| panic!("docs/metrics.md has no row {start}"));
            let labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}`")).collect();
            let labels = match labels.join(", ") {
                l if l.is_empty() => " ".to_string(),
                l => format!(" {l} "),
            };
            let cells = format!("{start} {} |{labels}|", m.kind.as_str());
            assert!(
                row.starts_with(&cells),
                "docs/metrics.md: {row:?} is not {cells:?}"
            );
        }
        for bound in (0..crate::backends::LATENCY_BUCKETS).filter_map(Latency::bucket_bound_us) {
            let le = format!("`{}`", seconds(bound));
            assert!(
                doc.contains(&le),
                "docs/metrics.md lacks the bucket bound {le}"
            );
        }
        let exposed: std::collections::HashSet<String> =
            ALL.iter().map(|m| m.sample_name()).collect();
        for line in doc.lines().filter(|l| l.starts_with("| `mname_balancer_")) {
            let name = line
                .trim_start_matches("| `")
                .split('`')
                .next()
                .unwrap_or_default();
            assert!(
                exposed.contains(name),
                "docs/metrics.md lists {name}, not exposed"
            );
        }
    }
}
