//! STATS SOCKET
//!
//! `-S PATH` makes the balancer answer questions about itself on an
//! AF_UNIX stream socket: one request line per connection, one JSON
//! document back, then the connection is closed.  `balstat` is its client;
//! the format is specified in docs/stats.md.
//!
//! The socket is served by its own tasks, never by the event loop: they ask
//! the loop for copies ([`StatsHandle`]) and do the serializing and writing
//! themselves.  A full dump asks for the remotes a page at a time, so a
//! million of them are streamed rather than built whole, and a client that
//! stops reading stops only its own dump: each write must make progress
//! within [`WRITE_TIMEOUT`] or the client is cut off, and at most
//! [`MAX_CLIENTS`] are served at once.
//!
//! The socket is private (mode 0600 unless `--stats-mode` widens it): it is
//! bound under a temporary name, given its mode, then renamed into place,
//! so it is never reachable with looser permissions.  A stale socket file
//! left by a dead balancer is replaced; a live one, or a file that is not a
//! socket, is an error.

use std::io;
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use slog::{Logger, debug, info, warn};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backends::BackendId;
use crate::core::snapshot::STATS_VERSION;
use crate::core::{ACCEPT_BACKOFF, RateLimit};
use crate::ops::ACCEPT_LOG_INTERVAL;
use crate::shell::stats_requests::StatsHandle;

/// Stats clients served at once; more are told "busy".
pub const MAX_CLIENTS: usize = 8;

/// A request line must arrive this soon after connecting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Each write of a response must complete this soon, or the client is cut
/// off: a client that stops reading cannot hold a dump open.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest request line accepted.
const MAX_REQUEST: usize = 256;

/// Remotes asked of the loop per page (at most
/// [`crate::shell::stats_requests::MAX_REMOTES_PAGE`]).
const PAGE: usize = 1024;

/// A bound stats socket; removes its file when dropped.  It is bound
/// before the loop starts (a failure is an error at start-up) and served
/// by whichever runtime [`spawn`] is called in.
#[derive(Debug)]
pub struct StatsSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl Drop for StatsSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Bind the stats socket at `path` with permission bits `mode`.
pub fn bind(path: &Path, mode: u32) -> io::Result<StatsSocket> {
    let err = |e: io::Error, what: &str| {
        io::Error::new(
            e.kind(),
            format!("stats socket {}: {what}: {e}", path.display()),
        )
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if is_served(path) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "stats socket {}: another process is serving it",
                        path.display()
                    ),
                ));
            }
            // Stale: replaced by the rename below.
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "stats socket {}: exists and is not a socket",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e, "cannot examine")),
    }
    let name = path
        .file_name()
        .ok_or_else(|| err(io::ErrorKind::InvalidInput.into(), "not a file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let std_listener =
        std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| err(e, "cannot bind"))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e, "cannot put in place"));
    }
    std_listener
        .set_nonblocking(true)
        .map_err(|e| err(e, "cannot listen"))?;
    Ok(StatsSocket {
        listener: std_listener,
        path: path.to_path_buf(),
    })
}

/// Whether a process is serving the socket at `path`.  The connect does
/// not block: a stopped balancer with a full listen queue answers
/// EAGAIN, which means served, rather than hanging this one at start-up.
fn is_served(path: &Path) -> bool {
    use socket2::{Domain, SockAddr, Socket, Type};
    let Ok(sock) = Socket::new(Domain::UNIX, Type::STREAM, None) else {
        return false;
    };
    let Ok(addr) = SockAddr::unix(path) else {
        return false;
    };
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    match sock.connect(&addr) {
        Ok(()) => true,
        Err(e) => matches!(
            e.raw_os_error(),
            Some(libc::EAGAIN) | Some(libc::EINPROGRESS)
        ),
    }
}

