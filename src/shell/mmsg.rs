//! BATCHED DATAGRAM SYSCALLS
//!
//! `recvmmsg(2)` and `sendmmsg(2)` move many datagrams per system call.
//! Under load the UDP relay receives a batch of queries, and sends a batch
//! of answers, for the price of one call each instead of one per datagram.
//! Neither std, tokio nor socket2 wraps them, so this module does, on the
//! raw descriptor of a tokio socket, inside `try_io` so that tokio's
//! readiness tracking stays right.  (The crate's other unsafe call is
//! `malloc_trim`, in [`super::sys`].)
//!
//! On a socket bound to a wildcard address (`0.0.0.0`, `::`, the default
//! `-b`) they also carry the address each query was sent to (IP_PKTINFO,
//! IPV6_PKTINFO), and each answer is sent from that address: otherwise the
//! kernel picks the source by routing, and on a host with several
//! addresses a client that asked one of them would get its answer from
//! another, and drop it.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A listening UDP socket, registered with the runtime for readability
/// only.  Answers never wait for the socket to be writable (what a full
/// buffer cannot take is dropped, as UDP may), so asking the kernel for
/// EPOLLOUT would only wake the loop for nothing: each datagram it sends
/// on loopback frees its buffer space at once, an EPOLLOUT edge the loop
/// would be woken to ignore.
pub type ListenUdp = AsyncFd<std::net::UdpSocket>;

/// Register a bound, non-blocking UDP socket for readability only.
pub fn listen_udp(socket: std::net::UdpSocket) -> io::Result<ListenUdp> {
    socket.set_nonblocking(true)?;
    // SAFETY: a std UdpSocket owns its descriptor: it stays open, and
    // as_raw_fd returns it, until the socket is dropped, which is when the
    // AsyncFd that owns it is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?)
}

/// Datagrams per batch.
pub const BATCH: usize = 32;

/// The local address a datagram was sent to, as IP_PKTINFO or IPV6_PKTINFO
/// reported it.  An answer sent "from" it leaves with that source address
/// (and, for IPv6, on that interface: link-local addresses need it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalAddr {
    /// An IPv4 address (a v4-mapped one on a dual-stack socket too).
    V4(Ipv4Addr),
    /// An IPv6 address, with its interface.
    V6 {
        /// The address the datagram was sent to.
        addr: Ipv6Addr,
        /// The index of the interface it arrived on.
        ifindex: u32,
    },
}

/// Room for one control message carrying either pktinfo structure, in
/// u64s so that it is aligned as `cmsghdr` needs.
type Control = [u64; 8];

const _: () =
    assert!(size_of::<libc::cmsghdr>() + size_of::<libc::in6_pktinfo>() <= size_of::<Control>());

fn set_int_option(socket: &ListenUdp, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid descriptor and an int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Make the socket's receive buffer `bytes` large, so that a burst of
/// queries (clients catching up after a failover, say) waits in the kernel
/// rather than being dropped there uncounted.  SO_RCVBUFFORCE goes past
/// `net.core.rmem_max` where the process may (CAP_NET_ADMIN); otherwise
/// SO_RCVBUF is capped by it.  Returns the size the kernel granted.
pub fn set_receive_buffer(socket: &ListenUdp, bytes: usize) -> io::Result<usize> {
    let sock = socket2::SockRef::from(socket.get_ref());
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid descriptor and an int option value of the right size.
    let forced = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    if !forced {
        sock.set_recv_buffer_size(bytes)?;
    }
    sock.recv_buffer_size()
}

/// Ask the kernel to report each datagram's destination address.  An
/// IPv6 socket reports IPv6 destinations, and IPv4 ones too unless it is
/// v6-only (where IP_PKTINFO may be refused, and is not needed).
pub fn enable_pktinfo(socket: &ListenUdp, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
        let _ = set_int_option(socket, libc::IPPROTO_IP, libc::IP_PKTINFO);
        Ok(())
    } else {
        set_int_option(socket, libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// The destination address reported in the control messages of `hdr`.
fn local_of(hdr: &libc::msghdr) -> Option<LocalAddr> {
    if hdr.msg_control.is_null() || hdr.msg_controllen == 0 {
        return None;
    }
    // SAFETY: msg_control points at this batch's control buffer and the
    // kernel set msg_controllen to the bytes it wrote there; the CMSG
    // macros stay within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                // ipi_spec_dst, not ipi_addr: the same for a query to one
                // of our addresses, and a valid source (the interface's
                // address) for one sent to a broadcast address.
                let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                return Some(LocalAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_spec_dst.s_addr,
                ))));
            }
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                let addr = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                // A v4-mapped destination on a dual-stack socket is sent
                // from as IPv4.
                return Some(match addr.to_ipv4_mapped() {
                    Some(v4) => LocalAddr::V4(v4),
                    None => LocalAddr::V6 {
                        addr,
                        ifindex: info.ipi6_ifindex,
                    },
                });
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// Make `hdr` send from `local`, with its control message in `ctrl`.
fn set_source(hdr: &mut libc::msghdr, ctrl: &mut Control, local: LocalAddr, ipv6_socket: bool) {
    // On an IPv6 socket an IPv4 source is given as v4-mapped IPV6_PKTINFO.
    let (level, kind, len) = match (local, ipv6_socket) {
        (LocalAddr::V4(_), false) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            size_of::<libc::in_pktinfo>(),
        ),
        _ => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            size_of::<libc::in6_pktinfo>(),
        ),
    };
    hdr.msg_control = ctrl.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes; the control
    // buffer holds CMSG_SPACE(len) bytes (checked by the assertion on
    // Control), so the header and data written through CMSG_FIRSTHDR and
    // CMSG_DATA are inside it.
    unsafe {
        hdr.msg_controllen = libc::CMSG_SPACE(len as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        if cmsg.is_null() {
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            return;
        }
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as _;
        let data = libc::CMSG_DATA(cmsg);
        match (local, kind == libc::IP_PKTINFO) {
            (LocalAddr::V4(a), true) => {
                data.cast::<libc::in_pktinfo>()
                    .write_unaligned(libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from(a).to_be(),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    })
            }
            (local, _) => {
                let (addr, ifindex) = match local {
                    LocalAddr::V4(a) => (a.to_ipv6_mapped(), 0),
                    LocalAddr::V6 { addr, ifindex } => (addr, ifindex),
                };
                data.cast::<libc::in6_pktinfo>()
                    .write_unaligned(libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: addr.octets(),
                        },
                        ipi6_ifindex: ifindex,
                    })
            }
        }
    }
}

