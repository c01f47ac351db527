//! THE LOOP'S SIDE OF TCP
//!
//! What the event loop ([`super`]) does for TCP itself: accepting client
//! connections (a bounded number per wake-up), asking the core whether to
//! admit each and with which backend, starting the session task that relays
//! it ([`super::tcp_session`]), closing the sessions the core's sweep
//! expires, and, with the packet cache on, handing the core the answers the
//! sessions paired with their queries ([`crate::core::tcp_learn`]).  The
//! relaying itself is the sessions' own.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use slog::{o, warn};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::tcp_session::{self, EndReport, Session};
use super::{ACCEPTS_PER_WAKE, Shell, ShellIo};
use crate::core::TcpVerdict;

impl Shell {
    /// Have the core learn the answers TCP sessions paired since the last
    /// turn (with the packet cache on).
    pub(super) fn learn_tcp_answers(&mut self) {
        let Some(learned) = &self.learned else {
            return;
        };
        let dropped = learned.take(&mut self.learned_now);
        if self.learned_now.is_empty() && dropped == 0 {
            return;
        }
        for answer in self.learned_now.drain(..) {
            self.core.learn_tcp_answer(&answer);
            self.learned_buffers.extend(answer.into_buffers());
        }
        learned.recycle(&mut self.learned_buffers);
        if dropped > 0 {
            self.core.on_tcp_answers_dropped(dropped);
        }
    }

    /// A connection was accepted (or the accept failed).
    pub(super) fn on_accepted(
        &mut self,
        accepted: io::Result<(TcpStream, SocketAddr)>,
        now: Instant,
    ) {
        let mut next = Some(accepted);
        for taken in 1..=ACCEPTS_PER_WAKE {
            let Some(accepted) = next.take() else {
                break;
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    warn!(self.log, "incoming TCP accept failure";
                        "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
                    self.core.on_accept_error(now);
                    return;
                }
            };
            self.start_session(stream, peer, now);
            // More may be waiting: take them without another wake-up, but
            // no more than the turn allows (one taken here and not started
            // would be closed unseen; the listener stays ready for the
            // next turn).
            if taken < ACCEPTS_PER_WAKE {
                next = self.try_accept();
            }
        }
    }

    pub(super) fn try_accept(&mut self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        if !self.core.wants_connections() {
            return None;
        }
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        self.tcp
            .as_ref()?
            .iter()
            .find_map(|l| match l.poll_accept(&mut cx) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            })
    }

    pub(super) fn start_session(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let verdict = self.core.on_tcp_offered(now, peer, &self.tcp_sessions);
        let TcpVerdict::Admit { plan, evict } = verdict else {
            return;
        };
        if let Some(victim) = evict {
            self.tcp_sessions.close(victim);
        }
        // Answers go out as soon as the backend writes them: a resolver
        // pipelining queries must not wait on Nagle's algorithm.  Failure
        // only costs latency.
        let _ = stream.set_nodelay(true);
        let log = self.log.new(o!("backend" => plan.backend,
            "conn_id" => plan.session.conn_id,
            "remote_ip" => plan.client.ip().to_string(), "remote_port" => plan.client.port()));
        let cell = self.tcp_sessions.cell(now);
        let report = EndReport::new(&plan, cell.clone(), self.session_tx.clone());
        let id = plan.session;
        let abort = self.sessions.spawn(tcp_session::run_session(Session {
            plan,
            client: stream,
            log,
            report,
            epoch: self.tcp_sessions.epoch(),
            learned: self.learned.clone(),
        }));
        self.tcp_sessions.started(id, cell, abort);
    }

    /// Close the TCP sessions whose time is up, as the core decides from
    /// their published activity.
    pub(super) fn sweep_sessions(&mut self, now: Instant) {
        let mut closed = std::mem::take(&mut self.closed_sessions);
        let mut io = ShellIo {
            udp: self.udp.out(),
            links: &mut self.links,
            cmds: &mut self.cmds,
        };
        self.core
            .sweep_tcp_sessions(now, &self.tcp_sessions, &mut closed, &mut io);
        for id in closed.drain(..) {
            self.tcp_sessions.close(id);
        }
        self.closed_sessions = closed;
    }
}
