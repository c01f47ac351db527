//! The `/metrics` endpoint: an HTTP/1.1 server (hyper) on the sidecar
//! thread that answers each scrape with a fresh snapshot of the event
//! loop's state, rendered by [`super::exposition`].  A scraper cannot pile
//! up work: connections are bounded by [`MAX_CONNECTIONS`] and timed out
//! by [`HEADER_READ_TIMEOUT`] and [`CONNECTION_TIMEOUT`], one request
//! each; a failed accept backs off and is logged at most every few seconds.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use slog::{Logger, debug, error, info, warn};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::exposition::{Format, render};
use crate::core::{ACCEPT_BACKOFF, RateLimit};
use crate::ops::ACCEPT_LOG_INTERVAL;
use crate::shell::stats_requests::StatsHandle;

/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

/// Connections served at once; more are closed as soon as they are
/// accepted.
pub const MAX_CONNECTIONS: usize = 8;

/// The request line and headers must arrive this soon after connecting.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection is closed this long after it was accepted, whatever it is
/// doing: a scraper that stops reading cannot hold one of the
/// [`MAX_CONNECTIONS`].
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head read (hyper's minimum buffer).
const MAX_REQUEST_BUF: usize = 8192;

/// A bound metrics listener, not yet tied to a runtime: it is bound on the
/// event loop's thread and served on the sidecar's ([`crate::ops::sidecar`]).
#[derive(Debug)]
pub struct MetricsListener {
    listener: std::net::TcpListener,
}

impl MetricsListener {
    /// The address it is bound to (the port taken, if 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Bind the metrics listener (before the loop starts, so that a bad
/// address is an error at start-up).  Port 0 takes a free port, logged by
/// [`spawn`].
pub fn bind(addr: SocketAddr) -> io::Result<MetricsListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(MetricsListener { listener })
}

/// Serve `/metrics` on the current runtime until the returned task is
/// aborted (which also ends every connection being served).
pub fn spawn(listener: MetricsListener, stats: StatsHandle, log: Logger) -> AbortHandle {
    let addr = listener.local_addr();
    let listener = match TcpListener::from_std(listener.listener) {
        Ok(l) => l,
        Err(e) => {
            error!(log, "metrics listener failed"; "strerror" => e.to_string());
            return tokio::spawn(async {}).abort_handle();
        }
    };
    match addr {
        Ok(addr) => info!(log, "metrics listening";
            "address" => addr.ip().to_string(), "port" => addr.port().to_string(),
            "url" => format!("http://{addr}{METRICS_PATH}")),
        Err(e) => warn!(log, "metrics listening (address unknown)"; "strerror" => e.to_string()),
    }
    tokio::spawn(serve(listener, stats, log)).abort_handle()
}

async fn serve(listener: TcpListener, stats: StatsHandle, log: Logger) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_BUF);
    // Dropped with this task, aborting every connection still served.
    let mut connections = JoinSet::new();
    let mut accept_log = RateLimit::default();
    loop {
        let accepted = tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if accept_log.allow(Instant::now(), ACCEPT_LOG_INTERVAL) {
                    warn!(log, "metrics accept failed"; "strerror" => e.to_string());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(log, "metrics: too many connections (closing)";
                "remote_ip" => %peer.ip(), "remote_port" => peer.port());
            continue;
        };
        let stats = stats.clone();
        let service = service_fn(move |req| {
            let stats = stats.clone();
            async move { Ok::<_, Infallible>(respond(req, &stats).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let log = log.clone();
        connections.spawn(async move {
            let _permit = permit;
            let error = match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "connection timeout".to_string(),
            };
            debug!(log, "metrics connection closed"; "error" => error,
                "remote_ip" => %peer.ip(), "remote_port" => peer.port());
        });
    }
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

async fn respond(req: Request<Incoming>, stats: &StatsHandle) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.uri().path() != METRICS_PATH {
        return response(
            StatusCode::NOT_FOUND,
            PLAIN,
            format!("not found; metrics are at {METRICS_PATH}\n"),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let format = Format::negotiate(req.headers());
    let Some(summary) = stats.summary().await else {
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "the balancer is stopping\n".into(),
        );
    };
    match render(summary, format) {
        Ok(body) => response(StatusCode::OK, format.content_type(), body),
        Err(fmt::Error) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            PLAIN,
            "could not encode the metrics\n".into(),
        ),
    }
}
