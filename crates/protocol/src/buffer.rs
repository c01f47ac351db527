//! Reassembling frames from a byte stream that arrives in arbitrary
//! pieces: [`FrameBuffer`] holds what has been read and hands out each
//! frame as soon as it is complete.

use crate::decode::decode;
use crate::frame::{Frame, FrameError};

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
///
/// Bytes are appended with [`FrameBuffer::extend`]; complete frames are then
/// taken with [`FrameBuffer::next_frame`].  The buffer never holds more than
/// one incomplete frame plus what the last read brought, because frames are
/// taken as soon as they are complete and a header declaring an oversized
/// payload is an error at once.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes read from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Take the next complete frame, if any.
    #[allow(clippy::should_implement_trait)]
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        match decode(&self.buf[self.start..])? {
            None => Ok(None),
            Some((_, used)) => {
                let at = self.start;
                self.start += used;
                // Decode again from the stable slice so the frame borrows
                // `self.buf` for the caller.
                Ok(decode(&self.buf[at..at + used])?.map(|(f, _)| f))
            }
        }
    }

    /// Bytes held that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Give up whatever is buffered and hand back the unparsed bytes.  Used
    /// when a session stops being framed (after INBOUND_TCP).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::frame::tests::every_frame;
    use crate::inbound_tcp;

    #[test]
    fn stream_cut_at_every_byte_boundary_decodes_the_same() {
        let frames = every_frame();
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        for cut in 0..=wire.len() {
            let mut fb = FrameBuffer::new();
            let mut got = Vec::new();
            for piece in [&wire[..cut], &wire[cut..]] {
                fb.extend(piece);
                while let Some(f) = fb.next_frame().unwrap() {
                    let mut re = Vec::new();
                    f.encode(&mut re);
                    got.push(re);
                }
            }
            let want: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| {
                    let mut v = Vec::new();
                    f.encode(&mut v);
                    v
                })
                .collect();
            assert_eq!(got, want, "cut at byte {cut}");
            assert_eq!(fb.pending(), 0);
        }
    }

    #[test]
    fn byte_at_a_time_decodes_the_same() {
        let mut wire = Vec::new();
        for f in every_frame() {
            f.encode(&mut wire);
        }
        let mut fb = FrameBuffer::new();
        let mut n = 0;
        for b in &wire {
            fb.extend(std::slice::from_ref(b));
            while fb.next_frame().unwrap().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, every_frame().len());
    }

    #[test]
    fn take_remaining_returns_bytes_after_the_last_frame() {
        let mut fb = FrameBuffer::new();
        let (h, n) = inbound_tcp(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
        let mut wire = h[..n].to_vec();
        wire.extend_from_slice(b"\x00\x1drest");
        fb.extend(&wire);
        assert!(matches!(
            fb.next_frame(),
            Ok(Some(Frame::InboundTcp { .. }))
        ));
        assert_eq!(fb.take_remaining(), b"\x00\x1drest");
    }
}
