//! SOCKET ACTIVATION AND READINESS
//!
//! Under systemd the service manager can own the listening sockets
//! (`contrib/systemd/mname-balancer.socket`): it binds port 53 before the
//! balancer starts, so the balancer needs no privilege to serve it, and
//! passes the bound sockets as file descriptors 3, 4, ... with `LISTEN_PID`
//! and `LISTEN_FDS` in the environment (sd_listen_fds(3)).  When they name
//! this process, the balancer binds nothing: every UDP socket becomes a UDP
//! listener, every listening TCP socket a TCP listener, and `-b`/`-p` are
//! ignored.  An inherited descriptor that is neither (a unix socket, a
//! connected stream, a file) is a mistake in the socket unit; it stops the
//! balancer with a message naming the descriptor rather than leaving a
//! listener silently missing.  The variables are unset once read, so that
//! nothing the balancer might start inherits them.
//!
//! It also tells the service manager how it is doing (sd_notify(3)):
//! `READY=1` once the listeners are bound and the event loop runs, so that
//! units ordered after it start only when DNS is being served, and
//! `STOPPING=1` when a shutdown signal starts the drain.  Without
//! `NOTIFY_SOCKET` in the environment nothing is sent.
//!
//! Reading the environment and sending notifications is the `sd-notify`
//! crate's work; telling the sockets apart is done here with socket2.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use sd_notify::NotifyState;
use slog::{Logger, info, warn};
use socket2::{Socket, Type};

use crate::cli::Config;
use crate::shell::Listeners;

/// The first descriptor passed by the service manager (SD_LISTEN_FDS_START).
pub const LISTEN_FDS_START: RawFd = 3;

/// Why the inherited sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_PID`, `LISTEN_FDS` or a descriptor they name is malformed.
    #[error("socket activation (LISTEN_FDS): {0}")]
    Environment(io::Error),
    /// An inherited descriptor is not a UDP socket or a listening TCP
    /// socket on IPv4 or IPv6.
    #[error(
        "inherited socket fd {fd} (socket activation) {why}; \
         only UDP sockets and listening TCP sockets on IPv4 or IPv6 can be used"
    )]
    Unusable {
        /// The descriptor's number.
        fd: RawFd,
        /// What it is instead, or why it could not be told.
        why: String,
    },
}

/// The sockets passed by the service manager, sorted by kind, in the order
/// of their descriptors.
#[derive(Debug, Default)]
pub struct Inherited {
    /// The UDP sockets: each becomes a UDP listener.
    pub udp: Vec<UdpSocket>,
    /// The listening TCP sockets: each becomes a TCP listener.
    pub tcp: Vec<TcpListener>,
}

/// One inherited socket, once its kind is known.
#[derive(Debug)]
pub enum Kind {
    /// A UDP socket.
    Udp(UdpSocket),
    /// A TCP socket that listens.
    Tcp(TcpListener),
}

/// Take the sockets the service manager passed to this process, if it
/// passed any, and unset `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
/// `None` when the variables are absent, name another process, or pass no
/// descriptor: the balancer then binds its own listeners.
///
/// # Safety
///
/// Changes the environment: no other thread may be running (call it from
/// `main` before the runtime starts).
pub unsafe fn take_from_env() -> Result<Option<Inherited>, ActivationError> {
    // SAFETY: the caller guarantees that no other thread reads or writes the
    // environment meanwhile.
    let fds = unsafe {
        let fds = sd_notify::listen_fds_and_unset_env();
        std::env::remove_var("LISTEN_FDNAMES");
        fds
    };
    let fds = fds.map_err(ActivationError::Environment)?;
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut inherited = Inherited::default();
    for fd in fds {
        // SAFETY: by the socket activation protocol the descriptors
        // LISTEN_FDS_START.. are open (sd-notify checked each one while
        // setting FD_CLOEXEC) and handed to this process to own; nothing
        // else in it refers to them.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match classify(fd, owned)? {
            Kind::Udp(s) => inherited.udp.push(s),
            Kind::Tcp(l) => inherited.tcp.push(l),
        }
    }
    Ok(Some(inherited))
}

