//! What the balancer runs with: [`Config`], its defaults (the original's,
//! where it had the setting), and the two answer policies.  The command
//! line fills it in ([`super::parse`]); tests build one with
//! [`Config::new`] and change the fields they care about.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::acl::Acl;
use crate::timeouts::Timers;

/// Everything the balancer needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (`-b`, repeatable), UDP and TCP on each.
    pub listen_addrs: Vec<IpAddr>,
    /// 0 picks a free port (UDP first; TCP then binds the same number).
    pub port: u16,
    /// `-s DIR`: the directory of the backends' sockets.
    pub socket_dir: PathBuf,
    /// `-l LEVEL` (or `LOG_LEVEL`): the least level logged.
    pub log_level: slog::Level,
    /// The timer flags (`--heartbeat-interval` and the rest).
    pub timers: Timers,
    /// Bytes of frames that may wait for one backend's socket before new UDP
    /// queries to it are dropped as "stuck" rather than queued.
    pub backend_queue_bytes: usize,
    /// TCP sessions open at once; more are refused and counted.
    pub max_tcp_sessions: usize,
    /// `--max-tcp-per-client`: TCP sessions one client address may hold.
    pub max_tcp_per_client: u32,
    /// What a client gets when its query times out.
    pub on_timeout: OnTimeout,
    /// What a client gets when no backend can take its query.
    pub no_backend: NoBackend,
    /// Synthesized answers per remote per second, at most.
    pub synth_rate: u32,
    /// `--max-inflight`: queries in flight at most, all backends together.
    pub max_inflight: usize,
    /// `--max-inflight-per-backend`: queries in flight to one backend at most.
    pub max_inflight_per_backend: u32,
    /// `-S PATH`: the stats socket ([`crate::ops::stats_socket`]), if any.
    pub stats_socket: Option<PathBuf>,
    /// `--stats-mode`: the stats socket's permission bits.
    pub stats_mode: u32,
    /// `--metrics ADDR:PORT`: where Prometheus metrics are served, if at all.
    pub metrics_addr: Option<SocketAddr>,
    /// `--udp-recv-buffer`: bytes asked for each UDP socket's receive
    /// buffer; 0 keeps the system's default.
    pub udp_recv_buffer: usize,
    /// `--allow`, `--deny`, `--acl-action`: who may use the balancer.
    pub acl: Acl,
    /// `--max-remotes`: client hosts tracked at most; new ones past it are
    /// served without a remote entry.
    pub max_remotes: usize,
    /// `--max-qps-per-client`: queries a client may send a second; past
    /// it they are dropped (0: no limit).
    pub max_qps_per_client: u32,
    /// `--rate-limit-slip`: every this many queries past the rate get a
    /// TC=1 answer instead of nothing (0: never).
    pub rate_limit_slip: u32,
    /// `--hedge-after`: when a UDP query its backend is slow to answer is
    /// sent to a second backend.
    pub hedge_after: HedgeAfter,
    /// `--hedge-budget`: hedges allowed, in percent of the queries
    /// forwarded (over the last ten seconds).
    pub hedge_budget_percent: u32,
    /// `--cache-size` and the other cache flags.
    pub cache: CacheConfig,
}

/// The packet cache's settings ([`crate::core::cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// `--cache-size`: entries at most; 0 turns the cache off.
    pub entries: usize,
    /// `--cache-max-bytes`: bytes at most.
    pub max_bytes: usize,
    /// `--cache-max-ttl`, seconds: the longest a positive answer is kept.
    pub max_ttl: u32,
    /// `--cache-max-negative-ttl`, seconds: the longest a negative answer
    /// is kept (0: none is).
    pub max_negative_ttl: u32,
    /// `--serve-stale`: how long past its TTL an entry may still answer
    /// when no backend can; zero turns serving stale off.
    pub serve_stale: Duration,
    /// `--stale-ttl`, seconds: the TTL of every record in a stale answer.
    pub stale_ttl: u32,
}

