//! SIGNALS
//!
//! The process signals the balancer acts on, as a stream the event loop
//! selects on: SIGTERM and SIGINT (drain, then exit), SIGHUP (rescan the
//! socket directory), SIGUSR1 (log every counter), SIGUSR2 (empty the packet
//! cache).  What each means is the
//! core's decision ([`crate::core::Signal`]).

use crate::core::Signal;

/// The process signals the loop listens to.  A handler that cannot be
/// installed is left out (the signal's default action then applies).
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
    usr1: Option<tokio::signal::unix::Signal>,
    usr2: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Install the handlers for SIGTERM, SIGINT, SIGHUP, SIGUSR1 and
    /// SIGUSR2.
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
            usr1: signal(SignalKind::user_defined1()).ok(),
            usr2: signal(SignalKind::user_defined2()).ok(),
        }
    }

    /// Hear signals on a task of their own and pass each one on through a
    /// channel: the loop then waits on one channel instead of polling five
    /// signal streams (and registering with each) at every wake-up.
    pub fn forward(mut self) -> tokio::sync::mpsc::Receiver<Signal> {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let signal = self.next().await;
                if tx.send(signal).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// The next signal heard, as the core names it.
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
            _ = recv(&mut self.usr2) => Signal::FlushCache,
        }
    }
}
