//! SIDECAR THREAD
//!
//! The stats socket and the metrics endpoint run on a thread of their own,
//! with their own current-thread runtime, beside the event loop's.  Their
//! expensive part is turning copies of the loop's state into JSON or
//! Prometheus text (a snapshot of 100,000 remotes is about 15 MB); done on
//! the loop's thread, that would delay every datagram behind it.  Here the
//! loop only copies what it is asked for (bounded pages, see
//! [`crate::shell::stats_requests`]) and the other core does the rest.
//!
//! Both listeners are bound by the caller before the thread starts, so a
//! bad path or address is an error at start-up; dropping the
//! [`Sidecar`] stops the thread and waits for it, which removes the stats
//! socket's file.

use std::io;
use std::thread::JoinHandle;

use slog::{Logger, error};
use tokio::sync::oneshot;

use tokio::sync::mpsc;

use super::metrics::{self, MetricsListener};
use super::stats_socket::{self, StatsSocket};
use crate::cli::Config;
use crate::shell::stats_requests::{STATS_QUEUE, StatsHandle, StatsRequest};

/// The running sidecar thread; stopped when dropped.
#[derive(Debug)]
pub struct Sidecar {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sidecar {
    /// Serve whichever of the two is given.  With neither, no thread starts.
    pub fn start(
        stats_socket: Option<StatsSocket>,
        metrics_listener: Option<MetricsListener>,
        stats: StatsHandle,
        log: Logger,
    ) -> io::Result<Sidecar> {
        if stats_socket.is_none() && metrics_listener.is_none() {
            return Ok(Sidecar {
                stop: None,
                thread: None,
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("stats".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = Vec::new();
                    if let Some(socket) = stats_socket {
                        match stats_socket::spawn(socket, stats.clone(), log.clone()) {
                            Ok(task) => tasks.push(task),
                            Err(e) => {
                                error!(log, "stats socket failed"; "strerror" => e.to_string())
                            }
                        }
                    }
                    if let Some(listener) = metrics_listener {
                        tasks.push(metrics::spawn(listener, stats.clone(), log.clone()));
                    }
                    drop(stats);
                    // Until told to stop, or until the loop's end is dropped.
                    let _ = stopped.await;
                    for task in tasks {
                        task.abort();
                    }
                });
                // Dropping the runtime drops the aborted tasks and with them
                // the stats socket's file.
                drop(runtime);
            })?;
        Ok(Sidecar {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bind the stats socket (`-S`) and the metrics listener (`--metrics`)
/// that `config` asks for, and start the sidecar serving them.  Returns
/// the sidecar and, when there is anything to serve, the channel on which
/// the event loop receives their requests.  A socket that cannot be bound
/// is an error naming it.
pub fn start_for(
    config: &Config,
    log: &Logger,
) -> io::Result<(Sidecar, Option<mpsc::Receiver<StatsRequest>>)> {
    let stats_socket = match &config.stats_socket {
        Some(path) => Some(
            stats_socket::bind(path, config.stats_mode).inspect_err(|e| {
                error!(log, "failed to create stats socket"; "path" => path.display().to_string(),
                    "strerror" => e.to_string());
            })?,
        ),
        None => None,
    };
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).map_err(|e| {
            error!(log, "failed to bind metrics listener"; "address" => addr.to_string(),
                "strerror" => e.to_string());
            io::Error::new(e.kind(), format!("metrics listener {addr}: {e}"))
        })?),
        None => None,
    };
    if stats_socket.is_none() && metrics_listener.is_none() {
        return Ok((
            Sidecar {
                stop: None,
                thread: None,
            },
            None,
        ));
    }
    let (tx, rx) = mpsc::channel(STATS_QUEUE);
    let sidecar = Sidecar::start(
        stats_socket,
        metrics_listener,
        StatsHandle::new(tx),
        log.clone(),
    )?;
    Ok((sidecar, Some(rx)))
}
