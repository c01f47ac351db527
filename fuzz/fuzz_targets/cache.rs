//! The packet cache's parsers: any query is keyed or bypassed, and any
//! answer kept or refused, without panicking; what is kept has its TTL
//! fields inside it and a TTL within the bounds; and a kept answer is
//! served back at once to the query that learned it, with that query's
//! id, as long as it fits the query's buffer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mname_balancer::cli::CacheConfig;
use mname_balancer::core::cache::{Learn, Lookup, PacketCache, TtlLimits, answer, key};
use tokio::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (query, reply) = rest.split_at(usize::from(split).min(rest.len()));
    let mut k = Vec::new();
    let Ok(keyed) = key::key_of(query, &mut k) else {
        return;
    };
    assert!(keyed.name_end <= query.len() && keyed.udp_limit >= 512);
    let limits = TtlLimits {
        max: 300,
        max_negative: 60,
    };
    if let Ok(learned) = answer::learn(query, keyed.name_end, reply, limits) {
        assert!((1..=300).contains(&learned.ttl));
        for &at in &learned.ttl_offsets {
            assert!(usize::from(at) + 4 <= learned.bytes.len());
        }
        let mut out = Vec::new();
        answer::render(
            &learned.bytes,
            &learned.ttl_offsets,
            query,
            keyed.name_end,
            |t| t.saturating_sub(1),
            &mut out,
        );
        assert_eq!(out.len(), learned.bytes.len());
        assert_eq!(out[..2], query[..2]);
        let fits = learned.bytes.len() <= keyed.udp_limit;
        let mut cache = PacketCache::new(CacheConfig {
            entries: 4,
            ..CacheConfig::default()
        });
        let now = Instant::now();
        let stored = matches!(cache.learn(query, reply, now), Learn::Stored { .. });
        assert!(stored);
        let found = cache.lookup(query, now);
        assert_eq!(found == Lookup::Hit, fits);
        if found == Lookup::Hit {
            assert_eq!(cache.answer().len(), learned.bytes.len());
        }
    }
});
