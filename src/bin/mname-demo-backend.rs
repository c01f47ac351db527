//! `mname-demo-backend`: a backend DNS server for the balancer, built on the
//! library's [`mname_balancer::listener`], answering from the built-in demo
//! zone ([`mname_balancer::demo_zone`]).  Used by the README's quick start,
//! by the integration tests and by benchmarks.
//!
//! `mname-demo-backend -s SOCKET -n NAME [-z ZONE]`

use std::process::ExitCode;

use mname_balancer::demo_zone::{DemoZone, Transport};
use mname_balancer::listener::{BalancerListener, Inbound, TcpSession};

fn usage() -> String {
    getopts_options().usage("Usage: mname-demo-backend -s SOCKET -n NAME [-z ZONE]")
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
    o
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
        Ok(z) => z,
        Err(e) => {
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
                        if let Some(a) = zone.answer(&q.message, q.client, Transport::Udp) {
                            let _ = q.reply(&a).await;
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

async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