/// dnsdist's default `maxTTL`: a day.
pub const DEFAULT_CACHE_MAX_TTL: u32 = 86_400;
/// dnsdist's default `maxNegativeTTL`: an hour (RFC 2308 5 suggests one
/// to three hours at most).
pub const DEFAULT_CACHE_MAX_NEGATIVE_TTL: u32 = 3_600;
/// RFC 8767 4 suggests 30 s for the TTL of stale answers.
pub const DEFAULT_STALE_TTL: u32 = 30;
/// 64 MiB: room for a few hundred thousand typical answers.
pub const DEFAULT_CACHE_MAX_BYTES: usize = 64 << 20;

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            entries: 0,
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_ttl: DEFAULT_CACHE_MAX_TTL,
            max_negative_ttl: DEFAULT_CACHE_MAX_NEGATIVE_TTL,
            serve_stale: Duration::ZERO,
            stale_ttl: DEFAULT_STALE_TTL,
        }
    }
}

/// `--hedge-after`: when a query still unanswered is sent once more, to the
/// backend its client would fail over to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeAfter {
    /// Never (`--hedge-after 0`).
    Off,
    /// After the same delay for every backend.
    Fixed(Duration),
    /// After each backend's own recent latency, within
    /// [`crate::core::hedge::ADAPTIVE_FLOOR`] and
    /// [`crate::core::hedge::ADAPTIVE_CEILING`] (the default, `auto`).
    Adaptive,
}

/// `--on-timeout`: what a client gets when its query times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// A SERVFAIL answer (the default).
    ServFail,
    /// Nothing: the client's own timeout runs out.
    Drop,
}

/// `--no-backend`: what a client gets when no backend can take its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBackend {
    /// A SERVFAIL answer, rate-limited per remote (the default).
    ServFail,
    /// A REFUSED answer, rate-limited likewise.
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

/// The default bound on one client address's TCP sessions: a tenth of the
/// session table, so no one host can hold it, while a resolver farm behind
/// one address still opens plenty (dnsdist and nginx set no default; the
/// sessions it cannot open it gets by evicting idle ones anyway).
pub(super) const DEFAULT_MAX_TCP_PER_CLIENT: u32 = 100;

/// The stats socket is for the owner alone unless `--stats-mode` widens it.
pub const DEFAULT_STATS_MODE: u32 = 0o600;

/// Room for a burst of a few thousand queries; the kernel caps it at
/// `net.core.rmem_max` unless the process has CAP_NET_ADMIN.
pub const DEFAULT_UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// The default bound on the remote table: a remote costs 132 bytes of RSS
/// (measured at 1M remotes, bench/results/scale.md), so a million is about
/// 130 MB at most, far more clients than one host's name service meets
/// (Binder's see thousands), and a spoofed flood stops growing there.
pub const DEFAULT_MAX_REMOTES: usize = 1_000_000;

/// BIND's RRL default: every second query past the rate gets a TC=1
/// answer, so a real resolver soon retries over TCP while a spoofed victim
/// receives at most half the (small) answers.
pub(super) const DEFAULT_RATE_LIMIT_SLIP: u32 = 2;

/// Hedges are at most a tenth of the queries forwarded: the share gRPC's
/// and Finagle's retry budgets allow (Finagle's default is 20%), so hedging
/// during overload adds at most a tenth to the load.
pub(super) const DEFAULT_HEDGE_BUDGET_PERCENT: u32 = 10;

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
            max_tcp_per_client: DEFAULT_MAX_TCP_PER_CLIENT,
            on_timeout: OnTimeout::ServFail,
            no_backend: NoBackend::ServFail,
            synth_rate: DEFAULT_SYNTH_RATE,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_inflight_per_backend: DEFAULT_MAX_INFLIGHT_PER_BACKEND,
            stats_socket: None,
            stats_mode: DEFAULT_STATS_MODE,
            metrics_addr: None,
            udp_recv_buffer: DEFAULT_UDP_RECV_BUFFER,
            acl: Acl::default(),
            max_remotes: DEFAULT_MAX_REMOTES,
            max_qps_per_client: 0,
            rate_limit_slip: DEFAULT_RATE_LIMIT_SLIP,
            hedge_after: HedgeAfter::Adaptive,
            hedge_budget_percent: DEFAULT_HEDGE_BUDGET_PERCENT,
            cache: CacheConfig::default(),
        }
    }
}
