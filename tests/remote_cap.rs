//! The remote table's bound through the real binary: past `--max-remotes`
//! new clients are still answered, without an entry; the clients in the
//! table keep their backend.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn past_the_cap_new_clients_are_answered_and_the_table_stays_put() {
    let (_dir, _backends, bal) = three_backends(&["--max-remotes", "5"]);
    let to = bal.target();
    let mut first = Vec::new();
    for n in 21..26 {
        first.push(whoami(lo(n), to).await.expect("answered"));
    }
    for n in 0..30u8 {
        let src = IpAddr::V4(Ipv4Addr::new(127, 3, 0, n + 1));
        let answer = udp_ask(src, to, "www.example.com", RecordType::A, DEADLINE).await;
        assert!(answer.is_some(), "untracked client {src} answered");
    }
    for (i, n) in (21..26).enumerate() {
        assert_eq!(
            whoami(lo(n), to).await.as_ref(),
            Some(&first[i]),
            "client {n} kept its backend"
        );
    }
    bal.proc.signal(libc::SIGUSR1);
    let rec = bal.proc.wait_for("counters", |_| true);
    assert_eq!(rec["remotes"], 5, "{rec}");
    assert_eq!(rec["untracked_queries"], 30, "{rec}");
}
