//! BACKEND LINKS
//!
//! The persistent connection to each backend, as decisions:
//!
//! - a directory listing names the backends: a new socket becomes a new
//!   backend and is connected at once; one that returns after being
//!   removed keeps its id and counters;
//! - once connected, the balancer sends CLIENT_HELLO twice (the second asks
//!   for capabilities; node-mname answers every hello alike, so it reads a
//!   plain SERVER_HELLO back), and the backend is ok when SERVER_HELLO
//!   arrives within the connect timeout;
//! - heartbeats follow every heartbeat interval, each answered within the
//!   heartbeat timeout, or the backend is faulted;
//! - a frame out of turn (before hello, a second hello, an unasked
//!   heartbeat reply, an unknown type) faults the backend;
//! - a fault closes the link, schedules a reconnect on the back-off
//!   schedule ([`crate::timeouts::Backoff`]) and replays the queries the
//!   backend held to their remotes' new backends, once each;
//! - a socket missing twice in a row marks the backend removed until a
//!   listing finds it again (a restarting backend unlinks and re-binds its
//!   socket, and one unlucky connect in between must not re-home its
//!   clients).
//!
//! Each link has a generation; news from an abandoned one is ignored.

use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use slog::{debug, error, info, trace, warn};
use tokio::time::Instant;

use super::assign::log_reassignment;
use super::{Core, Io, Link, RateLimit, TimerKey};
use crate::backends::{BackendId, Caps, Heartbeat, LinkState, Need, Ready};
use mname_balancer_protocol::{Frame, FrameBuffer, FrameError, frame_type};

/// sockaddr_un's sun_path holds 108 bytes including the terminating NUL.
pub(super) const SUN_PATH_MAX: usize = 108;

/// CLIENT_HELLO twice: the second asks for capabilities.
const HELLO_TWICE: [u8; 8] = {
    let h = frame_type::CLIENT_HELLO.to_le_bytes();
    [h[0], h[1], h[2], h[3], h[0], h[1], h[2], h[3]]
};

impl Core {
    // ---- the socket directory ------------------------------------------

    /// The socket directory was listed: every entry is a backend.  An
    /// entry that could not be read ends the listing, as does an error
    /// opening the directory (both are logged; the next scan tries again).
    pub fn on_dir_listing(
        &mut self,
        now: Instant,
        listing: io::Result<Vec<io::Result<PathBuf>>>,
        io: &mut impl Io,
    ) {
        let dir = self.cfg.socket_dir.display().to_string();
        let entries = match listing {
            Ok(e) => e,
            Err(e) => {
                error!(self.log, "error opening socket directory"; "socket_dir" => dir,
                    "errno" => e.raw_os_error().unwrap_or(0), "error" => e.to_string());
                return;
            }
        };
        for entry in entries {
            let path = match entry {
                Ok(p) => p,
                Err(e) => {
                    error!(self.log, "error reading socket directory"; "socket_dir" => dir,
                        "errno" => e.raw_os_error().unwrap_or(0), "error" => e.to_string());
                    break;
                }
            };
            if path.as_os_str().len() >= SUN_PATH_MAX {
                error!(self.log, "backend socket path is too long";
                    "socket_path" => path.display().to_string());
                continue;
            }
            self.found_socket(&path, now, io);
        }
    }

    /// Sockets appeared in the directory (the watch saw them created or
    /// renamed into place).  A new one is connected at once, as by a
    /// listing; so is the socket of a known backend that is down, with
    /// its back-off reset: a process bound it anew, so the wait that
    /// protected a failing one is over.  A backend in service is left
    /// alone.
    pub fn on_sockets_appeared(&mut self, now: Instant, paths: &[PathBuf], io: &mut impl Io) {
        for path in paths {
            if path.as_os_str().len() >= SUN_PATH_MAX {
                continue;
            }
            let waiting = self.backends.by_path(path).and_then(|be| {
                let down = matches!(be.state, LinkState::Down | LinkState::ReconnectPending);
                (down && !be.removed).then_some(be.id)
            });
            match waiting {
                Some(id) => {
                    info!(
                        self.backend_log(id),
                        "backend socket appeared (connecting now)"
                    );
                    if let Some(be) = self.backends.get_mut(id) {
                        be.backoff.reset_immediate();
                    }
                    self.schedule_reconnect(id, now, io);
                }
                None => self.found_socket(path, now, io),
            }
        }
    }

