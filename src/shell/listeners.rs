//! LISTENERS
//!
//! The sockets clients reach: one UDP socket and one TCP listener per
//! listen address (`-b`), all on one port (`-p`; 0 picks a free port, the
//! same for all).  They are bound before the loop starts, so the caller
//! (or a test) knows the port before any traffic flows; under systemd
//! they are inherited instead ([`crate::ops::activation`]).

use std::io;
use std::net::{IpAddr, SocketAddr};

use slog::{Logger, error, info};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

use super::mmsg::{ListenUdp, listen_udp};

use crate::cli::Config;

/// The TCP listen backlog: the original's 1000 overflowed under a flood of
/// connections (measured, bench/tcp_attack.py: a legitimate client's SYN
/// dropped, its connect a second late).  4096 is Linux's default
/// `net.core.somaxconn`, which caps it anyway.
const TCP_BACKLOG: i32 = 4096;

/// The bound sockets, created before the loop starts so that a caller (or
/// test) knows the port before any traffic flows.  One UDP socket and one
/// TCP listener per listen address, all on the same port.
pub struct Listeners {
    /// The UDP sockets, one per listen address.
    pub udp: Vec<ListenUdp>,
    /// The TCP listeners, one per listen address.
    pub tcp: Vec<TcpListener>,
}

impl Listeners {
    /// The port they listen on (the one picked, if port 0 was asked for).
    pub fn local_port(&self) -> io::Result<u16> {
        match self.udp.first() {
            Some(s) => Ok(s.get_ref().local_addr()?.port()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no listeners")),
        }
    }
}

/// A socket for `addr`.  An IPv6 socket is v6-only when IPv4 addresses are
/// listened on separately (else the two would collide on the port); alone,
/// `::` is dual-stack and serves IPv4 clients too.
fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol, v6_only: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(v6_only)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Bind the UDP and TCP listeners on every listen address, on one port.
/// With port 0, the first UDP socket picks a free port and every other
/// socket binds the same number; if another process holds that number for
/// TCP (or on another address), a new number is picked, a few times.
pub fn bind(config: &Config, log: &Logger) -> io::Result<Listeners> {
    let tries = if config.port == 0 { PORT_ZERO_TRIES } else { 1 };
    let mut failure = None;
    for _ in 0..tries {
        match bind_once(config) {
            Ok(listeners) => {
                for (udp, tcp) in listeners.udp.iter().zip(&listeners.tcp) {
                    for (what, addr) in [
                        ("listening for UDP packets", udp.get_ref().local_addr()?),
                        ("listening for TCP packets", tcp.local_addr()?),
                    ] {
                        info!(log, "{}", what;
                            "address" => addr.ip().to_string(), "port" => addr.port().to_string());
                    }
                }
                return Ok(listeners);
            }
            Err(f) if f.error.kind() == io::ErrorKind::AddrInUse => failure = Some(f),
            Err(f) => {
                failure = Some(f);
                break;
            }
        }
    }
    let Some(BindFailure { what, addr, error }) = failure else {
        return Err(io::Error::other("no listen address"));
    };
    error!(log, "{}", what; "address" => addr.ip().to_string(),
        "port" => addr.port().to_string(), "errno" => error.raw_os_error().unwrap_or(0),
        "strerror" => error.to_string());
    Err(io::Error::new(
        error.kind(),
        format!("{what} {addr}: {error}"),
    ))
}

/// With `-p 0`, how many port numbers are tried before giving up.
const PORT_ZERO_TRIES: usize = 16;

/// What failed to bind, and where.
struct BindFailure {
    what: &'static str,
    addr: SocketAddr,
    error: io::Error,
}

/// One attempt at binding every listener on one port.
fn bind_once(config: &Config) -> Result<Listeners, BindFailure> {
    let any_v4 = config.listen_addrs.iter().any(IpAddr::is_ipv4);
    let mut port = config.port;
    let mut listeners = Listeners {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for &ip in &config.listen_addrs {
        let addr = SocketAddr::new(ip, port);
        let failed = |what, addr| move |error| BindFailure { what, addr, error };
        let udp = new_socket(addr, Type::DGRAM, Protocol::UDP, any_v4)
            .and_then(|s| {
                s.bind(&addr.into())?;
                listen_udp(s.into())
            })
            .map_err(failed("failed to bind UDP listen socket", addr))?;
        port = udp
            .get_ref()
            .local_addr()
            .map_err(failed("failed to bind UDP listen socket", addr))?
            .port();
        let tcp_addr = SocketAddr::new(ip, port);
        let tcp = new_socket(tcp_addr, Type::STREAM, Protocol::TCP, any_v4)
            .and_then(|s| {
                s.set_reuse_address(true)?;
                s.bind(&tcp_addr.into())?;
                s.listen(TCP_BACKLOG)?;
                TcpListener::from_std(s.into())
            })
            .map_err(failed("failed to create TCP listen socket", tcp_addr))?;
        listeners.udp.push(udp);
        listeners.tcp.push(tcp);
    }
    Ok(listeners)
}
