//! THE PACKET CACHE
//!
//! Service discovery traffic repeats: the same few hundred names, asked
//! again by every client every few seconds.  With `--cache-size N` the
//! balancer keeps up to N of its backends' UDP answers and answers repeats
//! itself, without the AF_UNIX round trip and without the backend's work;
//! and with `--serve-stale D`, when no backend can answer (none up, or the
//! query timed out) it answers from an entry expired less than D ago rather
//! than SERVFAIL (RFC 8767).  Off by default (`--cache-size 0`): then every
//! query reaches a backend, as with the original.
//!
//! The parts, each a plain function of its inputs and `now`:
//!
//! - [`key`]: which queries may be answered from the cache, and what two
//!   queries must share to share an answer;
//! - [`answer`]: which answers are kept, for how long, and how a kept one
//!   is given to the next client (its id, its spelling, aged TTLs);
//! - [`store`]: the bounded table, least recently used evicted first.
//!
//! This type ties them together for the core ([`crate::core`]), which asks
//! it before choosing a backend ([`PacketCache::lookup`]), tells it each
//! answer a backend gave ([`PacketCache::learn`]), and asks it for a stale
//! answer where it would otherwise synthesize SERVFAIL
//! ([`PacketCache::lookup_stale`]).  Only UDP queries are answered from
//! it: TCP streams are relayed whole to the client's backend, as before;
//! but the answers they carry are learned ([`super::tcp_learn`]) and serve
//! UDP clients when they fit.  docs/cache.md is the operator's account.

pub mod answer;
pub mod key;
pub mod store;

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

pub use crate::cli::CacheConfig;
pub use answer::{Learned, NotKept, TtlLimits};
pub use key::{Bypass, Keyed};
use store::Store;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh answer, now in [`PacketCache::answer`].
    Hit,
    /// Nothing fresh that fits the client: ask a backend.
    Miss,
    /// The query cannot be answered from the cache.
    Bypass(Bypass),
}

/// What became of a backend's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Kept.
    Stored {
        /// Entries evicted to make room for it.
        evicted: u64,
    },
    /// Not kept, and why.
    NotKept(NotKept),
    /// The query it answers is not one the cache keys.
    Bypassed,
}

impl Learn {
    /// Count what became of an answer.
    pub fn count(self, counters: &mut super::Counters) {
        match self {
            Learn::Stored { evicted } => {
                counters.cache_stored += 1;
                counters.cache_evictions += evicted;
            }
            Learn::NotKept(_) => counters.cache_not_stored += 1,
            Learn::Bypassed => {}
        }
    }
}

/// The cache's size, for the stats socket and the metrics.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CacheView {
    /// Answers kept.
    pub entries: usize,
    /// Their bytes, as counted against `--cache-max-bytes`.
    pub bytes: usize,
    /// `--cache-size`: entries at most.
    pub max_entries: usize,
    /// `--cache-max-bytes`: bytes at most.
    pub max_bytes: usize,
    /// `--serve-stale`, in microseconds (0: off).
    pub serve_stale_us: u64,
}

/// The packet cache: the table, its settings, and scratch buffers reused
/// for every query (a lookup allocates nothing).
#[derive(Debug)]
pub struct PacketCache {
    cfg: CacheConfig,
    store: Store,
    key: Vec<u8>,
    answer: Vec<u8>,
}

impl PacketCache {
    /// An empty cache with these settings (off if `cfg.entries` is 0).
    pub fn new(cfg: CacheConfig) -> Self {
        PacketCache {
            cfg,
            store: Store::new(cfg.entries, cfg.max_bytes),
            key: Vec::new(),
            answer: Vec::new(),
        }
    }

    fn ttl_limits(&self) -> TtlLimits {
        TtlLimits {
            max: self.cfg.max_ttl,
            max_negative: self.cfg.max_negative_ttl,
        }
    }

    /// Whether the cache is on (`--cache-size` above 0).
    pub fn is_on(&self) -> bool {
        self.cfg.entries > 0
    }

    /// The answer the last successful lookup wrote.
    pub fn answer(&self) -> &[u8] {
        &self.answer
    }

