//! LOGGING
//!
//! Logs are bunyan JSON records on stdout under the name `mname-balancer`,
//! as the original wrote them, so existing log tooling (`bunyan` CLI, greps
//! for the original's message texts) keeps working.  Child loggers carry the
//! original's keys: `be_id`/`be_path` for a backend, `remote_ip` for a
//! remote, `conn_id`/`remote_ip`/`remote_port`/`backend` for a TCP session.
//!
//! Records below the configured level are discarded before anything is
//! formatted.  A failure to write a log record (stdout closed, say) is
//! ignored rather than allowed to stop the balancer.

use std::io;
use std::sync::Mutex;

use slog::{Drain, Level, LevelFilter, Logger, o};

/// The bunyan `name` of every record.
pub const LOGGER_NAME: &str = "mname-balancer";

/// A root logger writing bunyan JSON to `out` at `level` and above.
pub fn logger_to<W: io::Write + Send + 'static>(out: W, level: Level) -> Logger {
    let json = slog_bunyan::with_name(LOGGER_NAME, out).build();
    let drain = LevelFilter::new(Mutex::new(json), level).ignore_res();
    Logger::root(drain, o!())
}

/// The root logger on stdout.
pub fn stdout_logger(level: Level) -> Logger {
    logger_to(io::stdout(), level)
}
