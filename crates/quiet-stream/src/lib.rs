//! QUIET UNIX STREAMS
//!
//! An AF_UNIX stream socket registered with the tokio runtime for
//! readability only, until a write first finds its buffer full.  The kernel
//! reports an AF_UNIX socket writable (an EPOLLOUT edge) every time the peer
//! reads what was written to it; a socket registered for writability, as
//! every `tokio::net::UnixStream` is, wakes its owner for nothing after every
//! message the peer takes, and the peer pays for that wake-up inside its
//! read.  On a connection that carries a query one way and its answer back,
//! that is one wake-up in four.
//!
//! Both ends of the balancer protocol use it: the balancer for its backend
//! links and the backend half of each TCP session, the Rust backend
//! (`mname-balancer-backend`) for its control sessions and TCP sessions.
//! A [`QuietStream`] writes straight to the socket and asks for writability
//! only once a write would block; from then on, for the rest of the
//! socket's life, it is registered for both.  [`register`] and
//! [`register_writes_too`] do the same for an owner that drives the
//! socket's readiness itself.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use socket2::SockRef;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A registered AF_UNIX stream.
pub type RegisteredStream = AsyncFd<UnixStream>;

/// Register `stream` (non-blocking) for `interest`.
pub fn register(stream: UnixStream, interest: Interest) -> io::Result<RegisteredStream> {
    // SAFETY: a std UnixStream owns its descriptor: it stays open, and
    // as_raw_fd returns it, until the stream is dropped, which is when the
    // AsyncFd that owns it is dropped (or gives it back, into_inner).
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

/// Register the stream in `slot` anew, for writability as well as
/// readability (its buffer was found full).  The slot is empty only if
/// registering failed, and then the stream is gone (closed).
pub fn register_writes_too(slot: &mut Option<RegisteredStream>) -> io::Result<()> {
    let Some(fd) = slot.take() else {
        return Err(io::ErrorKind::NotConnected.into());
    };
    *slot = Some(register(
        fd.into_inner(),
        Interest::READABLE | Interest::WRITABLE,
    )?);
    Ok(())
}

/// A stream that is not woken by the room its peer makes by reading.
#[derive(Debug)]
pub struct QuietStream {
    /// Taken only while it is registered anew ([`QuietStream::watch_writes`]).
    fd: Option<RegisteredStream>,
    /// Registered for writability too (a write found the buffer full).
    watching_writes: bool,
}

impl QuietStream {
    /// Take over a connected tokio stream (it leaves the runtime's
    /// registration and joins it again, for readability only).
    pub fn new(stream: tokio::net::UnixStream) -> io::Result<Self> {
        let stream = stream.into_std()?;
        stream.set_nonblocking(true)?;
        Ok(QuietStream {
            fd: Some(register(stream, Interest::READABLE)?),
            watching_writes: false,
        })
    }

    fn fd(&self) -> io::Result<&RegisteredStream> {
        self.fd
            .as_ref()
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    /// Registered for writability as well as readability: true once a
    /// write has found the buffer full.
    pub fn is_watching_writes(&self) -> bool {
        self.watching_writes
    }

    /// The buffer is full: from now on, hear when it has room again.
    fn watch_writes(&mut self) -> io::Result<()> {
        register_writes_too(&mut self.fd)?;
        self.watching_writes = true;
        Ok(())
    }
}

impl AsyncRead for QuietStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let fd = self.get_mut().fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            // SAFETY: recv(2) writes only initialised bytes, at most the
            // length given, and the count it returns is what it wrote.
            let unfilled = unsafe { buf.unfilled_mut() };
            let room = unfilled.len();
            // socket2 reads into bytes not yet initialised (std's Read
            // would have the 8 KiB zeroed first, for nothing).
            let read = guard.try_io(|s| SockRef::from(s.get_ref()).recv(unfilled));
            match read {
                Ok(Ok(n)) => {
                    // A short read emptied the socket: clear the readiness
                    // now (the next byte sets it again), so the next poll
                    // waits instead of spending a read(2) to find EAGAIN.
                    if n > 0 && n < room {
                        guard.clear_ready();
                    }
                    // SAFETY: recv(2) initialised the first n bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Would block: the readiness was cleared; wait again.
                Err(_) => {}
            }
        }
    }
}

impl AsyncWrite for QuietStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.watching_writes {
            // Straight to the socket: the runtime hears of its writability
            // only once it has been full.
            loop {
                match (&mut this.fd()?.get_ref()).write(data) {
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        this.watch_writes()?;
                        break;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
        let fd = this.fd()?;
        loop {
            let mut guard = ready!(fd.poll_write_ready(cx))?;
            match guard.try_io(|s| (&mut s.get_ref()).write(data)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return Poll::Ready(result),
                Err(_) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Half-close: shutdown(2) of an AF_UNIX stream never blocks.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.fd()?.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    }

    #[test]
    fn relays_both_ways_and_half_closes() {
        runtime().block_on(async {
            let (a, mut b) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
            let mut quiet = QuietStream::new(a).unwrap_or_else(|e| panic!("{e}"));
            quiet
                .write_all(b"query")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut got = [0u8; 5];
            b.read_exact(&mut got)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&got, b"query");
            b.write_all(b"answer")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut back = Vec::with_capacity(64);
            quiet
                .read_buf(&mut back)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, b"answer");
            assert!(!quiet.is_watching_writes());
            quiet.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
            let mut rest = Vec::new();
            b.read_to_end(&mut rest)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(rest.is_empty());
        });
    }

    #[test]
    fn a_full_buffer_is_waited_out_then_written() {
        runtime().block_on(async {
            let (a, mut b) = tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
            let mut quiet = QuietStream::new(a).unwrap_or_else(|e| panic!("{e}"));
            // Far more than an AF_UNIX socket buffers: the writer must wait
            // for the reader, and hear when it may go on.
            let total = 4 << 20;
            let writer = async {
                let chunk = vec![7u8; 64 * 1024];
                let mut sent = 0;
                while sent < total {
                    quiet
                        .write_all(&chunk)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    sent += chunk.len();
                }
                quiet.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
                quiet.is_watching_writes()
            };
            let reader = async {
                let mut n = 0;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let got = b.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
                    if got == 0 {
                        return n;
                    }
                    n += got;
                }
            };
            let (watched, read) = tokio::join!(writer, reader);
            assert_eq!(read, total);
            assert!(watched, "a full buffer must switch on write readiness");
        });
    }
}
