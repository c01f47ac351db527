//! BACKEND LINKS
//!
//! The I/O half of each backend's control session, owned by the event loop
//! itself: no task per backend, no channel per read.  The core decides
//! everything (what to send, when a backend is faulted); the links only
//! move bytes.  When the core says connect, the socket is connected at
//! once (a non-blocking connect on AF_UNIX completes or fails at once,
//! never holding up the loop);
//! the loop then waits on every link's readiness together with its other
//! sources, and when a link is readable it reads into that link's reused
//! buffer and hands the bytes to the core.
//!
//! Writes toward a backend go through its queue: a byte buffer with a hard
//! bound.  The core appends frames; the loop writes what it can when a
//! batch of work is done, and waits for the socket to be writable when the
//! kernel's buffer is full.  A link is registered with the runtime for
//! readability only until a write first finds the buffer full: a backend
//! reading each frame frees buffer space, an EPOLLOUT edge that would wake
//! the loop for nothing after every query.  When the backend stops reading, the socket
//! buffer fills, then the queue, and further UDP queries are refused
//! ("stuck") instead of queued: the original learned that a balancer that
//! queues without bound under load does worse than one that drops.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::task::{Context, Poll};

use foldhash::fast::RandomState;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::Interest;

/// A backend's control socket as the runtime knows it.
type LinkStream = RegisteredStream;

use crate::backends::BackendId;
use crate::core::QueueFull;
use mname_quiet_stream::{RegisteredStream, register, register_writes_too};

/// Bytes read from a backend per read call: many frames per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// Reads per link per wake-up before other work gets a turn.
pub const READS_PER_WAKE: usize = 4;

/// The frames waiting for one backend's socket, with a hard bound.
#[derive(Debug)]
pub struct OutQueue {
    bytes: Vec<u8>,
    /// Bytes before this offset have been written.
    start: usize,
    limit: usize,
}

impl OutQueue {
    /// An empty queue that holds at most `limit` bytes of frames.
    pub fn new(limit: usize) -> Self {
        OutQueue {
            bytes: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue the pieces of one frame, or refuse it whole if it would take
    /// the queue past its bound.
    pub fn push(&mut self, pieces: &[&[u8]]) -> Result<(), QueueFull> {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        if self.len() + len > self.limit {
            return Err(QueueFull);
        }
        for p in pieces {
            self.bytes.extend_from_slice(p);
        }
        Ok(())
    }

    /// Queue a small control frame (hello, heartbeat) even past the bound:
    /// it is a few bytes, and a heartbeat that cannot be sent must still be
    /// timed so that a wedged backend is found out.
    pub fn push_control(&mut self, frame: &[u8]) {
        self.bytes.extend_from_slice(frame);
    }

    fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// `n` bytes were written.
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
        } else if self.start > self.bytes.len() / 2 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
    }
}

/// One backend's control socket.
struct Link {
    generation: u64,
    /// Taken only while it is registered anew (see [`Link::watch_writes`]).
    stream: Option<LinkStream>,
    /// Registered for writability too (after a write found the buffer full).
    watching_writes: bool,
    out: OutQueue,
    /// The loop should try to read (the socket was reported readable).
    readable: bool,
    /// The loop should try to write (readiness or new frames).
    writable: bool,
}

impl Link {
    /// Write what is queued, as much as the socket takes now.
    fn write(&mut self) -> io::Result<usize> {
        let Some(stream) = &self.stream else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        let pending = self.out.pending();
        if self.watching_writes {
            // Through the runtime, so a full buffer clears the readiness
            // the next EPOLLOUT sets again.
            stream.try_io(Interest::WRITABLE, |s| io::Write::write(&mut &*s, pending))
        } else {
            io::Write::write(&mut stream.get_ref(), pending)
        }
    }

    /// The buffer is full: from now on, hear when it has room again (the
    /// socket is registered anew for writability too, for the rest of the
    /// link's life; a backend that fell behind once may again).
    fn watch_writes(&mut self) -> io::Result<()> {
        if self.watching_writes {
            return Ok(());
        }
        register_writes_too(&mut self.stream)?;
        self.watching_writes = true;
        // Bytes that arrived meanwhile are read at the next turn.
        self.readable = true;
        Ok(())
    }
}

/// What a read from a link found.
#[derive(Debug)]
pub enum LinkNews {
    /// This many bytes, at the front of the buffer given.
    Bytes(usize),
    /// End of stream (`None`) or a socket error.
    Closed(Option<io::Error>),
}

/// Every backend's control socket.
pub struct Links {
    links: HashMap<BackendId, Link, RandomState>,
    queue_limit: usize,
}

impl Links {
    /// No link yet; each one's queue will hold at most `queue_limit` bytes
    /// (`--backend-queue-bytes`).
    pub fn new(queue_limit: usize) -> Self {
        Links {
            links: HashMap::default(),
            queue_limit,
        }
    }

    /// Connect to backend `id`'s socket now (replacing any link it had).
    pub fn connect(&mut self, id: BackendId, generation: u64, path: &Path) -> io::Result<()> {
        self.links.remove(&id);
        // Never a blocking connect in the loop: on AF_UNIX a blocking
        // connect waits while the backend's listen backlog is full, which
        // a stopped backend's soon is.  Non-blocking, it completes or fails
        // at once (EAGAIN for a full backlog: the core retries on the
        // back-off schedule).
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        socket.connect(&SockAddr::unix(path)?)?;
        let stream = std::os::unix::net::UnixStream::from(OwnedFd::from(socket));
        let stream = register(stream, Interest::READABLE)?;
        self.links.insert(
            id,
            Link {
                generation,
                stream: Some(stream),
                watching_writes: false,
                out: OutQueue::new(self.queue_limit),
                readable: true,
                writable: false,
            },
        );
        Ok(())
    }

