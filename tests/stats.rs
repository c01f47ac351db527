//! The stats socket (`-S`) and its client `balstat`, both real binaries:
//! `balstat` accounts for every query sent, per remote and per backend, in
//! JSON and in its tables; it shows one backend or remote, and fails with a
//! message for unknown ones; the socket is private (0600, or 0660 with
//! `--stats-mode`) and never inside the backend directory; clients that
//! connect and never read hold neither traffic nor other stats clients
//! back, and a ninth at once is told "busy"; a stale socket file is
//! replaced at start and the file is removed at exit.  `balstat`'s own
//! arguments, watch mode and misbehaving servers are in `tests/balstat.rs`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::stats::{Setup, balstat, balstat_json, table_rows, text, u};
use common::*;
use hickory_proto::rr::RecordType;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balstat_accounts_for_every_query_per_remote_and_backend() {
    let s = Setup::start(&[]);
    let to = s.bal.target();
    // (client 127.0.0.N, UDP queries, TCP connections of two queries each)
    let plan: [(u8, u64, u64); 6] = [
        (31, 1, 0),
        (32, 2, 1),
        (33, 3, 0),
        (34, 4, 2),
        (35, 5, 0),
        (36, 6, 1),
    ];
    let mut answered_by: HashMap<IpAddr, String> = HashMap::new();
    for &(n, udp, tcp) in &plan {
        for _ in 0..udp {
            let name = whoami(lo(n), to).await.expect("UDP answer");
            let first = answered_by.entry(lo(n)).or_insert_with(|| name.clone());
            assert_eq!(*first, name, "127.0.0.{n} stays on one backend");
        }
        for i in 0..tcp {
            let mut c = tcp_connect(lo(n), to).await;
            tcp_send(&mut c, &query("whoami.example.com.", RecordType::TXT, 1)).await;
            let m = tcp_recv(&mut c).await.expect("TCP answer");
            assert_eq!(txt(&m), answered_by[&lo(n)], "TCP from 127.0.0.{n} #{i}");
            tcp_send(&mut c, &query("www.example.com.", RecordType::A, 2)).await;
            assert!(tcp_recv(&mut c).await.is_some(), "second TCP answer");
        }
    }
    let total_udp: u64 = plan.iter().map(|p| p.1).sum();
    let total_tcp: u64 = plan.iter().map(|p| p.2).sum();

    let doc = balstat_json(s.sock(), &[]);
    assert_eq!(doc["version"], 1);
    let c = &doc["counters"];
    assert_eq!(u(&c["udp_received"]), total_udp);
    assert_eq!(u(&c["udp_forwarded"]), total_udp);
    assert_eq!(u(&c["udp_replies"]), total_udp);
    assert_eq!(u(&c["tcp_accepted"]), total_tcp);
    assert_eq!(u(&doc["remotes_tracked"]), plan.len() as u64);

    let remotes = doc["remotes"].as_array().expect("remotes");
    assert_eq!(remotes.len(), plan.len());
    // backend id -> (remotes, udp, tcp) summed over its remotes
    let mut per_backend: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for &(n, udp, tcp) in &plan {
        let ip = lo(n).to_string();
        let r = remotes
            .iter()
            .find(|r| r["ip"] == ip.as_str())
            .unwrap_or_else(|| panic!("no remote {ip} in {remotes:?}"));
        assert_eq!(u(&r["udp"]), udp, "{ip} udp");
        assert_eq!(u(&r["tcp"]), tcp, "{ip} tcp");
        assert_eq!(u(&r["udp_drops"]), 0, "{ip} udp_drops");
        assert_eq!(u(&r["tcp_drops"]), 0, "{ip} tcp_drops");
        assert_eq!(r["backup"], Value::Null, "{ip} backup");
        let backend = u(&r["backend"]);
        assert_eq!(
            backend.to_string(),
            answered_by[&lo(n)],
            "{ip}: its backend is the one that answered"
        );
        let e = per_backend.entry(backend).or_default();
        e.0 += 1;
        e.1 += udp;
        e.2 += tcp;
    }
    let backends = doc["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 3);
    for b in backends {
        let id = u(&b["id"]);
        let (rems, udp, tcp) = per_backend.get(&id).copied().unwrap_or_default();
        assert_eq!(b["ok"], true, "{id} ok");
        assert_eq!(b["state"].as_str().map(|s| s.starts_with("ok")), Some(true));
        assert!(b["path"].as_str().unwrap().ends_with(&format!("/{id}")));
        assert_eq!(u(&b["remotes"]), rems, "{id} remotes");
        assert_eq!(u(&b["udp"]), udp, "{id} udp");
        assert_eq!(u(&b["udp_replies"]), udp, "{id} udp_replies");
        assert_eq!(u(&b["tcp"]), tcp, "{id} tcp");
        assert_eq!(u(&b["stuck"]), 0, "{id} stuck");
    }
    // Six remotes dealt round-robin to three backends: two each.
    assert!(per_backend.values().all(|v| v.0 == 2), "{per_backend:?}");

    // The tables say the same.
    let out = balstat(&["-S", s.sock()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let peers = table_rows(&report, "REMOTE PEERS");
    assert_eq!(peers.len(), plan.len(), "{report}");
    for &(n, udp, tcp) in &plan {
        let ip = lo(n).to_string();
        let row = peers
            .iter()
            .find(|r| r[0] == ip)
            .unwrap_or_else(|| panic!("no row for {ip}:\n{report}"));
        // IP BACKEND BACKUP UDP UDP-DROPS TCP TCP-DROPS FIRST.. LAST..
        assert_eq!(row[1], answered_by[&lo(n)], "{ip} backend:\n{report}");
        assert_eq!(row[2], "-", "{ip} backup:\n{report}");
        assert_eq!(row[3], udp.to_string(), "{ip} udp:\n{report}");
        assert_eq!(row[5], tcp.to_string(), "{ip} tcp:\n{report}");
        assert!(
            row[7].ends_with('s') && row[8] == "ago",
            "{ip} ages:\n{report}"
        );
    }
    let table = table_rows(&report, "BACKENDS");
    assert_eq!(table.len(), 3, "{report}");
    for row in &table {
        // ID STATE OK REMOTES UDP TCP STUCK CONN ERR HB-RTT PATH
        let id: u64 = row[0].parse().unwrap();
        let (rems, udp, tcp) = per_backend[&id];
        assert_eq!(row[2], "yes", "{report}");
        assert_eq!(row[3], rems.to_string(), "{report}");
        assert_eq!(row[4], udp.to_string(), "{report}");
        assert_eq!(row[5], tcp.to_string(), "{report}");
        assert!(row[10].ends_with(&format!("/{id}")), "{report}");
    }
    let header = report
        .lines()
        .find(|l| l.starts_with("UDP received"))
        .unwrap_or_else(|| panic!("no traffic line:\n{report}"));
    assert_eq!(
        header,
        format!(
            "UDP received {total_udp}, forwarded {total_udp}, replies {total_udp}; TCP accepted {total_tcp}"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balstat_shows_one_backend_or_remote_and_fails_on_unknown_ones() {
    let s = Setup::start(&[]);
    let to = s.bal.target();
    let name = whoami(lo(41), to).await.expect("answer");
    for _ in 0..2 {
        assert_eq!(whoami(lo(41), to).await.as_deref(), Some(name.as_str()));
    }
    let id: u64 = name.parse().unwrap();

    let doc = balstat_json(s.sock(), &["backend", &name]);
    assert_eq!(doc["version"], 1);
    let b = &doc["backend"];
    assert_eq!(u(&b["id"]), id);
    assert_eq!(u(&b["udp"]), 3);
    assert_eq!(u(&b["remotes"]), 1);
    assert!(b["path"].as_str().unwrap().ends_with(&format!("/{name}")));

    let doc = balstat_json(s.sock(), &["remote", "127.0.0.41"]);
    let r = &doc["remote"];
    assert_eq!(r["ip"], "127.0.0.41");
    assert_eq!(u(&r["backend"]), id);
    assert_eq!(u(&r["udp"]), 3);
    assert!(u(&r["last_seen_ms"]) >= u(&r["first_seen_ms"]));

    // Table form: one "key  value" line per field.
    let kv = |out: &Output| -> HashMap<String, String> {
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().to_string()))
            })
            .collect()
    };
    let b = kv(&balstat(&["-S", s.sock(), "backend", &name]));
    assert_eq!(b["id"], name);
    assert_eq!(b["udp"], "3");
    assert_eq!(b["ok"], "yes");
    assert!(b["forward_latency"].starts_with("count 3,"), "{b:?}");
    let r = kv(&balstat(&["-S", s.sock(), "remote", "127.0.0.41"]));
    assert_eq!(r["ip"], "127.0.0.41");
    assert_eq!(r["backend"], name);
    assert_eq!(r["backup"], "-");
    assert_eq!(r["udp"], "3");
    assert!(r["first_seen_ms"].ends_with("ago)"), "{r:?}");

    // Unknown ones: the server's message, exit 1; so are bad arguments,
    // caught before asking.
    for (args, message) in [
        (vec!["backend", "5399"], "no backend 5399"),
        (vec!["remote", "192.0.2.1"], "no remote 192.0.2.1"),
        (
            vec!["--json", "remote", "2001:db8::1"],
            "no remote 2001:db8::1",
        ),
        (vec!["backend", "x"], "invalid backend id \"x\""),
        (vec!["remote", "1.2.3"], "invalid IP address \"1.2.3\""),
        (vec!["frobnicate"], "unknown request \"frobnicate\""),
    ] {
        let mut all = vec!["-S", s.sock()];
        all.extend_from_slice(&args);
        let out = balstat(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_socket_is_private_unless_widened() {
    let s = Setup::start(&[]);
    let meta = std::fs::metadata(&s.sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // Let anyone through the directory: only the socket's mode counts.
        std::fs::set_permissions(s.stats_dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        match as_user(65534, 65534, s.sock()) {
            Some(out) => {
                assert_eq!(out.status.code(), Some(1));
                let err = text(&out.stderr);
                assert!(err.contains("permission denied"), "{err}");
                assert!(err.contains(s.sock()), "{err}");
            }
            None => eprintln!("balstat not executable by nobody: cross-user check skipped"),
        }
    } else {
        eprintln!("not root: cross-user checks skipped");
    }
    drop(s);

    let s = Setup::start(&["--stats-mode", "660"]);
    let meta = std::fs::metadata(&s.sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    if root {
        std::fs::set_permissions(s.stats_dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        // The socket's group (ours, 0) is let in; others are not.
        let gid = meta_gid(&s.sock);
        if let Some(out) = as_user(65534, gid, s.sock()) {
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert!(text(&out.stdout).contains("BACKENDS"));
        }
        if gid != 65534
            && let Some(out) = as_user(65534, 65534, s.sock())
        {
            assert_eq!(out.status.code(), Some(1));
            assert!(text(&out.stderr).contains("permission denied"));
        }
    }
}

fn meta_gid(p: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().gid()
}

/// balstat run as `uid`:`gid`, or None when that user cannot run it.
fn as_user(uid: u32, gid: u32, sock: &str) -> Option<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_balstat"));
    cmd.args(["-S", sock]).uid(uid).gid(gid); // std drops supplementary groups
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => None,
        Err(e) => panic!("run balstat as {uid}: {e}"),
    }
}

/// The balancer on a free port, backends in `dir`, stats socket `sock`,
/// for tests that expect it to refuse to start.
fn balancer_with_stats(dir: &Path, sock: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mname-balancer"));
    cmd.args(["-b", "127.0.0.1", "-p", "0", "-s"])
        .arg(dir)
        .arg("-S")
        .arg(sock)
        .env_remove("LOG_LEVEL");
    cmd
}

#[test]
fn stats_socket_inside_the_backend_directory_is_refused() {
    let dir = sockdir();
    let sock = dir.path().join("stats.sock");
    let cmd = balancer_with_stats(dir.path(), &sock);
    let mut p = Proc::spawn("balancer", cmd);
    assert_eq!(p.wait_exit(), Some(1));
    let err = p.stderr_text();
    assert!(err.contains("inside the backend socket directory"), "{err}");
    assert!(!sock.exists());
}

/// Bind UDP sources 127.10.X.Y and send one query from each, `n` in all,
/// until each has been answered.
async fn many_remotes(to: std::net::SocketAddr, n: usize) {
    let src = |i: usize| IpAddr::V4(Ipv4Addr::new(127, 10, (i / 250) as u8, (i % 250 + 1) as u8));
    let mut pending: Vec<usize> = (0..n).collect();
    let start = Instant::now();
    while !pending.is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "{} remotes unanswered",
            pending.len()
        );
        let mut failed = Vec::new();
        for chunk in pending.chunks(200) {
            let mut set = tokio::task::JoinSet::new();
            for &i in chunk {
                set.spawn(async move {
                    let answer = udp_ask(
                        src(i),
                        to,
                        "www.example.com.",
                        RecordType::A,
                        Duration::from_secs(2),
                    )
                    .await;
                    (i, answer.is_some())
                });
            }
            while let Some(done) = set.join_next().await {
                let (i, ok) = done.unwrap();
                if !ok {
                    failed.push(i);
                }
            }
        }
        pending = failed;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_hold_up_neither_traffic_nor_balstat() {
    let s = Setup::start(&[]);
    let to = s.bal.target();
    // Enough remotes that a snapshot is far larger than a socket buffer.
    const N: usize = 3000;
    many_remotes(to, N).await;

    // One client connects and says nothing; another asks for a snapshot
    // and reads nothing: its dump stalls once the socket buffer is full.
    let mut idle = UnixStream::connect(&s.sock).await.unwrap();
    let mut stalled = UnixStream::connect(&s.sock).await.unwrap();
    stalled.write_all(b"snapshot\n").await.unwrap();
    tokio::time::timeout(DEADLINE, stalled.readable())
        .await
        .expect("the dump has begun")
        .unwrap();
    let asked = Instant::now();

    // Traffic goes on...
    for n in 50..53 {
        assert!(whoami(lo(n), to).await.is_some(), "127.0.0.{n} answered");
    }
    // ...and balstat gets a complete document.
    let doc = balstat_json(s.sock(), &[]);
    let remotes = doc["remotes"].as_array().unwrap();
    assert_eq!(remotes.len() as u64, u(&doc["remotes_tracked"]));
    assert_eq!(remotes.len(), N + 3);
    let size = doc.to_string().len();
    assert!(
        size > 2 * 212_992,
        "a snapshot of {size} bytes may fit a socket buffer"
    );
    let checked = asked.elapsed();

    // The stalled client, read now, gets the whole of its document if it
    // was not cut off (5 s of no progress) in the meantime.
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(DEADLINE, stalled.read_to_end(&mut bytes)).await;
    if checked < Duration::from_secs(4) {
        read.expect("stalled client read").unwrap();
        let doc: Value = serde_json::from_slice(&bytes).expect("the stalled client's document");
        assert!(doc["remotes"].as_array().unwrap().len() >= N);
    } else {
        eprintln!("checks took {checked:?}: the stalled client may have been cut off");
    }
    // The client that never asked is cut off (2 s without a request).
    let mut buf = Vec::new();
    let n = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut buf))
        .await
        .expect("idle client cut off")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing for a client that asked nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ninth_client_at_once_is_told_busy_and_served_once_slots_free() {
    let s = Setup::start(&[]);
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(UnixStream::connect(&s.sock).await.unwrap());
    }
    let held = Instant::now();
    let mut ninth = UnixStream::connect(&s.sock).await.unwrap();
    let _ = ninth.write_all(b"summary\n").await;
    let mut answer = Vec::new();
    // The server closes without reading the request, which may reset the
    // connection after the answer: the bytes before that are the answer.
    let _ = tokio::time::timeout(DEADLINE, ninth.read_to_end(&mut answer))
        .await
        .expect("ninth answered");
    let busy: Value = serde_json::from_slice(&answer).expect("JSON");
    assert_eq!(busy["error"], "busy");
    assert_eq!(busy["version"], 1);

    let out = balstat(&["-S", s.sock()]);
    // The eight are cut off 2 s after connecting; before that balstat
    // is turned away too.
    if held.elapsed() < Duration::from_millis(1500) {
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("busy"), "{err}");
        assert!(err.contains(s.sock()), "{err}");
    }
    // Once they are cut off, it is served.
    let start = Instant::now();
    loop {
        let out = balstat(&["-S", s.sock()]);
        if out.status.success() {
            assert!(text(&out.stdout).contains("BACKENDS (3)"));
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{}", text(&out.stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mut c in idle {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(DEADLINE, c.read_to_end(&mut buf))
            .await
            .expect("idle client cut off")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_replaced_live_one_kept_file_removed_on_sigterm() {
    let dir = sockdir();
    let _b = Backend::start(dir.path(), "5300");
    let stats_dir = sockdir();
    let sock = stats_dir.path().join("stats.sock");
    // A stale socket: bound, then its listener dropped (as by kill -9).
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let refused = balstat(&["-S", sock.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("connection refused"));

    let mut bal = Balancer::start(dir.path(), &["-S", sock.to_str().unwrap()]);
    bal.proc.wait_for("stats socket listening", |_| true);
    bal.wait_established(1);
    assert!(whoami(lo(70), bal.target()).await.is_some());
    let doc = balstat_json(sock.to_str().unwrap(), &[]);
    assert_eq!(u(&doc["pid"]), bal.proc.pid() as u64);
    assert_eq!(doc["remotes"][0]["ip"], "127.0.0.70");

    // A second balancer does not take a live socket over.
    let cmd = balancer_with_stats(dir.path(), &sock);
    let mut second = Proc::spawn("second balancer", cmd);
    assert_eq!(second.wait_exit(), Some(1));
    assert!(
        second
            .stderr_text()
            .contains("another process is serving it"),
        "{}",
        second.stderr_text()
    );
    assert_eq!(
        u(&balstat_json(sock.to_str().unwrap(), &[])["pid"]),
        bal.proc.pid() as u64
    );

    bal.proc.signal(libc::SIGTERM);
    assert_eq!(bal.proc.wait_exit(), Some(0));
    assert!(!sock.exists(), "socket file removed at exit");
    let gone = balstat(&["-S", sock.to_str().unwrap()]);
    assert_eq!(gone.status.code(), Some(1));
    let err = text(&gone.stderr);
    assert!(
        err.contains("no such socket") && err.contains(sock.to_str().unwrap()),
        "{err}"
    );

    // A file that is not a socket is left alone, and the balancer exits 1.
    std::fs::write(&sock, b"keep me").unwrap();
    let cmd = balancer_with_stats(dir.path(), &sock);
    let mut third = Proc::spawn("third balancer", cmd);
    assert_eq!(third.wait_exit(), Some(1));
    assert_eq!(std::fs::read(&sock).unwrap(), b"keep me");
}