    fn found_socket(&mut self, path: &Path, now: Instant, io: &mut impl Io) {
        let id = match self.backends.by_path(path) {
            Some(be) if be.removed => {
                let id = be.id;
                info!(self.backend_log(id), "backend socket returned (connecting)");
                if let Some(be) = self.backends.get_mut(id) {
                    be.removed = false;
                }
                id
            }
            Some(_) => return,
            None => {
                let id = self.backends.insert(path);
                info!(self.backend_log(id), "new backend");
                id
            }
        };
        if let Some(be) = self.backends.get_mut(id) {
            be.backoff.reset_immediate();
        }
        self.schedule_reconnect(id, now, io);
    }

    // ---- connecting -----------------------------------------------------

    fn schedule_reconnect(&mut self, id: BackendId, now: Instant, _io: &mut impl Io) {
        let timers = &self.cfg.timers;
        let Some(be) = self.backends.get_mut(id) else {
            return;
        };
        if be.removed {
            // Only a listing that finds the socket again revives it.
            be.state = LinkState::Down;
            return;
        }
        let delay = be.backoff.next_delay(timers);
        be.state = LinkState::ReconnectPending;
        debug!(self.backend_log(id), "reconnect triggered for backend";
            "delay_secs" => delay.as_secs_f64());
        self.timeouts.set(TimerKey::Reconnect(id), now + delay);
    }

    pub(super) fn connect(&mut self, id: BackendId, now: Instant, io: &mut impl Io) {
        let log = self.backend_log(id);
        let Some(be) = self.backends.get_mut(id) else {
            return;
        };
        info!(log, "connecting to backend");
        be.generation += 1;
        be.stats.conn_start += 1;
        be.state = LinkState::Connecting;
        let generation = be.generation;
        io.connect(id, generation, &be.path);
        self.links.insert(
            id,
            Link {
                generation,
                frames: FrameBuffer::new(),
                stuck_log: RateLimit::default(),
            },
        );
        self.timeouts
            .set(TimerKey::Hello(id), now + self.cfg.timers.connect_timeout);
    }

    /// True if `generation` is backend `id`'s current link.
    fn is_current(&self, id: BackendId, generation: u64) -> bool {
        self.link_generation(id) == Some(generation)
    }

    /// Backend `id`'s socket is connected: say hello.
    pub fn on_link_connected(
        &mut self,
        _now: Instant,
        id: BackendId,
        generation: u64,
        io: &mut impl Io,
    ) {
        if !self.is_current(id, generation) {
            return;
        }
        info!(self.backend_log(id), "backend socket connected");
        if let Some(be) = self.backends.get_mut(id) {
            be.missing_once = false;
            be.state = LinkState::AwaitingHello;
        }
        io.send_control(id, &HELLO_TWICE);
    }

