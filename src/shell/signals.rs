//! SIGNALS
//!
//! The process signals the balancer acts on, as a stream the event loop
//! selects on: SIGTERM and SIGINT (drain, then exit), SIGHUP (rescan the
//! socket directory), SIGUSR1 (log every counter).  What each means is the
//! core's decision ([`crate::core::Signal`]).

use crate::core::Signal;

/// The process signals the loop listens to.  A handler that cannot be
/// installed is left out (the signal's default action then applies).
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
    usr1: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
            usr1: signal(SignalKind::user_defined1()).ok(),
        }
    }

    pub async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    if s.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => Signal::Terminate,
            _ = recv(&mut self.int) => Signal::Terminate,
            _ = recv(&mut self.hup) => Signal::Rescan,
            _ = recv(&mut self.usr1) => Signal::DumpCounters,
        }
    }
}
