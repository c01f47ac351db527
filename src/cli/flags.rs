//! The flags `mname-balancer` takes and the usage text `-h` prints: the
//! original's short flags, ours for the stats socket and metrics, and a
//! long flag per timer and bound.  Every flag is declared here once; its
//! value is read in [`super::parse`].

use std::time::Duration;

use getopts::Options;

use crate::timeouts::Timers;

/// The long timer flags: name, help, and the field each sets.
type TimerField = fn(&mut Timers) -> &mut Duration;
pub(super) const TIMER_FLAGS: &[(&str, &str, TimerField)] = &[
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
        "tcp-idle-timeout",
        "close a client TCP connection idle this long (default 10s)",
        |t| &mut t.tcp_idle_timeout,
    ),
    (
        "tcp-read-timeout",
        "a client's TCP message must arrive whole within this (default 5s)",
        |t| &mut t.tcp_read_timeout,
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
        "after SIGTERM or SIGINT, grace for TCP sessions and queries in flight (default 5s)",
        |t| &mut t.drain_timeout,
    ),
    (
        "probe-timeout",
        "a probed backend must answer a heartbeat this fast (default 500ms)",
        |t| &mut t.probe_timeout,
    ),
];

pub(super) fn options() -> Options {
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
        "stats socket permissions, octal: 600 (default), 640 or 660 for a group",
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
        "TCP sessions open at once; at the limit the longest idle is closed for a new one (default 1000)",
        "N",
    );
    o.optopt(
        "",
        "max-tcp-per-client",
        "TCP sessions one client address may hold (default 100)",
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
        "max-remotes",
        "client hosts tracked at most; new ones past it get a backend by a hash of their address (default 1000000)",
        "N",
    );
    o.optopt(
        "",
        "max-qps-per-client",
        "queries a client IP may send a second, at most 65535; past it they are dropped (default 0: no limit)",
        "N",
    );
    o.optopt(
        "",
        "rate-limit-slip",
        "every K-th query past the rate gets a TC=1 answer (retry over TCP); 0: never (default 2)",
        "K",
    );
    o.optopt(
        "",
        "hedge-after",
        "send a UDP query still unanswered after this long to a second backend too; \
         auto: each backend's recent latency, 50ms to 1s (default auto); 0: never",
        "DURATION",
    );
    o.optopt(
        "",
        "hedge-budget",
        "hedges at most this percent of the queries forwarded (over 10s, plus 10/s) (default 10)",
        "PERCENT",
    );
    o.optopt(
        "",
        "cache-size",
        "answer repeated UDP queries from a cache of at most N answers (default 0: no cache)",
        "N",
    );
    o.optopt(
        "",
        "cache-max-bytes",
        "bytes the cache may hold at most (default 67108864)",
        "BYTES",
    );
    o.optopt(
        "",
        "cache-max-ttl",
        "longest a positive answer is cached (default 86400s)",
        "DURATION",
    );
    o.optopt(
        "",
        "cache-max-negative-ttl",
        "longest an NXDOMAIN or NODATA answer is cached; 0: never (default 3600s)",
        "DURATION",
    );
    o.optopt(
        "",
        "serve-stale",
        "when no backend can answer, answer from a cache entry expired less than this ago \
         (default 0: never)",
        "DURATION",
    );
    o.optopt(
        "",
        "stale-ttl",
        "TTL of the records in a stale answer (default 30s)",
        "DURATION",
    );
    o.optmulti(
        "",
        "allow",
        "only clients in this network may use the balancer; repeatable (default: all)",
        "CIDR",
    );
    o.optmulti(
        "",
        "deny",
        "clients in this network may not; repeatable, wins over --allow",
        "CIDR",
    );
    o.optopt(
        "",
        "acl-action",
        "refused or drop: what a refused UDP client gets (default refused)",
        "ACTION",
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