    /// Connecting to backend `id`'s socket failed.
    pub fn on_link_connect_failed(
        &mut self,
        now: Instant,
        id: BackendId,
        generation: u64,
        e: &io::Error,
        io: &mut impl Io,
    ) {
        if !self.is_current(id, generation) {
            return;
        }
        let log = self.backend_log(id);
        self.close_link(id, io);
        let Some(be) = self.backends.get_mut(id) else {
            return;
        };
        be.stats.conn_error += 1;
        if e.kind() == io::ErrorKind::NotFound && !be.missing_once {
            // Perhaps a restart between unlink and bind: look once more
            // before deciding the socket is gone.
            be.missing_once = true;
            debug!(log, "backend socket missing (retrying once)");
            self.schedule_reconnect(id, now, io);
        } else if e.kind() == io::ErrorKind::NotFound {
            // The socket is gone: stop trying until a listing finds it.
            be.removed = true;
            be.missing_once = false;
            info!(log, "backend socket removed");
        } else {
            error!(log, "failed to connect";
                "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
            self.schedule_reconnect(id, now, io);
        }
    }

    /// Backend `id` closed its socket (`error` is None) or the socket
    /// failed: fault it.
    pub fn on_link_closed(
        &mut self,
        now: Instant,
        id: BackendId,
        generation: u64,
        error: Option<&io::Error>,
        io: &mut impl Io,
    ) {
        if !self.is_current(id, generation) {
            return;
        }
        match error {
            None => warn!(self.backend_log(id), "backend socket EOF"),
            Some(e) => {
                error!(self.backend_log(id), "backend socket error";
                    "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
                if let Some(be) = self.backends.get_mut(id) {
                    be.stats.conn_error += 1;
                }
            }
        }
        self.fault(id, now, io);
    }

    // ---- faults -----------------------------------------------------------

    /// Take a backend out of service: close its link, schedule
    /// a reconnect and replay what it held.  The cause has been logged.
    pub(super) fn fault(&mut self, id: BackendId, now: Instant, io: &mut impl Io) {
        let log = self.backend_log(id);
        let Some(be) = self.backends.get_mut(id) else {
            return;
        };
        if be.is_ok() {
            error!(log, "backend faulted (reset and reconnect)");
        }
        be.stats.faults += 1;
        self.close_link(id, io);
        info!(log, "backend socket closed");
        self.schedule_reconnect(id, now, io);
        self.replay_inflight(id, now, io);
    }

    /// Send each query in flight to a failed backend once more, to its
    /// remote's new backend.  Queries already replayed once, or with no
    /// backend to go to, stay in the table and meet their deadline.
    fn replay_inflight(&mut self, from: BackendId, now: Instant, io: &mut impl Io) {
        self.inflight.forget_losers(from);
        let mut replayed = 0u64;
        for key in self.inflight.keys_for(from) {
            // A hedged query is with another backend too: that one answers.
            if self.inflight.forget_hedge_backend(&key, from) {
                continue;
            }
            if self.inflight.get(&key).is_none_or(|e| e.replayed) {
                continue;
            }
            let ip = key.client.ip();
            let to = match self.remotes.get_mut(&ip) {
                Some(rem) => {
                    let choice = rem.choose_backend_for(&mut self.backends, Need::of(&ip));
                    if choice.change.is_some() && self.repeat_logs.per_client.allow(now) {
                        log_reassignment(&self.log, &ip, &choice);
                    }
                    choice.backend
                }
                // A client served without a remote (the table was full).
                None => self
                    .backends
                    .stateless_for(self.client_hasher.hash_one(ip), Need::of(&ip)),
            };
            let Some(to) = to else {
                continue;
            };
            if to == from || !self.links.contains_key(&to) {
                continue;
            }
            let Some(frame) = self.inflight.reassign(&key, to) else {
                continue;
            };
            // If the new backend's queue is full, the query meets its
            // deadline like any other unanswered one.
            let sent = io.send_frame(to, &[frame]).is_ok();
            replayed += 1;
            if let Some(be) = self.backends.get_mut(to) {
                if sent {
                    be.stats.udp += 1;
                }
                be.unanswered_since.get_or_insert(now);
            }
        }
        if replayed > 0 {
            self.counters.replayed += replayed;
            if let Some(be) = self.backends.get_mut(from) {
                be.stats.replayed_away += replayed;
            }
            info!(self.backend_log(from), "replayed queries in flight to other backends";
                "count" => replayed);
        }
    }

    fn close_link(&mut self, id: BackendId, io: &mut impl Io) {
        if self.links.remove(&id).is_some() {
            io.close(id);
        }
        if let Some(be) = self.backends.get_mut(id) {
            be.unanswered_since = None;
            be.state = LinkState::Down;
        }
        for key in [
            TimerKey::Hello(id),
            TimerKey::HeartbeatSend(id),
            TimerKey::HeartbeatTimeout(id),
            TimerKey::Reconnect(id),
        ] {
            self.timeouts.clear(key);
        }
    }

    // ---- frames from a backend -----------------------------------------

    /// Bytes arrived on backend `id`'s control socket.  Answers among them
    /// are queued with [`Io::queue_answer`]; the shell sends them when the
    /// call returns.
    pub fn on_link_bytes(
        &mut self,
        now: Instant,
        id: BackendId,
        generation: u64,
        bytes: &[u8],
        io: &mut impl Io,
    ) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if link.generation != generation {
            return;
        }
        let mut frames = std::mem::take(&mut link.frames);
        frames.extend(bytes);
        loop {
            let frame = match frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    self.on_frame_error(id, e);
                    self.fault(id, now, io);
                    return;
                }
            };
            if !self.on_frame(id, frame, now, io) {
                self.fault(id, now, io);
                return;
            }
        }
        if let Some(link) = self.links.get_mut(&id)
            && link.generation == generation
        {
            link.frames = frames;
        }
    }

    fn on_frame_error(&self, id: BackendId, e: FrameError) {
        let log = self.backend_log(id);
        match e {
            FrameError::UnknownType(t) => error!(log, "invalid frame type"; "frame_type" => t),
            FrameError::Oversized { len, .. } => {
                warn!(log, "backend sent oversized UDP packet"; "len" => len)
            }
            FrameError::BadPort { frame_type, port } => {
                error!(log, "invalid port in frame"; "frame_type" => frame_type, "port" => port)
            }
        }
    }

    /// Act on one frame from a backend's link.  Returns false when the
    /// frame breaks the protocol (the cause is logged): fault the backend.
    fn on_frame(
        &mut self,
        id: BackendId,
        frame: Frame<'_>,
        now: Instant,
        io: &mut impl Io,
    ) -> bool {
        // Answers are nearly every frame: handled first, with nothing
        // built for them (no child logger) on the way.
        if let Frame::OutboundUdp {
            addr,
            port,
            payload,
        } = frame
            && self.backends.get(id).is_some_and(|be| be.is_ok())
        {
            self.on_answer(id, SocketAddr::new(addr, port), payload, now, io);
            return true;
        }
        let owed = self.inflight.count_for(id) > 0;
        let heartbeat_interval = self.cfg.timers.heartbeat_interval;
        let log = self.backend_log(id);
        let Some(be) = self.backends.get_mut(id) else {
            return false;
        };
        let ready = match be.state {
            LinkState::Ready(r) => Some(r),
            _ => None,
        };
        match (frame, ready) {
            (Frame::ServerHello, None) if be.state == LinkState::AwaitingHello => {
                be.state = LinkState::Ready(Ready::new());
                be.backoff.reset_after_success(&self.cfg.timers);
                info!(log, "backend socket established");
                self.timeouts.clear(TimerKey::Hello(id));
                self.timeouts
                    .set(TimerKey::HeartbeatSend(id), now + heartbeat_interval);
            }
            (frame, None) => {
                error!(log, "errant frame before hello"; "frame_type" => frame.frame_type());
                return false;
            }
            (Frame::ServerHello, Some(mut r)) if r.caps == Caps::Asked => {
                // The answer to our second hello from a backend that speaks
                // only the original protocol.
                r.caps = Caps::Known(0);
                be.state = LinkState::Ready(r);
                debug!(log, "backend speaks the original protocol");
            }
            (Frame::ServerCapabilities { flags }, Some(mut r)) if r.caps == Caps::Asked => {
                r.caps = Caps::Known(flags);
                be.state = LinkState::Ready(r);
                info!(log, "backend capabilities"; "caps" => flags);
            }
            (Frame::ServerHello, Some(_)) => {
                error!(log, "duplicate hello from backend");
                return false;
            }
            (Frame::ServerHeartbeat, Some(mut r)) => {
                let Heartbeat::Sent { at: sent, probe } = r.heartbeat else {
                    error!(log, "unexpected heartbeat response from backend");
                    return false;
                };
                r.heartbeat = Heartbeat::Idle;
                be.state = LinkState::Ready(r);
                if probe {
                    // Alive after all: restart the unanswered clock.
                    be.unanswered_since = owed.then_some(now);
                }
                let rtt = now.saturating_duration_since(sent);
                be.stats.heartbeat_rtt.record(rtt);
                be.stats.last_heartbeat_rtt_us =
                    Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
                trace!(log, "received heartbeat reply"; "rtt_us" => rtt.as_micros() as u64);
                self.timeouts.clear(TimerKey::HeartbeatTimeout(id));
                self.timeouts
                    .set(TimerKey::HeartbeatSend(id), now + heartbeat_interval);
            }
            (other, Some(_)) => {
                error!(log, "invalid frame type"; "frame_type" => other.frame_type());
                return false;
            }
        }
        true
    }

    // ---- heartbeats and probes ------------------------------------------

    /// The heartbeat interval passed: send the next heartbeat.
    pub(super) fn send_heartbeat(&mut self, id: BackendId, now: Instant, io: &mut impl Io) {
        let timeout = self.cfg.timers.heartbeat_timeout;
        if self.heartbeat_out(id, now, false, io) {
            trace!(self.backend_log(id), "heartbeat sent");
            self.timeouts
                .set(TimerKey::HeartbeatTimeout(id), now + timeout);
        }
    }

    /// A backend owes queries and answers none: it must answer a heartbeat
    /// within the probe timeout or be faulted.  A heartbeat already out
    /// keeps its send time and now has only the probe timeout.
    pub(super) fn probe(&mut self, id: BackendId, now: Instant, io: &mut impl Io) {
        let Some(be) = self.backends.get(id) else {
            return;
        };
        let LinkState::Ready(r) = be.state else {
            return;
        };
        warn!(self.backend_log(id), "backend answers no queries (probing)";
            "inflight" => self.inflight.count_for(id),
            "unanswered_ms" => be.unanswered_since
                .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64));
        let sent = match r.heartbeat {
            Heartbeat::Sent { at, .. } => {
                self.mark_probe(id, at);
                at
            }
            Heartbeat::Idle => {
                self.timeouts.clear(TimerKey::HeartbeatSend(id));
                self.heartbeat_out(id, now, true, io);
                now
            }
        };
        let deadline = (sent + self.cfg.timers.probe_timeout).max(now);
        self.timeouts.set(TimerKey::HeartbeatTimeout(id), deadline);
    }

    /// Queue a CLIENT_HEARTBEAT to a ready backend and note it outstanding
    /// (`probe`: sent because the backend owes answers).  False if the
    /// backend is not ready.
    fn heartbeat_out(
        &mut self,
        id: BackendId,
        now: Instant,
        probe: bool,
        io: &mut impl Io,
    ) -> bool {
        let Some(be) = self.backends.get_mut(id) else {
            return false;
        };
        let LinkState::Ready(mut r) = be.state else {
            return false;
        };
        io.send_control(id, &frame_type::CLIENT_HEARTBEAT.to_le_bytes());
        r.heartbeat = Heartbeat::Sent { at: now, probe };
        be.state = LinkState::Ready(r);
        true
    }

    /// The heartbeat out since `at` becomes a probe.
    fn mark_probe(&mut self, id: BackendId, at: Instant) {
        if let Some(be) = self.backends.get_mut(id)
            && let LinkState::Ready(mut r) = be.state
        {
            r.heartbeat = Heartbeat::Sent { at, probe: true };
            be.state = LinkState::Ready(r);
        }
    }

    /// The heartbeat deadline passed unanswered.
    pub(super) fn heartbeat_missed(&mut self, id: BackendId, now: Instant, io: &mut impl Io) {
        let Some(be) = self.backends.get_mut(id) else {
            return;
        };
        if !be.is_ok() {
            return;
        }
        let passive = be.is_probed();
        if passive {
            be.stats.passive_faults += 1;
        }
        error!(self.backend_log(id), "no heartbeat from backend"; "passive_check" => passive);
        self.fault(id, now, io);
    }
}
