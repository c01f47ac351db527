//! `balstat`: what a running balancer is doing, read from its stats socket
//! (`mname-balancer -S PATH`, docs/stats.md).  The successor of Binder's
//! `balstat`, which had to read the original's state out of a core file or
//! a live process with mdb; here the balancer answers itself, and this is
//! only a client: it sends one request line, reads the JSON document back
//! and prints it as tables for a terminal, or passes it through (`--json`)
//! for scripts.
//!
//! ```text
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]]             backends and remotes
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]] summary     backends only
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]] backend ID  one backend
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]] remote IP   one remote
//! ```
//!
//! Everything it reads comes from another process: nothing from the
//! socket or the command line is trusted to be well formed.  A missing
//! socket, a refused connection, a balancer that does not answer within
//! [`IO_TIMEOUT`], a cut-off document or an `{"error": ...}` answer is a
//! message on stderr and exit status 1.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use getopts::Options;
use serde_json::{Map, Value};

/// Each read from (and write to) the stats socket must complete this soon.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The document version this program was written for (docs/stats.md).
const KNOWN_VERSION: u64 = 1;

/// What to ask the balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Query {
    Snapshot,
    Summary,
    Backend(u32),
    Remote(IpAddr),
}

impl Query {
    /// The request line (docs/stats.md, "Requests").
    fn request(&self) -> String {
        match self {
            Query::Snapshot => "snapshot\n".to_string(),
            Query::Summary => "summary\n".to_string(),
            Query::Backend(id) => format!("backend {id}\n"),
            Query::Remote(ip) => format!("remote {ip}\n"),
        }
    }
}

/// A parsed command line.
#[derive(Debug)]
struct Args {
    socket: PathBuf,
    query: Query,
    json: bool,
    /// `-w`: refresh this often.
    watch: Option<Duration>,
    /// `-n`: stop after this many reports.
    count: Option<u64>,
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

fn usage() -> String {
    options().usage(
        "Usage: balstat -S PATH [--json] [-w SECONDS [-n COUNT]] [summary | backend ID | remote IP]\n\n\
         Shows the backends and remote peers of a running mname-balancer, read from\n\
         its stats socket (mname-balancer -S PATH).  With no request: every backend\n\
         and every remote.  Times of remotes are ages (\"12s ago\") at the moment\n\
         the balancer answered.",
    )
}

/// Parse the command line (without the program name); `None` for `-h`.
fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
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
        [first, .., last] if matches!(*first, "snapshot" | "summary" | "backend" | "remote") => {
            return Err(format!("unexpected argument \"{last}\""));
        }
        [first, ..] => {
            return Err(format!(
                "unknown request \"{first}\" (summary, backend ID or remote IP)"
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

/// Ask the balancer at `path`; its answer as text and as parsed JSON.  An
/// `{"error": ...}` answer is an `Err` with the server's message.
fn fetch(path: &Path, query: &Query) -> Result<(String, Value), String> {
    let at = path.display();
    let mut conn = UnixStream::connect(path).map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound => {
                format!("no such socket (is mname-balancer running with -S {at}?)")
            }
            io::ErrorKind::ConnectionRefused => {
                "connection refused (no balancer is serving it)".to_string()
            }
            io::ErrorKind::PermissionDenied => "permission denied (the socket is for the \
                 balancer's user, or its group with --stats-mode 660)"
                .to_string(),
            _ => e.to_string(),
        };
        format!("cannot connect to {at}: {why}")
    })?;
    let io_error = |e: io::Error, doing: &str| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
            "{at}: no answer within {} s while {doing}",
            IO_TIMEOUT.as_secs()
        ),
        _ => format!("{at}: {doing}: {e}"),
    };
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| io_error(e, "setting timeouts"))?;
    // A server that turns us away ("busy") answers and closes without
    // reading the request: the write may then fail, and the read end with
    // a reset, after the answer.  What came before either is the answer.
    let sent = conn.write_all(query.request().as_bytes());
    let mut bytes = Vec::new();
    let read = conn.read_to_end(&mut bytes);
    match (sent, read) {
        (_, Ok(_)) if !bytes.is_empty() => {}
        (_, Err(e)) if !bytes.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {}
        (Err(e), _) => return Err(io_error(e, "sending the request")),
        (Ok(()), Err(e)) => return Err(io_error(e, "reading the answer")),
        (Ok(()), Ok(_)) => {}
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{at}: the answer is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(format!(
            "{at}: the balancer closed the connection without answering"
        ));
    }
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        if e.is_eof() {
            format!("{at}: the answer was cut off ({} bytes)", text.len())
        } else {
            format!("{at}: the answer is not a JSON document: {e}")
        }
    })?;
    if !doc.is_object() {
        return Err(format!("{at}: the answer is not a JSON object"));
    }
    if let Some(error) = doc.get("error") {
        let error = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
        return Err(if error == "busy" {
            format!(
                "{at}: busy (the balancer is serving as many stats clients as it will; try again)"
            )
        } else {
            format!("{at}: {error}")
        });
    }
    Ok((text, doc))
}

