//! `balstat`: what a running balancer is doing, read from its stats socket
//! (`mname-balancer -S PATH`, docs/stats.md).  The successor of Binder's
//! `balstat`, which had to read the original's state out of a core file or
//! a live process with mdb; here the balancer answers itself, and this is
//! only a client: it sends one request line, reads the JSON document back
//! and prints it as tables for a terminal, or passes it through (`--json`)
//! for scripts.
//!
//! ```text
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]]             backends and remotes
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]] summary     backends only
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]] backend ID  one backend
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]] remote IP   one remote
//! balstat -S PATH [--json] [-w SECONDS [-n COUNT]] cache       the packet cache
//! balstat -S PATH [--json] cache flush                         empty it
//! ```
//!
//! Everything it reads comes from another process: nothing from the
//! socket or the command line is trusted to be well formed.  A missing
//! socket, a refused connection, a balancer that does not answer within
//! 10 s (`client::IO_TIMEOUT`), a cut-off document or an `{"error": ...}`
//! answer is a message on stderr and exit status 1.
//!
//! The modules, in the order a report passes through them: `args` (the
//! command line), `client` (the socket), `render` (the document as text),
//! which lays out `table`s of values written by `format`.

mod args;
mod client;
mod format;
mod render;
mod table;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use args::{Args, parse_args, usage};
use client::fetch;
use format::u64_of;
use render::render;

/// The document version this program was written for (docs/stats.md).
const KNOWN_VERSION: u64 = 1;

/// Fetch and render one report.
fn report(args: &Args) -> Result<String, String> {
    let (raw, doc) = fetch(&args.socket, &args.query)?;
    if let Some(v) = u64_of(doc.get("version"))
        && v > KNOWN_VERSION
    {
        eprintln!(
            "balstat: warning: document version {v}; this balstat knows version {KNOWN_VERSION}, so some fields may be misread"
        );
    }
    Ok(render(args, &raw, &doc))
}

/// Print reports until done; the exit status is that of the last report.
fn run(args: &Args) -> io::Result<bool> {
    let tty = io::stdout().is_terminal();
    let mut printed = 0u64;
    loop {
        let result = report(args);
        printed += 1;
        {
            let mut out = io::stdout().lock();
            if args.watch.is_some() && tty {
                out.write_all(b"\x1b[H\x1b[2J")?;
            } else if printed > 1 && !args.json {
                out.write_all(b"\n")?;
            }
            if let Ok(text) = &result {
                out.write_all(text.as_bytes())?;
            }
            out.flush()?;
        }
        if let Err(e) = &result {
            eprintln!("balstat: {e}");
        }
        let done = match (args.watch, args.count) {
            (None, _) => true,
            (Some(_), Some(n)) => printed >= n,
            (Some(_), None) => false,
        };
        if done {
            return Ok(result.is_ok());
        }
        if let Some(every) = args.watch {
            std::thread::sleep(every);
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("balstat: {e}");
            eprintln!("try 'balstat -h' for usage");
            return ExitCode::from(1);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // `balstat | head`: the reader has what it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("balstat: writing the report: {e}");
            ExitCode::from(1)
        }
    }
}
