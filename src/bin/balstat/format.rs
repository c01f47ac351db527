//! How one value of the document reads in a table: counts and strings as
//! they are, times as UTC and as ages, durations in the unit that suits
//! them, a histogram as one line.  Each result is one word where it can
//! be (`3m04s`, `0.12ms`), so that a table stays aligned and `awk` can
//! still pick its columns apart.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ms` since the epoch as UTC ISO-8601, `2026-12-01T09:00:00Z`.
pub(crate) fn iso_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