    /// Look for a fresh answer to `query` at `now`.
    pub fn lookup(&mut self, query: &[u8], now: Instant) -> Lookup {
        let keyed = match key::key_of(query, &mut self.key) {
            Ok(k) => k,
            Err(b) => return Lookup::Bypass(b),
        };
        let Some(slot) = self.store.find(&self.key) else {
            return Lookup::Miss;
        };
        let Some(e) = self.store.get(slot) else {
            return Lookup::Miss;
        };
        if now >= e.fresh_until {
            // Expired: kept for serving stale while the window lasts.
            if now >= e.fresh_until + self.cfg.serve_stale {
                self.store.remove(slot);
            }
            return Lookup::Miss;
        }
        if e.answer.len() > keyed.udp_limit {
            return Lookup::Miss;
        }
        let age = now.saturating_duration_since(e.stored_at).as_secs();
        let age = u32::try_from(age).unwrap_or(u32::MAX);
        answer::render(
            &e.answer,
            &e.ttl_offsets,
            query,
            keyed.name_end,
            |ttl| ttl.saturating_sub(age),
            &mut self.answer,
        );
        Lookup::Hit
    }

    /// Whether an answer to `query` is held and fresh at `now`, whatever
    /// its size.
    pub fn holds_fresh(&mut self, query: &[u8], now: Instant) -> bool {
        if key::key_of(query, &mut self.key).is_err() {
            return false;
        }
        self.store
            .find(&self.key)
            .and_then(|s| self.store.get(s))
            .is_some_and(|e| now < e.fresh_until)
    }

    /// Where no backend can answer `query`: an answer from an entry that
    /// is fresh, or expired less than `--serve-stale` ago (its TTLs then
    /// `--stale-ttl`), written to [`PacketCache::answer`].  False when
    /// there is none (or serving stale is off).
    pub fn lookup_stale(&mut self, query: &[u8], now: Instant) -> bool {
        if !self.is_on() || self.cfg.serve_stale.is_zero() {
            return false;
        }
        let Ok(keyed) = key::key_of(query, &mut self.key) else {
            return false;
        };
        let Some(e) = self.store.find(&self.key).and_then(|s| self.store.get(s)) else {
            return false;
        };
        if now >= e.fresh_until + self.cfg.serve_stale || e.answer.len() > keyed.udp_limit {
            return false;
        }
        let stale_ttl = self.cfg.stale_ttl;
        let age = now.saturating_duration_since(e.stored_at).as_secs();
        let age = u32::try_from(age).unwrap_or(u32::MAX);
        let fresh = now < e.fresh_until;
        answer::render(
            &e.answer,
            &e.ttl_offsets,
            query,
            keyed.name_end,
            |ttl| {
                if fresh {
                    ttl.saturating_sub(age)
                } else {
                    stale_ttl
                }
            },
            &mut self.answer,
        );
        if !fresh {
            answer::mark_stale(&mut self.answer, keyed.udp_limit);
        }
        true
    }

    /// A backend answered `query` with `answer` at `now`: keep it if it
    /// may be kept.
    pub fn learn(&mut self, query: &[u8], answer: &[u8], now: Instant) -> Learn {
        let Ok(keyed) = key::key_of(query, &mut self.key) else {
            return Learn::Bypassed;
        };
        let learned = match answer::learn(query, keyed.name_end, answer, self.ttl_limits()) {
            Ok(l) => l,
            Err(why) => return Learn::NotKept(why),
        };
        let fresh_until = now + Duration::from_secs(u64::from(learned.ttl));
        match self.store.insert(
            &self.key,
            learned.bytes,
            learned.ttl_offsets,
            now,
            fresh_until,
        ) {
            Some(evicted) => Learn::Stored { evicted },
            None => Learn::NotKept(NotKept::TooLarge),
        }
    }

    /// Forget every entry; returns how many there were.
    pub fn flush(&mut self) -> usize {
        self.store.clear()
    }

    /// Its size and bounds.
    pub fn view(&self) -> CacheView {
        CacheView {
            entries: self.store.len(),
            bytes: self.store.bytes(),
            max_entries: self.store.max_entries(),
            max_bytes: self.store.max_bytes(),
            serve_stale_us: u64::try_from(self.cfg.serve_stale.as_micros()).unwrap_or(u64::MAX),
        }
    }
}
