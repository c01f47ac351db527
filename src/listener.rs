//! BACKEND LISTENER
//!
//! The backend side of the protocol, for writing backends in Rust: what
//! node-mname's `listenBalancer` is for JavaScript.  [`BalancerListener`]
//! binds an AF_UNIX socket and accepts the balancer's connections.  On each
//! one it answers CLIENT_HELLO and CLIENT_HEARTBEAT itself, yields every
//! INBOUND_UDP as an [`Inbound::Udp`] query (client address plus a handle to
//! reply with), and turns a connection that opens with INBOUND_TCP into an
//! [`Inbound::Tcp`] session: a DNS-over-TCP stream from the named client.
//!
//! Queries reach the application through a bounded channel: a backend that
//! cannot keep up stops reading its socket, and the balancer, seeing the
//! socket full, drops rather than queues.  Like node-mname it sends nothing
//! the original balancer does not expect, so a backend built on this works
//! behind the original C balancer too.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::frame::{self, Frame, FrameBuffer, frame_type};

/// Queries waiting for the application, across all sessions.
const INBOUND_QUEUE: usize = 1024;

/// Replies waiting to be written on one control session.
const REPLY_QUEUE: usize = 1024;

/// Something the balancer sent that the application must handle.
#[derive(Debug)]
pub enum Inbound {
    Udp(UdpQuery),
    Tcp(TcpSession),
}

/// One DNS query that arrived as a UDP datagram at the balancer.
#[derive(Debug)]
pub struct UdpQuery {
    /// The client, as the balancer saw it.
    pub client: SocketAddr,
    /// The DNS message.
    pub message: Vec<u8>,
    replies: mpsc::Sender<Vec<u8>>,
}

impl UdpQuery {
    /// Send `answer` back to the client through the balancer.  Fails if the
    /// control session has ended (the answer is then lost, as a UDP answer
    /// may be).
    pub async fn reply(&self, answer: &[u8]) -> io::Result<()> {
        let SocketAddr::V4(v4) = self.client else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "IPv6 client on the original protocol",
            ));
        };
        if answer.len() > frame::MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "answer longer than 1500 bytes: truncate it first",
            ));
        }
        let mut out = Vec::with_capacity(frame::UDP_HEADER_LEN + answer.len());
        Frame::OutboundUdp {
            addr: *v4.ip(),
            port: v4.port(),
            payload: answer,
        }
        .encode(&mut out);
        self.replies
            .send(out)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "balancer session closed"))
    }
}

/// A client TCP connection relayed by the balancer: after INBOUND_TCP_OK the
/// stream carries DNS over TCP (two-byte length prefix) verbatim.
#[derive(Debug)]
pub struct TcpSession {
    pub client: SocketAddr,
    /// Bytes that arrived right behind the INBOUND_TCP frame.
    pending: Vec<u8>,
    pub stream: UnixStream,
}

impl TcpSession {
    /// Read one DNS message; `Ok(None)` at a clean end of stream.
    pub async fn read_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 2];
        if !self.fill(&mut len).await? {
            return Ok(None);
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        if !self.fill(&mut msg).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Some(msg))
    }

    /// Write one DNS message with its length prefix.
    pub async fn write_message(&mut self, msg: &[u8]) -> io::Result<()> {
        let len = u16::try_from(msg.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 65535"))?;
        let mut out = Vec::with_capacity(2 + msg.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(msg);
        self.stream.write_all(&out).await
    }

    /// Fill `buf` from pending bytes then the stream.  Returns false if the
    /// stream ended before the first byte.
    async fn fill(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let from_pending = self.pending.len().min(buf.len());
        buf[..from_pending].copy_from_slice(&self.pending[..from_pending]);
        self.pending.drain(..from_pending);
        if from_pending == buf.len() {
            return Ok(true);
        }
        let mut at = from_pending;
        while at < buf.len() {
            let n = self.stream.read(&mut buf[at..]).await?;
            if n == 0 {
                return if at == 0 {
                    Ok(false)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
            at += n;
        }
        Ok(true)
    }
}

/// Accepts balancer connections on an AF_UNIX socket.
pub struct BalancerListener {
    inbound: mpsc::Receiver<Inbound>,
    path: PathBuf,
    accept_task: tokio::task::JoinHandle<()>,
}

impl BalancerListener {
    /// Bind `path`, replacing a stale socket file left by an earlier process
    /// (as a restarted node-mname does), and start accepting.
    pub fn bind(path: &Path) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let accept_task = tokio::spawn(accept_loop(listener, tx));
        Ok(BalancerListener {
            inbound: rx,
            path: path.to_path_buf(),
            accept_task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next query or TCP session, from any balancer connection.
    pub async fn next(&mut self) -> Option<Inbound> {
        self.inbound.recv().await
    }
}

impl Drop for BalancerListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Inbound>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, tx.clone()));
            }
            Err(_) => {
                // Out of descriptors or similar: pause rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serve one balancer connection: a control session, or (after
/// INBOUND_TCP) a TCP session handed to the application.
async fn serve_connection(mut stream: UnixStream, tx: mpsc::Sender<Inbound>) {
    let (reply_tx, mut reply_rx) = mpsc::channel::<Vec<u8>>(REPLY_QUEUE);
    let mut frames = FrameBuffer::new();
    let mut hello = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        tokio::select! {
            r = stream.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                frames.extend(&buf[..n]);
                loop {
                    let frame = match frames.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(_) => return,
                    };
                    match frame {
                        Frame::ClientHello => {
                            hello = true;
                            out.extend_from_slice(&frame_type::SERVER_HELLO.to_le_bytes());
                        }
                        Frame::ClientHeartbeat if hello => {
                            out.extend_from_slice(&frame_type::SERVER_HEARTBEAT.to_le_bytes());
                        }
                        Frame::InboundUdp { addr, port, payload } if hello => {
                            let q = UdpQuery {
                                client: SocketAddr::V4(SocketAddrV4::new(addr, port)),
                                message: payload.to_vec(),
                                replies: reply_tx.clone(),
                            };
                            // The application is behind: drop the query,
                            // as a UDP query may be dropped.
                            let _ = tx.try_send(Inbound::Udp(q));
                        }
                        Frame::InboundTcp { addr, port } => {
                            let client = SocketAddr::V4(SocketAddrV4::new(addr, port));
                            let pending = frames.take_remaining();
                            out.extend_from_slice(&frame_type::INBOUND_TCP_OK.to_le_bytes());
                            if stream.write_all(&out).await.is_err() {
                                return;
                            }
                            let _ = tx
                                .send(Inbound::Tcp(TcpSession { client, pending, stream }))
                                .await;
                            return;
                        }
                        // Anything else (a frame before hello, a frame only
                        // a backend sends) breaks the protocol: end the
                        // session, as node-mname does.
                        _ => return,
                    }
                }
            }
            Some(reply) = reply_rx.recv() => {
                out.extend_from_slice(&reply);
                while let Ok(more) = reply_rx.try_recv() {
                    out.extend_from_slice(&more);
                }
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}
