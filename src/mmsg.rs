//! BATCHED DATAGRAM SYSCALLS
//!
//! `recvmmsg(2)` and `sendmmsg(2)` move many datagrams per system call.
//! Under load the UDP relay receives a batch of queries, and sends a batch
//! of answers, for the price of one call each instead of one per datagram.
//! Neither std, tokio nor socket2 wraps them, so this module does, on the
//! raw descriptor of a tokio socket, inside `try_io` so that tokio's
//! readiness tracking stays right.  (The crate's other unsafe call is
//! `malloc_trim`, in [`crate::sys`].)

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per batch.
pub const BATCH: usize = 32;

/// Receive buffers and the kernel structures pointing into them.
pub struct RecvBatch {
    bufs: Vec<Box<[u8]>>,
    /// Offset in each buffer at which a datagram is received (room for a
    /// frame header in front of it).
    offset: usize,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    srcs: Vec<Option<SocketAddr>>,
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
            count: 0,
        }
    }

    /// Datagrams held from the last receive.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Datagram `i`: its source (`None` if of an unknown family), the
    /// length the kernel reported, and its buffer (datagram at `offset`).
    pub fn get_mut(&mut self, i: usize) -> (Option<SocketAddr>, usize, &mut [u8]) {
        (self.srcs[i], self.lens[i], &mut self.bufs[i])
    }

    /// Receive up to `BATCH` waiting datagrams without blocking.  Returns
    /// how many (0 when none is waiting).  A datagram longer than the room
    /// is cut to it, but its length is reported whole (MSG_TRUNC), so the
    /// caller sees it is oversized.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
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
            hdrs[i].write(h);
        }
        let received = socket.try_io(Interest::READABLE, || {
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
            } else {
                Ok(n as usize)
            }
        });
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        for (i, hdr) in hdrs.iter().enumerate().take(n) {
            // SAFETY: every header was written before the call.
            let h = unsafe { hdr.assume_init_ref() };
            self.lens[i] = h.msg_len as usize;
            self.srcs[i] = from_storage(&self.addrs[i]);
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

/// Answers waiting to be sent on one socket, copied into one arena.
#[derive(Default)]
pub struct SendBatch {
    arena: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
}

impl SendBatch {
    pub fn push(&mut self, dest: SocketAddr, payload: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(payload);
        self.items.push((dest, start, payload.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Send everything queued, `BATCH` per call, without blocking.  What the
    /// socket cannot take now is dropped (this is UDP).  Returns how many
    /// were sent.
    pub fn flush(&mut self, socket: &UdpSocket) -> usize {
        let fd = socket.as_raw_fd();
        let mut sent = 0;
        let mut at = 0;
        while at < self.items.len() {
            let chunk = &self.items[at..(at + BATCH).min(self.items.len())];
            let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
                chunk.iter().map(|(d, _, _)| to_storage(d)).collect();
            let mut iovecs: Vec<libc::iovec> = chunk
                .iter()
                .map(|&(_, start, len)| libc::iovec {
                    iov_base: self.arena[start..start + len].as_ptr().cast_mut().cast(),
                    iov_len: len,
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = (0..chunk.len())
                .map(|i| {
                    // SAFETY: plain old data; all-zero is a valid start.
                    let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
                    h.msg_hdr.msg_name = (&raw mut addrs[i].0).cast();
                    h.msg_hdr.msg_namelen = addrs[i].1;
                    h.msg_hdr.msg_iov = &raw mut iovecs[i];
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            let result = socket.try_io(Interest::WRITABLE, || {
                // SAFETY: the headers point at addresses, iovecs and arena
                // bytes that live until after the call; the kernel only
                // reads them (and writes msg_len).
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        hdrs.as_mut_ptr(),
                        hdrs.len() as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match result {
                Ok(n) => {
                    sent += n;
                    at += n.max(1);
                }
                // The socket buffer is full: drop the rest.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The kernel stops at the first datagram it cannot send;
                // skip that one (an unreachable client, say) and go on.
                Err(_) => at += 1,
            }
        }
        self.arena.clear();
        self.items.clear();
        sent
    }
}
