//! COMMAND LINE
//!
//! Parses the original's flags (`-b ADDR -p PORT -s DIR -l LEVEL`, with
//! `LOG_LEVEL` in the environment overriding `-l`) and our long flags for
//! every timer and bound into a typed [`Config`].  Anything wrong is a
//! [`CliError`] whose message names the flag and the value; `main` prints it
//! and exits 1, as the original did.
//!
//! The parts: `config` (what the balancer runs with, and the defaults),
//! `flags` (the flags and the usage text), `values` (reading one flag's
//! value), `error` (what a mistake is told); [`parse`], here, puts them
//! together.

mod config;
mod error;
mod flags;
mod values;

use std::path::PathBuf;

use crate::acl::{AclAction, parse_network};

pub use config::{
    CacheConfig, Config, DEFAULT_BACKEND_QUEUE_BYTES, DEFAULT_CACHE_MAX_BYTES,
    DEFAULT_CACHE_MAX_NEGATIVE_TTL, DEFAULT_CACHE_MAX_TTL, DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_INFLIGHT_PER_BACKEND, DEFAULT_MAX_REMOTES, DEFAULT_MAX_TCP_SESSIONS,
    DEFAULT_STALE_TTL, DEFAULT_STATS_MODE, DEFAULT_SYNTH_RATE, DEFAULT_UDP_RECV_BUFFER, HedgeAfter,
    NoBackend, OnTimeout,
};
pub use error::CliError;
pub use flags::usage;
use flags::{TIMER_FLAGS, options};
use values::inside_dir;
pub use values::{parse_duration, parse_level};

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the balancer with this configuration.
    Run(Box<Config>),
    /// `-h`: print this usage text and exit.
    Help(String),
}

