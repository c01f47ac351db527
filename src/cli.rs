//! COMMAND LINE
//!
//! Parses the original's flags (`-b ADDR -p PORT -s DIR -l LEVEL`, with
//! `LOG_LEVEL` in the environment overriding `-l`) and our long flags for
//! every timer and bound into a typed [`Config`].  Anything wrong is a
//! [`CliError`] whose message names the flag and the value; `main` prints it
//! and exits 1, as the original did.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use getopts::Options;

use crate::timeouts::Timers;

/// Everything the balancer needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (`-b`, repeatable), UDP and TCP on each.
    pub listen_addrs: Vec<IpAddr>,
    /// 0 picks a free port (UDP first; TCP then binds the same number).
    pub port: u16,
    pub socket_dir: PathBuf,
    pub log_level: slog::Level,
    pub timers: Timers,
    /// Bytes of frames that may wait for one backend's socket before new UDP
    /// queries to it are dropped as "stuck" rather than queued.
    pub backend_queue_bytes: usize,
    /// TCP sessions open at once; more are refused and counted.
    pub max_tcp_sessions: usize,
    /// What a client gets when its query times out.
    pub on_timeout: OnTimeout,
    /// What a client gets when no backend can take its query.
    pub no_backend: NoBackend,
    /// Synthesized answers per remote per second, at most.
    pub synth_rate: u32,
    /// Bounds of the in-flight table.
    pub max_inflight: usize,
    pub max_inflight_per_backend: u32,
    /// `-S PATH`: the stats socket ([`crate::stats`]), if any.
    pub stats_socket: Option<PathBuf>,
    /// `--stats-mode`: the stats socket's permission bits.
    pub stats_mode: u32,
    /// `--metrics ADDR:PORT`: where Prometheus metrics are served, if at all.
    pub metrics_addr: Option<SocketAddr>,
    /// `--udp-recv-buffer`: bytes asked for each UDP socket's receive
    /// buffer; 0 keeps the system's default.
    pub udp_recv_buffer: usize,
}

/// `--on-timeout`: what a client gets when its query times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    ServFail,
    Drop,
}

/// `--no-backend`: what a client gets when no backend can take its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBackend {
    ServFail,
    Refused,
    /// Silence, as the original.
    Drop,
}

/// The default bound on one backend's write queue: room for a few hundred
/// full-size datagrams beyond what the socket buffer holds, so a burst is
/// absorbed but a wedged backend costs little memory.
pub const DEFAULT_BACKEND_QUEUE_BYTES: usize = 256 * 1024;

/// The default bound on queries in flight: at 2 s per query, room for
/// 30k queries/s of backends that answer nothing, before new ones drop.
pub const DEFAULT_MAX_INFLIGHT: usize = 65536;

/// The default bound on queries in flight to one backend.
pub const DEFAULT_MAX_INFLIGHT_PER_BACKEND: u32 = 16384;

/// The default number of synthesized answers per remote per second.
pub const DEFAULT_SYNTH_RATE: u32 = 10;

/// The default bound on concurrent TCP sessions.  Each costs two file
/// descriptors; this keeps well inside a default limit of 4096.
pub const DEFAULT_MAX_TCP_SESSIONS: usize = 1000;

/// The stats socket is for the owner alone unless `--stats-mode` widens it.
pub const DEFAULT_STATS_MODE: u32 = 0o600;

/// Room for a burst of a few thousand queries; the kernel caps it at
/// `net.core.rmem_max` unless the process has CAP_NET_ADMIN.
pub const DEFAULT_UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

