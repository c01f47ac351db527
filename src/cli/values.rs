//! Reading one flag's value: a log level by bunyan name or number, a
//! duration with or without a unit, and whether a path lies inside a
//! directory (the stats socket must not sit among the backends' sockets).

use std::time::Duration;

/// Whether `path` names an entry of `dir` (or deeper), comparing the
/// canonical directory of `path` where it exists, so `./x/../dir/s` is
/// caught as well as `dir/s`.
pub(super) fn inside_dir(path: &std::path::Path, dir: &std::path::Path) -> bool {
    let canonical =
        |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let dir = canonical(dir);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => canonical(p),
        _ => canonical(std::path::Path::new(".")),
    };
    parent.starts_with(&dir)
}

/// Parse a bunyan level name or number.
pub fn parse_level(s: &str) -> Option<slog::Level> {
    use slog::Level::*;
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "trace" | "10" => Trace,
        "debug" | "20" => Debug,
        "info" | "30" => Info,
        "warn" | "40" => Warning,
        "error" | "50" => Error,
        "fatal" | "60" => Critical,
        _ => return None,
    })
}

/// Parse a duration: plain seconds (`5`, `0.25`) or with a unit (`250ms`,
/// `5s`, `2m`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 || v * scale > 1e9 {
        return None;
    }
    Some(Duration::from_secs_f64(v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("NaN"), None);
    }
}
