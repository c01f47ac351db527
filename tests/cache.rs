//! The packet cache through the real binary: real UDP queries to the
//! balancer, a real demo backend behind it, and the stats socket to see
//! which queries reached the backend.  A hit is answered without the
//! backend (its counters do not move), with the client's id and spelling
//! and aged TTLs; what must be keyed apart is; what must not be cached
//! is not; expired entries are not served, except stale, by
//! `--serve-stale`, when no backend can answer; and a flush empties it.

mod common;

use std::time::{Duration, Instant};

use common::cached::*;
use common::stats::{balstat, balstat_json, text, u};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn a_hit_is_answered_without_the_backend_with_the_clients_id_and_spelling() {
    let c = Cached::start(&[], &["--cache-size", "100"]).await;
    let first = c
        .ask(&a("www.example.com.", 1))
        .await
        .expect("first answer");
    assert_eq!(parse(&first).metadata.response_code, ResponseCode::NoError);
    assert_eq!(c.backend_queries(), 1);

    let asked = a("WwW.ExAmPlE.cOm.", 0x4242);
    let hit = c.ask(&asked).await.expect("cached answer");
    assert_eq!(&hit[..2], &[0x42, 0x42], "the client's id");
    let name_end = 12 + "www.example.com".len() + 2;
    assert_eq!(
        &hit[12..name_end],
        &asked[12..name_end],
        "the client's 0x20 spelling"
    );
    assert_eq!(hit.len(), first.len());
    assert_eq!(&hit[2..12], &first[2..12], "same flags and counts");
    assert_eq!(
        &hit[name_end..],
        &first[name_end..],
        "same records (TTLs within the second)"
    );

    let s = c.summary();
    assert_eq!(
        u(&s["backends"][0]["udp"]),
        1,
        "the backend was not asked again"
    );
    assert_eq!(u(&s["counters"]["cache_hits"]), 1);
    assert_eq!(u(&s["counters"]["cache_misses"]), 1);
    assert_eq!(u(&s["counters"]["cache_stored"]), 1);
    assert_eq!(u(&s["counters"]["udp_received"]), 2);
    assert_eq!(u(&s["counters"]["udp_forwarded"]), 1);
    assert_eq!(u(&s["cache"]["entries"]), 1);
    assert!(u(&s["cache"]["bytes"]) > first.len() as u64);
    // Counted on the remote, not on a backend.
    let remote = balstat_json(&c.sock, &["remote", "127.0.0.41"]);
    assert_eq!(u(&remote["remote"]["udp"]), 2);
}

#[tokio::test]
async fn ttls_age_and_an_entry_expires_with_its_ttl() {
    // Positive answers kept 2 s at most (the demo's TTLs are 60).
    let c = Cached::start(&[], &["--cache-size", "100", "--cache-max-ttl", "2"]).await;
    let learned_at = Instant::now();
    let first = c.ask(&a("www.example.com.", 1)).await.expect("answer");
    assert_eq!(ttls(&first), vec![60]);
    // Within a second or two the TTL the cache gives drops by one; the
    // backend is not asked meanwhile.
    let mut id = 2;
    poll("an aged TTL", async || {
        id += 1;
        let hit = c.ask(&a("www.example.com.", id)).await?;
        let t = ttls(&hit);
        assert!(t[0] <= 60 && t[0] >= 58, "{t:?}");
        (t == vec![59]).then_some(())
    })
    .await;
    assert_eq!(c.backend_queries(), 1, "aged from the cache");
    // After 2 s the entry has expired: the backend is asked again.
    poll("a second query to the backend", async || {
        id += 1;
        c.ask(&a("www.example.com.", id)).await?;
        (c.backend_queries() == 2).then_some(())
    })
    .await;
    assert!(
        learned_at.elapsed() >= Duration::from_secs(2),
        "not re-asked before the TTL ran out"
    );
    assert_eq!(
        ttls(&c.ask(&a("www.example.com.", 999)).await.expect("fresh")),
        vec![60]
    );
}

