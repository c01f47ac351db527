//! LINKS
//!
//! The I/O half of a backend's control session.  The event loop decides
//! everything (what to send, when a backend is faulted); a link only moves
//! bytes.  Each connection attempt spawns one task which connects to the
//! backend's socket, then both writes what the loop queued and reads what the
//! backend sends, reporting every outcome to the loop as a [`LinkEvent`]
//! tagged with the backend's id and connection generation.  The loop faults a
//! backend by aborting its task, which closes the socket.
//!
//! Writes toward a backend go through an [`OutQueue`]: a byte buffer with a
//! hard bound.  The loop appends frames without waiting; the task drains the
//! buffer into the socket.  When the backend stops reading, the socket
//! buffer fills, then the queue fills, and further UDP queries are refused
//! ("stuck") instead of queued: the original learned that a balancer that
//! queues without bound under load does worse than one that drops.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc};

use crate::backends::BackendId;

/// Bytes read from a backend per read call: many frames per read.
const READ_CHUNK: usize = 64 * 1024;

/// What a link task reports to the event loop.
#[derive(Debug)]
pub enum LinkEvent {
    /// The socket is connected; the loop now sends CLIENT_HELLO.
    Connected { id: BackendId, generation: u64 },
    /// The connect failed.
    ConnectFailed {
        id: BackendId,
        generation: u64,
        error: io::Error,
    },
    /// Bytes arrived from the backend.
    Data {
        id: BackendId,
        generation: u64,
        bytes: Vec<u8>,
    },
    /// The backend closed its end (`error` is None) or the socket failed.
    Closed {
        id: BackendId,
        generation: u64,
        error: Option<io::Error>,
    },
}

/// The frames waiting for one backend's socket, with a hard bound.
#[derive(Debug)]
pub struct OutQueue {
    pending: Mutex<Vec<u8>>,
    ready: Notify,
    limit: usize,
}

/// The queue could not take a frame: the backend is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

impl OutQueue {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(OutQueue {
            pending: Mutex::new(Vec::new()),
            ready: Notify::new(),
            limit,
        })
    }

    /// Queue the pieces of one frame, or refuse it whole if it would take the
    /// queue past its bound.
    pub fn push(&self, pieces: &[&[u8]]) -> Result<(), QueueFull> {
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        let mut q = self.pending.lock();
        if q.len() + len > self.limit {
            return Err(QueueFull);
        }
        for p in pieces {
            q.extend_from_slice(p);
        }
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// Queue a small control frame (hello, heartbeat) even past the bound:
    /// it is four bytes, and a heartbeat that cannot be sent must still be
    /// timed so that a wedged backend is found out.
    pub fn push_control(&self, frame: &[u8]) {
        self.pending.lock().extend_from_slice(frame);
        self.ready.notify_one();
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Swap the waiting bytes into `spare` (which must be empty), so the
    /// writer can send them without holding the lock.
    fn take_into(&self, spare: &mut Vec<u8>) {
        std::mem::swap(&mut *self.pending.lock(), spare);
    }
}

/// One control session's task: connect, then pump bytes both ways until
/// either direction fails or the loop aborts the task.
pub async fn run(
    id: BackendId,
    generation: u64,
    path: PathBuf,
    queue: Arc<OutQueue>,
    events: mpsc::Sender<LinkEvent>,
) {
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(error) => {
            let _ = events
                .send(LinkEvent::ConnectFailed {
                    id,
                    generation,
                    error,
                })
                .await;
            return;
        }
    };
    if events
        .send(LinkEvent::Connected { id, generation })
        .await
        .is_err()
    {
        return;
    }
    let (rd, wr) = stream.into_split();
    let error = tokio::select! {
        r = pump_out(&queue, wr) => r.err(),
        r = pump_in(id, generation, rd, &events) => r.err(),
    };
    let _ = events
        .send(LinkEvent::Closed {
            id,
            generation,
            error,
        })
        .await;
}

/// Write whatever the loop queues, in order, until the socket fails.
async fn pump_out(queue: &OutQueue, mut wr: OwnedWriteHalf) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        queue.ready.notified().await;
        queue.take_into(&mut out);
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
    }
}

/// Hand everything the backend sends to the loop, until end of stream.
async fn pump_in(
    id: BackendId,
    generation: u64,
    mut rd: OwnedReadHalf,
    events: &mpsc::Sender<LinkEvent>,
) -> io::Result<()> {
    loop {
        let mut bytes = Vec::with_capacity(READ_CHUNK);
        if rd.read_buf(&mut bytes).await? == 0 {
            return Ok(());
        }
        let ev = LinkEvent::Data {
            id,
            generation,
            bytes,
        };
        if events.send(ev).await.is_err() {
            // The loop is gone: the balancer is shutting down.
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_refuses_whole_frames_past_its_bound() {
        let q = OutQueue::new(40);
        assert_eq!(q.push(&[&[0u8; 16], &[1u8; 16]]), Ok(()));
        assert_eq!(q.push(&[&[0u8; 16]]), Err(QueueFull), "48 > 40");
        assert_eq!(q.len(), 32, "nothing of the refused frame was queued");
        q.push_control(&[4, 0, 0, 0]);
        q.push_control(&[4, 0, 0, 0]);
        assert_eq!(q.len(), 40, "control frames pass the bound");
        let mut out = Vec::new();
        q.take_into(&mut out);
        assert_eq!(out.len(), 40);
        assert!(q.is_empty());
        assert_eq!(q.push(&[&[0u8; 40]]), Ok(()));
    }
}
