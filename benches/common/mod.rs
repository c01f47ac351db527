//! What the process-level benchmarks share: a query builder, and starting
//! three demo backends and the release balancer in front of them (killed
//! by PID when dropped, also when a benchmark panics).  Each benchmark
//! uses part of it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Child processes, killed and reaped on drop.
pub(crate) struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `www.example.com A` with DNS id `id`.
pub(crate) fn query(id: u16) -> Vec<u8> {
    let mut q = vec![0u8; 12];
    q[0..2].copy_from_slice(&id.to_be_bytes());
    q[2] = 0x01; // RD
    q[5] = 1; // one question
    for label in ["www", "example", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The `mname-demo-backend` binary, beside the balancer's: it belongs to
/// the backend crate, so Cargo gives this package no `CARGO_BIN_EXE_*` for
/// it, and `cargo bench` builds only this package's binaries.
pub(crate) fn demo_backend_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_mname-balancer")).with_file_name("mname-demo-backend");
    assert!(
        bin.is_file(),
        "{} not found: build it first with `cargo build --release --workspace --bins`",
        bin.display()
    );
    bin
}

/// A balancer on 127.0.0.1:`port` with a stats socket, in front of three
/// demo backends, all under `dir`.
pub(crate) struct Setup {
    /// Held for its drop, which stops the processes.
    pub _procs: Procs,
    pub balancer_pid: u32,
    pub to: SocketAddr,
    pub stats: PathBuf,
}

/// Start it, with `extra` balancer flags, and wait (bounded) until a query
/// from 127.0.0.2 is answered by a backend.
pub(crate) fn start(dir: &Path, port: u16, extra: &[&str]) -> Setup {
    let socks = dir.join("sockets");
    std::fs::create_dir(&socks).unwrap();
    let stats = dir.join("stats.sock");
    let mut procs = Procs(Vec::new());
    for id in ["5300", "5301", "5302"] {
        let mut c = Command::new(demo_backend_bin())
            .arg("-s")
            .arg(socks.join(id))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        procs.0.push(c);
    }
    // BENCH_LOG=FILE keeps the balancer's log, at info, in FILE (to
    // measure its volume); else it logs warnings to nowhere.
    let log = std::env::var_os("BENCH_LOG");
    let (level, out) = match &log {
        Some(path) => ("info", Stdio::from(std::fs::File::create(path).unwrap())),
        None => ("warn", Stdio::null()),
    };
    let bal = Command::new(env!("CARGO_BIN_EXE_mname-balancer"))
        .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-l", level])
        .arg("-s")
        .arg(&socks)
        .arg("-S")
        .arg(&stats)
        .args(extra)
        .stdout(out)
        .spawn()
        .unwrap();
    let balancer_pid = bal.id();
    procs.0.push(bal);
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let ready = UdpSocket::bind("127.0.0.2:0").unwrap();
    ready
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    loop {
        let _ = ready.send_to(&query(1), to);
        if matches!(ready.recv(&mut buf), Ok(n) if n > 3 && buf[3] & 0x0f == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "balancer did not come up");
    }
    Setup {
        _procs: procs,
        balancer_pid,
        to,
        stats,
    }
}

/// One stats socket request; the document, or `None`.
pub(crate) fn stats_request(path: &Path, request: &str) -> Option<Vec<u8>> {
    let mut s = UnixStream::connect(path).ok()?;
    s.write_all(format!("{request}\n").as_bytes()).ok()?;
    let mut doc = Vec::new();
    s.read_to_end(&mut doc).ok()?;
    Some(doc)
}
