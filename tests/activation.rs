//! systemd integration on the real binary: socket activation (sockets
//! passed as descriptors 3.. with LISTEN_PID/LISTEN_FDS are served instead
//! of binding `-b`/`-p`; a descriptor of the wrong kind is an error, exit 1)
//! and sd_notify readiness (READY=1 once serving, STOPPING=1 on SIGTERM).
//!
//! The sockets are passed as systemd does: duplicated onto 3, 4, ... in the
//! child between fork and exec, then `sh` sets LISTEN_PID to its own PID and
//! execs the balancer, which keeps that PID.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Sets LISTEN_PID to the PID that the balancer will have, then becomes it.
const WRAPPER: &str = r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#;

/// A command that runs the balancer with `args`, `fds` as descriptors 3..
/// and LISTEN_FDS/LISTEN_PID naming it; and the copies of `fds` it places,
/// to be closed once the child is spawned.
fn activated(fds: &[BorrowedFd<'_>], args: &[&str]) -> (Command, Vec<OwnedFd>) {
    // Copies far above 3 + fds.len(), so that placing one cannot overwrite
    // another; close-on-exec, so that only the placed ones reach the child.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) makes a new descriptor and
            // touches no memory.
            let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
            assert!(n >= 100, "dup: {}", std::io::Error::last_os_error());
            // SAFETY: n is a fresh descriptor that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(n) }
        })
        .collect();
    let raw: Vec<i32> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(WRAPPER)
        .arg(env!("CARGO_BIN_EXE_mname-balancer"))
        .args(args)
        .env("LISTEN_FDS", fds.len().to_string())
        .env_remove("LISTEN_FDNAMES")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LOG_LEVEL");
    // SAFETY: only dup2(2), which is async-signal-safe, runs between fork
    // and exec; `raw` is not allocated or freed there.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in raw.iter().enumerate() {
                if libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    (cmd, high)
}

/// Spawn that command; the copies close once the child has started.
fn spawn_activated(name: &str, fds: &[BorrowedFd<'_>], args: &[&str]) -> Proc {
    let (cmd, copies) = activated(fds, args);
    let proc = Proc::spawn(name, cmd);
    drop(copies);
    proc
}

fn sockdir_arg(dir: &Path) -> &str {
    dir.to_str().expect("utf-8 temp dir")
}

/// Wait for a datagram on `sock` containing `needle`; every datagram read.
fn recv_until(sock: &UnixDatagram, needle: &str) -> String {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push_str(&msg);
            seen.push_str("\n--\n");
            if msg.lines().any(|l| l == needle) {
                return msg;
            }
        }
        if start.elapsed() > DEADLINE {
            panic!("no {needle} within {DEADLINE:?}; got:\n{seen}");
        }
    }
}

#[tokio::test]
async fn inherited_sockets_are_served_and_minus_p_is_ignored() {
    let dir = sockdir();
    let _b1 = Backend::start(dir.path(), "5300");
    let _b2 = Backend::start(dir.path(), "5301");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    // -p names the inherited UDP socket's port: binding it would fail
    // (EADDRINUSE), so an answer proves the inherited sockets are used.
    let port = udp_addr.port().to_string();
    let mut args = vec!["-b", "127.0.0.1", "-p", &port, "-l", "debug"];
    args.extend_from_slice(&["-s", sockdir_arg(dir.path())]);
    args.extend_from_slice(FAST_TIMERS);
    let mut bal = spawn_activated("balancer", &[udp.as_fd(), tcp.as_fd()], &args);
    drop((udp, tcp));

    let rec = bal.wait_for(
        "socket activation: using inherited sockets, -b and -p are ignored",
        |_| true,
    );
    assert_eq!(rec["udp_sockets"], 1);
    assert_eq!(rec["tcp_sockets"], 1);
    assert_eq!(rec["ignored_port"], udp_addr.port());
    let rec = bal.wait_for("listening for TCP packets", |_| true);
    assert_eq!(rec["port"], tcp_addr.port().to_string());
    assert_eq!(rec["inherited"], true);
    bal.wait_for_nth(2, "both backends", |r| {
        r["msg"] == "backend socket established"
    });

    let m = udp_ask(
        lo(1),
        udp_addr,
        "www.example.com.",
        RecordType::A,
        Duration::from_secs(5),
    )
    .await
    .expect("UDP answer on the inherited socket");
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");

    let m = tcp_ask(lo(1), tcp_addr, "www.example.com.", RecordType::A)
        .await
        .expect("TCP answer on the inherited listener");
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");

    // Nothing was bound besides: one listener of each kind, both inherited.
    assert_eq!(bal.count("listening for UDP packets", |_| true), 1);
    assert_eq!(
        bal.count("listening for UDP packets", |r| r["inherited"] == true),
        1
    );
    assert_eq!(bal.count("failed to bind UDP listen socket", |_| true), 0);

    bal.signal(libc::SIGTERM);
    assert_eq!(bal.wait_exit(), Some(0));
}

