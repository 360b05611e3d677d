//! Streaming text masking with a bounded hold-back.

use std::sync::Arc;

use crate::detect::{CONTEXT, STREAM_MAX_HOLD};
use crate::{MaskStats, Policy};

/// Masks a text body that arrives in chunks. Output (all `push` outputs followed by the
/// `finish` output) is byte-for-byte what one-shot masking of the whole text gives, for any
/// chunking, as long as no single value is longer than [`STREAM_MAX_HOLD`]; memory stays
/// bounded by the tail ([`crate::STREAM_TAIL`], or the longest custom pattern) plus at most
/// [`STREAM_MAX_HOLD`] bytes while a JWT or PEM private key is still arriving, plus the chunk.
#[derive(Debug)]
pub struct StreamMasker {
    policy: Arc<Policy>,
    buf: Vec<u8>,
    pos: usize,
}

impl StreamMasker {
    pub(crate) fn new(policy: Arc<Policy>) -> StreamMasker {
        StreamMasker {
            policy,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Feeds one chunk; appends whatever is final to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>, stats: &mut MaskStats) {
        if self.policy.engine.is_none() {
            out.extend_from_slice(chunk);
            return;
        }
        self.buf.extend_from_slice(chunk);
        self.pos = self
            .policy
            .mask_region(&self.buf, self.pos, false, out, stats);
        if self.buf.len() - self.pos > STREAM_MAX_HOLD {
            // Something (a huge token?) is still open after 64 KiB: decide now.
            self.pos = self
                .policy
                .mask_region(&self.buf, self.pos, true, out, stats);
        }
        let drop = self.pos.saturating_sub(CONTEXT);
        if drop > 0 {
            self.buf.drain(..drop);
            self.pos -= drop;
        }
    }

    /// Ends the stream; appends the rest to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>, stats: &mut MaskStats) {
        if self.policy.engine.is_some() {
            self.policy
                .mask_region(&self.buf, self.pos, true, out, stats);
        }
        self.buf.clear();
        self.pos = 0;
    }

    /// Bytes currently held back.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }
}