/// Tell what kind of socket descriptor `number` is: a UDP socket or a
/// listening TCP socket, on IPv4 or IPv6.  Anything else is an error that
/// names the descriptor and what it is.
pub fn classify(number: RawFd, fd: OwnedFd) -> Result<Kind, ActivationError> {
    let bad = |why: String| ActivationError::Unusable { fd: number, why };
    let sock = Socket::from(fd);
    let ty = match sock.r#type() {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            return Err(bad("is not a socket".into()));
        }
        Err(e) => return Err(bad(format!("cannot be inspected: {e}"))),
    };
    let local = sock
        .local_addr()
        .map_err(|e| bad(format!("has no local address: {e}")))?;
    if local.as_socket().is_none() {
        let family = match i32::from(local.family()) {
            libc::AF_UNIX => "AF_UNIX".to_string(),
            f => format!("address family {f}"),
        };
        return Err(bad(format!(
            "is an {family} socket, not AF_INET or AF_INET6"
        )));
    }
    check_protocol(&sock, ty).map_err(bad)?;
    if ty == Type::DGRAM {
        Ok(Kind::Udp(sock.into()))
    } else if ty == Type::STREAM {
        check_listening(&sock).map_err(bad)?;
        Ok(Kind::Tcp(sock.into()))
    } else {
        Err(bad("is neither a datagram nor a stream socket".into()))
    }
}

/// A datagram socket must be UDP and a stream socket TCP (not, say, SCTP),
/// where the system can tell.
#[cfg(any(target_os = "android", target_os = "freebsd", target_os = "linux"))]
fn check_protocol(sock: &Socket, ty: Type) -> Result<(), String> {
    use socket2::Protocol;
    let expected = if ty == Type::DGRAM {
        Protocol::UDP
    } else if ty == Type::STREAM {
        Protocol::TCP
    } else {
        return Ok(());
    };
    match sock.protocol() {
        Ok(Some(p)) if p != expected => Err(format!("uses protocol {p:?}, not UDP or TCP")),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot be inspected: {e}")),
    }
}

#[cfg(not(any(target_os = "android", target_os = "freebsd", target_os = "linux")))]
fn check_protocol(_sock: &Socket, _ty: Type) -> Result<(), String> {
    Ok(())
}

/// A stream socket must be listening: `Accept=yes` in a socket unit passes
/// one connection instead, which the balancer cannot serve.
#[cfg(any(target_os = "android", target_os = "freebsd", target_os = "linux"))]
fn check_listening(sock: &Socket) -> Result<(), String> {
    match sock.is_listener() {
        Ok(true) => Ok(()),
        Ok(false) => Err("is a TCP socket that is not listening (the socket unit \
                          needs Accept=no)"
            .into()),
        Err(e) => Err(format!("cannot be inspected: {e}")),
    }
}

#[cfg(not(any(target_os = "android", target_os = "freebsd", target_os = "linux")))]
fn check_listening(_sock: &Socket) -> Result<(), String> {
    Ok(())
}

