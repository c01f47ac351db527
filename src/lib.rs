//! mname-balancer: a DNS load balancer for one host, in front of backend DNS
//! server processes (node-mname's `listenBalancer`) that listen on AF_UNIX
//! sockets in one directory.  A drop-in replacement for Joyent's C balancer.
//!
//! The map.  Imports run one way: binaries -> [`ops`] -> [`shell`] ->
//! [`core`] -> the pure tables -> the protocol (the
//! `mname-balancer-protocol` crate, `crates/protocol`, which backends
//! written in Rust share through `mname-balancer-backend`,
//! `crates/backend`, home of the demo backend).
//!
//! - [`core`]: every decision, and no I/O: it owns the backend table, the
//!   remotes, the timers, the in-flight table and the counters, takes
//!   events with the time they happened, and says what to do through
//!   [`core::Io`].  Its policy modules: datagrams (forwarding and answers),
//!   control (backend sessions, heartbeats, faults, replay), tcp
//!   (admission), [`core::hedge`] (hedged queries), timers,
//!   [`core::intake`] (is it a query),
//!   [`core::synth`] (the balancer's own answers), [`core::inflight`],
//!   [`core::counters`], [`core::snapshot`] (stats views).
//! - The pure tables the core keeps, at the top as in the original:
//!   [`backends`] (ids, health, round-robin, rebalancing), [`remotes`]
//!   (client hosts pinned to backends: primary, backup, revert) and
//!   [`timeouts`] (timer defaults, back-off, the deadline tree);
//!   [`latency`] (backends' latency: histograms and a smoothed estimate);
//!   and [`acl`] (who may use the balancer at all).
//! - [`shell`]: the event loop that does the I/O: binds the listeners,
//!   reads datagrams in batches ([`shell::udp`], [`shell::mmsg`]), owns the
//!   backend sockets ([`shell::links`]), relays TCP sessions
//!   ([`shell::tcp_session`]), hears signals, and carries out what the
//!   core decides.
//! - [`ops`]: the operator's side (it starts beside the shell and asks it
//!   for copies of the state): stats socket and `balstat`'s protocol,
//!   Prometheus metrics, the sidecar thread that serves them, systemd
//!   socket activation and readiness.
//! - [`cli`], [`logging`]: the command line and bunyan logs.
//!
//! How a datagram travels:
//!
//! ```text
//!  client --UDP--> shell::udp (recvmmsg, framed in place)
//!        --> Core::on_datagram (intake, remote, backend, in-flight)
//!        --> Io::send_frame --> shell::links (queue, write) --> backend
//!  backend --> shell::links (read) --> Core::on_link_bytes (frames, match)
//!        --> Io::queue_answer --> shell::udp (sendmmsg) --> client
//! ```

pub mod acl;
pub mod backends;
pub mod cli;
pub mod core;
pub mod latency;
pub mod logging;
pub mod ops;
pub mod remotes;
pub mod shell;
pub mod timeouts;
