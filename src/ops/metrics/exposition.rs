//! A snapshot as Prometheus text: each scrape's [`Summary`] is wrapped in
//! a [`Collector`] of a fresh registry and written, family by family in
//! the order [`super::families`] declares them, in the format the scraper
//! asked for ([`Format::negotiate`]).  Histograms are encoded from the
//! snapshot's bucket arrays; nothing here keeps state between scrapes.

use std::fmt;

use hyper::header::{ACCEPT, HeaderMap};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet, prometheus_text, text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::families::*;
use crate::core::snapshot::{BackendView, HistogramView, Summary};

/// The content type of the OpenMetrics text written by
/// [`prometheus_client::encoding::text`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text format (version 0.0.4).
pub const TEXT_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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

pub(super) fn seconds(us: u64) -> f64 {
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
    one(enc, &LOG_RECORDS_DROPPED, Counter(s.log_records_dropped))?;
    one(enc, &UNTRACKED_QUERIES, Counter(c.untracked_queries))?;
    one(
        enc,
        &UNTRACKED_CONNECTIONS,
        Counter(c.untracked_connections),
    )?;
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
    one(enc, &HEDGED, Counter(c.hedged))?;
    one(enc, &HEDGE_WINS, Counter(c.hedge_wins))?;
    labelled(enc, &HEDGES_NOT_SENT, reasons(&HEDGES_NOT_SENT))?;
    one(enc, &TCP_ACCEPTED, Counter(c.tcp_accepted))?;
    labelled(enc, &TCP_DROPPED, reasons(&TCP_DROPPED))?;
    labelled(enc, &TCP_CLOSED, reasons(&TCP_CLOSED))?;
    one(enc, &CACHE_ENTRIES, Gauge(s.cache.entries as u64))?;
    one(enc, &CACHE_BYTES, Gauge(s.cache.bytes as u64))?;
    labelled(enc, &CACHE_ANSWERS, reasons(&CACHE_ANSWERS))?;
    one(enc, &CACHE_MISSES, Counter(c.cache_misses))?;
    one(enc, &CACHE_BYPASSED, Counter(c.cache_bypassed))?;
    one(enc, &CACHE_STORED, Counter(c.cache_stored))?;
    one(enc, &CACHE_STORED_TCP, Counter(c.cache_stored_tcp))?;
    one(enc, &CACHE_NOT_STORED, Counter(c.cache_not_stored))?;
    one(enc, &CACHE_EVICTIONS, Counter(c.cache_evictions))?;
    one(enc, &CACHE_FLUSHED, Counter(c.cache_flushed))?;

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
    per_backend(enc, &BACKEND_HEDGED, &backends, |b| Some(Counter(b.hedged)))?;
    per_backend(enc, &BACKEND_HEDGE_DELAY, &backends, |b| {
        b.hedge_delay_us.map(|us| GaugeF(seconds(us)))
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

    /// The `Content-Type` of a response in this format.
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::header::HeaderValue;

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
}
