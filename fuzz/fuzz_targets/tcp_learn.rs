//! A TCP connection's pairing of queries with answers for the packet cache
//! ([`mname_balancer::core::tcp_learn`]), through the connection that
//! drives it: any client stream and any backend stream, each cut anywhere,
//! never panic; every pair handed out is a query the client sent whole and
//! an answer with its id, both within their bounds; and what is held stays
//! bounded however much arrives.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mname_balancer::core::tcp_learn::{MAX_ANSWER, MAX_LEARNED, MAX_QUERY, TcpAnswer};
use mname_balancer::core::TcpConn;
use tokio::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let split = rest.len() * usize::from(seed) / 255;
    let (client, backend) = rest.split_at(split);
    let step = usize::from(seed % 13) + 1;
    let now = Instant::now();
    let mut conn = TcpConn::new(now).with_learning();
    let mut out: Vec<TcpAnswer> = Vec::new();
    let mut client_chunks = client.chunks(step);
    let mut backend_chunks = backend.chunks(step + 2);
    loop {
        let c = client_chunks.next();
        if let Some(c) = c {
            let _ = conn.read_client(now, |buf: &mut Vec<u8>| {
                buf.extend_from_slice(c);
                Ok::<usize, ()>(c.len())
            });
            if conn.take_queries(now).is_err() {
                break;
            }
            let n = conn.to_forward().len();
            conn.forwarded(n);
        }
        let b = backend_chunks.next();
        if let Some(b) = b {
            conn.on_answer_bytes(now, b);
        }
        if c.is_none() && b.is_none() {
            break;
        }
        if seed & 1 == 0 {
            conn.take_learned(&mut out);
        }
    }
    let mut last = Vec::new();
    conn.take_learned(&mut last);
    assert!(last.len() <= MAX_LEARNED, "held pairs are bounded");
    out.extend(last);
    for pair in &out {
        assert!(pair.query.len() <= MAX_QUERY && pair.answer.len() <= MAX_ANSWER);
        assert!(pair.answer.len() >= 12);
        assert_eq!(pair.query[..2], pair.answer[..2], "paired by id");
    }
});
