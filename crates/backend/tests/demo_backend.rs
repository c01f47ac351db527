//! The `mname-demo-backend` binary, driven as the balancer drives it: a
//! control session (hello, heartbeat, a UDP query) and a TCP session, over
//! its AF_UNIX socket, with frames built by the protocol crate.
//!
//! Besides testing the binary, this test is why a test run of the whole
//! workspace builds `mname-demo-backend` at all: Cargo builds a package's
//! binaries only for that package's own integration tests, and the
//! balancer's tests (another package) start this binary too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use mname_balancer_backend::frame::{self, Frame, FrameBuffer};

/// How long any one read may wait before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// The backend process, killed when the test ends, pass or fail.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the demo backend on `path` named `name`, and return once it says
/// it is ready (its socket is bound by then).
fn start(path: &std::path::Path, name: &str) -> Backend {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mname-demo-backend"))
        .arg("-s")
        .arg(path)
        .args(["-n", name])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start mname-demo-backend");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("backend ready"), "first line: {line:?}");
    Backend(child)
}

fn query(name: &str, rtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

/// The next frame from `s`, re-encoded (frames borrow the buffer).
fn next_frame(s: &mut UnixStream, frames: &mut FrameBuffer) -> Vec<u8> {
    loop {
        if let Some(f) = frames.next_frame().unwrap() {
            let mut out = Vec::new();
            f.encode(&mut out);
            return out;
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("a frame before the deadline");
        assert!(n > 0, "backend closed the session");
        frames.extend(&buf[..n]);
    }
}

#[test]
fn answers_over_a_control_session_and_a_tcp_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("5300");
    let _backend = start(&path, "be-test");
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));

    let mut control = UnixStream::connect(&path).unwrap();
    control.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut out = Vec::new();
    Frame::ClientHello.encode(&mut out);
    Frame::ClientHeartbeat.encode(&mut out);
    Frame::InboundUdp {
        addr: client,
        port: 5353,
        payload: &query("whoami.example.com.", RecordType::TXT, 7),
    }
    .encode(&mut out);
    control.write_all(&out).unwrap();
    let mut frames = FrameBuffer::new();
    let hello = next_frame(&mut control, &mut frames);
    assert_eq!(hello, frame::frame_type::SERVER_HELLO.to_le_bytes());
    let heartbeat = next_frame(&mut control, &mut frames);
    assert_eq!(heartbeat, frame::frame_type::SERVER_HEARTBEAT.to_le_bytes());
    let wire = next_frame(&mut control, &mut frames);
    let Some((
        Frame::OutboundUdp {
            addr,
            port,
            payload,
        },
        _,
    )) = frame::decode(&wire).unwrap()
    else {
        panic!("expected OUTBOUND_UDP, got {wire:?}")
    };
    assert_eq!((addr, port), (client, 5353), "answer goes to the client");
    let answer = Message::from_vec(payload).unwrap();
    assert_eq!(answer.metadata.id, 7);
    assert_eq!(answer.answers[0].data.to_string(), "be-test");

    let mut tcp = UnixStream::connect(&path).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let (header, len) = frame::inbound_tcp(client, 4000);
    tcp.write_all(&header[..len]).unwrap();
    let mut ok = [0u8; 4];
    tcp.read_exact(&mut ok).unwrap();
    assert_eq!(ok, frame::frame_type::INBOUND_TCP_OK.to_le_bytes());
    let q = query("client.example.com.", RecordType::TXT, 8);
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    tcp.write_all(&msg).unwrap();
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut body).unwrap();
    let answer = Message::from_vec(&body).unwrap();
    assert_eq!(answer.metadata.id, 8);
    assert_eq!(
        answer.answers[0].data.to_string(),
        "192.0.2.9 4000",
        "the backend sees the client the balancer named"
    );
}
