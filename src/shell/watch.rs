//! SOCKET DIRECTORY WATCH
//!
//! A backend that starts, or restarts, binds its socket in the socket
//! directory; the periodic scan (`--scan-interval`, 5 s) would find it in
//! up to 5 s, and a faulted backend's reconnect waits out its back-off (1,
//! 3, 5 s ...).  The directory is watched instead (inotify, through the
//! `notify` crate, on a thread of its own): a socket that appears is handed
//! to the core at once ([`crate::core::Core::on_sockets_appeared`]), which
//! connects a new one, and a returning one with its back-off reset.  The
//! periodic scan stays as the fallback (a watch that cannot be set up, or
//! that overflowed, is logged and the scan carries on alone).
//!
//! The thread never blocks on the loop: appearances go through a bounded
//! channel, and when it is full (a burst of files) a flag asks the loop
//! for one full listing instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::event::{CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use slog::{Logger, info, warn};
use tokio::sync::mpsc;

/// Appearances queued for the loop at most; past it, one full listing.
const QUEUE: usize = 256;

/// A watch on the socket directory.
pub struct DirWatch {
    _watcher: RecommendedWatcher,
    rx: mpsc::Receiver<PathBuf>,
    /// Set when an appearance could not be queued, or the watch reported
    /// an error: the loop should list the whole directory.
    rescan: Arc<AtomicBool>,
}

impl DirWatch {
    /// Watch `dir`; `None` (logged) if the system will not.
    pub fn start(dir: &Path, log: &Logger) -> Option<DirWatch> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rescan = Arc::new(AtomicBool::new(false));
        let flag = rescan.clone();
        let handler = move |event: notify::Result<Event>| match event {
            Ok(event) if appeared(&event.kind) => {
                for path in event.paths {
                    if tx.try_send(path).is_err() {
                        flag.store(true, Ordering::Relaxed);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => flag.store(true, Ordering::Relaxed),
        };
        let started = notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(dir, RecursiveMode::NonRecursive).map(|()| w));
        match started {
            Ok(watcher) => {
                info!(log, "watching socket directory"; "socket_dir" => %dir.display());
                Some(DirWatch {
                    _watcher: watcher,
                    rx,
                    rescan,
                })
            }
            Err(e) => {
                warn!(log, "cannot watch socket directory (periodic scan only)";
                    "socket_dir" => %dir.display(), "error" => e.to_string());
                None
            }
        }
    }

    /// The next path that appeared.
    pub async fn next(&mut self) -> Option<PathBuf> {
        self.rx.recv().await
    }

    /// Take, without waiting, the other paths that appeared.
    pub fn drain(&mut self, into: &mut Vec<PathBuf>) {
        while let Ok(path) = self.rx.try_recv() {
            into.push(path);
        }
    }

    /// Whether the watch lost events since the last call.
    pub fn take_rescan(&self) -> bool {
        self.rescan.swap(false, Ordering::Relaxed)
    }
}

/// Whether `kind` says a file came into being under its name: created, or
/// renamed to it.
fn appeared(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(CreateKind::Any | CreateKind::File | CreateKind::Other)
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::To | RenameMode::Both | RenameMode::Any
            ))
    )
}