    /// Close backend `id`'s socket and drop what was queued for it.
    pub fn close(&mut self, id: BackendId) {
        self.links.remove(&id);
    }

    /// Queue the pieces of one frame for backend `id`, whole or not at
    /// all (no link is as good as a full queue).
    pub fn send_frame(&mut self, id: BackendId, pieces: &[&[u8]]) -> Result<(), QueueFull> {
        let link = self.links.get_mut(&id).ok_or(QueueFull)?;
        link.out.push(pieces)?;
        link.writable = true;
        Ok(())
    }

    /// Queue a control frame for backend `id`, even past the bound
    /// ([`OutQueue::push_control`]); nothing if it has no link.
    pub fn send_control(&mut self, id: BackendId, frame: &[u8]) {
        if let Some(link) = self.links.get_mut(&id) {
            link.out.push_control(frame);
            link.writable = true;
        }
    }

    /// Register interest in every link's readiness; Ready if any link has
    /// work to do now.  Readiness found is remembered for
    /// [`Links::read`] and [`Links::flush`].
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut any = false;
        for link in self.links.values_mut() {
            let Some(stream) = &link.stream else { continue };
            if !link.readable && stream.poll_read_ready(cx).is_ready() {
                link.readable = true;
            }
            if link.watching_writes
                && !link.out.is_empty()
                && !link.writable
                && stream.poll_write_ready(cx).is_ready()
            {
                link.writable = true;
            }
            any |= link.readable || (link.writable && !link.out.is_empty());
        }
        if any { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Whether any link has bytes to read or write now.
    pub fn has_work(&self) -> bool {
        self.links
            .values()
            .any(|l| l.readable || (l.writable && !l.out.is_empty()))
    }

    /// Write what is queued toward every link that can take it.  Links
    /// whose socket failed are added to `failed`.
    pub fn flush(&mut self, failed: &mut Vec<(BackendId, u64, io::Error)>) {
        for (&id, link) in self.links.iter_mut() {
            if !link.writable || link.out.is_empty() {
                continue;
            }
            loop {
                match link.write() {
                    Ok(n) => {
                        link.out.consume(n);
                        if link.out.is_empty() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        link.writable = false;
                        if let Err(e) = link.watch_writes() {
                            link.out = OutQueue::new(0);
                            failed.push((id, link.generation, e));
                        }
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        link.writable = false;
                        link.out = OutQueue::new(0);
                        failed.push((id, link.generation, e));
                        break;
                    }
                }
            }
        }
    }

    /// Whether link `id` has been reported readable and not yet drained.
    pub fn is_readable(&self, id: BackendId) -> bool {
        self.links.get(&id).is_some_and(|l| l.readable)
    }

    /// The ids of links that were reported readable.
    pub fn readable(&self, into: &mut Vec<BackendId>) {
        into.clear();
        into.extend(
            self.links
                .iter()
                .filter(|(_, l)| l.readable)
                .map(|(&id, _)| id),
        );
    }

    /// Read once from link `id` into `buf` whether or not the runtime has
    /// reported it readable (the rest of a frame known to be on its way).
    /// `None` when there is nothing yet, as [`Links::read`].
    pub fn read_again(&mut self, id: BackendId, buf: &mut [u8]) -> Option<(u64, LinkNews)> {
        self.links.get_mut(&id)?.readable = true;
        self.read(id, buf)
    }

    /// Read once from link `id` into `buf` (one buffer serves every link:
    /// each read is handed to the core before the next).  `None` when the
    /// link is gone or has nothing to read now.
    ///
    /// A read shorter than the buffer emptied the socket: the link's
    /// readiness is cleared then and there, so the next wake-up does not
    /// spend a system call to learn it has nothing (tokio clears it only if
    /// no new bytes have been signalled since, so none are missed).
    pub fn read(&mut self, id: BackendId, buf: &mut [u8]) -> Option<(u64, LinkNews)> {
        let link = self.links.get_mut(&id)?;
        if !link.readable {
            return None;
        }
        loop {
            let mut drained = None;
            let Some(stream) = &link.stream else {
                return None;
            };
            let read = stream.try_io(Interest::READABLE, |s| {
                let n = io::Read::read(&mut &*s, buf)?;
                if n > 0 && n < buf.len() {
                    drained = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            if let Some(n) = drained {
                link.readable = false;
                return Some((link.generation, LinkNews::Bytes(n)));
            }
            return match read {
                Ok(0) => {
                    link.readable = false;
                    Some((link.generation, LinkNews::Closed(None)))
                }
                Ok(n) => Some((link.generation, LinkNews::Bytes(n))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    link.readable = false;
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    link.readable = false;
                    Some((link.generation, LinkNews::Closed(Some(e))))
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_refuses_whole_frames_past_its_bound() {
        let mut q = OutQueue::new(40);
        assert_eq!(q.push(&[&[0u8; 16], &[1u8; 16]]), Ok(()));
        assert_eq!(q.push(&[&[0u8; 16]]), Err(QueueFull), "48 > 40");
        assert_eq!(q.len(), 32, "nothing of the refused frame was queued");
        q.push_control(&[4, 0, 0, 0]);
        q.push_control(&[4, 0, 0, 0]);
        assert_eq!(q.len(), 40, "control frames pass the bound");
        q.consume(30);
        assert_eq!(q.pending().len(), 10);
        q.consume(10);
        assert!(q.is_empty());
        assert_eq!(q.push(&[&[0u8; 40]]), Ok(()));
    }
}
