//! The stats socket's request parser: any line is a request or a message
//! saying what was wrong, never a panic; a request parsed from a line
//! parses the same from its canonical spelling.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mname_balancer::ops::stats_socket::Request;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Ok(req) = Request::parse(&line) {
        let canonical = match &req {
            Request::Snapshot => "snapshot".to_string(),
            Request::Summary => "summary".to_string(),
            Request::Backend(id) => format!("backend {id}"),
            Request::Remote(ip) => format!("remote {ip}"),
            Request::Cache => "cache".to_string(),
            Request::CacheFlush => "cache flush".to_string(),
        };
        assert_eq!(Request::parse(&canonical), Ok(req));
    }
});
