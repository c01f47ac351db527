//! echo_backend: the smallest useful backend built on
//! [`mname_balancer_backend::listener`].  It answers every A question with
//! one record, `192.0.2.53`, for whatever name was asked (echoing the
//! question back), over UDP and TCP alike; any other type gets an empty
//! NOERROR answer.
//!
//!     cargo run -p mname-balancer-backend --example echo_backend -- /tmp/sockets/5300
//!     mname-balancer -b 127.0.0.1 -p 5353 -s /tmp/sockets       # another terminal
//!     dig @127.0.0.1 -p 5353 anything.example A +short          # 192.0.2.53
//!
//! Ctrl-C stops it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use mname_balancer_backend::listener::{BalancerListener, Inbound, TcpSession};

/// The one address every A question is answered with (TEST-NET-1).
const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// TTL of the answer, in seconds.
const TTL: u32 = 60;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(socket) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: echo_backend SOCKET_PATH");
        return ExitCode::from(2);
    };
    let mut listener = match BalancerListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("echo_backend: cannot listen on {}: {e}", socket.display());
            return ExitCode::from(1);
        }
    };
    println!("echo_backend listening on {}", socket.display());
    while let Some(inbound) = listener.next().await {
        match inbound {
            Inbound::Udp(query) => {
                // A datagram that is not a query gets no answer, as a DNS
                // server would give none.
                if let Some(answer) = answer(&query.message) {
                    // The control session may have ended; a lost UDP answer
                    // is the client's to retry.
                    let _ = query.reply(&answer).await;
                }
            }
            // One task per client TCP connection, for as long as it lasts.
            Inbound::Tcp(session) => {
                tokio::spawn(serve_tcp(session));
            }
        }
    }
    ExitCode::SUCCESS
}

/// Answer queries on one relayed TCP connection until the client closes it.
async fn serve_tcp(mut session: TcpSession) {
    while let Ok(Some(query)) = session.read_message().await {
        let Some(answer) = answer(&query) else { return };
        if session.write_message(&answer).await.is_err() {
            return;
        }
    }
}

/// The answer to the DNS message `query`, or `None` if it is not a query.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.authoritative = true;
    resp.queries = req.queries.clone();
    for q in &req.queries {
        if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
            let record = Record::from_rdata(q.name().clone(), TTL, RData::A(A(ANSWER)));
            resp.answers.push(record);
        }
    }
    resp.to_vec().ok()
}