impl Inherited {
    /// The balancer's listeners, made of the inherited sockets.  Logs each
    /// listener as [`crate::shell::bind`] does (with `inherited: true`),
    /// and that `-b`/`-p` are ignored.  Must run inside the tokio runtime.
    pub fn into_listeners(self, config: &Config, log: &Logger) -> io::Result<Listeners> {
        let ignored: Vec<String> = config.listen_addrs.iter().map(|a| a.to_string()).collect();
        info!(log, "socket activation: using inherited sockets, -b and -p are ignored";
            "udp_sockets" => self.udp.len(), "tcp_sockets" => self.tcp.len(),
            "ignored_addresses" => ignored.join(","), "ignored_port" => config.port);
        let mut listeners = Listeners {
            udp: Vec::with_capacity(self.udp.len()),
            tcp: Vec::with_capacity(self.tcp.len()),
        };
        for s in self.udp {
            s.set_nonblocking(true)?;
            let addr = s.local_addr()?;
            listeners.udp.push(crate::shell::mmsg::listen_udp(s)?);
            info!(log, "listening for UDP packets";
                "address" => addr.ip().to_string(), "port" => addr.port().to_string(),
                "inherited" => true);
        }
        for l in self.tcp {
            l.set_nonblocking(true)?;
            let addr = l.local_addr()?;
            listeners.tcp.push(tokio::net::TcpListener::from_std(l)?);
            info!(log, "listening for TCP packets";
                "address" => addr.ip().to_string(), "port" => addr.port().to_string(),
                "inherited" => true);
        }
        Ok(listeners)
    }
}

/// The `STATUS=` line sent with `READY=1`: where DNS is served and where
/// backends are looked for.
pub fn serving_status(listeners: &Listeners, socket_dir: &Path) -> String {
    let addrs = |v: Vec<io::Result<SocketAddr>>| {
        v.into_iter()
            .filter_map(Result::ok)
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let udp = addrs(
        listeners
            .udp
            .iter()
            .map(|s| s.get_ref().local_addr())
            .collect(),
    );
    let tcp = addrs(listeners.tcp.iter().map(|l| l.local_addr()).collect());
    format!(
        "serving DNS on UDP [{udp}] TCP [{tcp}]; backends in {}",
        socket_dir.display()
    )
}

/// Tell the service manager that the balancer is serving.
pub fn notify_ready(status: &str, log: &Logger) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)], log);
}

/// Tell the service manager that the balancer is shutting down.
pub fn notify_stopping(status: &str, log: &Logger) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)], log);
}

/// Send `states` to `$NOTIFY_SOCKET`, if set.  A failure is logged and
/// otherwise ignored: the balancer serves DNS whether or not the service
/// manager hears about it.
fn notify(states: &[NotifyState<'_>], log: &Logger) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        warn!(log, "cannot notify the service manager (NOTIFY_SOCKET)";
            "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    fn owned(s: impl Into<OwnedFd>) -> OwnedFd {
        s.into()
    }

    #[test]
    fn a_udp_socket_is_a_udp_listener() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        match classify(3, owned(s)).unwrap() {
            Kind::Udp(s) => assert_eq!(s.local_addr().unwrap(), addr),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn a_listening_tcp_socket_is_a_tcp_listener() {
        let l = TcpListener::bind("[::1]:0")
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        assert!(matches!(classify(4, owned(l)).unwrap(), Kind::Tcp(_)));
    }

    #[test]
    fn a_tcp_socket_that_does_not_listen_is_refused() {
        let s = Socket::new(socket2::Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let e = classify(5, owned(s)).unwrap_err().to_string();
        assert!(e.contains("fd 5") && e.contains("not listening"), "{e}");
    }

    #[test]
    fn a_unix_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join("s")).unwrap();
        let e = classify(3, owned(l)).unwrap_err().to_string();
        assert!(e.contains("fd 3") && e.contains("AF_UNIX"), "{e}");
        let (a, _b) = UnixDatagram::pair().unwrap();
        let e = classify(3, owned(a)).unwrap_err();
        assert!(
            matches!(&e, ActivationError::Unusable { fd: 3, why } if why.contains("AF_UNIX")),
            "{e}"
        );
    }

    #[test]
    fn a_file_is_refused() {
        let f = tempfile::tempfile().unwrap();
        let e = classify(6, owned(f)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "inherited socket fd 6 (socket activation) is not a socket; \
             only UDP sockets and listening TCP sockets on IPv4 or IPv6 can be used"
        );
    }
}
