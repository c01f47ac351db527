//! A document as text for a terminal: a summary or snapshot as a few
//! lines of totals and the BACKENDS and REMOTE PEERS tables; one backend
//! or remote as `key  value` lines, in the order docs/stats.md lists the
//! fields, with fields this program does not know after them (a newer
//! balancer's document still shows in full).  With `--json` the document
//! is passed through as it came.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::args::{Args, Query};
use crate::format::{age, cell, histogram, iso_utc, micros, now_ms, span, u64_of};
use crate::table::Table;

/// The counters shown on the traffic line; others are listed by name when
/// they are not zero.
const TRAFFIC: &[&str] = &[
    "udp_received",
    "udp_forwarded",
    "udp_replies",
    "tcp_accepted",
];

/// A summary or snapshot document as text: a few lines of counters, the
/// BACKENDS table and (snapshot) the REMOTE PEERS table.
fn render_snapshot(doc: &Value) -> String {
    let mut out = String::new();
    let field = |k: &str| cell(doc.get(k));
    let now = u64_of(doc.get("now_ms")).unwrap_or_else(now_ms);
    let up = u64_of(doc.get("started_ms"))
        .map_or_else(|| "-".to_string(), |s| span(now.saturating_sub(s)));
    let _ = writeln!(
        out,
        "mname-balancer pid {}, up {up}, at {}{}",
        field("pid"),
        iso_utc(now),
        if doc.get("draining").and_then(Value::as_bool) == Some(true) {
            ", DRAINING"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "remotes {}, in flight {}, TCP sessions open {}, log records dropped {}",
        field("remotes_tracked"),
        field("inflight"),
        field("tcp_sessions_open"),
        field("log_records_dropped")
    );
    if let Some(counters) = doc.get("counters").and_then(Value::as_object) {
        let c = |k: &str| cell(counters.get(k));
        let _ = writeln!(
            out,
            "UDP received {}, forwarded {}, replies {}; TCP accepted {}",
            c("udp_received"),
            c("udp_forwarded"),
            c("udp_replies"),
            c("tcp_accepted")
        );
        let others: Vec<String> = counters
            .iter()
            .filter(|(k, v)| !TRAFFIC.contains(&k.as_str()) && v.as_u64() != Some(0))
            .map(|(k, v)| format!("{k} {}", cell(Some(v))))
            .collect();
        if !others.is_empty() {
            let _ = writeln!(out, "also: {}", others.join(", "));
        }
    }

    let mut backends = Table::new(&[
        ("ID", true),
        ("STATE", false),
        ("OK", false),
        ("REMOTES", true),
        ("UDP", true),
        ("TCP", true),
        ("STUCK", true),
        ("CONN", true),
        ("ERR", true),
        ("HB RTT", true),
        ("PATH", false),
    ]);
    let empty = Vec::new();
    let list = doc
        .get("backends")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for b in list {
        let f = |k: &str| cell(b.get(k));
        let rtt = u64_of(b.get("last_heartbeat_rtt_us")).map_or_else(|| "-".to_string(), micros);
        backends.rows.push(vec![
            f("id"),
            f("state"),
            f("ok"),
            f("remotes"),
            f("udp"),
            f("tcp"),
            f("stuck"),
            f("conn_start"),
            f("conn_error"),
            rtt,
            f("path"),
        ]);
    }
    let _ = writeln!(out, "\nBACKENDS ({})", list.len());
    if list.is_empty() {
        out.push_str("(none)\n");
    } else {
        backends.render(&mut out);
    }

    let Some(remotes) = doc.get("remotes").and_then(Value::as_array) else {
        return out;
    };
    let mut peers = Table::new(&[
        ("IP", false),
        ("BACKEND", true),
        ("BACKUP", true),
        ("UDP", true),
        ("UDP DROPS", true),
        ("TCP", true),
        ("TCP DROPS", true),
        ("FIRST SEEN", true),
        ("LAST SEEN", true),
    ]);
    for r in remotes {
        let f = |k: &str| cell(r.get(k));
        let when = |k: &str| u64_of(r.get(k)).map_or_else(|| "-".to_string(), |t| age(t, now));
        peers.rows.push(vec![
            f("ip"),
            f("backend"),
            f("backup"),
            f("udp"),
            f("udp_drops"),
            f("tcp"),
            f("tcp_drops"),
            when("first_seen_ms"),
            when("last_seen_ms"),
        ]);
    }
    let _ = writeln!(out, "\nREMOTE PEERS ({})", remotes.len());
    if remotes.is_empty() {
        out.push_str("(none)\n");
    } else {
        peers.render(&mut out);
    }
    out
}

/// The fields of a backend and of a remote in the order docs/stats.md
/// lists them; fields this program does not know follow, by name.
const BACKEND_FIELDS: &[&str] = &[
    "id",
    "path",
    "state",
    "ok",
    "caps",
    "remotes",
    "inflight",
    "udp",
    "udp_replies",
    "tcp",
    "stuck",
    "timeouts",
    "conn_start",
    "conn_error",
    "faults",
    "passive_faults",
    "replayed_away",
    "hedged",
    "hedge_delay_us",
    "last_heartbeat_rtt_us",
    "heartbeat_rtt",
    "forward_latency",
];
const REMOTE_FIELDS: &[&str] = &[
    "ip",
    "backend",
    "backup",
    "udp",
    "udp_drops",
    "tcp",
    "tcp_drops",
    "first_seen_ms",
    "last_seen_ms",
];

/// The cache's fields, in the order shown.
const CACHE_FIELDS: &[&str] = &[
    "entries",
    "max_entries",
    "bytes",
    "max_bytes",
    "serve_stale_us",
];

/// One object as `key  value` lines.  Times (`*_ms`) are shown as UTC and
/// as an age, durations (`*_us`) in ms or s, histograms in one line.
fn render_object(obj: &Map<String, Value>, order: &[&str]) -> String {
    let now = now_ms();
    let mut keys: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    keys.extend(
        obj.keys()
            .map(String::as_str)
            .filter(|k| !order.contains(k)),
    );
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for k in keys {
        let Some(v) = obj.get(k) else { continue };
        let text = match v {
            Value::Object(h) if h.contains_key("buckets") => histogram(h),
            Value::Number(n) if k.ends_with("_ms") => match n.as_u64() {
                Some(t) => format!("{} ({})", iso_utc(t), age(t, now)),
                None => n.to_string(),
            },
            Value::Number(n) if k.ends_with("_us") => {
                n.as_u64().map_or_else(|| n.to_string(), micros)
            }
            other => cell(Some(other)),
        };
        let _ = writeln!(out, "{k:width$}  {text}");
    }
    out
}

/// The report for one answer: the document itself with `--json`, else text.
pub(crate) fn render(args: &Args, raw: &str, doc: &Value) -> String {
    if args.json {
        let raw = raw.trim();
        // The server writes one line; pass it through as it came.
        let mut line = if raw.contains('\n') {
            doc.to_string()
        } else {
            raw.to_string()
        };
        line.push('\n');
        return line;
    }
    let inner = |key: &str, order: &[&str]| match doc.get(key).and_then(Value::as_object) {
        Some(obj) => render_object(obj, order),
        None => format!("(the answer has no \"{key}\" object)\n"),
    };
    match args.query {
        Query::Snapshot | Query::Summary => render_snapshot(doc),
        Query::Backend(_) => inner("backend", BACKEND_FIELDS),
        Query::Remote(_) => inner("remote", REMOTE_FIELDS),
        Query::Cache => {
            let mut out = inner("cache", CACHE_FIELDS);
            out.push('\n');
            out.push_str(&inner("counters", &[]));
            out
        }
        Query::CacheFlush => match doc.get("flushed").and_then(Value::as_u64) {
            Some(n) => format!("flushed {n} entries\n"),
            None => "(the answer has no \"flushed\" count)\n".to_string(),
        },
    }
}
