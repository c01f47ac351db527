//! Backends that misbehave: garbage, protocol violations, a hung process, a
//! backend that never reads, TCP sessions that are slow to start; and one
//! that only looks odd, writing each answer frame in two pieces as
//! node-mname does.  Each is a real AF_UNIX server (hand-written here where
//! the behaviour needs it) behind the real balancer binary.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;

/// A hand-written backend: every accepted connection is served by `serve`
/// on its own thread, given the first frame type it received.
fn raw_backend(path: &Path, serve: fn(UnixStream, u32)) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let mut t = [0u8; 4];
                if s.read_exact(&mut t).is_ok() {
                    serve(s, u32::from_le_bytes(t));
                }
            });
        }
    });
}

fn put(s: &mut UnixStream, words: &[u32]) {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let _ = s.write_all(&bytes);
}

/// Answer hellos and heartbeats like a good backend until the stream ends.
fn behave(mut s: UnixStream) {
    let mut t = [0u8; 4];
    while s.read_exact(&mut t).is_ok() {
        match u32::from_le_bytes(t) {
            1 => put(&mut s, &[1001]),
            4 => put(&mut s, &[1004]),
            _ => return,
        }
    }
}

fn be_path_is(r: &serde_json::Value, path: &Path) -> bool {
    r["be_path"] == path.display().to_string()
}

/// node-mname writes each OUTBOUND_UDP frame as two writes, its header
/// then its message.  This backend does the same, with the message 2 ms
/// behind its header, so the balancer reads the header alone every time
/// and must join the two (the loop gives the CPU away once and reads
/// again, then waits for the message if it is not there yet).
#[tokio::test]
async fn answer_frames_written_in_two_pieces_are_joined() {
    let dir = sockdir();
    raw_backend(&dir.path().join("pieces"), |mut s, first| {
        if first != 1 {
            return;
        }
        put(&mut s, &[1001]);
        let mut frames = mname_balancer_protocol::FrameBuffer::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            frames.extend(&buf[..n]);
            let mut out = Vec::new();
            while let Ok(Some(f)) = frames.next_frame() {
                match f {
                    mname_balancer_protocol::Frame::ClientHello => put(&mut s, &[1001]),
                    mname_balancer_protocol::Frame::ClientHeartbeat => put(&mut s, &[1004]),
                    mname_balancer_protocol::Frame::InboundUdp {
                        addr,
                        port,
                        payload,
                    } => {
                        let mut answer = payload.to_vec();
                        answer[2] |= 0x80;
                        mname_balancer_protocol::Frame::OutboundUdp {
                            addr,
                            port,
                            payload: &answer,
                        }
                        .encode(&mut out);
                    }
                    _ => return,
                }
            }
            if !out.is_empty() {
                let (header, message) = out.split_at(16);
                let _ = s.write_all(header);
                std::thread::sleep(Duration::from_millis(2));
                let _ = s.write_all(message);
            }
        }
    });
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.wait_established(1);
    let sock = UdpSocket::bind((lo(9), 0)).await.unwrap();
    for id in 1..=40u16 {
        let q = query("www.example.com.", RecordType::A, id);
        sock.send_to(&q, bal.target()).await.unwrap();
        let mut got = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut got))
            .await
            .unwrap_or_else(|_| panic!("no answer to query {id}"))
            .unwrap();
        let m = Message::from_vec(&got[..n]).unwrap();
        assert_eq!(m.id, id);
        assert!(m.message_type == hickory_proto::op::MessageType::Response);
    }
    assert_eq!(
        bal.proc
            .count("backend faulted (reset and reconnect)", |_| true),
        0
    );
}

