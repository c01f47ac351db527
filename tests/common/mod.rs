//! Test harness: starts the real binaries (`mname-balancer`,
//! `mname-demo-backend`) as child processes on loopback, captures their
//! bunyan logs, and waits on readiness (a log line, an answer) with a
//! deadline, never a bare sleep.  Processes are killed by PID on drop, and
//! their logs are printed if the test failed.

#![allow(dead_code)]

pub(crate) mod battery;
pub(crate) mod cached;
pub(crate) mod stats;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// How long any single readiness wait may take before the test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// Timer flags that make faults play out in about a second.
pub(crate) const FAST_TIMERS: &[&str] = &[
    "--scan-interval",
    "200ms",
    "--heartbeat-interval",
    "200ms",
    "--heartbeat-timeout",
    "1s",
    "--reconnect-delay",
    "100ms",
    "--reconnect-step",
    "100ms",
    "--reconnect-max",
    "300ms",
    "--connect-timeout",
    "2s",
];

/// A child process whose stdout lines are collected.
pub(crate) struct Proc {
    pub name: String,
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr; joined once the process has
    /// exited, so that every line it wrote has been collected.
    collectors: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    })
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let collectors = vec![
            collect(child.stdout.take().unwrap(), lines.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Proc {
            name: name.to_string(),
            child,
            lines,
            stderr,
            collectors,
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every stdout line that parses as JSON.
    pub(crate) fn records(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub(crate) fn stdout_text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub(crate) fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Records matching `pred`.
    pub(crate) fn find(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.records().into_iter().filter(|r| pred(r)).collect()
    }

    /// Wait until at least `n` records match `pred`; return the n-th.
    pub(crate) fn wait_for_nth(
        &self,
        n: usize,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let found = self.find(&pred);
            if found.len() >= n {
                return found[n - 1].clone();
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "{}: no log record #{n} for {what} within {DEADLINE:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for a record with this `msg` (and matching `pred`).
    pub(crate) fn wait_for(&self, msg: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_nth(1, msg, |r| r["msg"] == msg && pred(r))
    }

    /// Count records with this `msg` matching `pred`.
    pub(crate) fn count(&self, msg: &str, pred: impl Fn(&Value) -> bool) -> usize {
        self.find(|r| r["msg"] == msg && pred(r)).len()
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID has no memory effects.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// `kill -9` and reap.
    pub(crate) fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Wait for the process to exit by itself; its exit code. Every line
    /// it wrote has been collected when this returns.
    pub(crate) fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                for collector in self.collectors.drain(..) {
                    let _ = collector.join();
                }
                return st.code();
            }
            if start.elapsed() > DEADLINE {
                panic!("{}: did not exit within {DEADLINE:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident set size in KiB, from /proc.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- {} stdout -----\n{}", self.name, self.stdout_text());
            eprintln!("----- {} stderr -----\n{}", self.name, self.stderr_text());
        }
    }
}

/// The balancer under test.
pub(crate) struct Balancer {
    pub proc: Proc,
    pub port: u16,
    pub addr: IpAddr,
}

impl Balancer {
    /// Start on 127.0.0.1, a free port, debug logs, with `extra` flags.
    pub(crate) fn start(sockdir: &Path, extra: &[&str]) -> Balancer {
        Self::start_on("127.0.0.1", sockdir, extra)
    }

    pub(crate) fn start_on(bind: &str, sockdir: &Path, extra: &[&str]) -> Balancer {
        Self::start_binds(&[bind], sockdir, extra)
    }

    /// Start listening on every address in `binds` (the first is the
    /// address [`Balancer::target`] aims at).
    pub(crate) fn start_binds(binds: &[&str], sockdir: &Path, extra: &[&str]) -> Balancer {
        let bind = binds[0];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mname-balancer"));
        for b in binds {
            cmd.args(["-b", b]);
        }
        cmd.args(["-p", "0", "-l", "debug", "-s"])
            .arg(sockdir)
            .args(extra)
            .env_remove("LOG_LEVEL");
        let proc = Proc::spawn("balancer", cmd);
        let rec = proc.wait_for("listening for TCP packets", |_| true);
        let port = rec["port"].as_str().unwrap().parse().unwrap();
        Balancer {
            port,
            addr: bind.parse().unwrap(),
            proc,
        }
    }

    pub(crate) fn target(&self) -> SocketAddr {
        let ip = if self.addr.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.addr
        };
        SocketAddr::new(ip, self.port)
    }

    /// Ask for the counters (SIGUSR1) until `pred` holds for the latest
    /// `counters` record, or the deadline passes (then panic with `what`).
    pub(crate) async fn counters_until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            self.proc.signal(libc::SIGUSR1);
            if let Some(last) = self.proc.find(|r| r["msg"] == "counters").pop()
                && pred(&last)
            {
                return last;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{what}: not within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until `n` backends have completed their hello, counting
    /// "backend socket established" records.
    pub(crate) fn wait_established(&self, n: usize) {
        self.proc
            .wait_for_nth(n, "backend socket established", |r| {
                r["msg"] == "backend socket established"
            });
    }
}

/// The `mname-demo-backend` binary.  It belongs to another package of the
/// workspace (`crates/backend`), and Cargo names only a package's own
/// binaries in `CARGO_BIN_EXE_*`, so it is looked for where Cargo puts every
/// binary of the workspace: beside the balancer.  A test run of the whole
/// workspace builds it (the backend crate's own integration test makes
/// Cargo build its binaries); a run of this package alone does not.
pub(crate) fn demo_backend_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_mname-balancer")).with_file_name("mname-demo-backend");
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build --workspace --bins`, or run \
         the tests of the whole workspace (`cargo nextest run --workspace`)",
        bin.display()
    );
    bin
}

/// A demo backend process on `dir/file`, answering `whoami` with `name`.
pub(crate) struct Backend {
    pub proc: Proc,
    pub path: PathBuf,
    pub name: String,
}

impl Backend {
    pub(crate) fn start(dir: &Path, file: &str) -> Backend {
        Self::start_with(dir, file, &[])
    }

    /// Start with extra flags (`--delay MS`, `--no-answer`, `--log-queries`).
    pub(crate) fn start_with(dir: &Path, file: &str, extra: &[&str]) -> Backend {
        let path = dir.join(file);
        let mut cmd = Command::new(demo_backend_bin());
        cmd.arg("-s").arg(&path).args(["-n", file]).args(extra);
        let proc = Proc::spawn(&format!("backend {file}"), cmd);
        proc.wait_for("backend ready", |_| true);
        Backend {
            proc,
            path,
            name: file.to_string(),
        }
    }
}

/// Build a query message.
pub(crate) fn query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

/// One UDP query from `src` (port 0) to `to`; the answer, or None after
/// `wait`.
pub(crate) async fn udp_ask(
    src: IpAddr,
    to: SocketAddr,
    name: &str,
    rtype: RecordType,
    wait: Duration,
) -> Option<Message> {
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap();
    udp_ask_on(&sock, to, name, rtype, wait).await
}

/// One UDP query on an existing socket.
pub(crate) async fn udp_ask_on(
    sock: &UdpSocket,
    to: SocketAddr,
    name: &str,
    rtype: RecordType,
    wait: Duration,
) -> Option<Message> {
    let id = rand_id();
    sock.send_to(&query(name, rtype, id), to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        if let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.id == id
        {
            return Some(m);
        }
    }
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Connect over TCP from `src`.
pub(crate) async fn tcp_connect(src: IpAddr, to: SocketAddr) -> TcpStream {
    let s = if src.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .unwrap();
    s.bind(SocketAddr::new(src, 0)).unwrap();
    tokio::time::timeout(DEADLINE, s.connect(to))
        .await
        .expect("TCP connect timed out")
        .unwrap()
}

/// Write one length-prefixed DNS message.
pub(crate) async fn tcp_send(s: &mut TcpStream, msg: &[u8]) {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    s.write_all(&out).await.unwrap();
}

/// Read one length-prefixed DNS message, None at EOF or after the deadline.
pub(crate) async fn tcp_recv(s: &mut TcpStream) -> Option<Message> {
    let read = async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut msg).await.ok()?;
        Message::from_vec(&msg).ok()
    };
    tokio::time::timeout(DEADLINE, read).await.ok().flatten()
}

/// Read one length-prefixed DNS message as bytes, None at EOF or after
/// the deadline.
pub(crate) async fn tcp_recv_raw(s: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.ok()?;
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut msg).await.ok()?;
        Some(msg)
    };
    tokio::time::timeout(DEADLINE, read).await.ok().flatten()
}

/// One query over a fresh TCP connection from `src`.
pub(crate) async fn tcp_ask(
    src: IpAddr,
    to: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Option<Message> {
    let mut s = tcp_connect(src, to).await;
    tcp_send(&mut s, &query(name, rtype, 4242)).await;
    tcp_recv(&mut s).await
}

/// The first TXT string of the first answer.
pub(crate) fn txt(m: &Message) -> String {
    m.answers
        .first()
        .map(|r| r.data.to_string())
        .unwrap_or_default()
}

pub(crate) fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// Which backend answers `whoami` for `src` over UDP (one try, 2 s).
pub(crate) async fn whoami(src: IpAddr, to: SocketAddr) -> Option<String> {
    udp_ask(
        src,
        to,
        "whoami.example.com.",
        RecordType::TXT,
        Duration::from_secs(2),
    )
    .await
    .map(|m| txt(&m))
}

/// Ask `whoami` from `src` until `pred` holds for the answer, or the
/// deadline passes (then panic with `what`).
pub(crate) async fn whoami_until(
    src: IpAddr,
    to: SocketAddr,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let answer = udp_ask(
            src,
            to,
            "whoami.example.com.",
            RecordType::TXT,
            Duration::from_millis(500),
        )
        .await;
        if let Some(name) = answer.map(|m| txt(&m))
            && pred(&name)
        {
            return name;
        }
        if start.elapsed() > DEADLINE {
            panic!("{what}: not reached within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 127.0.0.N as a source address.
pub(crate) fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A socket directory (short path: sun_path holds 108 bytes).
pub(crate) fn sockdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mnb")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Three demo backends 5300..5302 and a balancer with fast timers, all
/// hellos done.
pub(crate) fn three_backends(extra: &[&str]) -> (tempfile::TempDir, Vec<Backend>, Balancer) {
    let dir = sockdir();
    let backends: Vec<Backend> = ["5300", "5301", "5302"]
        .iter()
        .map(|n| Backend::start(dir.path(), n))
        .collect();
    let mut args = FAST_TIMERS.to_vec();
    args.extend_from_slice(extra);
    let bal = Balancer::start(dir.path(), &args);
    bal.wait_established(3);
    (dir, backends, bal)
}

/// Whether a log record's `be_id` is the backend named `name` (demo
/// backends are named after their socket file, which is their id).
pub(crate) fn be_id_is(r: &Value, name: &str) -> bool {
    r["be_id"].as_u64().is_some_and(|id| id.to_string() == name)
}