/// Serve `socket` on the current runtime until the returned task is
/// aborted (the socket file is removed then).
pub fn spawn(socket: StatsSocket, stats: StatsHandle, log: Logger) -> io::Result<AbortHandle> {
    let listener = UnixListener::from_std(socket.listener.try_clone()?)?;
    info!(log, "stats socket listening"; "path" => socket.path.display().to_string());
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    Ok(tokio::spawn(async move {
        // Owned by the task, so the file goes when the task does.
        let _socket = socket;
        let mut accept_log = RateLimit::default();
        loop {
            let conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(e) => {
                    if accept_log.allow(Instant::now(), ACCEPT_LOG_INTERVAL) {
                        warn!(log, "stats socket accept failed"; "strerror" => e.to_string());
                    }
                    // Out of descriptors, say: do not spin on the error.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let stats = stats.clone();
            let log = log.clone();
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    tokio::spawn(async move {
                        if let Err(e) = serve(conn, &stats).await {
                            debug!(log, "stats client cut off"; "cause" => e.to_string());
                        }
                        drop(slot);
                    });
                }
                Err(_) => {
                    // One non-blocking try: a refusal must not become a
                    // task per connection of a flood.  A request already
                    // in is read first: closing an AF_UNIX socket with
                    // unread data resets the peer before it reads "busy".
                    let _ = conn.try_read(&mut [0u8; MAX_REQUEST]);
                    if let Ok(mut busy) = serde_json::to_vec(&Failure::new("busy")) {
                        busy.push(b'\n');
                        let _ = conn.try_write(&busy);
                    }
                }
            }
        }
    })
    .abort_handle())
}

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Counters, backends and every remote.
    Snapshot,
    /// Counters and backends.
    Summary,
    /// `backend ID`: one backend.
    Backend(BackendId),
    /// `remote IP`: one remote.
    Remote(IpAddr),
    /// The packet cache's size, bounds and counters.
    Cache,
    /// Empty the packet cache.
    CacheFlush,
}

impl Request {
    /// The request on one line (an empty line asks for a snapshot); the
    /// error says what was wrong with it.
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_whitespace();
        let request = match (words.next(), words.next()) {
            (None | Some("snapshot"), None) => Request::Snapshot,
            (Some("summary"), None) => Request::Summary,
            (Some("cache"), None) => Request::Cache,
            (Some("cache"), Some("flush")) => Request::CacheFlush,
            (Some("backend"), Some(id)) => Request::Backend(
                id.parse()
                    .map_err(|_| format!("invalid backend id \"{id}\""))?,
            ),
            (Some("remote"), Some(ip)) => Request::Remote(
                ip.parse()
                    .map_err(|_| format!("invalid IP address \"{ip}\""))?,
            ),
            _ => return Err(format!("unknown request \"{}\"", line.trim())),
        };
        match words.next() {
            None => Ok(request),
            Some(extra) => Err(format!("unexpected \"{extra}\" in request")),
        }
    }
}

/// The answer to `cache`: the cache's size and bounds, and its counters.
#[derive(Serialize)]
struct CacheDoc {
    version: u32,
    cache: crate::core::cache::CacheView,
    counters: std::collections::BTreeMap<&'static str, u64>,
}

impl CacheDoc {
    fn of(summary: &crate::core::snapshot::Summary) -> Self {
        let c = &summary.counters;
        let counters = crate::core::Counters::INFO
            .iter()
            .zip(c.values())
            .filter(|(info, _)| info.name.starts_with("cache_"))
            .map(|(info, v)| (info.name, v))
            .collect();
        CacheDoc {
            version: STATS_VERSION,
            cache: summary.cache,
            counters,
        }
    }
}

#[derive(Serialize)]
struct Failure<'a> {
    version: u32,
    error: &'a str,
}