/// Wall-clock milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ms` since the epoch as UTC ISO-8601, `2026-12-01T09:00:00Z`.
fn iso_utc(ms: u64) -> String {
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
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// How long before `now` the time `t` was (both Unix ms).
fn age(t: u64, now: u64) -> String {
    format!("{} ago", span(now.saturating_sub(t)))
}

/// Microseconds for people: `0.12ms`, `15.3ms`, `1.20s`.
fn micros(us: u64) -> String {
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
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        Some(other) => other.to_string(),
    }
}

fn u64_of(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// A histogram (docs/stats.md) in one line: count, average, maximum, and
/// the bucket bounds below which half and 99% of the observations fall.
fn histogram(h: &Map<String, Value>) -> String {
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

/// A table for a terminal: columns as wide as their widest cell, two
/// spaces apart; `right` columns (numbers) aligned right.
struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Table {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = w.saturating_sub(c.chars().count());
                if self.right.get(i).copied().unwrap_or(false) {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

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
        "remotes {}, in flight {}, TCP sessions open {}",
        field("remotes_tracked"),
        field("inflight"),
        field("tcp_sessions_open")
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
fn render(args: &Args, raw: &str, doc: &Value) -> String {
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
    }
}

/// Fetch and render one report.
fn report(args: &Args) -> Result<String, String> {
    let (raw, doc) = fetch(&args.socket, &args.query)?;
    if let Some(v) = u64_of(doc.get("version"))
        && v > KNOWN_VERSION
    {
        eprintln!(
            "balstat: warning: document version {v}; this balstat knows version {KNOWN_VERSION}, so some fields may be misread"
        );
    }
    Ok(render(args, &raw, &doc))
}

/// Print reports until done; the exit status is that of the last report.
fn run(args: &Args) -> io::Result<bool> {
    let tty = io::stdout().is_terminal();
    let mut printed = 0u64;
    loop {
        let result = report(args);
        printed += 1;
        {
            let mut out = io::stdout().lock();
            if args.watch.is_some() && tty {
                out.write_all(b"\x1b[H\x1b[2J")?;
            } else if printed > 1 && !args.json {
                out.write_all(b"\n")?;
            }
            if let Ok(text) = &result {
                out.write_all(text.as_bytes())?;
            }
            out.flush()?;
        }
        if let Err(e) = &result {
            eprintln!("balstat: {e}");
        }
        let done = match (args.watch, args.count) {
            (None, _) => true,
            (Some(_), Some(n)) => printed >= n,
            (Some(_), None) => false,
        };
        if done {
            return Ok(result.is_ok());
        }
        if let Some(every) = args.watch {
            std::thread::sleep(every);
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("balstat: {e}");
            eprintln!("try 'balstat -h' for usage");
            return ExitCode::from(1);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // `balstat | head`: the reader has what it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("balstat: writing the report: {e}");
            ExitCode::from(1)
        }
    }
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
    fn table_aligns_numbers_right() {
        let mut t = Table::new(&[("IP", false), ("UDP", true), ("LAST", false)]);
        t.rows
            .push(vec!["127.0.0.10".into(), "7".into(), "x".into()]);
        t.rows.push(vec!["::1".into(), "12345".into(), "y".into()]);
        let mut out = String::new();
        t.render(&mut out);
        assert_eq!(
            out,
            "IP            UDP  LAST\n127.0.0.10      7  x\n::1         12345  y\n"
        );
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
