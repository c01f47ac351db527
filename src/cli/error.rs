//! What a command line that cannot be run is told: one [`CliError`]
//! variant per mistake, each message naming the flag and the value given,
//! so that `main` can print it as it is and exit 1, as the original did.
//! The texts are the interface (scripts and tests/cli.rs match on them):
//! change one only on purpose.

use std::path::PathBuf;

/// A command line that cannot be run, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// An unknown flag, or a flag without its value (getopts' message).
    #[error(transparent)]
    Options(#[from] getopts::Fail),
    /// A word that is not a flag; the balancer takes none.
    #[error("unexpected argument \"{0}\"")]
    UnexpectedArgument(String),
    /// No `-s DIR`.
    #[error("must specify socket directory (-s)")]
    NoSocketDir,
    /// `-b` that is not an IP address.
    #[error("invalid listen address for -b: \"{0}\"")]
    BadListenAddress(String),
    /// `-p` that is not a port number.
    #[error("invalid port for -p: \"{0}\" (0..65535)")]
    BadPort(String),
    /// `-l` that is not a bunyan level.
    #[error("invalid log level for -l: {0}")]
    BadLogLevel(String),
    /// `LOG_LEVEL` that is not a bunyan level.
    #[error("invalid LOG_LEVEL \"{0}\"")]
    BadLogLevelEnv(String),
    /// A timer flag whose value is not a duration.
    #[error("invalid duration for --{flag}: \"{value}\"")]
    BadDuration {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The value given.
        value: String,
    },
    /// `--on-timeout` that is not a policy.
    #[error("invalid --on-timeout \"{0}\" (servfail, drop)")]
    BadOnTimeout(String),
    /// `--allow` or `--deny` that is not a network.
    #[error("invalid network for --{flag}: \"{value}\" (CIDR like 10.0.0.0/8, or an address)")]
    BadNetwork {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The value given.
        value: String,
    },
    /// `--acl-action` that is not an action.
    #[error("invalid --acl-action \"{0}\" (refused, drop)")]
    BadAclAction(String),
    /// `--no-backend` that is not a policy.
    #[error("invalid --no-backend \"{0}\" (servfail, refused, drop)")]
    BadNoBackend(String),
    /// A bound that is not a positive number.
    #[error("invalid count for --{flag}: \"{value}\"")]
    BadCount {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The value given.
        value: String,
    },
    /// A bound too large for the field it sets.
    #[error("invalid count for --{flag}")]
    CountTooLarge {
        /// The flag, without its dashes.
        flag: &'static str,
    },
    /// `-S` inside `-s`: the balancer would take the stats socket for a
    /// backend.
    #[error(
        "stats socket {} is inside the backend socket directory {}: \
         every entry there is taken for a backend",
        socket.display(),
        dir.display()
    )]
    StatsSocketInsideSocketDir {
        /// The stats socket's path, as given.
        socket: PathBuf,
        /// The backend socket directory, as given.
        dir: PathBuf,
    },
    /// `--stats-mode` that is not octal, or would let others in.
    #[error(
        "invalid --stats-mode \"{0}\" (octal; owner read-write, no access for others: 600, 640, 660)"
    )]
    BadStatsMode(String),
    /// `--udp-recv-buffer` that is not a byte count.
    #[error("invalid byte count for --udp-recv-buffer: \"{0}\"")]
    BadUdpRecvBuffer(String),
    /// `--metrics` that is not a socket address.
    #[error("invalid address for --metrics: \"{0}\" (ADDR:PORT, [V6ADDR]:PORT)")]
    BadMetricsAddress(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, parse};

    fn error(line: &str) -> CliError {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args, None) {
            Err(e) => e,
            Ok(Command::Run(_) | Command::Help(_)) => panic!("{line}: accepted"),
        }
    }

    /// The texts as they were before the enum, which scripts may match.
    #[test]
    fn messages_keep_their_texts() {
        for (line, text) in [
            ("-s /d -x", "Unrecognized option: 'x'"),
            ("-s /d stray", "unexpected argument \"stray\""),
            ("-p 53", "must specify socket directory (-s)"),
            (
                "-s /d -b nowhere",
                "invalid listen address for -b: \"nowhere\"",
            ),
            ("-s /d -p dns", "invalid port for -p: \"dns\" (0..65535)"),
            ("-s /d -l loud", "invalid log level for -l: loud"),
            (
                "-s /d --query-timeout soon",
                "invalid duration for --query-timeout: \"soon\"",
            ),
            (
                "-s /d --on-timeout shrug",
                "invalid --on-timeout \"shrug\" (servfail, drop)",
            ),
            (
                "-s /d --no-backend shrug",
                "invalid --no-backend \"shrug\" (servfail, refused, drop)",
            ),
            (
                "-s /d --allow 10.0.0.0/33",
                "invalid network for --allow: \"10.0.0.0/33\" (CIDR like 10.0.0.0/8, or an address)",
            ),
            (
                "-s /d --deny somewhere",
                "invalid network for --deny: \"somewhere\" (CIDR like 10.0.0.0/8, or an address)",
            ),
            (
                "-s /d --acl-action shrug",
                "invalid --acl-action \"shrug\" (refused, drop)",
            ),
            (
                "-s /d --synth-rate 0",
                "invalid count for --synth-rate: \"0\"",
            ),
            (
                "-s /d --synth-rate 4294967296",
                "invalid count for --synth-rate",
            ),
            (
                "-s /d -S /d/stats.sock",
                "stats socket /d/stats.sock is inside the backend socket directory /d: \
                 every entry there is taken for a backend",
            ),
            (
                "-s /d --stats-mode 666",
                "invalid --stats-mode \"666\" (octal; owner read-write, no access for \
                 others: 600, 640, 660)",
            ),
            (
                "-s /d --udp-recv-buffer lots",
                "invalid byte count for --udp-recv-buffer: \"lots\"",
            ),
            (
                "-s /d --metrics 9153",
                "invalid address for --metrics: \"9153\" (ADDR:PORT, [V6ADDR]:PORT)",
            ),
        ] {
            assert_eq!(error(line).to_string(), text, "{line}");
        }
        let env = parse(&["-s".into(), "/d".into()], Some("loud")).unwrap_err();
        assert_eq!(env.to_string(), "invalid LOG_LEVEL \"loud\"");
    }
}