/// Receive buffers and the kernel structures pointing into them.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    /// Offset in each buffer at which a datagram is received (room for a
    /// frame header in front of it).
    offset: usize,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    srcs: Vec<Option<SocketAddr>>,
    /// Control messages (the destination address, where asked for).
    ctrls: Vec<Control>,
    locals: Vec<Option<LocalAddr>>,
    count: usize,
}

impl RecvBatch {
    /// `BATCH` buffers of `offset + room` bytes each.
    pub fn new(offset: usize, room: usize) -> Self {
        // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
        let zero_addr = unsafe { MaybeUninit::<libc::sockaddr_storage>::zeroed().assume_init() };
        RecvBatch {
            bufs: (0..BATCH)
                .map(|_| vec![0u8; offset + room].into_boxed_slice())
                .collect(),
            offset,
            addrs: vec![zero_addr; BATCH],
            lens: vec![0; BATCH],
            srcs: vec![None; BATCH],
            ctrls: vec![[0; 8]; BATCH],
            locals: vec![None; BATCH],
            count: 0,
        }
    }

    /// Datagrams held from the last receive.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Datagram `i`: its source (`None` if of an unknown family), the
    /// length the kernel reported, its buffer (datagram at `offset`) and
    /// the local address it was sent to (on wildcard sockets).
    pub fn get_mut(
        &mut self,
        i: usize,
    ) -> (Option<SocketAddr>, usize, &mut [u8], Option<LocalAddr>) {
        (
            self.srcs[i],
            self.lens[i],
            &mut self.bufs[i],
            self.locals[i],
        )
    }

    /// Receive up to `BATCH` waiting datagrams without blocking.  Returns
    /// how many (0 when none is waiting).  A datagram longer than the room
    /// is cut to it, but its length is reported whole (MSG_TRUNC), so the
    /// caller sees it is oversized.
    pub fn recv(&mut self, socket: &ListenUdp) -> io::Result<usize> {
        let fd = socket.as_raw_fd();
        let offset = self.offset;
        let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] = [MaybeUninit::uninit(); BATCH];
        for i in 0..BATCH {
            let buf = &mut self.bufs[i][offset..];
            iovecs[i].write(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
            // SAFETY: msghdr is plain old data; all-zero is a valid start.
            let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
            h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iovecs[i].as_mut_ptr();
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.ctrls[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = size_of::<Control>() as _;
            hdrs[i].write(h);
        }
        // A batch shorter than asked for emptied the socket: readiness is
        // cleared then and there (a WouldBlock to tokio, which clears it
        // only if no datagram has been signalled since), so a wake-up for
        // something else does not spend a recvmmsg to learn there is none.
        let mut drained = None;
        let received = socket.try_io(Interest::READABLE, |_| {
            // SAFETY: every header points at a live buffer, iovec and
            // address of this batch, which outlive the call; the kernel
            // writes at most the lengths given.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr().cast(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else if n > 0 && (n as usize) < BATCH {
                drained = Some(n as usize);
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n as usize)
            }
        });
        let n = match (received, drained) {
            (_, Some(n)) => n,
            (Ok(n), None) => n,
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => 0,
            (Err(e), None) => return Err(e),
        };
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            // SAFETY: every header was written before the call.
            let h = unsafe { hdr.assume_init_ref() };
            self.lens[i] = h.msg_len as usize;
            self.srcs[i] = from_storage(&self.addrs[i]);
            self.locals[i] = local_of(&h.msg_hdr);
        }
        self.count = n;
        Ok(n)
    }
}

