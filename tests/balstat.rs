//! `balstat` on its own terms: its command line and usage, what it says
//! of servers that cut their answer off or never answer (hand-written
//! servers, no balancer), and watch mode, which repeats the report.  What
//! the reports hold is checked in `tests/stats.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::sockdir;
use common::stats::{Setup, balstat, text};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_repeats_reports() {
    let s = Setup::start(&[]);
    let start = Instant::now();
    let out = balstat(&["-S", s.sock(), "-w", "0.2", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(start.elapsed() >= Duration::from_millis(200));
    let stdout = text(&out.stdout);
    // Not a terminal: no escape codes, reports one after the other.
    assert!(!stdout.contains('\x1b'));
    assert_eq!(stdout.matches("BACKENDS (3)").count(), 2, "{stdout}");
    assert_eq!(
        stdout.matches("\n\nmname-balancer pid ").count(),
        1,
        "{stdout}"
    );
    assert!(stdout.starts_with("mname-balancer pid "));

    let out = balstat(&[
        "-S",
        s.sock(),
        "--json",
        "--watch",
        "0.1",
        "-n",
        "3",
        "summary",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let docs: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(docs.len(), 3, "{stdout}");
    assert!(
        docs.iter()
            .all(|d| d["backends"].as_array().map(Vec::len) == Some(3))
    );
    assert!(
        docs.iter().all(|d| d.get("remotes").is_none()),
        "summary: no remotes"
    );
}

#[test]
fn balstat_usage_and_errors() {
    let out = balstat(&["-h"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("Usage: balstat -S PATH"));
    for (args, message) in [
        (vec![], "must specify the stats socket (-S PATH)"),
        (vec!["-S", "/x", "--bogus"], "bogus"),
        (vec!["-S", "/x", "-w", "soon"], "invalid interval for -w"),
        (vec!["-S", "/x", "-n", "2"], "-n COUNT goes with -w"),
        (vec!["-S", "/x", "backend"], "needs an id"),
    ] {
        let out = balstat(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(err.contains("balstat -h"), "{args:?}: {err}");
    }
    let dir = sockdir();
    let missing = dir.path().join("nothing.sock");
    let out = balstat(&["-S", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("no such socket"),
        "{err}"
    );
}

/// A hand-written server: accepts one client, reads its request, writes
/// `answer` (or nothing, holding the connection) and closes.
fn fake_server(path: &Path, answer: Option<&'static [u8]>) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut line = [0u8; 64];
        let _ = conn.read(&mut line);
        match answer {
            Some(a) => {
                let _ = conn.write_all(a);
            }
            // Hold the connection until balstat gives up.
            None => {
                let _ = conn.read(&mut line);
            }
        }
    })
}

#[test]
fn balstat_reports_cut_off_and_silent_servers() {
    let dir = sockdir();
    let cut = dir.path().join("cut.sock");
    let t = fake_server(&cut, Some(b"{\"version\":1,\"backends\":[{\"id\":53"));
    let out = balstat(&["-S", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cut off") && err.contains("cut.sock"), "{err}");
    t.join().unwrap();

    let silent = dir.path().join("silent.sock");
    let t = fake_server(&silent, None);
    let start = Instant::now();
    let out = balstat(&["-S", silent.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no answer within 10 s") && err.contains("silent.sock"),
        "{err}"
    );
    assert!(start.elapsed() >= Duration::from_secs(9));
    t.join().unwrap();
}
