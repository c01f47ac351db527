//! CLIENT DATAGRAMS
//!
//! What becomes of each UDP query, and of each answer a backend sends.
//!
//! A query is checked ([`super::intake`]), its remote found or created and
//! given a backend (sticky, see [`crate::remotes`]), recorded in the
//! in-flight table, and its INBOUND_UDP frame queued toward the backend.
//! When it cannot be (no backend, the table or the backend's queue full,
//! a datagram too large or not a query) it is counted in exactly one drop
//! reason, and where the policy says so the balancer answers it itself
//! (`--no-backend`, rate-limited per remote).
//!
//! An answer (OUTBOUND_UDP) goes to its client only if it matches a query
//! in flight to that backend: a buggy or hostile backend cannot aim the
//! balancer's socket at an address that never asked.
//!
//! The datagram is framed where it lies: the receive buffer keeps room for
//! the largest frame header in front of each datagram ([`Datagram`]), so
//! the frame is handed to [`Io::send_frame`] without a copy.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::ResponseCode;
use slog::{debug, warn};
use tokio::time::Instant;

use super::assign::{Assigned, assign_client};
use super::cache::Lookup;
use super::inflight::{self, HedgeOutcome, QueryKey, Unmatched};
use super::intake::{self, Refusal};
use super::{Core, Io, REPEAT_LOG_INTERVAL, send_now, synth};
use crate::acl::AclAction;
use crate::cli::NoBackend;
use crate::remotes::{QueryRate, RemoteStats};
use mname_balancer_protocol::{self as frame, MAX_PAYLOAD, UDP6_HEADER_LEN};

/// One received datagram, in a buffer with room for a frame header in
/// front of it.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The reply path its answer takes (a socket, and on a wildcard socket
    /// the address the query was sent to): an index the shell defines.
    pub reply_path: usize,
    /// Its source, with any v4-mapping undone.
    pub src: SocketAddr,
    /// Its length as received (may exceed what the buffer kept).
    pub len: usize,
    /// [`UDP6_HEADER_LEN`] bytes of room, then the datagram.
    buf: &'a mut [u8],
}

impl<'a> Datagram<'a> {
    /// A datagram of `len` bytes lying in `buf` after
    /// [`UDP6_HEADER_LEN`] bytes of room.  `len` may exceed what `buf`
    /// holds (the datagram was cut to the buffer); it is then oversized.
    pub fn new(reply_path: usize, src: SocketAddr, len: usize, buf: &'a mut [u8]) -> Self {
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        Datagram {
            reply_path,
            src,
            len,
            buf,
        }
    }

    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.src.ip()
    }

    /// Too large for a frame.
    pub fn is_oversized(&self) -> bool {
        self.len > MAX_PAYLOAD
    }

    /// The DNS message (as much of it as the buffer kept).
    pub fn payload(&self) -> &[u8] {
        let end = (UDP6_HEADER_LEN + self.len).min(self.buf.len());
        self.buf.get(UDP6_HEADER_LEN..end).unwrap_or(&[])
    }

    /// The INBOUND_UDP (or INBOUND_UDP6) frame for this datagram, written
    /// in place, and the length of its header.  `None` when oversized.
    pub fn inbound_frame(&mut self) -> Option<(&[u8], usize)> {
        if self.is_oversized() || UDP6_HEADER_LEN + self.len > self.buf.len() {
            return None;
        }
        let (h, n) = frame::udp_header(true, self.src.ip(), self.src.port(), self.len);
        let start = UDP6_HEADER_LEN - n;
        self.buf[start..UDP6_HEADER_LEN].copy_from_slice(&h[..n]);
        Some((&self.buf[start..UDP6_HEADER_LEN + self.len], n))
    }
}

