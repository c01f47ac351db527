//! LOGGING
//!
//! Logs are bunyan JSON records on stdout under the name `mname-balancer`,
//! as the original wrote them, so existing log tooling (`bunyan` CLI, greps
//! for the original's message texts) keeps working.  Child loggers carry the
//! original's keys: `be_id`/`be_path` for a backend, `remote_ip` for a
//! remote, `conn_id`/`remote_ip`/`remote_port`/`backend` for a TCP session.
//!
//! Records below the configured level are discarded before anything is
//! formatted.  The rest leave the event loop through a bounded queue
//! ([`slog_async`], [`LOG_QUEUE`] records) to a thread that writes them:
//! a reader of stdout that stalls (a paused `| bunyan`, a busy collector)
//! can no longer stop the loop, which used to block on the write.  When
//! the queue is full, records are dropped and counted; once there is room,
//! a record says how many ("slog-async: logger dropped messages due to
//! channel overflow", with `count`), and the total is in the stats socket
//! and the metrics (`log_records_dropped`).  A failure to write a record
//! (stdout closed, say) is ignored rather than allowed to stop the balancer.

use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use slog::{Drain, Level, LevelFilter, Logger, OwnedKVList, Record, o};
use slog_async::{AsyncGuard, OverflowStrategy};

/// The bunyan `name` of every record.
pub const LOGGER_NAME: &str = "mname-balancer";

/// Records waiting for the writer thread, at most: about 2 MB of bunyan
/// JSON, several seconds of the busiest logging (a flood of new clients at
/// info level) before records are dropped.
pub const LOG_QUEUE: usize = 4096;

/// The tag slog-async gives the record that reports dropped records.
const DROP_REPORT_TAG: &str = "slog-async";

/// A root logger writing bunyan JSON to `out` at `level` and above, in the
/// caller's thread (tests, tools).
pub fn logger_to<W: io::Write + Send + 'static>(out: W, level: Level) -> Logger {
    let json = slog_bunyan::with_name(LOGGER_NAME, out).build();
    let drain = LevelFilter::new(Mutex::new(json), level).ignore_res();
    Logger::root(drain, o!())
}

/// The balancer's logger: bunyan JSON on stdout, written by a thread of
/// its own through a bounded queue.
pub struct AsyncLog {
    /// The root logger: hand out clones of it.
    pub logger: Logger,
    /// Records dropped because the queue was full, in all.
    pub dropped: Arc<AtomicU64>,
    /// Flushes the queue when dropped (at exit).
    _guard: AsyncGuard,
}

/// The root logger on stdout, asynchronous (see the module comment).
pub fn stdout_logger(level: Level) -> AsyncLog {
    async_logger_to(io::stdout(), level)
}

/// An asynchronous logger to `out` (see the module comment).
pub fn async_logger_to<W: io::Write + Send + 'static>(out: W, level: Level) -> AsyncLog {
    let dropped = Arc::new(AtomicU64::new(0));
    let json = slog_bunyan::with_name(LOGGER_NAME, out).build();
    let counted = CountDropReports {
        inner: Mutex::new(json).ignore_res(),
        dropped: dropped.clone(),
    };
    let (queue, guard) = slog_async::Async::new(counted)
        .chan_size(LOG_QUEUE)
        .overflow_strategy(OverflowStrategy::DropAndReport)
        .thread_name("log".into())
        .build_with_guard();
    let drain = LevelFilter::new(queue.ignore_res(), level).ignore_res();
    AsyncLog {
        logger: Logger::root(drain, o!()),
        dropped,
        _guard: guard,
    }
}

/// On the writer's side of the queue: adds the `count` of each drop
/// report to the total, and passes every record on.
struct CountDropReports<D> {
    inner: D,
    dropped: Arc<AtomicU64>,
}

impl<D: Drain<Ok = (), Err = slog::Never>> Drain for CountDropReports<D> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        if record.tag() == DROP_REPORT_TAG {
            let mut count = CountOf(0);
            let _ = slog::KV::serialize(&record.kv(), record, &mut count);
            self.dropped.fetch_add(count.0, Ordering::Relaxed);
        }
        self.inner.log(record, values)
    }
}

/// Reads the `count` key of a record.
struct CountOf(u64);

impl slog::Serializer for CountOf {
    fn emit_usize(&mut self, key: slog::Key, val: usize) -> slog::Result {
        if key == "count" {
            self.0 = val as u64;
        }
        Ok(())
    }

    fn emit_arguments(&mut self, _: slog::Key, _: &std::fmt::Arguments<'_>) -> slog::Result {
        Ok(())
    }
}
