//! The command line of the real binary: every mistake exits 1 with a
//! message that says what was wrong; `LOG_LEVEL` overrides `-l`.

mod common;

use std::process::{Command, Output};

use common::*;

fn run(args: &[&str], log_level: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mname-balancer"));
    cmd.args(args).env_remove("LOG_LEVEL");
    if let Some(l) = log_level {
        cmd.env("LOG_LEVEL", l);
    }
    cmd.output().expect("run mname-balancer")
}

fn fails_with(args: &[&str], log_level: Option<&str>, needle: &str) {
    let out = run(args, log_level);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: stderr {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
}

#[test]
fn missing_socket_dir() {
    fails_with(&["-p", "5353"], None, "must specify socket directory (-s)");
}

#[test]
fn invalid_log_level_flag() {
    fails_with(
        &["-s", "/tmp", "-l", "loud"],
        None,
        "invalid log level for -l: loud",
    );
}

#[test]
fn invalid_log_level_env() {
    fails_with(&["-s", "/tmp"], Some("loud"), "invalid LOG_LEVEL \"loud\"");
}

#[test]
fn unknown_flag() {
    fails_with(&["-s", "/tmp", "-x"], None, "Unrecognized option: 'x'");
    fails_with(&["-s", "/tmp", "--bogus", "1"], None, "bogus");
}

#[test]
fn flag_without_value() {
    fails_with(&["-s"], None, "Argument to option 's' missing");
    fails_with(
        &["-s", "/tmp", "-p"],
        None,
        "Argument to option 'p' missing",
    );
}

#[test]
fn bad_port_or_address() {
    fails_with(
        &["-s", "/tmp", "-p", "99999"],
        None,
        "invalid port for -p: \"99999\"",
    );
    fails_with(
        &["-s", "/tmp", "-p", "dns"],
        None,
        "invalid port for -p: \"dns\"",
    );
    fails_with(
        &["-s", "/tmp", "-b", "300.1.1.1"],
        None,
        "invalid listen address for -b",
    );
    fails_with(
        &["-s", "/tmp", "--heartbeat-timeout", "soon"],
        None,
        "invalid duration for --heartbeat-timeout",
    );
}

#[test]
fn address_in_use_is_a_clear_error() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(&["-s", "/tmp", "-b", "127.0.0.1", "-p", &port], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to bind UDP listen socket"), "{err}");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("\"msg\":\"failed to bind UDP listen socket\""),
        "{log}"
    );
}

#[test]
fn help_prints_usage() {
    let out = run(&["-h"], None);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "-b",
        "-p",
        "-s",
        "-l",
        "--heartbeat-interval",
        "--remote-expiry",
    ] {
        assert!(text.contains(flag), "usage lacks {flag}: {text}");
    }
}

/// `-l error` with `LOG_LEVEL=debug`: debug records appear.  `-l debug`
/// with `LOG_LEVEL=error`: no info record appears before the bind error.
#[test]
fn log_level_env_overrides_flag() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let args = ["-s", "/tmp", "-b", "127.0.0.1", "-p", &port];

    let mut quiet = args.to_vec();
    quiet.extend(["-l", "debug"]);
    let out = run(&quiet, Some("error"));
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        !log.contains("starting up"),
        "info suppressed by LOG_LEVEL=error: {log}"
    );
    assert!(
        log.contains("failed to bind UDP listen socket"),
        "errors still logged: {log}"
    );

    let dir = sockdir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mname-balancer"));
    cmd.args([
        "-b",
        "127.0.0.1",
        "-p",
        "0",
        "-l",
        "error",
        "--scan-interval",
        "100ms",
        "-s",
    ])
    .arg(dir.path())
    .env("LOG_LEVEL", "debug");
    let proc = Proc::spawn("balancer", cmd);
    let rec = proc.wait_for("starting up", |_| true);
    assert_eq!(rec["level"], 30);
    assert_eq!(rec["name"], "mname-balancer");
    for key in ["hostname", "pid", "time", "v"] {
        assert!(rec.get(key).is_some(), "bunyan core field {key} in {rec}");
    }
    std::fs::write(dir.path().join("5300"), b"").unwrap();
    // A debug record proves the debug level is on.
    let rec = proc.wait_for("reconnect triggered for backend", |_| true);
    assert_eq!(rec["level"], 20);
    assert_eq!(rec["be_id"], 5300);
}