impl Core {
    /// A client datagram arrived.  Call [`Core::after_datagrams`] once a
    /// batch of them has been handed over.
    pub fn on_datagram(&mut self, now: Instant, dgram: &mut Datagram<'_>, io: &mut impl Io) {
        self.counters.udp_received += 1;
        let ip = dgram.ip();
        if dgram.is_oversized() {
            self.counters.dropped_oversized += 1;
            if self
                .repeat_logs
                .oversized
                .allow(now, std::time::Duration::from_secs(1))
            {
                warn!(self.log, "dropping oversized UDP packet";
                    "remote_ip" => %ip, "len" => dgram.len,
                    "dropped" => self.counters.dropped_oversized);
            }
            // What the backend would have said to a query it could not
            // take over UDP: ask again over TCP.
            if self.cfg.acl.permits(ip)
                && self.answer_statelessly(now, dgram, synth::oversized_answer, io)
            {
                self.counters.oversized_answers += 1;
            }
            return;
        }
        if !self.cfg.acl.is_open() && !self.cfg.acl.permits(ip) {
            self.refuse_by_acl(now, dgram, io);
            return;
        }
        let dns_id = match intake::check(dgram.payload()) {
            Ok(id) => id,
            Err(refusal) => {
                match refusal {
                    Refusal::Short => self.counters.dropped_short += 1,
                    Refusal::Response => self.counters.dropped_response += 1,
                    Refusal::BadQuestion => self.counters.dropped_malformed += 1,
                }
                debug!(self.log, "dropping UDP packet"; "reason" => refusal.name(),
                    "remote_ip" => %ip, "len" => dgram.len);
                // A query whose question does not parse is answered as a
                // backend would: FORMERR.  Responses and scraps shorter
                // than a header get nothing (answering them invites loops).
                if refusal == Refusal::BadQuestion
                    && self.answer_statelessly(now, dgram, synth::formerr_answer, io)
                {
                    self.counters.formerr_answers += 1;
                }
                return;
            }
        };
        let second = self.second(now);
        let Assigned { remote, backend } = assign_client!(self, ip, now);
        if remote.is_none() {
            self.counters.untracked_queries += 1;
        }
        let mut remote = remote;
        let limit = self.cfg.max_qps_per_client;
        if limit > 0 {
            let rate = match remote.as_deref_mut() {
                Some(rem) => rem.count_query(second, limit),
                // Untracked: a budget per address, and slips counted
                // across them all.
                None if self.untracked_queries.allow(ip, second, limit) => QueryRate::Within,
                None => QueryRate::Over((self.counters.dropped_rate_limited + 1) as u16),
            };
            if let QueryRate::Over(n) = rate {
                self.counters.dropped_rate_limited += 1;
                if let Some(rem) = remote {
                    rem.stats.udp_drop += 1;
                }
                let slip = self.cfg.rate_limit_slip;
                if slip > 0
                    && u32::from(n) % slip == 0
                    && let Some(answer) = synth::truncated_answer(dgram.payload())
                    && send_now(&mut self.counters, io, dgram.reply_path, dgram.src, &answer)
                {
                    self.counters.slip_answers += 1;
                }
                return;
            }
        }
        if self.cache.is_on() {
            match self.cache.lookup(dgram.payload(), now) {
                Lookup::Hit => {
                    // Counted on the remote, on no backend.
                    self.counters.cache_hits += 1;
                    if let Some(rem) = remote {
                        rem.stats.udp += 1;
                    }
                    io.queue_answer(dgram.reply_path, dgram.src, self.cache.answer());
                    return;
                }
                Lookup::Miss => self.counters.cache_misses += 1,
                Lookup::Bypass(_) => self.counters.cache_bypassed += 1,
            }
        }
        let Some(be_id) = backend else {
            // RFC 8767: an expired answer rather than none.
            if self.cache.lookup_stale(dgram.payload(), now) {
                self.counters.cache_stale_no_backend += 1;
                if let Some(rem) = remote {
                    rem.stats.udp += 1;
                }
                io.queue_answer(dgram.reply_path, dgram.src, self.cache.answer());
                return;
            }
            // Not forwarded, whatever the client is answered.
            self.counters.dropped_no_backend += 1;
            if let Some(rem) = remote.as_deref_mut() {
                rem.stats.udp_drop += 1;
            }
            let rcode = match self.cfg.no_backend {
                NoBackend::Drop => return,
                NoBackend::ServFail => ResponseCode::ServFail,
                NoBackend::Refused => ResponseCode::Refused,
            };
            let rate = self.cfg.synth_rate;
            let allowed = match remote {
                Some(rem) => rem.allow_synthesized(second, rate),
                None => self.stateless_answers.allow(ip, second, rate),
            };
            if !allowed {
                self.counters.no_backend_rate_limited += 1;
                return;
            }
            if let Some(answer) = synth::error_answer(dgram.payload(), rcode)
                && send_now(&mut self.counters, io, dgram.reply_path, dgram.src, &answer)
            {
                self.counters.no_backend_answers += 1;
            }
            return;
        };
        // A client served without a remote is counted nowhere else.
        let mut untracked = RemoteStats::default();
        let rem = match remote {
            Some(rem) => &mut rem.stats,
            None => &mut untracked,
        };
        // A chosen backend always has a link and can always take the
        // client's frame; were either untrue, the drop is counted with
        // those that found no backend, so every datagram is counted.
        let (Some(link), Some(be)) = (self.links.get_mut(&be_id), self.backends.get_mut(be_id))
        else {
            rem.udp_drop += 1;
            self.counters.dropped_no_backend += 1;
            return;
        };
        let reply_path = dgram.reply_path;
        let key = QueryKey {
            client: dgram.src,
            id: dns_id,
        };
        if self.inflight.get(&key).is_some() {
            // The client sent it again before the answer came: it is the
            // same query, and the answer on its way serves both.  Sent
            // again, its second answer would find no query in flight and be
            // taken for one the backend made up.
            rem.udp_drop += 1;
            self.counters.dropped_resend += 1;
            return;
        }
        let Some((frame, header_len)) = dgram.inbound_frame() else {
            rem.udp_drop += 1;
            self.counters.dropped_no_backend += 1;
            return;
        };
        let timeout = self.cfg.timers.query_timeout;
        let inserted = match self
            .inflight
            .insert(key, be_id, reply_path, now, timeout, frame, header_len)
        {
            Ok(i) => i,
            Err(full) => {
                rem.udp_drop += 1;
                self.counters.dropped_inflight_full += 1;
                if self
                    .repeat_logs
                    .inflight_full
                    .allow(now, REPEAT_LOG_INTERVAL)
                {
                    warn!(self.log, "too many queries in flight (dropping)";
                        "limit" => if full == inflight::Full::Total { "total" } else { "backend" },
                        "be_id" => be_id, "dropped" => self.counters.dropped_inflight_full);
                }
                return;
            }
        };
        if io.send_frame(be_id, &[frame]).is_ok() {
            rem.udp += 1;
            be.stats.udp += 1;
            be.unanswered_since.get_or_insert(now);
            self.counters.udp_forwarded += 1;
            self.hedging.budget.on_forwarded(second);
            return;
        }
        // The backend is not keeping up: drop rather than queue.
        if inserted == inflight::Inserted::New
            && let Some(e) = self.inflight.remove(&key)
        {
            self.inflight.recycle(e);
        }
        rem.udp_drop += 1;
        be.stats.stuck += 1;
        self.counters.dropped_stuck += 1;
        if link.stuck_log.allow(now, REPEAT_LOG_INTERVAL) {
            warn!(self.log, "stuck backend write queue (dropping)";
                "be_id" => be_id, "be_path" => %be.path.display(),
                "stuck" => be.stats.stuck, "queued_bytes" => self.cfg.backend_queue_bytes);
        }
    }

