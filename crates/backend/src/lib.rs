//! mname-balancer-backend: the backend side of the mname-balancer protocol,
//! for writing a backend DNS server in Rust, as node-mname's
//! `Server.listenBalancer` is for JavaScript.  A backend built on it works
//! behind mname-balancer and behind Joyent's original C balancer alike.
//!
//! - [`listener`]: binds the backend's AF_UNIX socket, speaks the protocol
//!   (hellos, heartbeats, frames) and hands the application each UDP query
//!   ([`listener::UdpQuery`], answered with `reply`) and each client TCP
//!   connection ([`listener::TcpSession`], a DNS-over-TCP stream).
//! - [`demo_zone`]: the answering code of `mname-demo-backend`, a tiny
//!   built-in zone; not needed to write a backend, but a worked example.
//! - [`cookies`]: DNS Cookies (RFC 7873) on the server's side, with Server
//!   Cookies made as RFC 9018 says; the demo zone answers with them.
//!
//! The frames themselves are the `mname-balancer-protocol` crate, re-exported
//! here as [`frame`] for those who want to look below the listener.
//!
//! ```no_run
//! use mname_balancer_backend::listener::{BalancerListener, Inbound};
//!
//! # async fn run() -> std::io::Result<()> {
//! let mut listener = BalancerListener::bind("/var/run/binder/sockets/5301".as_ref())?;
//! while let Some(inbound) = listener.next().await {
//!     match inbound {
//!         Inbound::Udp(query) => {
//!             let answer = query.message.clone(); // build a real answer here
//!             let _ = query.reply(&answer).await;
//!         }
//!         Inbound::Tcp(mut session) => {
//!             tokio::spawn(async move {
//!                 while let Ok(Some(msg)) = session.read_message().await {
//!                     if session.write_message(&msg).await.is_err() {
//!                         break;
//!                     }
//!                 }
//!             });
//!         }
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod cookies;
pub mod demo_zone;
pub mod listener;

/// The README's examples, compiled by `cargo test --doc` so that they
/// cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The protocol's codec, the `mname-balancer-protocol` crate.
pub use mname_balancer_protocol as frame;