/// Parse the command line (without the program name).  `env_level` is the
/// value of `LOG_LEVEL`, if set.
pub fn parse(args: &[String], env_level: Option<&str>) -> Result<Command, CliError> {
    let m = options().parse(args)?;
    if m.opt_present("h") {
        return Ok(Command::Help(usage()));
    }
    if let Some(extra) = m.free.first() {
        return Err(CliError::UnexpectedArgument(extra.clone()));
    }
    let Some(dir) = m.opt_str("s") else {
        return Err(CliError::NoSocketDir);
    };
    let mut c = Config::new(PathBuf::from(dir));
    let binds = m.opt_strs("b");
    if !binds.is_empty() {
        c.listen_addrs = binds
            .iter()
            .map(|b| b.parse().map_err(|_| CliError::BadListenAddress(b.clone())))
            .collect::<Result<_, _>>()?;
    }
    if let Some(p) = m.opt_str("p") {
        c.port = p.parse().map_err(|_| CliError::BadPort(p.clone()))?;
    }
    if let Some(l) = m.opt_str("l") {
        c.log_level = parse_level(&l).ok_or_else(|| CliError::BadLogLevel(l.clone()))?;
    }
    if let Some(l) = env_level {
        c.log_level = parse_level(l).ok_or_else(|| CliError::BadLogLevelEnv(l.to_string()))?;
    }
    for (name, _, field) in TIMER_FLAGS {
        if let Some(v) = m.opt_strs(name).pop() {
            let d = parse_duration(&v).ok_or_else(|| CliError::BadDuration {
                flag: name,
                value: v.clone(),
            })?;
            *field(&mut c.timers) = d;
        }
    }
    if let Some(v) = m.opt_str("on-timeout") {
        c.on_timeout = match v.as_str() {
            "servfail" => OnTimeout::ServFail,
            "drop" => OnTimeout::Drop,
            _ => return Err(CliError::BadOnTimeout(v)),
        };
    }
    if let Some(v) = m.opt_str("no-backend") {
        c.no_backend = match v.as_str() {
            "servfail" => NoBackend::ServFail,
            "refused" => NoBackend::Refused,
            "drop" => NoBackend::Drop,
            _ => return Err(CliError::BadNoBackend(v)),
        };
    }
    if let Some(v) = m.opt_str("hedge-after") {
        c.hedge_after = match v.trim() {
            "auto" => HedgeAfter::Adaptive,
            _ => match parse_duration(&v) {
                Some(d) if d.is_zero() => HedgeAfter::Off,
                Some(d) => HedgeAfter::Fixed(d),
                None => {
                    return Err(CliError::BadDuration {
                        flag: "hedge-after",
                        value: v.clone(),
                    });
                }
            },
        };
    }
    if let Some(v) = m.opt_str("hedge-budget") {
        c.hedge_budget_percent = v
            .trim()
            .trim_end_matches('%')
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| CliError::BadCount {
                flag: "hedge-budget",
                value: v.clone(),
            })?;
    }
    for (flag, list) in [("allow", &mut c.acl.allow), ("deny", &mut c.acl.deny)] {
        for v in m.opt_strs(flag) {
            let net = parse_network(&v).ok_or_else(|| CliError::BadNetwork {
                flag,
                value: v.clone(),
            })?;
            list.push(net);
        }
    }
    if let Some(v) = m.opt_str("acl-action") {
        c.acl.action = match v.as_str() {
            "refused" => AclAction::Refused,
            "drop" => AclAction::Drop,
            _ => return Err(CliError::BadAclAction(v)),
        };
    }
    let mut per_backend = c.max_inflight_per_backend as usize;
    let mut per_client = c.max_tcp_per_client as usize;
    let mut synth_rate = c.synth_rate as usize;
    for (name, field) in [
        ("backend-queue-bytes", &mut c.backend_queue_bytes),
        ("max-tcp-sessions", &mut c.max_tcp_sessions),
        ("max-tcp-per-client", &mut per_client),
        ("max-inflight", &mut c.max_inflight),
        ("max-inflight-per-backend", &mut per_backend),
        ("synth-rate", &mut synth_rate),
        ("max-remotes", &mut c.max_remotes),
    ] {
        if let Some(v) = m.opt_str(name) {
            *field = v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| CliError::BadCount {
                    flag: name,
                    value: v.clone(),
                })?;
        }
    }
    c.max_inflight_per_backend =
        u32::try_from(per_backend).map_err(|_| CliError::CountTooLarge {
            flag: "max-inflight-per-backend",
        })?;
    c.max_tcp_per_client = u32::try_from(per_client).map_err(|_| CliError::CountTooLarge {
        flag: "max-tcp-per-client",
    })?;
    c.synth_rate =
        u32::try_from(synth_rate).map_err(|_| CliError::CountTooLarge { flag: "synth-rate" })?;
    for (name, field) in [
        ("max-qps-per-client", &mut c.max_qps_per_client),
        ("rate-limit-slip", &mut c.rate_limit_slip),
    ] {
        if let Some(v) = m.opt_str(name) {
            *field = v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= u32::from(u16::MAX))
                .ok_or_else(|| CliError::BadCount {
                    flag: name,
                    value: v.clone(),
                })?;
        }
    }
    parse_cache_flags(&m, &mut c.cache)?;
    if let Some(path) = m.opt_str("S") {
        let path = PathBuf::from(path);
        if inside_dir(&path, &c.socket_dir) {
            return Err(CliError::StatsSocketInsideSocketDir {
                socket: path,
                dir: c.socket_dir,
            });
        }
        c.stats_socket = Some(path);
    }
    if let Some(v) = m.opt_str("stats-mode") {
        c.stats_mode = u32::from_str_radix(&v, 8)
            .ok()
            .filter(|mode| *mode & !0o777 == 0 && *mode & 0o600 == 0o600 && *mode & 0o007 == 0)
            .ok_or_else(|| CliError::BadStatsMode(v.clone()))?;
    }
    if let Some(v) = m.opt_str("udp-recv-buffer") {
        c.udp_recv_buffer = v
            .parse()
            .map_err(|_| CliError::BadUdpRecvBuffer(v.clone()))?;
    }
    if let Some(v) = m.opt_str("metrics") {
        c.metrics_addr = Some(
            v.parse()
                .map_err(|_| CliError::BadMetricsAddress(v.clone()))?,
        );
    }
    Ok(Command::Run(Box::new(c)))
}