#[tokio::test]
async fn only_udp_inherited_serves_udp() {
    let dir = sockdir();
    let _b = Backend::start(dir.path(), "5300");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let mut args = vec!["-l", "debug", "-s", sockdir_arg(dir.path())];
    args.extend_from_slice(FAST_TIMERS);
    let bal = spawn_activated("balancer", &[udp.as_fd()], &args);
    drop(udp);
    bal.wait_for("backend socket established", |_| true);
    let m = udp_ask(
        lo(2),
        udp_addr,
        "whoami.example.com.",
        RecordType::TXT,
        Duration::from_secs(5),
    )
    .await
    .expect("UDP answer on the inherited socket");
    assert_eq!(txt(&m), "5300");
    assert_eq!(bal.count("listening for TCP packets", |_| true), 0);
}

#[test]
fn ready_once_serving_and_stopping_on_sigterm() {
    let dir = sockdir();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let sockets = dir.path().join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mname-balancer"));
    cmd.args(["-b", "127.0.0.1", "-p", "0", "-l", "debug", "-s"])
        .arg(&sockets)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LOG_LEVEL");
    let mut bal = Proc::spawn("balancer", cmd);

    let ready = recv_until(&notify, "READY=1");
    let rec = bal.wait_for("listening for UDP packets", |_| true);
    let port: u16 = rec["port"].as_str().unwrap().parse().unwrap();
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .expect("STATUS with READY");
    assert!(
        status.contains(&format!("127.0.0.1:{port}")) && status.contains("sockets"),
        "{status}"
    );
    // READY means serving: a query is answered at once (no backend yet, so
    // the balancer's own SERVFAIL).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let m = rt
        .block_on(udp_ask(
            lo(3),
            SocketAddr::new(lo(1), port),
            "www.example.com.",
            RecordType::A,
            Duration::from_secs(5),
        ))
        .expect("an answer right after READY=1");
    assert_eq!(rcode(&m), ResponseCode::ServFail);

    bal.signal(libc::SIGTERM);
    let stopping = recv_until(&notify, "STOPPING=1");
    // "draining (SIGTERM)" when the drain has work to wait for, "exiting"
    // when the loop is already done by the time the notice goes out.
    assert!(stopping.contains("STATUS="), "{stopping}");
    assert_eq!(bal.wait_exit(), Some(0));
}

#[test]
fn no_notify_socket_no_notification() {
    // Without NOTIFY_SOCKET the balancer starts and stops as ever.
    let dir = sockdir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mname-balancer"));
    cmd.args(["-b", "127.0.0.1", "-p", "0", "-s"])
        .arg(dir.path())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LOG_LEVEL");
    let mut bal = Proc::spawn("balancer", cmd);
    bal.wait_for("listening for TCP packets", |_| true);
    bal.signal(libc::SIGTERM);
    assert_eq!(bal.wait_exit(), Some(0));
    assert_eq!(bal.stderr_text(), "");
    assert_eq!(
        bal.count("cannot notify the service manager (NOTIFY_SOCKET)", |_| {
            true
        }),
        0
    );
}

#[test]
fn an_inherited_unix_socket_exits_1_naming_it() {
    let dir = sockdir();
    let unix = UnixListener::bind(dir.path().join("not-dns")).unwrap();
    let args = ["-s", sockdir_arg(dir.path())];
    let mut bal = spawn_activated("balancer", &[unix.as_fd()], &args);
    assert_eq!(bal.wait_exit(), Some(1));
    let err = bal.stderr_text();
    assert!(
        err.contains("inherited socket fd 3 (socket activation) is an AF_UNIX socket"),
        "{err}"
    );
    assert_eq!(bal.count("invalid inherited sockets", |_| true), 1);
    assert_eq!(bal.count("listening for UDP packets", |_| true), 0);
}

#[test]
fn an_inherited_tcp_socket_that_does_not_listen_exits_1() {
    let dir = sockdir();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let args = ["-s", sockdir_arg(dir.path())];
    let mut bal = spawn_activated("balancer", &[udp.as_fd(), s.as_fd()], &args);
    assert_eq!(bal.wait_exit(), Some(1));
    let err = bal.stderr_text();
    assert!(
        err.contains("fd 4") && err.contains("not listening"),
        "{err}"
    );
}

#[test]
fn sockets_for_another_pid_are_ignored() {
    // LISTEN_PID names some other process: descriptor 3 is not ours (had
    // it been taken, its check would fail and the balancer exit 1), and
    // the balancer binds -b/-p as usual.
    let dir = sockdir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mname-balancer"));
    cmd.args(["-b", "127.0.0.1", "-p", "0", "-s"])
        .arg(dir.path())
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env_remove("LOG_LEVEL");
    let mut bal = Proc::spawn("balancer", cmd);
    let rec = bal.wait_for("listening for TCP packets", |_| true);
    assert!(rec["inherited"].is_null(), "{rec}");
    bal.signal(libc::SIGTERM);
    assert_eq!(bal.wait_exit(), Some(0));
}
