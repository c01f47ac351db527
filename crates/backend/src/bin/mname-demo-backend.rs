//! `mname-demo-backend`: a backend DNS server for the balancer, built on the
//! crate's [`mname_balancer_backend::listener`], answering from the built-in
//! demo zone ([`mname_balancer_backend::demo_zone`]).  Used by the README's
//! quick start, by the integration tests and by benchmarks.
//!
//! `mname-demo-backend -s SOCKET -n NAME [-z ZONE]`
//!
//! For fault tests it can also misbehave on purpose: `--delay MS` holds
//! every UDP answer back (with `--delay-name NAME`, only the answers to
//! queries for NAME: one slow query among fast ones), `--no-answer` answers no UDP query at all (it
//! still answers heartbeats, like a backend whose query handling is wedged),
//! `--log-queries` prints a JSON line per UDP query received, and
//! `--cost-us N` spends N microseconds of CPU on each query (a slower
//! server, for overload benchmarks).  For cache tests, `--servfail-name
//! NAME` answers UDP queries for NAME SERVFAIL, and `--soa-minimum SECS`
//! sets how long its negative answers may be cached.

use std::process::ExitCode;

use mname_balancer_backend::demo_zone::{DemoZone, Transport};
use mname_balancer_backend::listener::{BalancerListener, Inbound, TcpSession};

fn usage() -> String {
    getopts_options().usage("Usage: mname-demo-backend -s SOCKET -n NAME [-z ZONE] [test options]")
}

fn getopts_options() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optopt(
        "s",
        "socket",
        "AF_UNIX socket path to listen on (required)",
        "PATH",
    );
    o.optopt(
        "n",
        "name",
        "name answered for TXT whoami.ZONE (default: socket file name)",
        "NAME",
    );
    o.optopt("z", "zone", "zone to serve (default example.com)", "ZONE");
    o.optflag("h", "help", "print this help");
    o.optopt(
        "",
        "udp",
        "also serve plain DNS over UDP here (benchmarks: the same answering code direct)",
        "ADDR:PORT",
    );
    o.optopt("", "tcp", "also serve plain DNS over TCP here", "ADDR:PORT");
    o.optopt(
        "",
        "delay",
        "test: hold each UDP answer back this many ms",
        "MS",
    );
    o.optopt(
        "",
        "delay-name",
        "test: apply --delay only to UDP queries for this name",
        "NAME",
    );
    o.optflag("", "no-answer", "test: answer no UDP query");
    o.optopt(
        "",
        "cost-us",
        "benchmarks: spend this many microseconds of CPU on each UDP query (a slower server)",
        "US",
    );
    o.optflag("", "log-queries", "test: print a JSON line per UDP query");
    o.optopt(
        "",
        "servfail-name",
        "test: answer UDP queries for this name SERVFAIL",
        "NAME",
    );
    o.optopt(
        "",
        "soa-minimum",
        "test: the SOA MINIMUM of negative answers, seconds (default 30)",
        "SECS",
    );
    o
}

