//! The packet cache as the simulation checks it: every answer a backend
//! gave is remembered by question, and every answer the core sent from its
//! cache must be one of them, to a client that asked that question as
//! spelled, within the answer's TTL (its TTLs aged) or its TTL and the
//! stale window (its TTLs `--stale-ttl`).  Answers given in TCP sessions
//! are learned too ([`World::tcp_answer_learned`]), and remembered the same
//! way.

use std::time::Duration;

use mname_balancer::core::TcpAnswer;

use super::dns;
use super::world::{Delivery, Key, World};

impl World {
    /// A backend's answer passed to a client: the cache may serve it again.
    pub(super) fn remember_given(&mut self, d: &Delivery) {
        self.remember_answer(&d.payload);
    }

    /// A backend's answer, given now (over UDP or in a TCP session).
    pub(super) fn remember_answer(&mut self, payload: &[u8]) {
        let Some(end) = dns::question_end(payload) else {
            return;
        };
        let question = payload[12..end].to_ascii_lowercase();
        let given = self.given.entry(question).or_default();
        given.push((self.now, payload[end..].to_vec()));
        if given.len() > 64 {
            given.remove(0);
        }
    }

    /// An answer from the packet cache: one a backend gave for that
    /// question, to a client that asked it as spelled, not older than its
    /// TTL (fresh, its TTL aged) or its TTL and the stale window (stale,
    /// its TTL `--stale-ttl`).
    pub(super) fn check_cached(&mut self, d: &Delivery, key: Key) {
        let c = self.cfg.cache;
        let v = &mut self.env.violations;
        if c.entries == 0 {
            v.push(format!(
                "an answer from no backend to {}, cache off",
                d.dest
            ));
            return;
        }
        let Some(end) = dns::question_end(&d.payload) else {
            v.push(format!("cached answer to {} without a question", d.dest));
            return;
        };
        let question = &d.payload[12..end];
        if !self
            .asked_questions
            .get(&key)
            .is_some_and(|asked| asked.iter().any(|q| q == question))
        {
            v.push(format!("cached answer to {key:?}: question not as asked"));
        }
        let records = &d.payload[end..];
        // The A record's TTL lies 6 bytes in (after pointer, type, class).
        let ttl_of = |r: &[u8]| {
            r.get(6..10)
                .map(|t| u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
        };
        let without_ttl = |r: &[u8]| {
            let mut r = r.to_vec();
            if let Some(t) = r.get_mut(6..10) {
                t.fill(0);
            }
            r
        };
        let served_ttl = ttl_of(records);
        let served = without_ttl(records);
        let ok = self
            .given
            .get(&question.to_ascii_lowercase())
            .is_some_and(|given| {
                given.iter().any(|(at, rec)| {
                    let Some(ttl) = ttl_of(rec) else { return false };
                    let life = Duration::from_secs(u64::from(ttl.min(c.max_ttl)));
                    let age = self.now.saturating_duration_since(*at);
                    let fresh = age < life && served_ttl == Some(ttl - age.as_secs() as u32);
                    let stale = age < life + c.serve_stale && served_ttl == Some(c.stale_ttl);
                    without_ttl(rec) == served && (fresh || stale)
                })
            });
        if !ok {
            v.push(format!(
                "cached answer to {key:?} (TTL {served_ttl:?}) matches no answer a backend gave \
                 within its TTL and the stale window"
            ));
        }
    }

    /// A TCP session's backend answered a query: with the cache on, the
    /// shell hands the pair to the core to learn, as a UDP answer is.
    pub(super) fn tcp_answer_learned(&mut self, backend: u32) {
        let rng = &mut self.env.rng;
        let query = dns::query(rng.below(64) as u16, rng);
        let answer = dns::answer_to(&query, backend);
        self.remember_answer(&answer);
        let stored = self.core.counters().cache_stored_tcp;
        self.core.learn_tcp_answer(&TcpAnswer {
            query,
            answer,
            at: self.now,
        });
        if self.cfg.cache.entries == 0 && self.core.counters().cache_stored_tcp != stored {
            self.env
                .violations
                .push("a TCP answer learned with the cache off".to_string());
        }
    }
}
