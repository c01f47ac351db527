//! Scripted backends for the simulation: each plays a backend process
//! whose socket may be present or gone, and whose behaviour is one of a
//! few scripts (answer, answer late, hang, send garbage, send answers
//! nobody asked for, speak only the original protocol).  A backend reads
//! the frames the core queued for it, checks them against the protocol
//! (nothing before its hello; no IPv6 client unless it announced IPv6),
//! and writes frames back when the driver lets it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use mname_balancer_protocol::{Frame, FrameBuffer, capability};
use tokio::time::Instant;

use super::dns;
use super::rng::Rng;

/// How a backend behaves while connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    /// Answers every query within a few milliseconds.
    Answer,
    /// Answers, but up to seconds late (past the query timeout).
    Late,
    /// Reads and answers nothing, not even heartbeats.
    Hang,
    /// Sends bytes that are no frame.
    Garbage,
    /// Answers, and also sends answers to queries nobody asked it.
    Unsolicited,
}

/// One simulated backend process.
pub(crate) struct SimBackend {
    pub id: u32,
    pub path: String,
    /// Its socket file exists: connects succeed.
    pub present: bool,
    pub script: Script,
    /// Answers the capabilities hello with the IPv6 extension; otherwise
    /// it speaks only the original protocol.
    pub ipv6: bool,
    /// The current connection, if any.
    pub link: Option<SimLink>,
}

/// One connection of a backend, as the backend sees it.
pub(crate) struct SimLink {
    pub generation: u64,
    /// Bytes the core queued and the backend has not read.
    pub inbound: Vec<u8>,
    /// Control bytes among them (they may pass the queue's bound).
    pub control_bytes: usize,
    frames: FrameBuffer,
    hellos_seen: u32,
    pub hello_sent: bool,
    pub announced_ipv6: bool,
    /// Frames to write to the core: when, and the bytes.
    pub outbox: Vec<(Instant, Vec<u8>)>,
    /// When the last control frame (hello, heartbeat reply) is due.
    last_control_at: Instant,
    /// Queries received on this link (client, DNS id).
    pub received: HashSet<(SocketAddr, u16)>,
}

impl SimLink {
    pub(crate) fn new(generation: u64, now: Instant) -> Self {
        SimLink {
            last_control_at: now,
            generation,
            inbound: Vec::new(),
            control_bytes: 0,
            frames: FrameBuffer::new(),
            hellos_seen: 0,
            hello_sent: false,
            announced_ipv6: false,
            outbox: Vec::new(),
            received: HashSet::new(),
        }
    }

    /// Bytes queued toward the backend that count against the bound.
    pub(crate) fn queued_data(&self) -> usize {
        self.inbound.len().saturating_sub(self.control_bytes)
    }
}

/// What the backend saw that breaks the protocol.
pub(crate) type Violations = Vec<String>;

impl SimBackend {
    /// Read everything the core queued and react as the script says.
    /// Queries received are reported through `on_query`.
    pub(crate) fn read_inbound(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        violations: &mut Violations,
        mut on_query: impl FnMut(u32, SocketAddr, u16),
    ) {
        let (id, script, ipv6) = (self.id, self.script, self.ipv6);
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if script == Script::Hang {
            return;
        }
        let bytes = std::mem::take(&mut link.inbound);
        link.control_bytes = 0;
        link.frames.extend(&bytes);
        loop {
            let frame = match link.frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    violations.push(format!("backend {id}: core sent a bad frame: {e}"));
                    break;
                }
            };
            let mut out = Vec::new();
            let delay;
            let frame_is_answer = matches!(frame, Frame::InboundUdp { .. });
            match frame {
                Frame::ClientHello => {
                    link.hellos_seen += 1;
                    if link.hellos_seen == 2 && ipv6 {
                        Frame::ServerCapabilities {
                            flags: capability::IPV6,
                        }
                        .encode(&mut out);
                        link.announced_ipv6 = true;
                    } else {
                        Frame::ServerHello.encode(&mut out);
                    }
                    link.hello_sent = true;
                    delay = Duration::from_millis(rng.below(3));
                }
                Frame::ClientHeartbeat => {
                    if !link.hello_sent {
                        violations.push(format!("backend {id}: heartbeat before hello"));
                    }
                    Frame::ServerHeartbeat.encode(&mut out);
                    delay = Duration::from_millis(rng.below(5));
                }
                Frame::InboundUdp {
                    addr,
                    port,
                    payload,
                } => {
                    if !link.hello_sent {
                        violations.push(format!("backend {id}: query before hello"));
                    }
                    if addr.is_ipv6() && !link.announced_ipv6 {
                        violations.push(format!(
                            "backend {id}: IPv6 client {addr} without the extension"
                        ));
                    }
                    let Some(qid) = dns::id_of(payload) else {
                        violations.push(format!("backend {id}: query without an id"));
                        continue;
                    };
                    let client = SocketAddr::new(addr, port);
                    link.received.insert((client, qid));
                    on_query(id, client, qid);
                    Frame::OutboundUdp {
                        addr,
                        port,
                        payload: &dns::answer_to(payload, id),
                    }
                    .encode(&mut out);
                    delay = match script {
                        Script::Late => Duration::from_millis(rng.below(4000)),
                        _ => Duration::from_millis(rng.below(40)),
                    };
                }
                other => {
                    violations.push(format!(
                        "backend {id}: core sent a backend's frame {}",
                        other.frame_type()
                    ));
                    continue;
                }
            }
            // A stream keeps its order: control frames leave in the order
            // they were answered; only answers to queries may overtake
            // one another (a backend answers queries as they complete).
            let at = now + delay;
            let at = match frame_is_answer {
                true => at,
                false => at.max(link.last_control_at),
            };
            if !frame_is_answer {
                link.last_control_at = at;
            }
            link.outbox.push((at, out));
        }
    }

    /// Frames due by `now`, cut into pieces of random size as a stream
    /// socket may deliver them; plus whatever the script adds.
    pub(crate) fn due_output(&mut self, now: Instant, rng: &mut Rng) -> Vec<u8> {
        let script = self.script;
        let id = self.id;
        let Some(link) = self.link.as_mut() else {
            return Vec::new();
        };
        let mut bytes = Vec::new();
        link.outbox.sort_by_key(|(at, _)| *at);
        let due = link.outbox.iter().take_while(|(at, _)| *at <= now).count();
        for (_, frame) in link.outbox.drain(..due) {
            bytes.extend(frame);
        }
        match script {
            Script::Garbage if link.hello_sent && rng.chance(20) => {
                bytes.extend((0..rng.below(12) + 4).map(|_| rng.next() as u8));
            }
            Script::Unsolicited if link.hello_sent && rng.chance(10) => {
                let client = dns::random_client(rng);
                let query = dns::query(rng.next() as u16, rng);
                Frame::OutboundUdp {
                    addr: client.ip(),
                    port: client.port(),
                    payload: &dns::answer_to(&query, id),
                }
                .encode(&mut bytes);
            }
            _ => {}
        }
        bytes
    }
}