    /// A client the access list refuses: REFUSED (rate-limited per
    /// address, no remote created) or nothing, by `--acl-action`.
    fn refuse_by_acl(&mut self, now: Instant, dgram: &Datagram<'_>, io: &mut impl Io) {
        self.counters.dropped_acl += 1;
        if self.cfg.acl.action == AclAction::Drop {
            return;
        }
        let second = self.second(now);
        if intake::check(dgram.payload()).is_ok()
            && self
                .stateless_answers
                .allow(dgram.ip(), second, self.cfg.synth_rate)
            && let Some(answer) = synth::error_answer(dgram.payload(), ResponseCode::Refused)
            && send_now(&mut self.counters, io, dgram.reply_path, dgram.src, &answer)
        {
            self.counters.acl_answers += 1;
        }
    }

    /// Send `build`'s answer to a datagram that leaves no state behind,
    /// within the sender's budget of synthesized answers (`--synth-rate` a
    /// second per address, in a fixed table a spoofed flood cannot grow).
    fn answer_statelessly(
        &mut self,
        now: Instant,
        dgram: &Datagram<'_>,
        build: fn(&[u8]) -> Option<Vec<u8>>,
        io: &mut impl Io,
    ) -> bool {
        let second = self.second(now);
        self.stateless_answers
            .allow(dgram.ip(), second, self.cfg.synth_rate)
            && build(dgram.payload()).is_some_and(|answer| {
                send_now(&mut self.counters, io, dgram.reply_path, dgram.src, &answer)
            })
    }