#[tokio::test]
async fn rd_cd_do_and_edns_size_are_keyed_apart() {
    let c = Cached::start(&[], &["--cache-size", "100"]).await;
    let name = "www.example.com.";
    let variants = [
        q(name, RecordType::A, 10, true, false, None),
        q(name, RecordType::A, 11, false, false, None),
        q(name, RecordType::A, 12, true, true, None),
        q(name, RecordType::A, 13, true, false, Some((1232, false))),
        q(name, RecordType::A, 14, true, false, Some((1232, true))),
        q(name, RecordType::A, 15, true, false, Some((4096, false))),
        q(name, RecordType::TXT, 16, true, false, None),
    ];
    for (i, v) in variants.iter().enumerate() {
        c.ask(v).await.expect("answer");
        assert_eq!(c.backend_queries(), i as u64 + 1, "variant {i} is a miss");
    }
    for (i, v) in variants.iter().enumerate() {
        let mut again = v.clone();
        again[1] ^= 0x80;
        let hit = c.ask(&again).await.expect("answer");
        let m = parse(&hit);
        let asked = parse(v);
        assert_eq!(
            m.metadata.recursion_desired, asked.metadata.recursion_desired,
            "RD {i}"
        );
        assert_eq!(
            m.metadata.checking_disabled, asked.metadata.checking_disabled,
            "CD {i}"
        );
        assert_eq!(m.edns.is_some(), asked.edns.is_some(), "EDNS {i}");
    }
    assert_eq!(
        c.backend_queries(),
        variants.len() as u64,
        "every repeat a hit"
    );
    assert_eq!(c.counter("cache_hits"), variants.len() as u64);
}

#[tokio::test]
async fn truncated_servfail_and_refused_answers_are_not_cached() {
    let c = Cached::start(
        &["--servfail-name", "www.example.com"],
        &["--cache-size", "100"],
    )
    .await;
    let cases: [(Vec<u8>, &str); 3] = [
        (
            q("big.example.com.", RecordType::TXT, 1, true, false, None),
            "TC",
        ),
        (a("www.example.com.", 2), "SERVFAIL"),
        (a("www.example.org.", 3), "REFUSED"),
    ];
    let mut asked = 0;
    for (query, what) in &cases {
        for round in 0..2u16 {
            let mut query = query.clone();
            query[0] ^= round as u8;
            let answer = c.ask(&query).await.expect(what);
            let m = parse(&answer);
            match *what {
                "TC" => assert!(m.metadata.truncation, "{what}"),
                "SERVFAIL" => assert_eq!(m.metadata.response_code, ResponseCode::ServFail),
                _ => assert_eq!(m.metadata.response_code, ResponseCode::Refused),
            }
            asked += 1;
            assert_eq!(
                c.backend_queries(),
                asked,
                "{what} #{round} reached the backend"
            );
        }
    }
    assert_eq!(c.counter("cache_not_stored"), 6);
    assert_eq!(c.counter("cache_hits"), 0);
    assert_eq!(u(&c.summary()["cache"]["entries"]), 0);
}

#[tokio::test]
async fn negative_answers_are_kept_for_the_soa_minimum() {
    // SOA TTL 60, MINIMUM 1: a negative answer is kept one second, a
    // positive one for its TTL (60).
    let c = Cached::start(&["--soa-minimum", "1"], &["--cache-size", "100"]).await;
    let learned_at = Instant::now();
    let nx = c.ask(&a("nope.example.com.", 1)).await.expect("NXDOMAIN");
    assert_eq!(parse(&nx).metadata.response_code, ResponseCode::NXDomain);
    let nodata = c
        .ask(&q(
            "www.example.com.",
            RecordType::AAAA,
            2,
            true,
            false,
            None,
        ))
        .await;
    let nodata = parse(&nodata.expect("NODATA"));
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    c.ask(&a("www.example.com.", 3)).await.expect("positive");
    assert_eq!(c.backend_queries(), 3);
    let mut id = 10;
    // Both negative answers were kept (a hit at once), then expire.
    let hit = c
        .ask(&a("nope.example.com.", 4))
        .await
        .expect("cached NXDOMAIN");
    assert_eq!(parse(&hit).metadata.response_code, ResponseCode::NXDomain);
    poll("the NXDOMAIN to expire", async || {
        id += 1;
        c.ask(&a("nope.example.com.", id)).await?;
        c.ask(&q(
            "www.example.com.",
            RecordType::AAAA,
            id + 1000,
            true,
            false,
            None,
        ))
        .await?;
        (c.backend_queries() >= 5).then_some(())
    })
    .await;
    assert!(learned_at.elapsed() >= Duration::from_secs(1));
    c.ask(&a("www.example.com.", 5))
        .await
        .expect("positive again");
    let s = c.summary();
    assert_eq!(
        u(&s["backends"][0]["udp"]),
        5,
        "the positive answer is still cached"
    );
}

