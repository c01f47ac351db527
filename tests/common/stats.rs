//! The stats socket's side of the harness: a balancer with a stats socket
//! and three backends ([`Setup`]), `balstat` run as a child process, and
//! readers for what it prints (its JSON document, the rows of its tables).
//! Used by `tests/stats.rs` and `tests/balstat.rs`.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use super::{Backend, Balancer, sockdir};

/// Three demo backends 5300..5302 and a balancer with a stats socket in a
/// directory of its own, serving.
pub(crate) struct Setup {
    _dir: tempfile::TempDir,
    pub stats_dir: tempfile::TempDir,
    _backends: Vec<Backend>,
    pub bal: Balancer,
    pub sock: PathBuf,
}

impl Setup {
    /// Default timers: nothing here must fault a backend on a busy machine.
    pub(crate) fn start(extra: &[&str]) -> Setup {
        let dir = sockdir();
        let backends: Vec<Backend> = ["5300", "5301", "5302"]
            .iter()
            .map(|n| Backend::start(dir.path(), n))
            .collect();
        let stats_dir = sockdir();
        let sock = stats_dir.path().join("stats.sock");
        let mut args = vec!["-S", sock.to_str().unwrap()];
        args.extend_from_slice(extra);
        let bal = Balancer::start(dir.path(), &args);
        bal.wait_established(3);
        // The listeners are logged before the stats socket is bound.
        bal.proc.wait_for("stats socket listening", |_| true);
        Setup {
            _dir: dir,
            stats_dir,
            _backends: backends,
            bal,
            sock,
        }
    }

    pub(crate) fn sock(&self) -> &str {
        self.sock.to_str().unwrap()
    }
}

/// Run balstat with `args`; it bounds its own waits (10 s per read).
pub(crate) fn balstat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_balstat"))
        .args(args)
        .output()
        .expect("run balstat")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `balstat --json` with `args`: the document, or a panic with stderr.
pub(crate) fn balstat_json(sock: &str, args: &[&str]) -> Value {
    let mut all = vec!["-S", sock, "--json"];
    all.extend_from_slice(args);
    let out = balstat(&all);
    assert!(
        out.status.success(),
        "balstat {all:?} failed: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The rows of the table under the line starting with `title`, split on
/// whitespace (header excluded).
pub(crate) fn table_rows(report: &str, title: &str) -> Vec<Vec<String>> {
    let mut lines = report.lines().skip_while(|l| !l.starts_with(title)).skip(2);
    let mut rows = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        rows.push(line.split_whitespace().map(String::from).collect());
    }
    rows
}

pub(crate) fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}
