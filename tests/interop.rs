//! Interop with the real thing: three node-mname backends (npm `mname`
//! 1.5.1, `listenBalancer`) behind the balancer.  Needs Node.js and the
//! packages that `scripts/install-test-deps` installs (the README's test
//! command runs it first).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

const TWO_S: Duration = Duration::from_secs(2);

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// A node-mname backend process on `dir/file`.
fn node_backend(dir: &Path, file: &str) -> Backend {
    let script = interop_dir().join("backend.js");
    assert!(
        interop_dir()
            .join("node_modules/mname/package.json")
            .exists(),
        "npm package mname is not installed: run scripts/install-test-deps \
         (the README's test command, scripts/test, does this)"
    );
    let path = dir.join(file);
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .arg("--socket")
        .arg(&path)
        .args(["--name", file])
        .env("LOG_LEVEL", "info");
    let proc = Proc::spawn(&format!("node-mname {file}"), cmd);
    proc.wait_for("backend ready", |_| true);
    Backend {
        proc,
        path,
        name: file.to_string(),
    }
}

fn three_node_backends() -> (tempfile::TempDir, Vec<Backend>, Balancer) {
    let dir = sockdir();
    let backends: Vec<Backend> = ["5300", "5301", "5302"]
        .iter()
        .map(|n| node_backend(dir.path(), n))
        .collect();
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.wait_established(3);
    (dir, backends, bal)
}

#[tokio::test]
async fn node_mname_answers_udp_and_tcp_with_real_client_address() {
    let (_dir, backends, bal) = three_node_backends();
    let to = bal.target();
    let m = udp_ask(lo(1), to, "www.example.com.", RecordType::A, TWO_S)
        .await
        .expect("UDP answer from node-mname");
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");
    let m = tcp_ask(lo(1), to, "a5.example.com.", RecordType::A)
        .await
        .expect("TCP answer from node-mname");
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.5");

    let m = udp_ask(lo(1), to, "nope.example.com.", RecordType::A, TWO_S)
        .await
        .unwrap();
    assert_eq!(rcode(&m), ResponseCode::NXDomain, "NXDOMAIN passed through");

    let sock = UdpSocket::bind((lo(9), 0)).await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let m = udp_ask_on(&sock, to, "client.example.com.", RecordType::TXT, TWO_S)
        .await
        .unwrap();
    assert_eq!(
        txt(&m),
        format!("127.0.0.9 {port}"),
        "backend sees the client"
    );

    let mut s = tcp_connect(lo(9), to).await;
    let tcp_port = s.local_addr().unwrap().port();
    tcp_send(&mut s, &query("client.example.com.", RecordType::TXT, 3)).await;
    let m = tcp_recv(&mut s).await.unwrap();
    assert_eq!(txt(&m), format!("127.0.0.9 {tcp_port}"));

    // The backends logged nothing at warn or above for the control sessions
    // in steady state (each TCP session's end is a warn in node-mname:
    // "balancer ended connection", which is expected).
    for b in &backends {
        let bad = b.proc.find(|r| {
            r["level"].as_u64().unwrap_or(0) >= 40 && r["msg"] != "balancer ended connection"
        });
        assert!(bad.is_empty(), "{}: {bad:?}", b.name);
    }
}

#[tokio::test]
async fn node_mname_truncated_answer_then_tcp_retry() {
    let (_dir, _backends, bal) = three_node_backends();
    let to = bal.target();
    let m = udp_ask(lo(2), to, "big.example.com.", RecordType::TXT, TWO_S)
        .await
        .expect("UDP answer");
    assert!(
        m.metadata.truncation,
        "TC set by node-mname, passed through"
    );
    let m = tcp_ask(lo(2), to, "big.example.com.", RecordType::TXT)
        .await
        .expect("TCP retry answer");
    assert!(!m.metadata.truncation);
    assert!(
        m.answers.len() >= 20,
        "full answer over TCP: {}",
        m.answers.len()
    );
}