impl Config {
    /// A configuration with the original's defaults for `socket_dir`.
    pub fn new(socket_dir: PathBuf) -> Self {
        Config {
            listen_addrs: vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            port: 53,
            socket_dir,
            log_level: slog::Level::Info,
            timers: Timers::default(),
            backend_queue_bytes: DEFAULT_BACKEND_QUEUE_BYTES,
            max_tcp_sessions: DEFAULT_MAX_TCP_SESSIONS,
            on_timeout: OnTimeout::ServFail,
            no_backend: NoBackend::ServFail,
            synth_rate: DEFAULT_SYNTH_RATE,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_inflight_per_backend: DEFAULT_MAX_INFLIGHT_PER_BACKEND,
            stats_socket: None,
            stats_mode: DEFAULT_STATS_MODE,
            metrics_addr: None,
            udp_recv_buffer: DEFAULT_UDP_RECV_BUFFER,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help(String),
}

/// A command line that cannot be run, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// The long timer flags: name, help, and the field each sets.
type TimerField = fn(&mut Timers) -> &mut Duration;
const TIMER_FLAGS: &[(&str, &str, TimerField)] = &[
    (
        "scan-interval",
        "socket directory rescan (default 5s)",
        |t| &mut t.scan_interval,
    ),
    (
        "connect-timeout",
        "connect + hello deadline for a backend (default 30s)",
        |t| &mut t.connect_timeout,
    ),
    (
        "heartbeat-interval",
        "pause before each heartbeat (default 5s)",
        |t| &mut t.heartbeat_interval,
    ),
    (
        "heartbeat-timeout",
        "heartbeat reply deadline (default 15s)",
        |t| &mut t.heartbeat_timeout,
    ),
    (
        "reconnect-delay",
        "first reconnect delay after a failure (default 1s)",
        |t| &mut t.reconnect_delay,
    ),
    (
        "reconnect-step",
        "added to the delay per failed try (default 2s)",
        |t| &mut t.reconnect_step,
    ),
    (
        "reconnect-max",
        "largest reconnect delay (default 32s)",
        |t| &mut t.reconnect_max,
    ),
    (
        "rebalance-interval",
        "remote spread check (default 15s)",
        |t| &mut t.rebalance_interval,
    ),
    (
        "remote-expiry",
        "forget a remote idle this long (default 300s)",
        |t| &mut t.remote_expiry,
    ),
    ("expiry-sweep", "remote expiry check (default 30s)", |t| {
        &mut t.expiry_sweep
    }),
    (
        "tcp-connect-timeout",
        "INBOUND_TCP_OK deadline for a TCP session (default 10s)",
        |t| &mut t.tcp_connect_timeout,
    ),
    (
        "query-timeout",
        "UDP answer deadline, then --on-timeout applies (default 2s)",
        |t| &mut t.query_timeout,
    ),
    (
        "unanswered-threshold",
        "a backend answering nothing this long is probed (default 500ms)",
        |t| &mut t.unanswered_threshold,
    ),
    (
        "drain-timeout",
        "after SIGTERM, grace for TCP sessions and queries in flight (default 5s)",
        |t| &mut t.drain_timeout,
    ),
    (
        "probe-timeout",
        "a probed backend must answer a heartbeat this fast (default 500ms)",
        |t| &mut t.probe_timeout,
    ),
];

fn options() -> Options {
    let mut o = Options::new();
    o.optmulti(
        "b",
        "",
        "listen address, IPv4 or IPv6; repeatable (default 0.0.0.0)",
        "ADDR",
    );
    o.optopt("p", "", "listen port, UDP and TCP (default 53)", "PORT");
    o.optopt("s", "", "backend socket directory (required)", "DIR");
    o.optopt(
        "l",
        "",
        "log level: trace debug info warn error fatal (default info; LOG_LEVEL overrides)",
        "LEVEL",
    );
    o.optflag("h", "help", "print this help");
    o.optopt(
        "S",
        "",
        "stats socket (AF_UNIX) answering JSON snapshots; read it with balstat",
        "PATH",
    );
    o.optopt(
        "",
        "stats-mode",
        "stats socket permissions, octal: 600 (default) or 660 for a group",
        "MODE",
    );
    o.optopt(
        "",
        "udp-recv-buffer",
        "receive buffer of each UDP socket, bytes; 0 for the system default (default 4194304)",
        "BYTES",
    );
    o.optopt(
        "",
        "metrics",
        "serve Prometheus metrics over HTTP at http://ADDR:PORT/metrics",
        "ADDR:PORT",
    );
    // Timers may be given more than once; the last wins, so a wrapper
    // script's defaults can be overridden on its command line.
    for (name, help, _) in TIMER_FLAGS {
        o.optmulti("", name, help, "DURATION");
    }
    o.optopt(
        "",
        "backend-queue-bytes",
        "bytes queued toward one backend before UDP queries are dropped as stuck (default 262144)",
        "N",
    );
    o.optopt(
        "",
        "max-tcp-sessions",
        "TCP sessions open at once (default 1000)",
        "N",
    );
    o.optopt(
        "",
        "on-timeout",
        "servfail or drop: answer to a query that timed out (default servfail)",
        "POLICY",
    );
    o.optopt(
        "",
        "no-backend",
        "servfail, refused or drop: answer when no backend is up (default servfail)",
        "POLICY",
    );
    o.optopt(
        "",
        "synth-rate",
        "synthesized answers per client IP per second (default 10)",
        "N",
    );
    o.optopt(
        "",
        "max-inflight",
        "UDP queries awaiting answers, in total (default 65536)",
        "N",
    );
    o.optopt(
        "",
        "max-inflight-per-backend",
        "UDP queries awaiting answers from one backend (default 16384)",
        "N",
    );
    o
}

/// The usage text printed by `-h`.
pub fn usage() -> String {
    options().usage(
        "Usage: mname-balancer -s DIR [-b ADDR] [-p PORT] [-l LEVEL] [long options]\n\n\
         DNS load balancer for node-mname backends on AF_UNIX sockets in DIR.\n\
         DURATION is seconds (5, 0.5) or has a unit (250ms, 5s, 2m, 1h).",
    )
}

/// Whether `path` names an entry of `dir` (or deeper), comparing the
/// canonical directory of `path` where it exists, so `./x/../dir/s` is
/// caught as well as `dir/s`.
fn inside_dir(path: &std::path::Path, dir: &std::path::Path) -> bool {
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

/// Parse the command line (without the program name).  `env_level` is the
/// value of `LOG_LEVEL`, if set.
pub fn parse(args: &[String], env_level: Option<&str>) -> Result<Command, CliError> {
    let m = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    if m.opt_present("h") {
        return Ok(Command::Help(usage()));
    }
    if let Some(extra) = m.free.first() {
        return Err(CliError(format!("unexpected argument \"{extra}\"")));
    }
    let Some(dir) = m.opt_str("s") else {
        return Err(CliError("must specify socket directory (-s)".into()));
    };
    let mut c = Config::new(PathBuf::from(dir));
    let binds = m.opt_strs("b");
    if !binds.is_empty() {
        c.listen_addrs = binds
            .iter()
            .map(|b| {
                b.parse()
                    .map_err(|_| CliError(format!("invalid listen address for -b: \"{b}\"")))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(p) = m.opt_str("p") {
        c.port = p
            .parse()
            .map_err(|_| CliError(format!("invalid port for -p: \"{p}\" (0..65535)")))?;
    }
    if let Some(l) = m.opt_str("l") {
        c.log_level =
            parse_level(&l).ok_or_else(|| CliError(format!("invalid log level for -l: {l}")))?;
    }
    if let Some(l) = env_level {
        c.log_level =
            parse_level(l).ok_or_else(|| CliError(format!("invalid LOG_LEVEL \"{l}\"")))?;
    }
    for (name, _, field) in TIMER_FLAGS {
        if let Some(v) = m.opt_strs(name).pop() {
            let d = parse_duration(&v)
                .ok_or_else(|| CliError(format!("invalid duration for --{name}: \"{v}\"")))?;
            *field(&mut c.timers) = d;
        }
    }
    if let Some(v) = m.opt_str("on-timeout") {
        c.on_timeout = match v.as_str() {
            "servfail" => OnTimeout::ServFail,
            "drop" => OnTimeout::Drop,
            _ => {
                return Err(CliError(format!(
                    "invalid --on-timeout \"{v}\" (servfail, drop)"
                )));
            }
        };
    }
    if let Some(v) = m.opt_str("no-backend") {
        c.no_backend = match v.as_str() {
            "servfail" => NoBackend::ServFail,
            "refused" => NoBackend::Refused,
            "drop" => NoBackend::Drop,
            _ => {
                return Err(CliError(format!(
                    "invalid --no-backend \"{v}\" (servfail, refused, drop)"
                )));
            }
        };
    }
    let mut per_backend = c.max_inflight_per_backend as usize;
    let mut synth_rate = c.synth_rate as usize;
    for (name, field) in [
        ("backend-queue-bytes", &mut c.backend_queue_bytes),
        ("max-tcp-sessions", &mut c.max_tcp_sessions),
        ("max-inflight", &mut c.max_inflight),
        ("max-inflight-per-backend", &mut per_backend),
        ("synth-rate", &mut synth_rate),
    ] {
        if let Some(v) = m.opt_str(name) {
            *field = v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| CliError(format!("invalid count for --{name}: \"{v}\"")))?;
        }
    }
    c.max_inflight_per_backend = u32::try_from(per_backend)
        .map_err(|_| CliError("invalid count for --max-inflight-per-backend".into()))?;
    c.synth_rate =
        u32::try_from(synth_rate).map_err(|_| CliError("invalid count for --synth-rate".into()))?;
    if let Some(path) = m.opt_str("S") {
        let path = PathBuf::from(path);
        if inside_dir(&path, &c.socket_dir) {
            return Err(CliError(format!(
                "stats socket {} is inside the backend socket directory {}: \
                 every entry there is taken for a backend",
                path.display(),
                c.socket_dir.display()
            )));
        }
        c.stats_socket = Some(path);
    }
    if let Some(v) = m.opt_str("stats-mode") {
        c.stats_mode = u32::from_str_radix(&v, 8)
            .ok()
            .filter(|mode| *mode & !0o777 == 0 && *mode & 0o600 == 0o600 && *mode & 0o007 == 0)
            .ok_or_else(|| {
                CliError(format!(
                    "invalid --stats-mode \"{v}\" (octal; owner read-write, no access for others: 600, 640, 660)"
                ))
            })?;
    }
    if let Some(v) = m.opt_str("udp-recv-buffer") {
        c.udp_recv_buffer = v
            .parse()
            .map_err(|_| CliError(format!("invalid byte count for --udp-recv-buffer: \"{v}\"")))?;
    }
    if let Some(v) = m.opt_str("metrics") {
        c.metrics_addr = Some(v.parse().map_err(|_| {
            CliError(format!(
                "invalid address for --metrics: \"{v}\" (ADDR:PORT, [V6ADDR]:PORT)"
            ))
        })?);
    }
    Ok(Command::Run(Box::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str, env: Option<&str>) -> Result<Config, CliError> {
        match parse(&args(s), env)? {
            Command::Run(c) => Ok(*c),
            Command::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = run("-s /d", None).unwrap();
        assert_eq!(c.listen_addrs, [IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
        assert_eq!(c.on_timeout, OnTimeout::ServFail);
        assert_eq!(c.no_backend, NoBackend::ServFail);
        assert_eq!(c.port, 53);
        assert_eq!(c.log_level, slog::Level::Info);
        assert_eq!(c.timers, Timers::default());
    }

    #[test]
    fn flags_set_fields() {
        let c = run(
            "-b 127.0.0.1 -p 5353 -s /d -l debug --heartbeat-interval 250ms --remote-expiry 2 --max-tcp-sessions 7",
            None,
        )
        .unwrap();
        assert_eq!(c.listen_addrs, [IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(c.port, 5353);
        assert_eq!(c.log_level, slog::Level::Debug);
        assert_eq!(c.timers.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(c.timers.remote_expiry, Duration::from_secs(2));
        assert_eq!(c.max_tcp_sessions, 7);
        let c = run("-s /d --heartbeat-interval 1 --heartbeat-interval 2", None).unwrap();
        assert_eq!(
            c.timers.heartbeat_interval,
            Duration::from_secs(2),
            "last wins"
        );
    }

    #[test]
    fn several_listen_addresses_and_policies() {
        let c = run(
            "-s /d -b 127.0.0.1 -b ::1 --on-timeout drop --no-backend refused --synth-rate 3",
            None,
        )
        .unwrap();
        assert_eq!(c.listen_addrs.len(), 2);
        assert!(c.listen_addrs[1].is_ipv6());
        assert_eq!(c.on_timeout, OnTimeout::Drop);
        assert_eq!(c.no_backend, NoBackend::Refused);
        assert_eq!(c.synth_rate, 3);
        let e = run("-s /d --no-backend shrug", None).unwrap_err().0;
        assert!(e.contains("--no-backend"), "{e}");
    }

    #[test]
    fn log_level_env_overrides_flag() {
        let c = run("-s /d -l debug", Some("warn")).unwrap();
        assert_eq!(c.log_level, slog::Level::Warning);
        assert!(
            run("-s /d", Some("loud"))
                .unwrap_err()
                .0
                .contains("LOG_LEVEL")
        );
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let e = |s| run(s, None).unwrap_err().0;
        assert!(e("-p 53").contains("-s"));
        assert!(e("-s /d -l loud").contains("-l"));
        assert!(e("-s /d -p 70000").contains("70000"));
        assert!(e("-s /d -b nowhere").contains("nowhere"));
        assert!(e("-s /d -x").contains('x'));
        assert!(e("-s").contains('s'));
        assert!(e("-s /d --heartbeat-timeout soon").contains("heartbeat-timeout"));
        assert!(e("-s /d stray").contains("stray"));
    }

    #[test]
    fn stats_and_metrics_flags() {
        let c = run("-s /d -S /run/stats.sock --metrics 127.0.0.1:9153", None).unwrap();
        assert_eq!(c.stats_socket, Some(PathBuf::from("/run/stats.sock")));
        assert_eq!(c.stats_mode, 0o600);
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9153".parse().unwrap()));
        assert_eq!(
            run("-s /d --stats-mode 660", None).unwrap().stats_mode,
            0o660
        );
        assert_eq!(
            run("-s /d --metrics [::1]:0", None)
                .unwrap()
                .metrics_addr
                .map(|a| a.port()),
            Some(0)
        );
        let e = |s: &str| run(s, None).unwrap_err().0;
        assert!(e("-s /d -S /d/stats.sock").contains("inside the backend socket directory"));
        assert!(e("-s /d -S /d/sub/stats.sock").contains("inside the backend socket directory"));
        assert!(e("-s /d/ -S /d/../d/stats.sock").contains("inside the backend socket directory"));
        for mode in ["666", "644", "400", "rw", "1600"] {
            assert!(
                e(&format!("-s /d --stats-mode {mode}")).contains("--stats-mode"),
                "{mode}"
            );
        }
        assert!(e("-s /d --metrics 9153").contains("--metrics"));
        assert_eq!(run("-s /d", None).unwrap().udp_recv_buffer, 4 << 20);
        assert_eq!(
            run("-s /d --udp-recv-buffer 0", None)
                .unwrap()
                .udp_recv_buffer,
            0
        );
        assert!(e("-s /d --udp-recv-buffer lots").contains("--udp-recv-buffer"));
        assert!(e("-s /d --metrics localhost:9153").contains("--metrics"));
    }

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
