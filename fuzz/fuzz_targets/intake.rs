//! UDP intake: any datagram is judged (a query, or short, a response, a
//! question that does not parse) without panicking and exactly as
//! hickory's full decoding judges it, its question fingerprinted, and for
//! a query the
//! answers the balancer can make itself (SERVFAIL, REFUSED, TC=1) parse as
//! responses that carry the query's id.

#![no_main]

use hickory_proto::op::ResponseCode;
use libfuzzer_sys::fuzz_target;
use mname_balancer::core::{intake, synth};

fuzz_target!(|data: &[u8]| {
    assert_eq!(intake::check(data), intake::check_with_hickory(data));
    // The question's fingerprint (hedged answers told apart) walks any
    // bytes; a message with a question that parses has one.
    let fingerprint = intake::question_fingerprint(data);
    if intake::check(data).is_ok() && data.get(4..6).is_some_and(|c| c != [0, 0]) {
        assert_ne!(fingerprint, 0, "a query's question has a fingerprint");
    }
    if let Ok(id) = intake::check(data) {
        assert_eq!(intake::dns_id(data), Some(id));
        for answer in [
            synth::error_answer(data, ResponseCode::ServFail),
            synth::truncated_answer(data),
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(intake::dns_id(&answer), Some(id), "the answer keeps the id");
            assert!(answer.len() >= 12 && answer[2] & 0x80 != 0, "a response");
        }
    }
});
