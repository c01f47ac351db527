//! The command line: any arguments (NUL-separated in the input) and any
//! LOG_LEVEL are a configuration, usage, or an error that names what was
//! wrong, never a panic; durations parse or are refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mname_balancer::cli;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let env = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    let args: Vec<String> = parts.map(str::to_string).collect();
    match cli::parse(&args, env.as_deref()) {
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    let _ = cli::parse_duration(&text);
});
