//! The packet cache's test harness: one demo backend behind a balancer
//! with a stats socket, a UDP client, and the queries the cache tests send
//! (tests/cache.rs, tests/cache_tcp.rs).

use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::Value;
use tokio::net::UdpSocket;

use super::stats::{balstat_json, u};
use super::*;

/// Polls give up after this long.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// One backend (5300) behind a balancer with a stats socket, and a client.
pub(crate) struct Cached {
    _dir: tempfile::TempDir,
    _stats_dir: tempfile::TempDir,
    pub backend: Backend,
    pub bal: Balancer,
    pub sock: String,
    pub client: UdpSocket,
}

impl Cached {
    pub(crate) async fn start(backend_flags: &[&str], flags: &[&str]) -> Cached {
        let dir = sockdir();
        let backend = Backend::start_with(dir.path(), "5300", backend_flags);
        let stats_dir = sockdir();
        let sock = stats_dir.path().join("stats.sock");
        let sock = sock.to_str().unwrap_or_default().to_string();
        let mut args = vec!["-S", sock.as_str()];
        args.extend_from_slice(flags);
        let bal = Balancer::start(dir.path(), &args);
        bal.wait_established(1);
        bal.proc.wait_for("stats socket listening", |_| true);
        let client = UdpSocket::bind((lo(41), 0)).await.expect("client socket");
        Cached {
            _dir: dir,
            _stats_dir: stats_dir,
            backend,
            bal,
            sock,
            client,
        }
    }

    /// Send `query` and return the answer with its id, or None after 3 s.
    pub(crate) async fn ask(&self, query: &[u8]) -> Option<Vec<u8>> {
        self.client.send_to(query, self.bal.target()).await.ok()?;
        let mut buf = vec![0u8; 65535];
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let (n, _) = tokio::time::timeout_at(until, self.client.recv_from(&mut buf))
                .await
                .ok()?
                .ok()?;
            if buf[..n.min(2)] == query[..2] {
                return Some(buf[..n].to_vec());
            }
        }
    }

    pub(crate) fn summary(&self) -> Value {
        balstat_json(&self.sock, &["summary"])
    }

    pub(crate) fn counter(&self, name: &str) -> u64 {
        u(&self.summary()["counters"][name])
    }

    /// UDP queries the backend has been sent.
    pub(crate) fn backend_queries(&self) -> u64 {
        u(&self.summary()["backends"][0]["udp"])
    }
}

/// A query for `name` (type `rtype`) with id `id`, RD `rd`, CD `cd` and,
/// if given, EDNS with that buffer size and DO bit.
pub(crate) fn q(
    name: &str,
    rtype: RecordType,
    id: u16,
    rd: bool,
    cd: bool,
    edns: Option<(u16, bool)>,
) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = rd;
    m.metadata.checking_disabled = cd;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    if let Some((size, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("query encodes")
}

/// An A query with RD, no CD and no EDNS: the suite's plain query.
pub(crate) fn a(name: &str, id: u16) -> Vec<u8> {
    super::query(name, RecordType::A, id)
}

pub(crate) fn parse(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).expect("answer parses")
}

/// The TTL of every record in the answer and authority sections.
pub(crate) fn ttls(bytes: &[u8]) -> Vec<u32> {
    let m = parse(bytes);
    m.answers
        .iter()
        .chain(&m.authorities)
        .map(|r| r.ttl)
        .collect()
}

pub(crate) async fn poll<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