/// The socket address in `ss`, if it is IPv4 or IPv6.
fn from_storage(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `dest` as a sockaddr the kernel takes.
fn to_storage(dest: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    let sa = socket2::SockAddr::from(*dest);
    // SAFETY: SockAddr holds a valid sockaddr of `len` bytes inside a
    // sockaddr_storage.
    (
        unsafe { *sa.as_ptr().cast::<libc::sockaddr_storage>() },
        sa.len(),
    )
}

/// Send `payload` to `dest` now, from `local` if given, without blocking.
pub fn send_one(
    socket: &ListenUdp,
    ipv6_socket: bool,
    dest: SocketAddr,
    local: Option<LocalAddr>,
    payload: &[u8],
) -> io::Result<()> {
    let Some(local) = local else {
        return socket.get_ref().send_to(payload, dest).map(|_| ());
    };
    let fd = socket.as_raw_fd();
    let (mut addr, addr_len) = to_storage(&dest);
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut ctrl: Control = [0; 8];
    // SAFETY: plain old data; all-zero is a valid start.
    let mut hdr: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    hdr.msg_name = (&raw mut addr).cast();
    hdr.msg_namelen = addr_len;
    hdr.msg_iov = &raw mut iov;
    hdr.msg_iovlen = 1;
    set_source(&mut hdr, &mut ctrl, local, ipv6_socket);
    // SAFETY: the header points at the address, iovec, payload and
    // control message above, which outlive the call.
    let n = unsafe { libc::sendmsg(fd, &hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Answers waiting to be sent on one socket, copied into one arena.
#[derive(Default)]
pub struct SendBatch {
    arena: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize, Option<LocalAddr>)>,
}

impl SendBatch {
    /// Queue `payload` for `dest`, sent from `local` if given.
    pub fn push(&mut self, dest: SocketAddr, local: Option<LocalAddr>, payload: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(payload);
        self.items.push((dest, start, payload.len(), local));
    }

    /// Whether no answer waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Answers waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Send everything queued, `BATCH` per call, without blocking.  What the
    /// socket cannot take now is dropped (this is UDP).  Returns how many
    /// were sent.
    pub fn flush(&mut self, socket: &ListenUdp, ipv6_socket: bool) -> usize {
        let fd = socket.as_raw_fd();
        let mut sent = 0;
        let mut at = 0;
        // Built on the stack for each call: a flush allocates nothing.
        let mut addrs: [MaybeUninit<(libc::sockaddr_storage, libc::socklen_t)>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut ctrls: [Control; BATCH] = [[0; 8]; BATCH];
        let mut iovecs: [MaybeUninit<libc::iovec>; BATCH] = [MaybeUninit::uninit(); BATCH];
        let mut hdrs: [MaybeUninit<libc::mmsghdr>; BATCH] = [MaybeUninit::uninit(); BATCH];
        while at < self.items.len() {
            let chunk = &self.items[at..(at + BATCH).min(self.items.len())];
            for (i, &(dest, start, len, local)) in chunk.iter().enumerate() {
                let addr = addrs[i].write(to_storage(&dest));
                let iov = iovecs[i].write(libc::iovec {
                    iov_base: self.arena[start..start + len].as_ptr().cast_mut().cast(),
                    iov_len: len,
                });
                // SAFETY: plain old data; all-zero is a valid start.
                let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
                h.msg_hdr.msg_name = (&raw mut addr.0).cast();
                h.msg_hdr.msg_namelen = addr.1;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                // Control messages only where an answer has a source to
                // give (wildcard sockets).
                if let Some(local) = local {
                    set_source(&mut h.msg_hdr, &mut ctrls[i], local, ipv6_socket);
                }
                hdrs[i].write(h);
            }
            // Sent straight away, not through the runtime: the socket is
            // not registered for writability (see [`ListenUdp`]).
            // SAFETY: the first chunk.len() headers were written above and
            // point at addresses, iovecs, control messages and arena bytes
            // that live until after the call; the kernel only reads them
            // (and writes msg_len).
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs.as_mut_ptr().cast(),
                    chunk.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                sent += n as usize;
                at += (n as usize).max(1);
                continue;
            }
            match io::Error::last_os_error() {
                // The socket buffer is full: drop the rest.
                e if e.kind() == io::ErrorKind::WouldBlock => break,
                // The kernel stops at the first datagram it cannot send;
                // skip that one (an unreachable client, say) and go on.
                _ => at += 1,
            }
        }
        self.arena.clear();
        self.items.clear();
        sent
    }
}
