//! The stats socket client: one connection per report, one request line
//! sent, the whole answer read until the balancer closes, then parsed.
//! Each way it can fail (no socket, refused, permission, silence, a
//! cut-off or malformed document, an `{"error": ...}` answer) becomes one
//! message that names the socket and says what to do about it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::args::Query;

/// Each read from (and write to) the stats socket must complete this soon.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Ask the balancer at `path`; its answer as text and as parsed JSON.  An
/// `{"error": ...}` answer is an `Err` with the server's message.
pub(crate) fn fetch(path: &Path, query: &Query) -> Result<(String, Value), String> {
    let at = path.display();
    let mut conn = UnixStream::connect(path).map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound => {
                format!("no such socket (is mname-balancer running with -S {at}?)")
            }
            io::ErrorKind::ConnectionRefused => {
                "connection refused (no balancer is serving it)".to_string()
            }
            io::ErrorKind::PermissionDenied => "permission denied (the socket is for the \
                 balancer's user, or its group with --stats-mode 660)"
                .to_string(),
            _ => e.to_string(),
        };
        format!("cannot connect to {at}: {why}")
    })?;
    let io_error = |e: io::Error, doing: &str| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
            "{at}: no answer within {} s while {doing}",
            IO_TIMEOUT.as_secs()
        ),
        _ => format!("{at}: {doing}: {e}"),
    };
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| io_error(e, "setting timeouts"))?;
    // A server that turns us away ("busy") answers and closes without
    // reading the request: the write may then fail, and the read end with
    // a reset, after the answer.  What came before either is the answer.
    let sent = conn.write_all(query.request().as_bytes());
    let mut bytes = Vec::new();
    let read = conn.read_to_end(&mut bytes);
    match (sent, read) {
        (_, Ok(_)) if !bytes.is_empty() => {}
        (_, Err(e)) if !bytes.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {}
        (Err(e), _) => return Err(io_error(e, "sending the request")),
        (Ok(()), Err(e)) => return Err(io_error(e, "reading the answer")),
        (Ok(()), Ok(_)) => {}
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{at}: the answer is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(format!(
            "{at}: the balancer closed the connection without answering"
        ));
    }
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        if e.is_eof() {
            format!("{at}: the answer was cut off ({} bytes)", text.len())
        } else {
            format!("{at}: the answer is not a JSON document: {e}")
        }
    })?;
    if !doc.is_object() {
        return Err(format!("{at}: the answer is not a JSON object"));
    }
    if let Some(error) = doc.get("error") {
        let error = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
        return Err(if error == "busy" {
            format!(
                "{at}: busy (the balancer is serving as many stats clients as it will; try again)"
            )
        } else {
            format!("{at}: {error}")
        });
    }
    Ok((text, doc))
}