#[tokio::test]
async fn garbage_after_hello_faults_and_reconnects() {
    let dir = sockdir();
    let bad = dir.path().join("garbage");
    raw_backend(&bad, |mut s, _| {
        put(&mut s, &[1001, 9999]);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let _good = Backend::start(dir.path(), "5300");
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.proc
        .wait_for("invalid frame type", |r| r["frame_type"] == 9999);
    bal.proc
        .wait_for("backend faulted (reset and reconnect)", |r| {
            be_path_is(r, &bad)
        });
    // Reconnected (and faulted again) with back-off, while the good
    // backend keeps answering.
    bal.proc.wait_for_nth(3, "reconnects", |r| {
        r["msg"] == "connecting to backend" && be_path_is(r, &bad)
    });
    assert_eq!(whoami(lo(1), bal.target()).await.as_deref(), Some("5300"));
}

#[tokio::test]
async fn frame_before_hello_is_errant() {
    let dir = sockdir();
    raw_backend(&dir.path().join("early"), |mut s, _| {
        put(&mut s, &[1004]);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.proc
        .wait_for("errant frame before hello", |r| r["frame_type"] == 1004);
}

#[tokio::test]
async fn duplicate_hello_and_unrequested_heartbeat_fault() {
    let dir = sockdir();
    // Two hellos answer our two CLIENT_HELLOs; a third is a duplicate.
    raw_backend(&dir.path().join("chatty"), |mut s, _| {
        put(&mut s, &[1001, 1001, 1001]);
        behave(s);
    });
    raw_backend(&dir.path().join("eager"), |mut s, _| {
        put(&mut s, &[1001, 1001, 1004]);
        behave(s);
    });
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--heartbeat-interval", "60s"]);
    let bal = Balancer::start(dir.path(), &args);
    bal.proc.wait_for("duplicate hello from backend", |_| true);
    bal.proc
        .wait_for("unexpected heartbeat response from backend", |_| true);
}

#[tokio::test]
async fn oversized_outbound_udp_faults() {
    let dir = sockdir();
    raw_backend(&dir.path().join("big"), |mut s, _| {
        // Header only: the declared length alone is the fault.
        put(&mut s, &[1001, 1001, 1002, 0x7f00_0001, 53, 1501]);
        behave(s);
    });
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.proc
        .wait_for("backend sent oversized UDP packet", |r| r["len"] == 1501);
    bal.proc
        .wait_for("backend faulted (reset and reconnect)", |_| true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_backend_is_faulted_by_the_heartbeat_timeout() {
    // The passive check is held off, so the heartbeat alone must find it.
    let (_dir, backends, bal) = three_backends(&["--unanswered-threshold", "1h"]);
    let to = bal.target();
    let victim_name = whoami(lo(21), to).await.unwrap();
    let victim = backends.iter().find(|b| b.name == victim_name).unwrap();
    victim.proc.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let rec = bal
        .proc
        .wait_for("no heartbeat from backend", |r| be_id_is(r, &victim_name));
    assert_eq!(rec["passive_check"], false);
    let took = stopped.elapsed();
    // FAST_TIMERS: heartbeat every 200 ms, reply due within 1 s.
    assert!(took < Duration::from_secs(10), "faulted after {took:?}");
    // Its client moves; the others are served throughout.
    whoami_until(lo(21), to, "served by another backend", |w| {
        w != victim_name
    })
    .await;
    for n in 22..26 {
        assert!(whoami(lo(n), to).await.is_some(), "client {n}");
    }
    victim.proc.signal(libc::SIGCONT);
}

#[tokio::test]
async fn never_reading_backend_makes_the_balancer_drop_not_grow() {
    let dir = sockdir();
    // Says hello, then never reads again; the socket stays open.
    raw_backend(&dir.path().join("5300"), |mut s, _| {
        put(&mut s, &[1001, 1001]);
        std::thread::sleep(Duration::from_secs(120));
        drop(s);
    });
    let mut args = FAST_TIMERS.to_vec();
    args.extend([
        "--heartbeat-interval",
        "60s",
        "--backend-queue-bytes",
        "65536",
        "--unanswered-threshold",
        "1h",
    ]);
    let _good = Backend::start(dir.path(), "5301");
    let bal = Balancer::start(dir.path(), &args);
    bal.wait_established(2);
    let before = bal.proc.rss_kib();
    let sock = UdpSocket::bind((lo(30), 0)).await.unwrap();
    let mut q = query("www.example.com.", RecordType::A, 1);
    q.resize(1400, 0);
    // 30,000 datagrams of 1400 bytes: 42 MB offered to a backend that
    // takes nothing (the first new remote goes to the lowest id, 5300).
    for i in 0..30_000u32 {
        q[0..2].copy_from_slice(&(i as u16).to_be_bytes());
        let _ = sock.send_to(&q, bal.target()).await;
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    let rec = bal
        .proc
        .wait_for("stuck backend write queue (dropping)", |_| true);
    assert!(rec["stuck"].as_u64().unwrap() > 0);
    // The second client goes to the good backend and is served: the
    // balancer drained its socket buffer and kept working.
    whoami_until(lo(31), bal.target(), "other clients served", |w| {
        w == "5301"
    })
    .await;
    let after = bal.proc.rss_kib();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// A backend that stops reading (SIGSTOP) fills its socket buffer and then
/// its queue; once it reads again, everything queued is written with no
/// new work to prompt it (the link waits for room in the socket, EPOLLOUT),
/// so every query that was taken is answered.
#[tokio::test]
async fn a_backend_that_reads_again_gets_its_queue_written() {
    let dir = sockdir();
    let backend = Backend::start(dir.path(), "5300");
    let mut args = FAST_TIMERS.to_vec();
    args.extend([
        "--heartbeat-interval",
        "60s",
        "--heartbeat-timeout",
        "120s",
        "--backend-queue-bytes",
        "65536",
        "--unanswered-threshold",
        "1h",
        "--hedge-after",
        "0",
        "--query-timeout",
        "30s",
        "--on-timeout",
        "drop",
    ]);
    let bal = Balancer::start(dir.path(), &args);
    bal.wait_established(1);
    let client = lo(32);
    whoami_until(client, bal.target(), "pinned", |w| w == "5300").await;
    let forwarded = |r: &serde_json::Value| r["udp_forwarded"].as_u64().unwrap_or(0);
    let before = forwarded(&bal.counters_until("counters", |_| true).await);
    backend.proc.signal(libc::SIGSTOP);
    let sock = UdpSocket::bind((client, 0)).await.unwrap();
    let mut q = query("www.example.com.", RecordType::A, 1);
    q.resize(1400, 0);
    for i in 0..3_000u32 {
        q[0..2].copy_from_slice(&(i as u16).to_be_bytes());
        let _ = sock.send_to(&q, bal.target()).await;
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    bal.proc
        .wait_for("stuck backend write queue (dropping)", |_| true);
    let rec = bal
        .counters_until("the flood counted", |r| {
            r["udp_received"].as_u64().unwrap_or(0) >= before + 3_000
        })
        .await;
    let taken = forwarded(&rec) - before;
    assert!(
        taken > 0 && taken < 3_000,
        "some queued, some stuck: {taken}"
    );
    backend.proc.signal(libc::SIGCONT);
    // Nothing more is sent: the queued frames leave because the socket
    // has room again, and every query taken is answered.
    let mut answered = 0u64;
    let mut buf = [0u8; 2048];
    while answered < taken {
        match tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf)).await {
            Ok(Ok(_)) => answered += 1,
            _ => panic!("{answered} of {taken} queries taken were answered"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bytes_sent_before_ok_are_delivered() {
    static GO: std::sync::Mutex<Option<mpsc::Receiver<()>>> = std::sync::Mutex::new(None);
    let (go_tx, go_rx) = mpsc::channel();
    *GO.lock().unwrap() = Some(go_rx);
    let dir = sockdir();
    raw_backend(&dir.path().join("5300"), |mut s, first| {
        if first != 3 {
            put(&mut s, &[1001]);
            return behave(s);
        }
        let mut addr_port = [0u8; 8];
        s.read_exact(&mut addr_port).unwrap();
        // 127.0.0.40 travels as 28 00 00 7f.
        assert_eq!(&addr_port[..4], &[40, 0, 0, 127]);
        // Hold the OK until the client has sent its query.
        let go = GO.lock().unwrap().take().unwrap();
        go.recv_timeout(Duration::from_secs(20)).unwrap();
        put(&mut s, &[1003]);
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut q).unwrap();
        let query = Message::from_vec(&q).unwrap();
        let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
        answer.queries = query.queries;
        let a = answer.to_vec().unwrap();
        let _ = s.write_all(&(a.len() as u16).to_be_bytes());
        let _ = s.write_all(&a);
    });
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.wait_established(1);
    let mut c = tcp_connect(lo(40), bal.target()).await;
    tcp_send(&mut c, &query("www.example.com.", RecordType::A, 4040)).await;
    c.flush().await.unwrap();
    go_tx.send(()).unwrap();
    let m = tcp_recv(&mut c)
        .await
        .expect("answer to bytes sent before the OK");
    assert_eq!(m.metadata.id, 4040);
}

#[tokio::test]
async fn tcp_ok_timeout_faults_the_backend() {
    let dir = sockdir();
    raw_backend(&dir.path().join("5300"), |mut s, first| {
        if first == 3 {
            // Never confirm the session.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            return;
        }
        put(&mut s, &[1001]);
        behave(s);
    });
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--tcp-connect-timeout", "500ms"]);
    let bal = Balancer::start(dir.path(), &args);
    bal.wait_established(1);
    let mut c = tcp_connect(lo(41), bal.target()).await;
    tcp_send(&mut c, &query("www.example.com.", RecordType::A, 1)).await;
    bal.proc.wait_for("timed out connecting to backend", |r| {
        r["conn_id"].is_u64() && r["backend"] == 5300
    });
    bal.proc
        .wait_for("backend faulted (reset and reconnect)", |r| {
            be_id_is(r, "5300")
        });
    assert!(
        tcp_recv(&mut c).await.is_none(),
        "the client's connection is closed"
    );
}

#[tokio::test]
async fn a_backend_whose_backlog_is_full_never_stalls_the_loop() {
    // A socket that never accepts, with a listen backlog of 0 that one
    // pending connection fills: a blocking connect to it would wait
    // forever.  The balancer must log the refusal, retry on its schedule,
    // and serve clients through the other backend meanwhile.
    let dir = sockdir();
    let full = dir.path().join("5300");
    let listener =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&socket2::SockAddr::unix(&full).unwrap())
        .unwrap();
    listener.listen(0).unwrap();
    let _filler = UnixStream::connect(&full).unwrap();
    let _good = Backend::start(dir.path(), "5301");
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    let rec = bal
        .proc
        .wait_for("failed to connect", |r| be_path_is(r, &full));
    assert_eq!(rec["errno"], libc::EAGAIN, "{rec}");
    let to = bal.target();
    for n in 21..25 {
        let answer = udp_ask(lo(n), to, "www.example.com", RecordType::A, DEADLINE).await;
        assert!(answer.is_some(), "client {n} answered");
    }
    // And it keeps trying, on the back-off schedule.
    bal.proc.wait_for_nth(2, "a second try", |r| {
        r["msg"] == "failed to connect" && be_path_is(r, &full)
    });
    drop(listener);
}

#[tokio::test]
async fn a_backend_closing_a_tcp_session_mid_answer_closes_only_that_client() {
    let dir = sockdir();
    raw_backend(&dir.path().join("5300"), |mut s, first| {
        if first != 3 {
            put(&mut s, &[1001]);
            return behave(s);
        }
        let mut addr_port = [0u8; 8];
        if s.read_exact(&mut addr_port).is_err() {
            return;
        }
        put(&mut s, &[1003]);
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
        if s.read_exact(&mut q).is_err() {
            return;
        }
        // A length prefix of 100 bytes, then 5 of them, then gone.
        let _ = s.write_all(&[0, 100, 1, 2, 3, 4, 5]);
    });
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.wait_established(1);
    let to = bal.target();
    let mut c = tcp_connect(lo(41), to).await;
    tcp_send(&mut c, &query("www.example.com.", RecordType::A, 4141)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(
        DEADLINE,
        tokio::io::AsyncReadExt::read_to_end(&mut c, &mut got),
    )
    .await;
    assert!(read.is_ok(), "the client's connection was closed");
    assert_eq!(
        got,
        [0, 100, 1, 2, 3, 4, 5],
        "what the backend sent, then the end"
    );
    // Only that session ended: the backend's control link is up (no
    // fault), and the next client's session is served the same way.
    let mut d = tcp_connect(lo(42), to).await;
    tcp_send(&mut d, &query("www.example.com.", RecordType::A, 4242)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(
        DEADLINE,
        tokio::io::AsyncReadExt::read_to_end(&mut d, &mut got),
    )
    .await;
    assert!(read.is_ok() && got.len() == 7, "{got:?}");
    assert_eq!(
        bal.proc
            .count("backend faulted (reset and reconnect)", |_| true),
        0
    );
}

#[tokio::test]
async fn a_backend_flooding_unsolicited_answers_costs_a_bounded_log() {
    let dir = sockdir();
    raw_backend(&dir.path().join("flood"), |mut s, _| {
        put(&mut s, &[1001]);
        // 20,000 answers to 127.0.0.99:5353, which asked nothing: a DNS
        // header with QR set, id 7.
        let answer = [0u8, 7, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut frame: Vec<u8> = [1002u32, 0x7f00_0063, 5353, answer.len() as u32]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        frame.extend_from_slice(&answer);
        let all: Vec<u8> = frame.repeat(20_000);
        let _ = s.write_all(&all);
        behave(s);
    });
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.proc.wait_for("backend socket established", |_| true);
    let start = Instant::now();
    loop {
        bal.proc.signal(libc::SIGUSR1);
        let dumps = bal.proc.find(|r| r["msg"] == "counters");
        if dumps
            .last()
            .is_some_and(|r| r["unsolicited_answers"] == 20_000)
        {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "not all counted: {dumps:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let warnings = bal
        .proc
        .count("dropping answer to a query never asked", |_| true);
    assert!(
        (1..=2).contains(&warnings),
        "20,000 unsolicited answers, {warnings} warnings"
    );
    assert_eq!(
        bal.proc
            .count("backend faulted (reset and reconnect)", |_| true),
        0,
        "a backend is not faulted for them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_socket_file_is_gone_stops_getting_tcp_clients() {
    let dir = sockdir();
    let a = Backend::start(dir.path(), "5300");
    let _b = Backend::start(dir.path(), "5301");
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.wait_established(2);
    let to = bal.target();
    // A client of 5300's.
    let mut client = None;
    for n in 150..200u8 {
        if whoami(lo(n), to).await.as_deref() == Some(a.name.as_str()) {
            client = Some(lo(n));
            break;
        }
    }
    let client = client.expect("a client pinned to 5300");
    // The process runs on, its control link alive, but its socket file is
    // gone: no TCP session can reach it.
    std::fs::remove_file(&a.path).unwrap();
    let start = Instant::now();
    loop {
        if let Some(m) = tcp_ask(client, to, "whoami.example.com.", RecordType::TXT).await {
            assert_eq!(txt(&m), "5301", "served by the backend it can reach");
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the client never got a TCP answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bal.proc.wait_for(
        "backend socket file gone (TCP session could not connect)",
        |_| true,
    );
}
