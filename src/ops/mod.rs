//! OPERATIONS
//!
//! What an operator uses to watch and run the balancer, beside the data
//! path: the stats socket ([`stats_socket`], read by `balstat`) and the
//! Prometheus endpoint ([`metrics`]), which ask the event loop for copies
//! of its state through [`crate::shell::stats_requests`] and serve them from the [`sidecar`]
//! thread; and systemd socket activation and readiness ([`activation`]).

pub mod activation;
pub mod metrics;
pub mod sidecar;
pub mod stats_socket;

/// A failed accept on the stats socket or the metrics listener (out of
/// file descriptors, say) is logged at most this often; the wait before
/// the next try is the event loop's ([`crate::core::ACCEPT_BACKOFF`]).
pub const ACCEPT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