/// The packet cache's flags.
fn parse_cache_flags(m: &getopts::Matches, c: &mut CacheConfig) -> Result<(), CliError> {
    let count = |flag: &'static str, v: String, min: usize| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= min)
            .ok_or(CliError::BadCount { flag, value: v })
    };
    if let Some(v) = m.opt_str("cache-size") {
        c.entries = count("cache-size", v, 0)?;
    }
    if let Some(v) = m.opt_str("cache-max-bytes") {
        c.max_bytes = count("cache-max-bytes", v, 1)?;
    }
    // TTLs: a duration, kept in whole seconds.
    let seconds = |flag: &'static str, v: String, min: u64| {
        parse_duration(&v)
            .map(|d| d.as_secs())
            .filter(|s| *s >= min)
            .and_then(|s| u32::try_from(s).ok())
            .ok_or(CliError::BadDuration { flag, value: v })
    };
    for (flag, field, min) in [
        ("cache-max-ttl", &mut c.max_ttl, 1),
        ("cache-max-negative-ttl", &mut c.max_negative_ttl, 0),
        ("stale-ttl", &mut c.stale_ttl, 1),
    ] {
        if let Some(v) = m.opt_str(flag) {
            *field = seconds(flag, v, min)?;
        }
    }
    if let Some(v) = m.opt_str("serve-stale") {
        c.serve_stale = parse_duration(&v).ok_or(CliError::BadDuration {
            flag: "serve-stale",
            value: v.clone(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;
    use crate::timeouts::Timers;

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
        let e = run("-s /d --no-backend shrug", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--no-backend"), "{e}");
    }

    #[test]
    fn log_level_env_overrides_flag() {
        let c = run("-s /d -l debug", Some("warn")).unwrap();
        assert_eq!(c.log_level, slog::Level::Warning);
        assert!(
            run("-s /d", Some("loud"))
                .unwrap_err()
                .to_string()
                .contains("LOG_LEVEL")
        );
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let e = |s| run(s, None).unwrap_err().to_string();
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
    fn cache_flags() {
        let c = run("-s /d", None).unwrap();
        assert_eq!(c.cache, CacheConfig::default());
        assert_eq!(c.cache.entries, 0, "off by default");
        let c = run(
            "-s /d --cache-size 1000 --cache-max-bytes 4096 --cache-max-ttl 5m \
             --cache-max-negative-ttl 0 --serve-stale 1h --stale-ttl 10",
            None,
        )
        .unwrap();
        assert_eq!(c.cache.entries, 1000);
        assert_eq!(c.cache.max_bytes, 4096);
        assert_eq!(c.cache.max_ttl, 300);
        assert_eq!(c.cache.max_negative_ttl, 0);
        assert_eq!(c.cache.serve_stale, Duration::from_secs(3600));
        assert_eq!(c.cache.stale_ttl, 10);
        let e = |s| run(s, None).unwrap_err().to_string();
        assert!(e("-s /d --cache-size lots").contains("cache-size"));
        assert!(e("-s /d --cache-max-bytes 0").contains("cache-max-bytes"));
        assert!(e("-s /d --cache-max-ttl 0").contains("cache-max-ttl"));
        assert!(e("-s /d --stale-ttl 500ms").contains("stale-ttl"));
        assert!(e("-s /d --serve-stale forever").contains("serve-stale"));
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
        let e = |s: &str| run(s, None).unwrap_err().to_string();
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
}