/// Deliberate misbehaviour, for fault tests.
#[derive(Clone)]
struct Misbehaviour {
    delay: Option<std::time::Duration>,
    /// Delay only the queries for this name (lower case, no final dot).
    delay_name: Option<String>,
    cost: Option<std::time::Duration>,
    no_answer: bool,
    log_queries: bool,
    /// Answer queries for this name SERVFAIL (lower case, no final dot).
    servfail_name: Option<String>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = match getopts_options().parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mname-demo-backend: {e}\n{}", usage());
            return ExitCode::from(1);
        }
    };
    if m.opt_present("h") {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let Some(socket) = m.opt_str("s") else {
        eprintln!(
            "mname-demo-backend: must specify socket path (-s)\n{}",
            usage()
        );
        return ExitCode::from(1);
    };
    let socket = std::path::PathBuf::from(socket);
    let name = m.opt_str("n").unwrap_or_else(|| {
        socket
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "demo".into())
    });
    let zone = match DemoZone::new(
        &m.opt_str("z").unwrap_or_else(|| "example.com".into()),
        &name,
    ) {
        Ok(mut z) => {
            match m.opt_str("soa-minimum").map(|s| s.parse::<u32>()) {
                None => {}
                Some(Ok(secs)) => z.soa_minimum = secs,
                Some(Err(_)) => {
                    eprintln!("mname-demo-backend: --soa-minimum takes seconds");
                    return ExitCode::from(1);
                }
            }
            z
        }
        Err(e) => {
            eprintln!("mname-demo-backend: {e}");
            return ExitCode::from(1);
        }
    };
    let delay = match m.opt_str("delay").map(|d| d.parse::<u64>()) {
        None => None,
        Some(Ok(ms)) => Some(std::time::Duration::from_millis(ms)),
        Some(Err(_)) => {
            eprintln!("mname-demo-backend: --delay takes milliseconds");
            return ExitCode::from(1);
        }
    };
    let cost = match m.opt_str("cost-us").map(|d| d.parse::<u64>()) {
        None => None,
        Some(Ok(us)) => Some(std::time::Duration::from_micros(us)),
        Some(Err(_)) => {
            eprintln!("mname-demo-backend: --cost-us takes microseconds");
            return ExitCode::from(1);
        }
    };
    let misbehave = Misbehaviour {
        delay,
        delay_name: m
            .opt_str("delay-name")
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
        cost,
        no_answer: m.opt_present("no-answer"),
        log_queries: m.opt_present("log-queries"),
        servfail_name: m
            .opt_str("servfail-name")
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
    };
    let parse_addr = |flag: &str| -> Result<Option<std::net::SocketAddr>, String> {
        m.opt_str(flag)
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("--{flag} takes ADDR:PORT, not {a}"))
            })
            .transpose()
    };
    let (plain_udp, plain_tcp) = match (parse_addr("udp"), parse_addr("tcp")) {
        (Ok(u), Ok(t)) => (u, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("mname-demo-backend: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mname-demo-backend: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let mut listener = match BalancerListener::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "mname-demo-backend: cannot listen on {}: {e}",
                    socket.display()
                );
                return ExitCode::from(1);
            }
        };
        if let Some(addr) = plain_udp {
            match tokio::net::UdpSocket::bind(addr).await {
                Ok(sock) => {
                    tokio::spawn(serve_plain_udp(zone.clone(), sock));
                }
                Err(e) => {
                    eprintln!("mname-demo-backend: cannot bind UDP {addr}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        if let Some(addr) = plain_tcp {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    tokio::spawn(serve_plain_tcp(zone.clone(), l));
                }
                Err(e) => {
                    eprintln!("mname-demo-backend: cannot bind TCP {addr}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        println!(
            "{{\"msg\":\"backend ready\",\"name\":\"{}\",\"socket\":\"{}\",\"pid\":{}}}",
            name.escape_default(),
            socket.display().to_string().escape_default(),
            std::process::id()
        );
        loop {
            tokio::select! {
                inbound = listener.next() => match inbound {
                    Some(Inbound::Udp(q)) => {
                        if misbehave.log_queries {
                            let id = q.message.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                            println!(
                                "{{\"msg\":\"query\",\"client\":\"{}\",\"id\":{id}}}",
                                q.client
                            );
                        }
                        if misbehave.no_answer {
                            continue;
                        }
                        if let Some(cost) = misbehave.cost {
                            // Burn CPU as a heavier name server would.
                            let start = std::time::Instant::now();
                            while start.elapsed() < cost {
                                std::hint::spin_loop();
                            }
                        }
                        let Some(mut a) = zone.answer(&q.message, q.client, Transport::Udp) else {
                            continue;
                        };
                        if let Some(name) = &misbehave.servfail_name
                            && asks_for(&q.message, name)
                            && let Some(rcode) = a.get_mut(3)
                        {
                            *rcode = (*rcode & 0xf0) | 2;
                        }
                        let delay = misbehave.delay.filter(|_| {
                            misbehave
                                .delay_name
                                .as_deref()
                                .is_none_or(|name| asks_for(&q.message, name))
                        });
                        match delay {
                            None => {
                                let _ = q.reply(&a).await;
                            }
                            Some(d) => {
                                tokio::spawn(async move {
                                    tokio::time::sleep(d).await;
                                    let _ = q.reply(&a).await;
                                });
                            }
                        }
                    }
                    Some(Inbound::Tcp(session)) => {
                        tokio::spawn(serve_tcp(zone.clone(), session));
                    }
                    None => return ExitCode::SUCCESS,
                },
                _ = terminate() => return ExitCode::SUCCESS,
            }
        }
    })
}

async fn serve_tcp(zone: DemoZone, mut session: TcpSession) {
    while let Ok(Some(msg)) = session.read_message().await {
        let Some(answer) = zone.answer(&msg, session.client, Transport::Tcp) else {
            return;
        };
        if session.write_message(&answer).await.is_err() {
            return;
        }
    }
}

/// Plain DNS over UDP, answered by the same code as balancer traffic.
async fn serve_plain_udp(zone: DemoZone, sock: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(a) = zone.answer(&buf[..n], client, Transport::Udp) {
            let _ = sock.send_to(&a, client).await;
        }
    }
}

/// Plain DNS over TCP (two-byte length prefix), one task per connection.
async fn serve_plain_tcp(zone: DemoZone, listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, client)) = listener.accept().await else {
            continue;
        };
        let zone = zone.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.split();
            let mut rd = tokio::io::BufReader::new(rd);
            loop {
                let mut len = [0u8; 2];
                if rd.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if rd.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let Some(a) = zone.answer(&msg, client, Transport::Tcp) else {
                    return;
                };
                let mut out = (a.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&a);
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Whether `query` asks about `name` (lower case, no final dot).
fn asks_for(query: &[u8], name: &str) -> bool {
    hickory_proto::op::Message::from_vec(query)
        .ok()
        .and_then(|m| m.queries.first().map(|q| q.name().to_ascii()))
        .is_some_and(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
}
