//! The DNS-over-TCP message reader: any stream, delivered in pieces cut
//! anywhere, yields the same messages (or the same error) as when
//! delivered whole; a reader that takes no more than `wanted()` bytes at a
//! time never holds more than one message and its length.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mname_balancer::core::tcp_messages::{MAX_TCP_MESSAGE, TcpMessages};
use tokio::time::Instant;

fn read(stream: &[u8], step: Option<usize>) -> (Vec<Vec<u8>>, bool) {
    let now = Instant::now();
    let mut r = TcpMessages::new();
    let mut got = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = step.unwrap_or(r.wanted()).min(rest.len()).max(1);
        let (piece, tail) = rest.split_at(n);
        r.extend(now, piece);
        rest = tail;
        loop {
            match r.next_message(now) {
                Ok(Some(m)) => got.push(m.to_vec()),
                Ok(None) => break,
                Err(_) => return (got, true),
            }
        }
        if step.is_none() {
            assert!(r.buffered() <= 2 + MAX_TCP_MESSAGE, "bounded");
        }
    }
    (got, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = read(stream, Some(stream.len().max(1)));
    let cut = read(stream, Some(usize::from(seed % 7) + 1));
    let wanted = read(stream, None);
    assert_eq!(whole, cut);
    assert_eq!(whole, wanted);
});