    /// A batch of datagrams has been handed over: arm the query deadline
    /// and the passive health check (once per batch, not per query).
    pub fn after_datagrams(&mut self, now: Instant) {
        self.arm_query_timers(now);
    }

    /// An OUTBOUND_UDP from backend `id`: pass it on only if it answers a
    /// query in flight to that backend.
    pub(super) fn on_answer(
        &mut self,
        id: u32,
        dest: SocketAddr,
        payload: &[u8],
        now: Instant,
        io: &mut impl Io,
    ) {
        let (cache, counters) = (&mut self.cache, &mut self.counters);
        let matched = match intake::dns_id(payload) {
            Some(dns_id) => self.inflight.answer_and(
                QueryKey {
                    client: dest,
                    id: dns_id,
                },
                id,
                payload,
                |query| {
                    if cache.is_on() {
                        cache.learn(query, payload, now).count(counters);
                    }
                },
            ),
            None => Err(Unmatched::Unsolicited),
        };
        let answered = match matched {
            Ok(a) => a,
            Err(Unmatched::HedgeLoser { sent_at }) => {
                // The client has the other backend's answer.  This one
                // still says the backend is alive, and how slow it is.
                self.counters.hedge_losers += 1;
                let owed = self.inflight.count_for(id) > 0;
                if let Some(be) = self.backends.get_mut(id) {
                    be.recent_latency
                        .record(now.saturating_duration_since(sent_at));
                    be.unanswered_since = owed.then_some(now);
                }
                return;
            }
            Err(Unmatched::Late) => {
                self.counters.late_answers += 1;
                // On the main logger: no child logger is built per late
                // answer (there can be many under overload).
                debug!(self.log, "dropping late answer"; "be_id" => id,
                    "dest_ip" => %dest.ip(), "dest_port" => dest.port());
                return;
            }
            Err(Unmatched::Unsolicited) => {
                self.counters.unsolicited_answers += 1;
                if self.repeat_logs.unsolicited.allow(now, REPEAT_LOG_INTERVAL) {
                    warn!(self.backend_log(id), "dropping answer to a query never asked";
                        "dest_ip" => %dest.ip(), "dest_port" => dest.port(),
                        "dropped" => self.counters.unsolicited_answers);
                }
                return;
            }
        };
        if answered.hedge == HedgeOutcome::HedgeWon {
            self.counters.hedge_wins += 1;
        }
        let owed = self.inflight.count_for(id) > 0;
        if let Some(be) = self.backends.get_mut(id) {
            let latency = now.saturating_duration_since(answered.sent_at);
            be.stats.udp_replies += 1;
            be.stats.latency.record(latency);
            be.recent_latency.record(latency);
            be.unanswered_since = owed.then_some(now);
        }
        io.queue_answer(answered.reply_path, dest, payload);
        self.check_drained();
    }
}
