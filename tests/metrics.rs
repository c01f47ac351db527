//! The Prometheus endpoint (`--metrics`) of the real binary, with real
//! backends: what is scraped parses with the Prometheus project's own
//! Python parsers (`prometheus_client`, installed by
//! `scripts/install-test-deps`), in both formats served, and its counters
//! match the traffic sent exactly.  Also: drops by reason, paths other than
//! /metrics, the connection limit and header timeout, and bad addresses.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use mname_balancer::ops::metrics;
use serde::Deserialize;
use tokio::net::UdpSocket;

/// The Accept header Prometheus sends (it offers OpenMetrics first).
const ACCEPT_OPENMETRICS: &str =
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1";

/// Reads an exposition on stdin with prometheus_client's parser for the
/// format named in argv[1]; prints its families and samples as JSON.
const PARSE_PY: &str = r#"
import json, sys
if sys.argv[1] == "openmetrics":
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
else:
    from prometheus_client.parser import text_string_to_metric_families
out = [
    {"name": f.name, "type": f.type,
     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())
]
json.dump(out, sys.stdout, allow_nan=False)
"#;

#[derive(Debug, Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape.
struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    /// Parse `body` with the real parser for `format`; panics (with the
    /// parser's complaint) if it is not a valid exposition.
    fn parse(body: &str, format: metrics::Format) -> Scrape {
        let name = match format {
            metrics::Format::OpenMetrics => "openmetrics",
            metrics::Format::Text => "text",
        };
        // Where scripts/install-test-deps puts prometheus-client.
        let pydeps =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/python");
        let pythonpath = match std::env::var_os("PYTHONPATH") {
            Some(p) => {
                std::env::join_paths(std::iter::once(pydeps).chain(std::env::split_paths(&p)))
                    .unwrap()
            }
            None => pydeps.into_os_string(),
        };
        let mut child = Command::new("python3")
            .args(["-c", PARSE_PY, name])
            .env("PYTHONPATH", pythonpath)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("No module named 'prometheus_client'"),
            "the Python package prometheus-client is not installed: run \
             scripts/install-test-deps (scripts/test does this)"
        );
        assert!(
            out.status.success(),
            "{name} parser rejected the exposition: {err}\n{body}"
        );
        Scrape {
            families: serde_json::from_slice(&out.stdout).unwrap(),
        }
    }

    fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|f| &f.samples)
    }

    /// The one sample named `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "samples {name} {labels:?}: {found:?}");
        found[0].value
    }

    /// Values of `name` by the value of `label`.
    fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.samples()
            .filter(|s| s.name == name)
            .filter_map(|s| Some((s.labels.get(label)?.clone(), s.value)))
            .collect()
    }

    /// Check a histogram family: per backend, buckets are cumulative in
    /// increasing `le`, the last is +Inf and equals `_count`.  Returns the
    /// count per backend.
    fn histogram(&self, family: &str) -> BTreeMap<String, f64> {
        let counts = self.by(&format!("{family}_count"), "backend");
        for (backend, count) in &counts {
            let buckets: Vec<(f64, f64)> = self
                .samples()
                .filter(|s| s.name == format!("{family}_bucket") && s.labels["backend"] == *backend)
                .map(|s| (s.labels["le"].parse::<f64>().unwrap(), s.value))
                .collect();
            assert!(buckets.len() > 1, "{family} {backend}: {buckets:?}");
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} {backend}: not cumulative: {buckets:?}"
            );
            let last = buckets[buckets.len() - 1];
            assert_eq!(last, (f64::INFINITY, *count), "{family} {backend}");
            let sum = self.get(&format!("{family}_sum"), &[("backend", backend)]);
            assert!(
                sum >= 0.0 && (*count > 0.0 || sum == 0.0),
                "{family} sum {sum}"
            );
        }
        counts
    }
}

