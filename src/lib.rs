//! mname-balancer: a DNS load balancer for one host, in front of backend DNS
//! server processes (node-mname's `listenBalancer`) that listen on AF_UNIX
//! sockets in one directory.  A drop-in replacement for Joyent's C balancer.
//!
//! How data moves:
//!
//! ```text
//!  client --UDP--> udp_relay --INBOUND_UDP--> link (OutQueue) --> backend
//!  client <--UDP-- udp_relay <--OUTBOUND_UDP-- balancer (decode) <-- link
//!  client --TCP--> balancer (accept, pick) --> tcp_relay session --> backend
//! ```
//!
//! - [`balancer`]: the event loop; owns all state and makes every decision.
//! - [`backends`]: the backend table, ids, health, round-robin, rebalancing.
//! - [`remotes`]: client hosts pinned to backends (primary, backup, revert).
//! - [`timeouts`]: named timer defaults, reconnect back-off, deadline tree.
//! - [`frame`]: the wire protocol's frames (pure codec), the
//!   `mname-balancer-protocol` crate that backends share.
//! - [`link`]: the I/O task of one backend control session.
//! - [`udp_relay`], [`tcp_relay`]: moving client traffic; [`mmsg`]: batched
//!   datagram system calls.
//! - [`cli`], [`logging`]: the command line and bunyan logs.
//! - [`activation`]: systemd socket activation and readiness (sd_notify).
//! - [`stats`]: snapshots of the loop's state, asked for by
//!   [`stats_socket`] (`-S`, read by `balstat`) and [`metrics`]
//!   (`--metrics`, Prometheus), which run on the [`sidecar`] thread.
//!
//! The backend side of the protocol, for writing backends in Rust, and the
//! demo backend are the `mname-balancer-backend` crate (`crates/backend`).

pub mod activation;
pub mod backends;
pub mod balancer;
pub mod cli;
pub mod inflight;
pub mod intake;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod mmsg;
pub mod remotes;
pub mod sidecar;
pub mod stats;
pub mod stats_socket;
pub mod synth;
pub mod sys;
pub mod tcp_relay;
pub mod timeouts;
pub mod udp_relay;

/// The codec lives in its own crate (`crates/protocol`) so that backends
/// can share it without the balancer; under this name every
/// `crate::frame::...` path keeps working.
pub use mname_balancer_protocol as frame;
