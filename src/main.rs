//! The `mname-balancer` binary: parse the command line, start logging, take
//! the sockets systemd passed (socket activation) or bind the listeners,
//! tell the service manager when it serves and when it stops (sd_notify),
//! and run the event loop on a current-thread runtime until SIGINT or
//! SIGTERM (see [`mname_balancer::core::Signal`] for the signals and
//! [`mname_balancer::ops::activation`] for systemd).  All logic lives in the
//! library.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mname_balancer::ops::{activation, sidecar};
use mname_balancer::{cli, logging, shell};
use slog::{Logger, error, info};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env_level = std::env::var("LOG_LEVEL").ok();
    let config = match cli::parse(&args, env_level.as_deref()) {
        Ok(cli::Command::Run(c)) => *c,
        Ok(cli::Command::Help(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mname-balancer: {e}");
            eprintln!("try 'mname-balancer -h' for usage");
            return ExitCode::from(1);
        }
    };
    // Kept to the end of main: dropping it flushes the log queue.
    let logs = logging::stdout_logger(config.log_level);
    let log = logs.logger.clone();
    info!(log, "starting up");
    // SAFETY: no other thread exists yet: the runtime is built below and the
    // logger writes from this thread.
    let inherited = match unsafe { activation::take_from_env() } {
        Ok(i) => i,
        Err(e) => {
            error!(log, "invalid inherited sockets"; "error" => e.to_string());
            eprintln!("mname-balancer: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!(log, "cloop init failure"; "strerror" => e.to_string());
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let listeners = match inherited {
            Some(sockets) => sockets.into_listeners(&config, &log)?,
            None => shell::bind(&config, &log)?,
        };
        // Serializing for stats and metrics happens on the sidecar's thread.
        let (sidecar, stats) = sidecar::start_for(&config, &log)?;
        let status = activation::serving_status(&listeners, &config.socket_dir);
        let stopping = watch_for_stop(&log);
        // Signals are handled inside the loop (drain on the first SIGTERM,
        // exit on the second), so no extra shutdown trigger is needed.  The
        // loop is a task of its own (see crate::shell): the sessions' tasks
        // wake it through the run queue, not the runtime's eventfd.
        let event_loop = tokio::spawn(shell::run(
            config,
            log.clone(),
            listeners,
            stats,
            logs.dropped.clone(),
            std::future::pending(),
        ));
        // The runtime runs spawned tasks in the order they were spawned:
        // the loop first, until it first waits, that is after its first
        // directory scan, with its signal handlers in place; then this.
        // READY=1 then means "serving".
        let ready_log = log.clone();
        tokio::spawn(async move { activation::notify_ready(&status, &ready_log) });
        let result = event_loop
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        drop(sidecar);
        if !stopping.swap(true, Ordering::SeqCst) {
            activation::notify_stopping("exiting", &log);
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mname-balancer: {e}");
            ExitCode::from(1)
        }
    }
}

/// Send STOPPING=1 when the first SIGTERM or SIGINT arrives, as the loop
/// starts to drain (the loop has its own handlers; every handler hears each
/// signal).  The flag tells whether it was sent.
fn watch_for_stop(log: &Logger) -> Arc<AtomicBool> {
    use tokio::signal::unix::{SignalKind, signal};
    let sent = Arc::new(AtomicBool::new(false));
    // Installed now, before the loop runs, so that no signal is missed.
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return sent;
    };
    let flag = sent.clone();
    let log = log.clone();
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if !flag.swap(true, Ordering::SeqCst) {
            activation::notify_stopping(&format!("draining ({which})"), &log);
        }
    });
    sent
}
