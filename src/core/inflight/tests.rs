//! The in-flight table's unit tests: bounds, expiry order, replays and
//! hedges, on tokio's paused clock.

use super::*;

fn key(port: u16, id: u16) -> QueryKey {
    QueryKey {
        client: SocketAddr::from(([10, 0, 0, 1], port)),
        id,
    }
}

const T: Duration = Duration::from_secs(2);
const LIMITS: Limits = Limits {
    total: 4,
    per_backend: 3,
};

#[tokio::test(start_paused = true)]
async fn insert_answer_and_reuse() {
    let mut t = InFlight::new(LIMITS, false);
    let now = Instant::now();
    assert_eq!(
        t.insert(key(1, 7), 5300, 0, now, T, b"hdrQ", 3),
        Ok(Inserted::New)
    );
    assert_eq!(t.get(&key(1, 7)).unwrap().message(), b"Q");
    assert_eq!(
        t.insert(key(1, 7), 5300, 0, now, T, b"hdrQ", 3),
        Ok(Inserted::Duplicate)
    );
    assert_eq!(t.len(), 1);
    assert_eq!(
        t.answer(key(1, 7), 5301, b""),
        Err(Unmatched::Unsolicited),
        "wrong backend"
    );
    assert_eq!(
        t.answer(key(1, 7), 5300, b""),
        Ok(Answered {
            reply_path: 0,
            sent_at: now,
            hedge: HedgeOutcome::NotHedged,
        })
    );
    assert_eq!(
        t.answer(key(1, 7), 5300, b""),
        Err(Unmatched::Unsolicited),
        "only once"
    );
    assert!(t.is_empty());
    assert_eq!(t.count_for(5300), 0);
    assert_eq!(t.spare.len(), 1, "buffer kept for reuse");
    assert_eq!(t.next_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn bounded_in_total_and_per_backend() {
    let mut t = InFlight::new(LIMITS, false);
    let now = Instant::now();
    for id in 0..3 {
        t.insert(key(1, id), 5300, 0, now, T, b"q", 0).unwrap();
    }
    assert_eq!(
        t.insert(key(1, 3), 5300, 0, now, T, b"q", 0),
        Err(Full::Backend)
    );
    t.insert(key(1, 4), 5301, 0, now, T, b"q", 0).unwrap();
    assert_eq!(
        t.insert(key(1, 5), 5302, 0, now, T, b"q", 0),
        Err(Full::Total)
    );
    assert_eq!(t.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn expiry_in_send_order_and_late_answers() {
    let mut t = InFlight::new(LIMITS, false);
    let t0 = Instant::now();
    t.insert(key(1, 1), 5300, 0, t0, T, b"a", 0).unwrap();
    tokio::time::advance(Duration::from_millis(10)).await;
    t.insert(key(1, 2), 5300, 0, Instant::now(), T, b"b", 0)
        .unwrap();
    t.answer(key(1, 1), 5300, b"").unwrap();
    assert_eq!(t.next_deadline(), Some(t0 + T + Duration::from_millis(10)));
    assert!(t.pop_expired(t0 + T).is_none());
    let e = t.pop_expired(t0 + T + Duration::from_millis(10)).unwrap();
    assert_eq!(e.key, key(1, 2));
    assert_eq!(e.message(), b"b");
    t.recycle(e);
    assert_eq!(t.answer(key(1, 2), 5300, b""), Err(Unmatched::Late));
    assert!(t.is_empty());
}

#[tokio::test(start_paused = true)]
async fn deadline_fifo_stays_bounded_behind_a_slow_query() {
    let mut t = InFlight::new(
        Limits {
            total: 10,
            per_backend: 10,
        },
        true,
    );
    let now = Instant::now();
    t.insert(key(1, 0), 5300, 0, now, T, b"slow", 0).unwrap();
    for i in 1..100_000u32 {
        let k = key(2, i as u16);
        t.insert(k, 5300, 0, now, T, b"q", 0).unwrap();
        t.answer(k, 5300, b"").unwrap();
    }
    assert!(
        t.deadlines.len() <= 2 * t.len() + 1025,
        "{}",
        t.deadlines.len()
    );
    assert_eq!(
        t.next_deadline(),
        Some(now + T),
        "the slow query still counts"
    );
}

#[tokio::test(start_paused = true)]
async fn reassign_moves_queries_once() {
    let mut t = InFlight::new(LIMITS, false);
    let now = Instant::now();
    t.insert(key(1, 1), 5300, 0, now, T, b"a", 0).unwrap();
    t.insert(key(2, 1), 5301, 0, now, T, b"b", 0).unwrap();
    t.insert(key(3, 1), 5300, 0, now, T, b"c", 0).unwrap();
    assert_eq!(t.keys_for(5300), [key(1, 1), key(3, 1)]);
    assert_eq!(t.reassign(&key(1, 1), 5302), Some(&b"a"[..]));
    assert!(t.get(&key(1, 1)).unwrap().replayed);
    assert_eq!((t.count_for(5300), t.count_for(5302)), (1, 1));
    assert_eq!(t.answer(key(1, 1), 5300, b""), Err(Unmatched::Unsolicited));
    assert!(t.answer(key(1, 1), 5302, b"").is_ok());
    assert!(t.remove(&key(3, 1)).is_some());
    assert_eq!(t.count_for(5300), 0);
}

#[tokio::test(start_paused = true)]
async fn hedges_come_due_by_each_backends_delay_in_send_order() {
    let mut t = InFlight::new(LIMITS, true);
    let t0 = Instant::now();
    t.insert(key(1, 1), 5300, 0, t0, T, b"a", 0).unwrap();
    t.insert(key(2, 1), 5301, 0, t0, T, b"b", 0).unwrap();
    let later = t0 + Duration::from_millis(10);
    t.insert(key(3, 1), 5300, 0, later, T, b"c", 0).unwrap();
    t.answer(key(1, 1), 5300, b"").unwrap();
    let delay = |b: BackendId| Duration::from_millis(if b == 5300 { 50 } else { 100 });
    // The first query to 5300 was answered: the next due is the second.
    assert_eq!(t.next_hedge(delay), Some(later + Duration::from_millis(50)));
    let mut due = Vec::new();
    t.hedges_due(t0 + Duration::from_millis(59), delay, &mut due);
    assert!(due.is_empty());
    t.hedges_due(t0 + Duration::from_millis(100), delay, &mut due);
    due.sort_by_key(|k| k.client.port());
    assert_eq!(due, [key(2, 1), key(3, 1)]);
    assert_eq!(t.next_hedge(delay), None, "each is due once");
}

#[tokio::test(start_paused = true)]
async fn either_answer_settles_a_hedged_query_and_the_other_is_known() {
    let mut t = InFlight::new(LIMITS, true);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(50);
    t.insert(key(1, 1), 5300, 0, t0, T, b"a", 0).unwrap();
    t.insert(key(2, 1), 5300, 0, t0, T, b"b", 0).unwrap();
    assert_eq!(t.hedge(&key(1, 1), 5301, t1), Some(&b"a"[..]));
    assert_eq!(t.hedge(&key(1, 1), 5302, t1), None, "hedged once");
    assert_eq!(t.hedge(&key(2, 1), 5301, t1), Some(&b"b"[..]));
    assert_eq!((t.count_for(5300), t.count_for(5301)), (2, 2));
    // The hedge wins the first; its latency counts from the hedge.
    let a = t.answer(key(1, 1), 5301, b"").unwrap();
    assert_eq!((a.hedge, a.sent_at), (HedgeOutcome::HedgeWon, t1));
    assert_eq!(
        t.answer(key(1, 1), 5300, b""),
        Err(Unmatched::HedgeLoser { sent_at: t0 })
    );
    assert_eq!(t.answer(key(1, 1), 5300, b""), Err(Unmatched::Unsolicited));
    // The first backend wins the second.
    let b = t.answer(key(2, 1), 5300, b"").unwrap();
    assert_eq!((b.hedge, b.sent_at), (HedgeOutcome::FirstWon, t0));
    assert_eq!(
        t.answer(key(2, 1), 5301, b""),
        Err(Unmatched::HedgeLoser { sent_at: t1 })
    );
    assert_eq!((t.count_for(5300), t.count_for(5301)), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_is_bounded_undone_and_survives_either_backend_failing() {
    let mut t = InFlight::new(
        Limits {
            total: 8,
            per_backend: 1,
        },
        true,
    );
    let t0 = Instant::now();
    t.insert(key(1, 1), 5300, 0, t0, T, b"a", 0).unwrap();
    t.insert(key(2, 1), 5301, 0, t0, T, b"b", 0).unwrap();
    assert_eq!(t.hedge(&key(1, 1), 5301, t0), None, "5301 is at its bound");
    assert_eq!(t.hedge(&key(1, 1), 5302, t0), Some(&b"a"[..]));
    t.unhedge(&key(1, 1));
    assert_eq!(t.count_for(5302), 0);
    assert_eq!(t.hedge(&key(1, 1), 5302, t0), Some(&b"a"[..]), "again");
    // The first backend fails: the hedge's backend answers alone, and the
    // query is not replayed a third time.
    assert_eq!(t.keys_for(5300), [key(1, 1)]);
    assert_eq!(t.keys_for(5302), [key(1, 1)]);
    assert!(t.forget_hedge_backend(&key(1, 1), 5300));
    assert!(!t.forget_hedge_backend(&key(1, 1), 5300));
    assert_eq!((t.count_for(5300), t.count_for(5302)), (0, 1));
    let e = t.get(&key(1, 1)).unwrap();
    assert!(e.replayed && e.backend == 5302 && e.hedge.is_none());
    assert_eq!(t.reassign(&key(1, 1), 5303).map(<[u8]>::len), Some(1));
    let a = t.answer(key(1, 1), 5303, b"").unwrap();
    assert_eq!(a.hedge, HedgeOutcome::NotHedged);
}

#[tokio::test(start_paused = true)]
async fn a_losers_late_answer_is_not_taken_for_a_newer_query_with_its_key() {
    // The client had its answer from the hedge and used its id again; the
    // slow backend answers the old query first, then the new one.
    let mut t = InFlight::new(LIMITS, true);
    let t0 = Instant::now();
    t.insert(key(1, 1), 5300, 0, t0, T, b"old", 0).unwrap();
    t.hedge(&key(1, 1), 5301, t0).unwrap();
    t.answer(key(1, 1), 5301, b"").unwrap();
    t.insert(key(1, 1), 5300, 0, t0, T, b"new", 0).unwrap();
    assert_eq!(
        t.answer(key(1, 1), 5300, b""),
        Err(Unmatched::HedgeLoser { sent_at: t0 }),
        "the old query's answer"
    );
    assert_eq!(
        t.answer(key(1, 1), 5300, b"").map(|a| a.hedge),
        Ok(HedgeOutcome::NotHedged),
        "the new query's answer"
    );
    // Twice over: two answers owed by the same loser.
    for _ in 0..2 {
        t.insert(key(2, 1), 5300, 0, t0, T, b"q", 0).unwrap();
        t.hedge(&key(2, 1), 5301, t0).unwrap();
        t.answer(key(2, 1), 5301, b"").unwrap();
    }
    for _ in 0..2 {
        assert!(matches!(
            t.answer(key(2, 1), 5300, b""),
            Err(Unmatched::HedgeLoser { .. })
        ));
    }
    assert_eq!(t.answer(key(2, 1), 5300, b""), Err(Unmatched::Unsolicited));
    // A loser that fails owes nothing any more.
    t.insert(key(3, 1), 5300, 0, t0, T, b"q", 0).unwrap();
    t.hedge(&key(3, 1), 5301, t0).unwrap();
    t.answer(key(3, 1), 5301, b"").unwrap();
    t.forget_losers(5300);
    t.insert(key(3, 1), 5300, 0, t0, T, b"q", 0).unwrap();
    assert!(t.answer(key(3, 1), 5300, b"").is_ok());
}

/// A query for `label.` A IN, whole.
fn msg(label: &[u8]) -> Vec<u8> {
    let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, label.len() as u8];
    m.extend_from_slice(label);
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

#[tokio::test(start_paused = true)]
async fn an_answer_to_the_newer_question_is_not_taken_for_the_losers() {
    // The slow backend dropped the old query; the newer one, with the same
    // key and another question, gets its own answer.
    let mut t = InFlight::new(LIMITS, true);
    let t0 = Instant::now();
    let (old, new) = (msg(b"old"), msg(b"new"));
    t.insert(key(1, 1), 5300, 0, t0, T, &old, 0).unwrap();
    t.hedge(&key(1, 1), 5301, t0).unwrap();
    t.answer(key(1, 1), 5301, &old).unwrap();
    t.insert(key(1, 1), 5300, 0, t0, T, &new, 0).unwrap();
    assert!(t.answer(key(1, 1), 5300, &new).is_ok(), "the newer query's");
    // Its question told apart by case-folded name, type and class.
    assert_eq!(
        question_fingerprint(&msg(b"OLD")),
        question_fingerprint(&old)
    );
    assert_ne!(question_fingerprint(&new), question_fingerprint(&old));
    assert_eq!(question_fingerprint(&old[..12]), 0);
    // The old answer, late: still the loser's.
    assert!(matches!(
        t.answer(key(1, 1), 5300, &old),
        Err(Unmatched::HedgeLoser { .. })
    ));
}