#[tokio::test]
async fn a_large_answer_is_not_served_to_a_smaller_buffer() {
    let c = Cached::start(&[], &["--cache-size", "100"]).await;
    let mid = |id, size| {
        q(
            "mid.example.com.",
            RecordType::TXT,
            id,
            true,
            false,
            Some((size, false)),
        )
    };
    let whole = c.ask(&mid(1, 1400)).await.expect("answer");
    let m = parse(&whole);
    assert!(
        !m.metadata.truncation && whole.len() > 1250 && whole.len() <= 1400,
        "{}",
        whole.len()
    );
    assert_eq!(
        c.ask(&mid(2, 1400)).await.map(|a| a.len()),
        Some(whole.len())
    );
    assert_eq!(c.backend_queries(), 1, "served whole to the same buffer");
    // Same size class (1232..4096), smaller buffer: the cache does not
    // serve it; the backend truncates.
    let small = c.ask(&mid(3, 1232)).await.expect("answer");
    assert!(small.len() <= 1232);
    assert!(parse(&small).metadata.truncation);
    assert_eq!(c.backend_queries(), 2);
}

#[tokio::test]
async fn stale_answers_when_every_backend_is_gone_then_servfail() {
    let mut c = Cached::start(
        &[],
        &[
            "--cache-size",
            "100",
            "--cache-max-ttl",
            "1",
            "--serve-stale",
            "3s",
            "--stale-ttl",
            "7",
        ],
    )
    .await;
    let edns = |id| {
        q(
            "www.example.com.",
            RecordType::A,
            id,
            true,
            false,
            Some((1232, false)),
        )
    };
    // Taken before the query is sent: the entry's TTL runs from when the
    // loop read the answer, never earlier than this.
    let learned_at = Instant::now();
    c.ask(&a("www.example.com.", 1)).await.expect("learned");
    c.ask(&edns(2)).await.expect("learned with EDNS");
    c.backend.proc.kill9();
    c.bal.proc.wait_for("backend socket closed", |_| true);
    let mut id = 100;
    let stale = poll("a stale answer", async || {
        id += 1;
        let answer = c.ask(&a("www.example.com.", id)).await?;
        (ttls(&answer) == vec![7]).then_some(answer)
    })
    .await;
    assert_eq!(parse(&stale).metadata.response_code, ResponseCode::NoError);
    assert!(
        learned_at.elapsed() >= Duration::from_secs(1),
        "stale only after the TTL"
    );
    // To a client that sent EDNS it says so: Extended DNS Error 3, "Stale
    // Answer" (RFC 8914), the OPT record's last option.
    let stale_edns = c.ask(&edns(3)).await.expect("stale answer with EDNS");
    assert_eq!(ttls(&stale_edns), vec![7]);
    assert!(stale_edns.ends_with(&[0, 15, 0, 2, 0, 3]), "{stale_edns:?}");
    assert!(!stale.ends_with(&[0, 15, 0, 2, 0, 3]), "no OPT, no EDE");
    poll("SERVFAIL once the stale window passed", async || {
        id += 1;
        let answer = c.ask(&a("www.example.com.", id)).await?;
        (parse(&answer).metadata.response_code == ResponseCode::ServFail).then_some(())
    })
    .await;
    assert!(
        learned_at.elapsed() >= Duration::from_secs(4),
        "stale served for 1 + 3 s"
    );
    assert!(c.counter("cache_stale_no_backend") >= 1);
    // An uncached name never gets a stale answer.
    let other = c.ask(&a("a7.example.com.", 5000)).await.expect("answer");
    assert_eq!(parse(&other).metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn a_timed_out_query_gets_a_stale_answer() {
    // The backend hangs (SIGSTOP); the passive check and heartbeats are
    // slowed so that the query times out before the backend is faulted.
    let c = Cached::start(
        &[],
        &[
            "--cache-size",
            "100",
            "--cache-max-ttl",
            "1",
            "--serve-stale",
            "1m",
            "--query-timeout",
            "300ms",
            "--hedge-after",
            "0",
            "--unanswered-threshold",
            "60s",
            "--heartbeat-timeout",
            "60s",
        ],
    )
    .await;
    c.ask(&a("www.example.com.", 1)).await.expect("learned");
    let learned_at = Instant::now();
    poll("the entry to expire", async || {
        (learned_at.elapsed() > Duration::from_millis(1100)).then_some(())
    })
    .await;
    c.backend.proc.signal(libc::SIGSTOP);
    let answer = c.ask(&a("www.example.com.", 2)).await;
    c.backend.proc.signal(libc::SIGCONT);
    let answer = answer.expect("a stale answer, not silence");
    assert_eq!(parse(&answer).metadata.response_code, ResponseCode::NoError);
    assert_eq!(ttls(&answer), vec![30], "--stale-ttl's default");
    assert_eq!(c.counter("cache_stale_timeout"), 1);
}

#[tokio::test]
async fn flush_by_stats_request_and_by_sigusr2() {
    let c = Cached::start(&[], &["--cache-size", "100"]).await;
    for id in 0..3 {
        c.ask(&a("www.example.com.", id)).await.expect("answer");
    }
    assert_eq!(c.backend_queries(), 1);
    let flushed = balstat_json(&c.sock, &["cache", "flush"]);
    assert_eq!(u(&flushed["flushed"]), 1);
    let view = balstat_json(&c.sock, &["cache"]);
    assert_eq!(u(&view["cache"]["entries"]), 0);
    assert_eq!(u(&view["cache"]["max_entries"]), 100);
    assert_eq!(u(&view["counters"]["cache_flushed"]), 1);
    // The same as text, a field per line.
    let out = balstat(&["-S", &c.sock, "cache"]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fields: Vec<Vec<&str>> = report
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for want in [
        ["max_entries", "100"],
        ["cache_flushed", "1"],
        ["cache_hits", "2"],
    ] {
        assert!(fields.contains(&want.to_vec()), "{want:?} in {report}");
    }
    c.ask(&a("www.example.com.", 10)).await.expect("answer");
    assert_eq!(c.backend_queries(), 2, "asked again after the flush");
    c.bal.proc.signal(libc::SIGUSR2);
    c.bal
        .proc
        .wait_for("cache flushed", |r| r["by"] == "SIGUSR2");
    c.ask(&a("www.example.com.", 11)).await.expect("answer");
    assert_eq!(c.backend_queries(), 3, "asked again after SIGUSR2");
}

#[tokio::test]
async fn off_by_default_every_query_reaches_the_backend() {
    let c = Cached::start(&[], &["--serve-stale", "1h"]).await;
    c.bal.proc.wait_for(
        "--serve-stale has no effect without --cache-size: nothing is cached",
        |_| true,
    );
    for id in 0..5 {
        c.ask(&a("www.example.com.", id)).await.expect("answer");
    }
    let s = c.summary();
    assert_eq!(u(&s["backends"][0]["udp"]), 5);
    assert_eq!(u(&s["counters"]["cache_misses"]), 0);
    assert_eq!(u(&s["cache"]["max_entries"]), 0);
}
