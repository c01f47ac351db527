//! The frame decoder, both directions (a backend's bytes as the balancer
//! reads them, a balancer's as a backend reads them): any byte stream,
//! delivered in pieces cut anywhere, decodes to the same frames (or the
//! same error) as when delivered whole, and never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mname_balancer_protocol::{Frame, FrameBuffer};

/// Every frame of `pieces` fed in order, re-encoded, then the error if any.
fn decode(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Option<String>) {
    let mut buf = FrameBuffer::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend(piece);
        loop {
            match buf.next_frame() {
                Ok(Some(f)) => {
                    let mut out = Vec::new();
                    f.encode(&mut out);
                    frames.push(out);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut_seed, bytes)) = data.split_first() else {
        return;
    };
    let whole = decode(&[bytes]);
    // Cut into pieces of 1..=cut_seed+1 bytes.
    let step = usize::from(cut_seed % 16) + 1;
    let pieces: Vec<&[u8]> = bytes.chunks(step).collect();
    let cut = decode(&pieces);
    assert_eq!(whole, cut, "pieces of {step} decode as the whole");
    // What decodes re-encodes to the bytes it came from.
    if whole.1.is_none() {
        let again: Vec<u8> = whole.0.concat();
        assert!(bytes.starts_with(&again), "re-encoding is the input");
    }
    let _ = Frame::ClientHello;
});
