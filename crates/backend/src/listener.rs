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
//! Queries reach the application through a bounded channel; when the
//! application falls behind, further UDP queries are dropped, as a datagram
//! may be.  Like node-mname it sends nothing the original balancer does not
//! expect, so a backend built on this works behind the original C balancer
//! too; only when asked (a second CLIENT_HELLO) does it answer
//! SERVER_CAPABILITIES, and then it accepts IPv6 clients' frames.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use mname_quiet_stream::QuietStream;

use crate::frame::{self, Frame, FrameBuffer, frame_type};

/// Queries waiting for the application, across all sessions.
const INBOUND_QUEUE: usize = 1024;

/// Replies waiting to be written on one control session.
const REPLY_QUEUE: usize = 1024;

/// Something the balancer sent that the application must handle.
#[derive(Debug)]
pub enum Inbound {
    /// A query that reached the balancer over UDP; answer it with
    /// [`UdpQuery::reply`].
    Udp(UdpQuery),
    /// A client's TCP connection, relayed: read queries from it and write
    /// answers to it until the client closes it.
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
        if answer.len() > frame::MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "answer longer than 1500 bytes: truncate it first",
            ));
        }
        let mut out = Vec::with_capacity(frame::UDP_HEADER_LEN + answer.len());
        Frame::OutboundUdp {
            addr: self.client.ip(),
            port: self.client.port(),
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
/// stream carries DNS over TCP (two-byte length prefix) verbatim.  It is an
/// async stream ([`AsyncRead`] + [`AsyncWrite`]); [`TcpSession::read_message`]
/// and [`TcpSession::write_message`] handle the framing for the common case.
#[derive(Debug)]
pub struct TcpSession {
    /// The client, as the balancer saw it.
    pub client: SocketAddr,
    /// Bytes that arrived right behind the INBOUND_TCP frame; read first.
    pending: Vec<u8>,
    /// Buffered, so that reading a message (its length, then its body)
    /// takes one read per burst of pipelined queries, not three per query:
    /// a plain DNS-over-TCP server reads the same way.
    stream: BufReader<QuietStream>,
}

impl TcpSession {
    /// Read one DNS message; `Ok(None)` at a clean end of stream.
    pub async fn read_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 2];
        if self.read(&mut len[..1]).await? == 0 {
            return Ok(None);
        }
        self.read_exact(&mut len[1..]).await?;
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        self.read_exact(&mut msg).await?;
        Ok(Some(msg))
    }

    /// Write one DNS message with its length prefix.
    pub async fn write_message(&mut self, msg: &[u8]) -> io::Result<()> {
        let len = u16::try_from(msg.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 65535"))?;
        let mut out = Vec::with_capacity(2 + msg.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(msg);
        self.write_all(&out).await
    }
}

impl AsyncRead for TcpSession {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.remaining());
            buf.put_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpSession {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
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

    /// The socket path this listener is bound to.
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
/// INBOUND_TCP) a TCP session handed to the application.  The connection
/// is a [`QuietStream`]: the balancer reading an answer does not wake this
/// backend (and does not pay for waking it).
async fn serve_connection(stream: UnixStream, tx: mpsc::Sender<Inbound>) {
    let Ok(mut stream) = QuietStream::new(stream) else {
        return;
    };
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
                        Frame::ClientHello if !hello => {
                            hello = true;
                            out.extend_from_slice(&frame_type::SERVER_HELLO.to_le_bytes());
                        }
                        // A second hello asks which extensions we speak.
                        // The original balancer never sends one, so it never
                        // sees this frame.
                        Frame::ClientHello => Frame::ServerCapabilities {
                            flags: frame::capability::IPV6,
                        }
                        .encode(&mut out),
                        Frame::ClientHeartbeat if hello => {
                            out.extend_from_slice(&frame_type::SERVER_HEARTBEAT.to_le_bytes());
                        }
                        Frame::InboundUdp { addr, port, payload } if hello => {
                            let q = UdpQuery {
                                client: SocketAddr::new(addr, port),
                                message: payload.to_vec(),
                                replies: reply_tx.clone(),
                            };
                            // The application is behind: drop the query,
                            // as a UDP query may be dropped.
                            let _ = tx.try_send(Inbound::Udp(q));
                        }
                        Frame::InboundTcp { addr, port } => {
                            let client = SocketAddr::new(addr, port);
                            let pending = frames.take_remaining();
                            out.extend_from_slice(&frame_type::INBOUND_TCP_OK.to_le_bytes());
                            if stream.write_all(&out).await.is_err() {
                                return;
                            }
                            let _ = tx
                                .send(Inbound::Tcp(TcpSession {
                                    client,
                                    pending,
                                    stream: BufReader::new(stream),
                                }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    async fn read_frame(s: &mut UnixStream, fb: &mut FrameBuffer) -> Vec<u8> {
        loop {
            if let Some(f) = fb.next_frame().unwrap() {
                let mut out = Vec::new();
                f.encode(&mut out);
                return out;
            }
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "unexpected EOF");
            fb.extend(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn control_session_and_tcp_session() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("5300");
        std::fs::write(&path, b"stale").unwrap();
        let mut l = BalancerListener::bind(&path).unwrap();

        // Hello, a heartbeat and a query in one write.
        let mut c = UnixStream::connect(&path).await.unwrap();
        let client = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let mut w = Vec::new();
        Frame::ClientHello.encode(&mut w);
        Frame::ClientHeartbeat.encode(&mut w);
        Frame::InboundUdp {
            addr: client,
            port: 5353,
            payload: b"query",
        }
        .encode(&mut w);
        c.write_all(&w).await.unwrap();
        let mut fb = FrameBuffer::new();
        assert_eq!(read_frame(&mut c, &mut fb).await, 1001u32.to_le_bytes());
        assert_eq!(read_frame(&mut c, &mut fb).await, 1004u32.to_le_bytes());
        let Some(Inbound::Udp(q)) = l.next().await else {
            panic!("expected a UDP query")
        };
        assert_eq!(q.client, "10.1.2.3:5353".parse().unwrap());
        assert_eq!(q.message, b"query");
        q.reply(b"answer").await.unwrap();
        let mut want = Vec::new();
        Frame::OutboundUdp {
            addr: client,
            port: 5353,
            payload: b"answer",
        }
        .encode(&mut want);
        assert_eq!(read_frame(&mut c, &mut fb).await, want);

        // INBOUND_TCP with the first DNS bytes right behind it.
        let mut t = UnixStream::connect(&path).await.unwrap();
        let (h, n) = frame::inbound_tcp(client, 4000);
        let mut w = h[..n].to_vec();
        w.extend_from_slice(&[0, 3, b'a', b'b', b'c']);
        t.write_all(&w).await.unwrap();
        let Some(Inbound::Tcp(mut s)) = l.next().await else {
            panic!("expected a TCP session")
        };
        assert_eq!(s.client, "10.1.2.3:4000".parse().unwrap());
        let mut ok = [0u8; 4];
        t.read_exact(&mut ok).await.unwrap();
        assert_eq!(ok, 1003u32.to_le_bytes());
        assert_eq!(s.read_message().await.unwrap().unwrap(), b"abc");
        s.write_message(b"xyz").await.unwrap();
        let mut back = [0u8; 5];
        t.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, &[0, 3, b'x', b'y', b'z']);
        t.shutdown().await.unwrap();
        assert_eq!(s.read_message().await.unwrap(), None, "clean EOF");
    }

    #[tokio::test]
    async fn second_hello_announces_ipv6_and_ipv6_clients_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v6");
        let mut l = BalancerListener::bind(&path).unwrap();
        let mut c = UnixStream::connect(&path).await.unwrap();
        let six: IpAddr = "2001:db8::7".parse().unwrap();
        let mut w = Vec::new();
        Frame::ClientHello.encode(&mut w);
        Frame::ClientHello.encode(&mut w);
        Frame::InboundUdp {
            addr: six,
            port: 853,
            payload: b"q6",
        }
        .encode(&mut w);
        c.write_all(&w).await.unwrap();
        let mut fb = FrameBuffer::new();
        assert_eq!(read_frame(&mut c, &mut fb).await, 1001u32.to_le_bytes());
        assert_eq!(
            read_frame(&mut c, &mut fb).await,
            [0xed, 3, 0, 0, 1, 0, 0, 0]
        );
        let Some(Inbound::Udp(q)) = l.next().await else {
            panic!("expected a UDP query")
        };
        assert_eq!(q.client, "[2001:db8::7]:853".parse().unwrap());
        q.reply(b"a6").await.unwrap();
        let mut want = Vec::new();
        Frame::OutboundUdp {
            addr: six,
            port: 853,
            payload: b"a6",
        }
        .encode(&mut want);
        assert_eq!(read_frame(&mut c, &mut fb).await, want);
    }

    #[tokio::test]
    async fn frame_before_hello_ends_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let _l = BalancerListener::bind(&path).unwrap();
        let mut c = UnixStream::connect(&path).await.unwrap();
        c.write_all(&4u32.to_le_bytes()).await.unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(c.read(&mut buf).await.unwrap(), 0, "closed, no reply");
    }
}