#[tokio::test]
async fn node_mname_stickiness_failover_and_revert() {
    let (dir, mut backends, bal) = three_node_backends();
    let to = bal.target();
    let mut seen: BTreeMap<u8, BTreeSet<String>> = BTreeMap::new();
    for _ in 0..3 {
        for n in 20..26 {
            seen.entry(n)
                .or_default()
                .insert(whoami(lo(n), to).await.expect("answer"));
        }
    }
    assert!(seen.values().all(|s| s.len() == 1), "sticky: {seen:?}");
    let used: BTreeSet<_> = seen.values().flatten().collect();
    assert_eq!(used.len(), 3, "spread over all three: {used:?}");

    let client = lo(20);
    let first = seen[&20].iter().next().unwrap().clone();
    let idx = backends.iter().position(|b| b.name == first).unwrap();
    backends[idx].proc.kill9();
    let other = whoami_until(client, to, "failover after kill -9", |w| w != first).await;
    assert_ne!(other, first);
    backends[idx] = node_backend(dir.path(), &first);
    whoami_until(client, to, "revert after restart", |w| w == first).await;
    bal.proc
        .wait_for("remote assigned to original primary backend", |r| {
            r["remote_ip"] == "127.0.0.20" && be_id_is(r, &first)
        });
}

#[tokio::test]
async fn ipv6_clients_get_the_no_backend_policy_with_only_node_mname() {
    let dir = sockdir();
    let backends: Vec<Backend> = ["5300", "5301"]
        .iter()
        .map(|n| node_backend(dir.path(), n))
        .collect();
    let bal = Balancer::start_binds(&["127.0.0.1", "::1"], dir.path(), FAST_TIMERS);
    bal.wait_established(2);
    // Both answered our second hello with a plain SERVER_HELLO.
    bal.proc.wait_for_nth(2, "original protocol only", |r| {
        r["msg"] == "backend speaks the original protocol"
    });
    let v6: std::net::SocketAddr = format!("[::1]:{}", bal.port).parse().unwrap();
    let sock = UdpSocket::bind("[::1]:0").await.unwrap();
    let m = udp_ask_on(&sock, v6, "www.example.com.", RecordType::A, TWO_S)
        .await
        .expect("SERVFAIL, not silence");
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    // IPv4 clients are served as ever, and node-mname has logged nothing at
    // warn or above about the balancer.
    assert!(whoami(lo(40), bal.target()).await.is_some());
    for b in &backends {
        let bad = b.proc.find(|r| r["level"].as_u64().unwrap_or(0) >= 40);
        assert!(bad.is_empty(), "{}: {bad:?}", b.name);
    }
}

/// The transparency battery with node-mname: wherever node-mname answers a
/// message itself (in a frame of our own), the balancer gives its client
/// the same bytes, over UDP and TCP.  Where node-mname says nothing (it
/// drops what it cannot parse), the balancer answers FORMERR if it cannot
/// parse it either, or SERVFAIL when its query timeout passes, never
/// anything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_mname_answers_the_battery_the_same_through_the_balancer() {
    use common::battery::*;
    let dir = sockdir();
    let be = node_backend(dir.path(), "5300");
    let bal = Balancer::start(dir.path(), &[]);
    bal.wait_established(1);
    let to = bal.target();
    let msgs = battery();
    let direct = direct_udp(&be.path, &msgs);
    let sock = UdpSocket::bind("127.0.0.77:0").await.unwrap();
    let mut silent = Vec::new();
    for ((what, m), want) in msgs.iter().zip(&direct) {
        let got = udp_exchange(&sock, to, m, TWO_S + Duration::from_secs(1)).await;
        match want {
            Some(want) => assert_eq!(got.as_ref(), Some(want), "UDP, {what}"),
            None => {
                silent.push(*what);
                // FORMERR when the balancer cannot parse it either; the
                // timeout's SERVFAIL when it forwarded what node-mname
                // then dropped.
                if let Some(a) = got {
                    let rcode = hickory_proto::op::Message::from_vec(&a)
                        .unwrap()
                        .metadata
                        .response_code;
                    assert!(
                        matches!(rcode, ResponseCode::FormErr | ResponseCode::ServFail),
                        "{what}: {rcode:?}"
                    );
                }
            }
        }
    }
    // node-mname answers most of it; say which it does not.
    eprintln!("node-mname silent on: {silent:?}");
    assert!(
        silent.len() < msgs.len() / 2,
        "node-mname silent on {silent:?}"
    );

    // TCP, pipelined: every answer node-mname gives directly comes through.
    let want = answers_by_id(&direct_tcp(&be.path, &msgs));
    let mut c = tcp_connect(lo(78), to).await;
    tokio::io::AsyncWriteExt::write_all(&mut c, &framed_all(&msgs))
        .await
        .unwrap();
    let mut got = BTreeMap::new();
    while got.len() < msgs.len() {
        let Some(m) = tcp_recv_raw(&mut c).await else {
            break;
        };
        got.insert(u16::from_be_bytes([m[0], m[1]]), without_server_cookie(m));
    }
    for (id, answer) in &want {
        assert_eq!(got.get(id), Some(answer), "TCP, id {id}");
    }
}