impl<'a> Failure<'a> {
    fn new(error: &'a str) -> Self {
        Failure {
            version: STATS_VERSION,
            error,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

async fn write_timed(conn: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(bytes))
        .await
        .map_err(|_| timed_out("client not reading"))?
}

async fn write_json(conn: &mut (impl AsyncWrite + Unpin), v: &impl Serialize) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(v).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_timed(conn, &bytes).await?;
    conn.shutdown().await
}

async fn serve(conn: UnixStream, stats: &StatsHandle) -> io::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| timed_out("no request"))??;
    let request = match Request::parse(&line) {
        Ok(r) => r,
        Err(e) => return write_json(&mut write, &Failure::new(&e)).await,
    };
    let gone = || io::Error::other("balancer stopping");
    match request {
        Request::Cache => {
            let summary = stats.summary().await.ok_or_else(gone)?;
            write_json(&mut write, &CacheDoc::of(&summary)).await
        }
        Request::CacheFlush => {
            let flushed = stats.flush_cache().await.ok_or_else(gone)?;
            #[derive(Serialize)]
            struct Flushed {
                version: u32,
                flushed: usize,
            }
            let doc = Flushed {
                version: STATS_VERSION,
                flushed,
            };
            write_json(&mut write, &doc).await
        }
        Request::Summary => {
            let summary = stats.summary().await.ok_or_else(gone)?;
            write_json(&mut write, &summary).await
        }
        Request::Backend(id) => {
            let summary = stats.summary().await.ok_or_else(gone)?;
            match summary.backends.iter().find(|b| b.id == id) {
                Some(backend) => {
                    #[derive(Serialize)]
                    struct One<'a, T> {
                        version: u32,
                        backend: &'a T,
                    }
                    write_json(
                        &mut write,
                        &One {
                            version: STATS_VERSION,
                            backend,
                        },
                    )
                    .await
                }
                None => write_json(&mut write, &Failure::new(&format!("no backend {id}"))).await,
            }
        }
        Request::Remote(ip) => match stats.remote(ip).await.ok_or_else(gone)? {
            Some(remote) => {
                #[derive(Serialize)]
                struct One<T> {
                    version: u32,
                    remote: T,
                }
                write_json(
                    &mut write,
                    &One {
                        version: STATS_VERSION,
                        remote,
                    },
                )
                .await
            }
            None => write_json(&mut write, &Failure::new(&format!("no remote {ip}"))).await,
        },
        Request::Snapshot => {
            let summary = stats.summary().await.ok_or_else(gone)?;
            // The summary's object, left open for the remotes.
            let mut buf = serde_json::to_vec(&summary).map_err(io::Error::other)?;
            if buf.pop() != Some(b'}') {
                return Err(io::Error::other("summary is not a JSON object"));
            }
            buf.extend_from_slice(b",\"remotes\":[");
            let mut after = None;
            let mut first = true;
            loop {
                let page = stats.remotes(after, PAGE).await.ok_or_else(gone)?;
                for r in &page {
                    if !first {
                        buf.push(b',');
                    }
                    first = false;
                    serde_json::to_writer(&mut buf, r).map_err(io::Error::other)?;
                }
                write_timed(&mut write, &buf).await?;
                buf.clear();
                match page.last() {
                    Some(last) if page.len() == PAGE => after = Some(last.ip),
                    _ => break,
                }
            }
            write_timed(&mut write, b"]}\n").await?;
            write.shutdown().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(Request::parse("\n"), Ok(Request::Snapshot));
        assert_eq!(Request::parse("snapshot\n"), Ok(Request::Snapshot));
        assert_eq!(Request::parse("summary"), Ok(Request::Summary));
        assert_eq!(Request::parse("backend 5301\n"), Ok(Request::Backend(5301)));
        assert_eq!(
            Request::parse("remote ::1"),
            Ok(Request::Remote("::1".parse().unwrap()))
        );
        assert!(Request::parse("backend x").is_err());
        assert!(Request::parse("remote 1.2.3").is_err());
        assert!(Request::parse("summary please").is_err());
        assert_eq!(Request::parse("cache\n"), Ok(Request::Cache));
        assert_eq!(Request::parse("cache flush\n"), Ok(Request::CacheFlush));
        assert!(Request::parse("cache clear").is_err());
        assert!(Request::parse("cache flush now").is_err());
        assert!(Request::parse("GET / HTTP/1.0").is_err());
    }

    #[tokio::test]
    async fn socket_is_private_and_stale_file_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.sock");
        // A stale socket: bound, then its listener dropped.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let sock = bind(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live one is not taken over.
        assert_eq!(
            bind(&path, 0o600).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        drop(sock);
        assert!(!path.exists());
        // Nor is a file that is not a socket.
        std::fs::write(&path, b"keep me").unwrap();
        assert!(bind(&path, 0o600).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }
}
