//! The architecture, checked: the core does no I/O and reads no clock,
//! imports run one way (binaries -> ops -> shell -> core -> tables ->
//! protocol), and no source file grows past the size one reads in a
//! sitting.  These are properties of the source text, so this test reads
//! the source; it fails with the file and line that broke the rule.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The lines of `path` that are compiled outside tests: up to the first
/// `#[cfg(test)]`, with comments left out.  A file named `tests.rs` is a
/// module of unit tests (declared under `#[cfg(test)]`): none.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return Vec::new();
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// Lines of the files in `files` that contain any of `forbidden`.
fn offences(files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        for (n, line) in code_lines(f) {
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!(
                        "{}:{n}: `{word}` in {:?}",
                        f.display(),
                        line.trim()
                    ));
                }
            }
        }
    }
    found
}

fn core_files() -> Vec<PathBuf> {
    let src = Path::new(ROOT).join("src");
    let mut files = rust_files(&src.join("core"));
    for table in [
        "backends.rs",
        "remotes.rs",
        "timeouts.rs",
        "latency.rs",
        "acl.rs",
    ] {
        files.push(src.join(table));
    }
    files
}

#[test]
fn the_core_does_no_io_and_reads_no_clock() {
    let forbidden = [
        "Instant::now",
        "SystemTime",
        "std::fs",
        "std::net::UdpSocket",
        "std::net::TcpStream",
        "std::os::unix::net",
        "tokio::net",
        "tokio::spawn",
        "tokio::task",
        "tokio::time::sleep",
        "tokio::sync",
        "tokio::io",
        "std::thread",
        "std::process",
        "libc::",
        "malloc_trim",
    ];
    let found = offences(&core_files(), &forbidden);
    assert!(
        found.is_empty(),
        "I/O or a clock in the core:\n{}",
        found.join("\n")
    );
}

#[test]
fn imports_run_one_way() {
    let src = Path::new(ROOT).join("src");
    let rules: [(Vec<PathBuf>, &[&str]); 3] = [
        (
            core_files(),
            &["crate::shell", "crate::ops", "crate::logging"],
        ),
        (rust_files(&src.join("shell")), &["crate::ops"]),
        (
            ["backends.rs", "remotes.rs", "timeouts.rs", "acl.rs"]
                .iter()
                .map(|f| src.join(f))
                .collect(),
            &["crate::core", "crate::shell", "crate::ops"],
        ),
    ];
    let mut found = Vec::new();
    for (files, forbidden) in &rules {
        found.extend(offences(files, forbidden));
    }
    let protocol = rust_files(&Path::new(ROOT).join("crates/protocol/src"));
    found.extend(offences(
        &protocol,
        &["mname_balancer::", "mname_balancer_backend"],
    ));
    assert!(
        found.is_empty(),
        "an import against the layering:\n{}",
        found.join("\n")
    );
}

/// No source file grows past what one reads in a sitting.
#[test]
fn no_source_file_is_over_600_lines() {
    const LIMIT: usize = 600;
    let root = Path::new(ROOT);
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "benches",
        "crates/protocol",
        "crates/backend",
    ] {
        files.extend(rust_files(&root.join(dir)));
    }
    assert!(
        files.len() > 50,
        "found the sources ({} files)",
        files.len()
    );
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > LIMIT).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {LIMIT} lines:\n{}", long.join("\n"));
}
