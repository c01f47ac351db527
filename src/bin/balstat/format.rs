//! How one value of the document reads in a table: counts and strings as
//! they are, times as UTC and as ages, durations in the unit that suits
//! them, a histogram as one line.  Each result is one word where it can
//! be (`3m04s`, `0.12ms`), so that a table stays aligned and `awk` can
//! still pick its columns apart.
//!
//! Timestamps are the `time` crate's RFC 3339 (the calendar is not
//! something to hand-roll; the balancer's bunyan logs are written with the
//! same crate).  Spans and latencies are formatted here: what a table
//! wants is the two largest units with the second zero-padded (`3m04s`,
//! `2h05m`) and latencies in ms or s, to about three digits
//! (`0.12ms`, `15.3ms`, `1.20s`).  The duration formats of `time`,
//! `humantime` and `jiff` print every non-zero unit (`2h5m12s345ms`,
//! `2h 5m 12s 345ms`) or one unit with fixed decimals (`120.00µs`):
//! picking the two largest units and padding the second would still be
//! ours to write, so a crate would save nothing here.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ms` since the epoch as UTC RFC 3339 to the second,
/// `2026-12-01T09:00:00Z`.  A time past the year 9999 (which no balancer
/// sends, but the document comes from another process) is shown as the
/// number it came as.
pub(crate) fn iso_utc(ms: u64) -> String {
    i64::try_from(ms / 1000)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A span of milliseconds, coarsely: `12s`, `3m04s`, `2h05m`, `4d03h`.
pub(crate) fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// How long before `now` the time `t` was (both Unix ms).
pub(crate) fn age(t: u64, now: u64) -> String {
    format!("{} ago", span(now.saturating_sub(t)))
}

/// Microseconds for people: `0.12ms`, `15.3ms`, `1.20s`.
pub(crate) fn micros(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// A field as table text: numbers and strings as they are, `null` or
/// missing as `-`.
pub(crate) fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        Some(other) => other.to_string(),
    }
}

pub(crate) fn u64_of(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// A histogram (docs/stats.md) in one line: count, average, maximum, and
/// the bucket bounds below which half and 99% of the observations fall.
pub(crate) fn histogram(h: &Map<String, Value>) -> String {
    let count = u64_of(h.get("count")).unwrap_or(0);
    if count == 0 {
        return "none".to_string();
    }
    let sum = u64_of(h.get("sum_us")).unwrap_or(0);
    let max = u64_of(h.get("max_us")).unwrap_or(0);
    let le: Vec<u64> = h
        .get("le_us")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let buckets: Vec<u64> = h
        .get("buckets")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let quantile = |q: f64| {
        let want = (q * count as f64).ceil() as u64;
        let mut seen = 0u64;
        for (i, n) in buckets.iter().enumerate() {
            seen = seen.saturating_add(*n);
            if seen >= want {
                return match le.get(i) {
                    Some(bound) => format!("<{}", micros(*bound)),
                    None => format!("<={}", micros(max)),
                };
            }
        }
        "?".to_string()
    };
    format!(
        "count {count}, avg {}, max {}, p50 {}, p99 {}",
        micros(sum / count),
        micros(max),
        quantile(0.5),
        quantile(0.99)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(1_796_115_600_000), "2026-12-01T09:00:00Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        // Milliseconds are dropped, not rounded: the age beside it says more.
        assert_eq!(iso_utc(1_796_115_600_999), "2026-12-01T09:00:00Z");
        assert_eq!(iso_utc(253_402_300_799_000), "9999-12-31T23:59:59Z");
        assert_eq!(iso_utc(253_402_300_800_000), "253402300800000");
        assert_eq!(iso_utc(u64::MAX), u64::MAX.to_string());
        assert_eq!(age(1000, 13_999), "12s ago");
        assert_eq!(span(184_000), "3m04s");
        assert_eq!(span(7_500_000), "2h05m");
        assert_eq!(span(3 * 86_400_000 + 3_600_000), "3d01h");
        assert_eq!(micros(120), "0.12ms");
        assert_eq!(micros(15_300), "15.3ms");
        assert_eq!(micros(1_200_000), "1.20s");
    }

    #[test]
    fn histogram_line() {
        let h: Value = serde_json::json!({
            "count": 4, "sum_us": 400, "max_us": 200,
            "le_us": [32, 64, 128, 256], "buckets": [0, 1, 2, 1, 0]
        });
        assert_eq!(
            histogram(h.as_object().unwrap()),
            "count 4, avg 0.10ms, max 0.20ms, p50 <0.13ms, p99 <0.26ms"
        );
    }
}
