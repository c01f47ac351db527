//! The `mname-balancer` binary: parse the command line, start logging, bind
//! the listeners and run the event loop on a current-thread runtime until
//! SIGINT or SIGTERM (see [`mname_balancer::balancer`] for the signals).
//! All logic lives in the library.

use std::process::ExitCode;

use mname_balancer::{balancer, cli, logging};
use slog::{error, info};

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
    let log = logging::stdout_logger(config.log_level);
    info!(log, "starting up");
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
        let listeners = balancer::bind(&config, &log)?;
        // Signals are handled inside the loop (drain on the first SIGTERM,
        // exit on the second), so no extra shutdown trigger is needed.
        balancer::run(config, log.clone(), listeners, std::future::pending()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mname-balancer: {e}");
            ExitCode::from(1)
        }
    }
}
