//! The command line: which stats socket to ask, what to ask it (a
//! [`Query`]), and how to show the answer (tables or `--json`, once or
//! every `-w SECONDS`).  Everything is checked here, before the socket is
//! touched, so that a typo is a usage message and not a request the
//! balancer refuses.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

/// What to ask the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    Snapshot,
    Summary,
    Backend(u32),
    Remote(IpAddr),
    /// The packet cache: its size, bounds and counters.
    Cache,
    /// Empty the packet cache.
    CacheFlush,
}

impl Query {
    /// The request line (docs/stats.md, "Requests").
    pub(crate) fn request(&self) -> String {
        match self {
            Query::Snapshot => "snapshot\n".to_string(),
            Query::Summary => "summary\n".to_string(),
            Query::Backend(id) => format!("backend {id}\n"),
            Query::Remote(ip) => format!("remote {ip}\n"),
            Query::Cache => "cache\n".to_string(),
            Query::CacheFlush => "cache flush\n".to_string(),
        }
    }
}

/// A parsed command line.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) socket: PathBuf,
    pub(crate) query: Query,
    pub(crate) json: bool,
    /// `-w`: refresh this often.
    pub(crate) watch: Option<Duration>,
    /// `-n`: stop after this many reports.
    pub(crate) count: Option<u64>,
}

fn options() -> Options {
    let mut o = Options::new();
    o.optopt(
        "S",
        "socket",
        "the balancer's stats socket (its -S PATH; required)",
        "PATH",
    );
    o.optflag(
        "",
        "json",
        "print the balancer's JSON document, one line per report",
    );
    o.optopt(
        "w",
        "watch",
        "print a new report every SECONDS (0.5, 2, ...) until interrupted",
        "SECONDS",
    );
    o.optopt("n", "count", "with -w: stop after COUNT reports", "COUNT");
    o.optflag("h", "help", "print this help");
    o
}

/// The text `-h` prints.
pub(crate) fn usage() -> String {
    options().usage(
        "Usage: balstat -S PATH [--json] [-w SECONDS [-n COUNT]] [summary | backend ID | remote IP | cache [flush]]\n\n\
         Shows the backends and remote peers of a running mname-balancer, read from\n\
         its stats socket (mname-balancer -S PATH).  With no request: every backend\n\
         and every remote.  Times of remotes are ages (\"12s ago\") at the moment\n\
         the balancer answered.",
    )
}

/// Parse the command line (without the program name); `None` for `-h`.
pub(crate) fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let m = options().parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("h") {
        return Ok(None);
    }
    let socket = m
        .opt_str("S")
        .map(PathBuf::from)
        .ok_or("must specify the stats socket (-S PATH)")?;
    let words: Vec<&str> = m.free.iter().map(String::as_str).collect();
    let query = match words.as_slice() {
        [] | ["snapshot"] => Query::Snapshot,
        ["summary"] => Query::Summary,
        ["cache"] => Query::Cache,
        ["cache", "flush"] => Query::CacheFlush,
        ["backend", id] => Query::Backend(
            id.parse()
                .map_err(|_| format!("invalid backend id \"{id}\" (a number, such as 5300)"))?,
        ),
        ["remote", ip] => Query::Remote(
            ip.parse()
                .map_err(|_| format!("invalid IP address \"{ip}\""))?,
        ),
        ["backend"] => return Err("\"backend\" needs an id (backend 5300)".into()),
        ["remote"] => return Err("\"remote\" needs an IP address (remote 192.0.2.1)".into()),
        [first, .., last]
            if matches!(
                *first,
                "snapshot" | "summary" | "backend" | "remote" | "cache"
            ) =>
        {
            return Err(format!("unexpected argument \"{last}\""));
        }
        [first, ..] => {
            return Err(format!(
                "unknown request \"{first}\" (summary, backend ID, remote IP or cache)"
            ));
        }
    };
    let watch = match m.opt_str("w") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 1e6)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    format!("invalid interval for -w: \"{v}\" (seconds, such as 2 or 0.5)")
                })?,
        ),
    };
    let count = match m.opt_str("n") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("invalid count for -n: \"{v}\" (1 or more)"))?,
        ),
    };
    if count.is_some() && watch.is_none() {
        return Err("-n COUNT goes with -w SECONDS".into());
    }
    Ok(Some(Args {
        socket,
        query,
        json: m.opt_present("json"),
        watch,
        count,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Option<Args>, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_args(&v)
    }

    #[test]
    fn command_lines() {
        let a = args("-S /s").unwrap().unwrap();
        assert_eq!(a.query, Query::Snapshot);
        assert!(!a.json && a.watch.is_none());
        let a = args("backend 5301 -S /s --json").unwrap().unwrap();
        assert_eq!(a.query, Query::Backend(5301));
        assert!(a.json);
        let a = args("-S /s remote ::1 -w 0.5 -n 3").unwrap().unwrap();
        assert_eq!(a.query, Query::Remote("::1".parse().unwrap()));
        assert_eq!(a.watch, Some(Duration::from_millis(500)));
        assert_eq!(a.count, Some(3));
        assert!(args("-h").unwrap().is_none());
        for bad in [
            "",
            "-S /s backend",
            "-S /s backend x",
            "-S /s remote 1.2.3",
            "-S /s backend 1 2",
            "-S /s frobnicate",
            "-S /s -w 0",
            "-S /s -w x",
            "-S /s -n 2",
            "-S /s -w 1 -n 0",
            "-S /s --bogus",
        ] {
            assert!(args(bad).is_err(), "{bad}");
        }
    }
}