/// An HTTP response, as read by [`http`].
struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Send one HTTP/1.1 request on a fresh connection and read the reply
/// until the server closes (it serves one request per connection).
fn http(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The metrics address the balancer logged (it was given port 0).
fn metrics_addr(bal: &Balancer) -> SocketAddr {
    let rec = bal.proc.wait_for("metrics listening", |_| true);
    let port: u16 = rec["port"].as_str().unwrap().parse().unwrap();
    SocketAddr::new(rec["address"].as_str().unwrap().parse().unwrap(), port)
}

/// GET /metrics in `format`, checked (status, content type, length) and
/// parsed.
fn scrape(addr: SocketAddr, format: metrics::Format) -> Scrape {
    let accept = match format {
        metrics::Format::OpenMetrics => Some(ACCEPT_OPENMETRICS),
        metrics::Format::Text => None,
    };
    let r = http(addr, "GET", "/metrics", accept);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], format.content_type());
    assert_eq!(r.headers["content-length"], r.body.len().to_string());
    if format == metrics::Format::OpenMetrics {
        assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    }
    Scrape::parse(&r.body, format)
}

/// Scrape (OpenMetrics) until `pred` holds, or panic after the deadline.
fn scrape_until(addr: SocketAddr, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let s = scrape(addr, metrics::Format::OpenMetrics);
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

const BACKENDS: [&str; 3] = ["5300", "5301", "5302"];

#[tokio::test]
async fn counters_match_the_traffic_sent() {
    let (_dir, _backends, bal) = three_backends(&["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&bal);
    let to = bal.target();
    let two_s = std::time::Duration::from_secs(2);

    // UDP: client 127.0.0.(10+i) asks i+1 times; count who answered.
    let mut udp: BTreeMap<String, u64> = BTreeMap::new();
    let mut clients: BTreeSet<IpAddr> = BTreeSet::new();
    for i in 0..4u8 {
        let src = lo(10 + i);
        clients.insert(src);
        for _ in 0..=i {
            let m = udp_ask(src, to, "whoami.example.com.", RecordType::TXT, two_s)
                .await
                .expect("a UDP answer");
            *udp.entry(txt(&m)).or_default() += 1;
        }
    }
    let udp_total: u64 = udp.values().sum();
    assert_eq!(udp_total, 10);
    // TCP: one session each from three more clients.
    let mut tcp: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..3u8 {
        let src = lo(20 + i);
        clients.insert(src);
        let m = tcp_ask(src, to, "whoami.example.com.", RecordType::TXT)
            .await
            .expect("a TCP answer");
        *tcp.entry(txt(&m)).or_default() += 1;
    }

    // The TCP sessions end when the balancer sees the clients close.
    let om = scrape_until(addr, "TCP sessions closed", |s| {
        s.get("mname_balancer_tcp_sessions_open", &[]) == 0.0
    });
    let text = scrape(addr, metrics::Format::Text);

    // Every metric of the code's table, with its type, in OpenMetrics.
    let families: BTreeMap<&str, &str> = om
        .families
        .iter()
        .map(|f| (f.name.as_str(), f.kind.as_str()))
        .collect();
    let expected: BTreeMap<String, &str> = metrics::ALL
        .iter()
        .map(|m| (m.family_name(), m.kind.as_str()))
        .collect();
    let expected: BTreeMap<&str, &str> = expected.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(families, expected);

    for s in [&om, &text] {
        let get = |name: &str, labels: &[(&str, &str)]| s.get(name, labels);
        assert_eq!(get("mname_balancer_udp_received_total", &[]), 10.0);
        assert_eq!(get("mname_balancer_udp_forwarded_total", &[]), 10.0);
        assert_eq!(get("mname_balancer_udp_replies_total", &[]), 10.0);
        assert_eq!(get("mname_balancer_udp_replies_failed_total", &[]), 0.0);
        assert_eq!(get("mname_balancer_udp_timeouts_total", &[]), 0.0);
        assert_eq!(get("mname_balancer_tcp_accepted_total", &[]), 3.0);
        assert_eq!(get("mname_balancer_replayed_total", &[]), 0.0);
        assert_eq!(get("mname_balancer_hedged_total", &[]), 0.0);
        assert_eq!(get("mname_balancer_hedge_wins_total", &[]), 0.0);
        assert_eq!(get("mname_balancer_inflight_queries", &[]), 0.0);
        assert_eq!(
            get("mname_balancer_remotes_tracked", &[]),
            clients.len() as f64
        );
        assert_eq!(get("mname_balancer_draining", &[]), 0.0);
        assert_eq!(
            get(
                "mname_balancer_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
        for (family, n) in [
            ("mname_balancer_udp_dropped_total", 10),
            ("mname_balancer_answers_dropped_total", 3),
            ("mname_balancer_hedges_not_sent_total", 2),
            ("mname_balancer_synthesized_answers_total", 6),
            ("mname_balancer_tcp_dropped_total", 4),
        ] {
            let by_reason = s.by(family, "reason");
            assert_eq!(by_reason.len(), n, "{family}: {by_reason:?}");
            assert!(by_reason.values().all(|v| *v == 0.0), "{by_reason:?}");
        }
        let closed = s.by("mname_balancer_tcp_closed_total", "reason");
        assert_eq!(closed.len(), 11, "{closed:?}");
        assert_eq!(
            closed.values().sum::<f64>() + get("mname_balancer_tcp_sessions_open", &[]),
            3.0,
            "every session accepted is open or closed: {closed:?}"
        );

        let mut remotes = 0.0;
        for be in BACKENDS {
            let b = [("backend", be)];
            let want_udp = udp.get(be).copied().unwrap_or(0) as f64;
            let want_tcp = tcp.get(be).copied().unwrap_or(0) as f64;
            let udp_labels = [("backend", be), ("proto", "udp")];
            let tcp_labels = [("backend", be), ("proto", "tcp")];
            assert_eq!(
                get("mname_balancer_backend_requests_total", &udp_labels),
                want_udp,
                "{be}"
            );
            assert_eq!(
                get("mname_balancer_backend_answers_total", &udp_labels),
                want_udp,
                "{be}"
            );
            assert_eq!(
                get("mname_balancer_backend_requests_total", &tcp_labels),
                want_tcp,
                "{be}"
            );
            assert_eq!(get("mname_balancer_backend_up", &b), 1.0, "{be}");
            assert_eq!(
                get(
                    "mname_balancer_backend_state_info",
                    &[("backend", be), ("state", "ok"), ("ipv6", "true")]
                ),
                1.0
            );
            assert_eq!(get("mname_balancer_backend_faults_total", &b), 0.0);
            assert_eq!(get("mname_balancer_backend_stuck_total", &b), 0.0);
            assert_eq!(get("mname_balancer_backend_inflight_queries", &b), 0.0);
            remotes += get("mname_balancer_backend_remotes", &b);
        }
        assert_eq!(remotes, clients.len() as f64);

        // One latency observation per UDP answer.
        let latency = s.histogram("mname_balancer_backend_forward_latency_seconds");
        for be in BACKENDS {
            assert_eq!(
                latency[be],
                udp.get(be).copied().unwrap_or(0) as f64,
                "{be}"
            );
        }
        let heartbeats = s.histogram("mname_balancer_backend_heartbeat_rtt_seconds");
        assert_eq!(heartbeats.len(), 3);
    }
}

#[tokio::test]
async fn drops_are_counted_by_reason() {
    let (_dir, _backends, bal) = three_backends(&["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&bal);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = bal.target();
    let mut response = query("www.example.com.", RecordType::A, 7);
    response[2] |= 0x80; // QR: a response, not a query
    let malformed = [0, 8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]; // one question, absent
    let oversized = vec![0u8; 1600];
    for dgram in [
        &b"\x00\x01\x02\x03\x04"[..],
        &response,
        &malformed,
        &oversized,
    ] {
        sock.send_to(dgram, to).await.unwrap();
    }
    // One datagram socket, read in order: once this is answered, the
    // datagrams before it have been counted.
    let answer = udp_ask_on(
        &sock,
        to,
        "www.example.com.",
        RecordType::A,
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("an answer");
    assert_eq!(rcode(&answer), ResponseCode::NoError);

    let s = scrape(addr, metrics::Format::OpenMetrics);
    let dropped = s.by("mname_balancer_udp_dropped_total", "reason");
    let want: BTreeMap<String, f64> = [
        ("oversized", 1.0),
        ("short", 1.0),
        ("response", 1.0),
        ("malformed", 1.0),
        ("no_backend", 0.0),
        ("stuck", 0.0),
        ("inflight_full", 0.0),
        ("acl", 0.0),
        ("rate_limit", 0.0),
        ("resend", 0.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(dropped, want);
    let received = s.get("mname_balancer_udp_received_total", &[]);
    let forwarded = s.get("mname_balancer_udp_forwarded_total", &[]);
    assert_eq!((received, forwarded), (5.0, 1.0));
    assert_eq!(received, forwarded + dropped.values().sum::<f64>());
    // The dropped datagrams made no remote.
    assert_eq!(s.get("mname_balancer_remotes_tracked", &[]), 1.0);
}

#[tokio::test]
async fn no_backend_drops_and_synthesized_answers_are_counted() {
    let dir = sockdir();
    let bal = Balancer::start(dir.path(), &["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&bal);
    let m = udp_ask(
        lo(1),
        bal.target(),
        "www.example.com.",
        RecordType::A,
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("the no-backend answer");
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    let mut conn = tcp_connect(lo(2), bal.target()).await;
    assert!(tcp_recv(&mut conn).await.is_none(), "closed at once");

    let s = scrape_until(addr, "the TCP refusal counted", |s| {
        s.get("mname_balancer_tcp_accepted_total", &[]) == 1.0
    });
    for s in [&s, &scrape(addr, metrics::Format::Text)] {
        assert_eq!(
            s.get(
                "mname_balancer_udp_dropped_total",
                &[("reason", "no_backend")]
            ),
            1.0
        );
        assert_eq!(
            s.get(
                "mname_balancer_synthesized_answers_total",
                &[("reason", "no_backend")]
            ),
            1.0
        );
        assert_eq!(
            s.get(
                "mname_balancer_tcp_dropped_total",
                &[("reason", "no_backend")]
            ),
            1.0
        );
        // No backend: the per-backend families are there, empty.
        assert!(
            s.samples()
                .all(|x| !x.name.starts_with("mname_balancer_backend_")),
            "no backend samples"
        );
    }
}

#[test]
fn other_paths_and_methods_are_refused() {
    let dir = sockdir();
    let bal = Balancer::start(dir.path(), &["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&bal);
    for path in ["/", "/other", "/metrics/x", "/metricsx"] {
        let r = http(addr, "GET", path, None);
        assert_eq!(r.status, 404, "{path}");
    }
    let r = http(addr, "POST", "/metrics", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, HEAD");
    let r = http(addr, "HEAD", "/metrics", None);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // A query string is not part of the path.
    assert_eq!(http(addr, "GET", "/metrics?x=1", None).status, 200);
}

/// Whether the server closed `s` without sending anything (EOF or reset).
fn closed_without_reply(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn connections_are_bounded_and_idle_ones_cut_off() {
    let dir = sockdir();
    let bal = Balancer::start(dir.path(), &["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&bal);
    // Eight connections that send nothing hold every slot...
    let mut idle: Vec<TcpStream> = (0..metrics::MAX_CONNECTIONS)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s
        })
        .collect();
    // ...so a ninth is closed unanswered, even with a whole request.
    let mut ninth = TcpStream::connect(addr).unwrap();
    ninth.set_read_timeout(Some(DEADLINE)).unwrap();
    let _ = ninth.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_without_reply(&mut ninth), "ninth connection served");
    // The idle ones are cut off by the header timeout, with no 200.
    for s in &mut idle {
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        assert!(
            !String::from_utf8_lossy(&reply).contains(" 200 "),
            "an idle connection got a reply"
        );
    }
    // Their slots are free again.
    let start = Instant::now();
    while http(addr, "GET", "/metrics", None).status != 200 {
        assert!(start.elapsed() < DEADLINE);
    }
    // The refusal is logged (waited for: the log is read by another thread).
    bal.proc
        .wait_for("metrics: too many connections (closing)", |_| true);
}

fn exits_1_with(args: &[&str], needle: &str) {
    let dir = sockdir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mname-balancer"));
    cmd.args(["-b", "127.0.0.1", "-p", "0", "-s"])
        .arg(dir.path())
        .args(args)
        .env_remove("LOG_LEVEL");
    let mut proc = Proc::spawn("balancer", cmd);
    assert_eq!(proc.wait_exit(), Some(1), "{args:?}");
    let err = proc.stderr_text();
    assert!(err.contains(needle), "{args:?}: {needle:?} not in {err:?}");
}

#[test]
fn bad_metrics_addresses_exit_1() {
    for bad in ["nonsense", "127.0.0.1", "127.0.0.1:99999", "[::1]", ":9100"] {
        exits_1_with(&["--metrics", bad], "invalid address for --metrics");
    }
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    exits_1_with(&["--metrics", &at], &format!("metrics listener {at}"));
}
