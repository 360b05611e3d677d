//! After `101 Switching Protocols`: both directions are copied as bytes, with
//! backpressure, until each side has closed. For WebSocket the copy also follows the
//! frames (RFC 6455 §5.2) so the evidence says how many frames and messages went each way
//! and keeps the first bytes of text payloads (unmasked, then masked by the connection's
//! rules). Nothing is changed on the wire.
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warden_masking::{ConnectionMasker, MaskStats};

use crate::body::Capture;

/// What one direction carried.
#[derive(Debug, Default)]
pub struct Direction {
    pub bytes: u64,
    pub ws: Option<WsFrames>,
}

impl Direction {
    pub fn to_json(&self, masker: Option<&ConnectionMasker>, stats: &mut MaskStats) -> Value {
        let mut v = json!({ "bytes": self.bytes });
        if let Some(ws) = &self.ws {
            v["frames"] = json!(ws.frames);
            v["text_messages"] = json!(ws.text_messages);
            v["binary_messages"] = json!(ws.binary_messages);
            v["control_frames"] = json!(ws.control_frames);
            if !ws.text.head.is_empty() {
                let head = match masker {
                    Some(m) => m.mask_bytes(&ws.text.head, stats).into_owned(),
                    None => ws.text.head.clone(),
                };
                v["text"] = Value::String(String::from_utf8_lossy(&head).into_owned());
                v["text_truncated"] = Value::Bool(ws.text.truncated());
            }
        }
        v
    }
}

/// A streaming WebSocket frame follower.
#[derive(Debug)]
pub struct WsFrames {
    pub frames: u64,
    pub text_messages: u64,
    pub binary_messages: u64,
    pub control_frames: u64,
    /// Text payload bytes, in order, up to the cap (frames separated by `\n`).
    pub text: Capture,
    head: Vec<u8>,
    /// Payload bytes left in the current frame.
    left: u64,
    mask: Option<[u8; 4]>,
    offset: u64,
    in_text: bool,
    /// Set when the stream stopped looking like WebSocket frames.
    lost: bool,
}

impl WsFrames {
    pub fn new(cap: usize) -> WsFrames {
        WsFrames {
            frames: 0,
            text_messages: 0,
            binary_messages: 0,
            control_frames: 0,
            text: Capture::new(cap),
            head: Vec::with_capacity(14),
            left: 0,
            mask: None,
            offset: 0,
            in_text: false,
            lost: false,
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.left > 0 {
                let n = (data.len() as u64).min(self.left) as usize;
                if self.in_text && self.text.head.len() < self.text.cap {
                    let mut chunk = data[..n].to_vec();
                    if let Some(m) = self.mask {
                        for (i, b) in chunk.iter_mut().enumerate() {
                            *b ^= m[((self.offset + i as u64) % 4) as usize];
                        }
                    }
                    self.text.push(&chunk);
                } else if self.in_text {
                    self.text.bytes += n as u64;
                }
                self.offset += n as u64;
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            // Header: 2 bytes, then 0/2/8 length bytes, then 0/4 mask bytes.
            self.head.push(data[0]);
            data = &data[1..];
            if self.head.len() < 2 {
                continue;
            }
            let len7 = self.head[1] & 0x7f;
            let masked = self.head[1] & 0x80 != 0;
            let ext = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let need = 2 + ext + if masked { 4 } else { 0 };
            if self.head.len() < need {
                continue;
            }
            let opcode = self.head[0] & 0x0f;
            let len = match ext {
                0 => len7 as u64,
                2 => u16::from_be_bytes([self.head[2], self.head[3]]) as u64,
                _ => u64::from_be_bytes(self.head[2..10].try_into().unwrap_or([0; 8])),
            };
            self.mask = masked.then(|| {
                let m = &self.head[2 + ext..2 + ext + 4];
                [m[0], m[1], m[2], m[3]]
            });
            self.frames += 1;
            match opcode {
                0x0 => {} // continuation: keeps `in_text`
                0x1 => {
                    self.text_messages += 1;
                    self.in_text = true;
                    if !self.text.head.is_empty() {
                        self.text.push(b"\n");
                    }
                }
                0x2 => {
                    self.binary_messages += 1;
                    self.in_text = false;
                }
                0x8..=0xa => self.control_frames += 1,
                _ => self.lost = true,
            }
            if opcode >= 0x8 {
                // Control frames interleave; their payload is not message text.
                let was = self.in_text;
                self.in_text = false;
                self.left = len;
                self.offset = 0;
                self.head.clear();
                // Skip the payload, then restore the message state.
                let n = (data.len() as u64).min(self.left) as usize;
                self.left -= n as u64;
                data = &data[n..];
                if self.left == 0 {
                    self.in_text = was;
                } else {
                    // Rare: a control payload split across reads; stop extracting text.
                    self.in_text = false;
                }
                continue;
            }
            self.left = len;
            self.offset = 0;
            self.head.clear();
        }
    }
}

/// Masks the text messages of a WebSocket stream going to the client: each text frame
/// (and each continuation of a text message) is read whole, unmasked if the sender masked
/// it, masked by the connection's rules and re-framed with its new length; every other
/// frame passes byte for byte. Compressed text (`permessage-deflate`, RSV1) and text frames
/// over [`MAX_MASKED_FRAME`] cannot be masked: the tunnel is closed instead (fail closed).
pub struct WsMasker {
    masker: ConnectionMasker,
    pub stats: MaskStats,
    head: Vec<u8>,
    state: WsState,
    in_text: bool,
}

enum WsState {
    Head,
    Pass(u64),
    Buffer {
        first: u8,
        left: u64,
        mask: Option<[u8; 4]>,
        buf: Vec<u8>,
    },
}

/// Largest text frame masked (it is held whole while it arrives).
pub const MAX_MASKED_FRAME: u64 = 16 << 20;

impl WsMasker {
    pub fn new(masker: ConnectionMasker) -> WsMasker {
        WsMasker {
            masker,
            stats: MaskStats::default(),
            head: Vec::with_capacity(14),
            state: WsState::Head,
            in_text: false,
        }
    }

    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !data.is_empty() {
            match &mut self.state {
                WsState::Pass(left) => {
                    let n = (data.len() as u64).min(*left) as usize;
                    out.extend_from_slice(&data[..n]);
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.state = WsState::Head;
                    }
                }
                WsState::Buffer { left, buf, .. } => {
                    let n = (data.len() as u64).min(*left) as usize;
                    buf.extend_from_slice(&data[..n]);
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        self.emit_buffered(out);
                    }
                }
                WsState::Head => {
                    self.head.push(data[0]);
                    data = &data[1..];
                    self.on_head_byte(out)?;
                }
            }
        }
        Ok(())
    }

    fn on_head_byte(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let h = &self.head;
        if h.len() < 2 {
            return Ok(());
        }
        let masked = h[1] & 0x80 != 0;
        let ext = match h[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        if h.len() < 2 + ext + if masked { 4 } else { 0 } {
            return Ok(());
        }
        let len = match ext {
            0 => (h[1] & 0x7f) as u64,
            2 => u16::from_be_bytes([h[2], h[3]]) as u64,
            _ => u64::from_be_bytes(h[2..10].try_into().unwrap_or([0; 8])),
        };
        let first = h[0];
        let mask = masked.then(|| {
            let m = &h[2 + ext..2 + ext + 4];
            [m[0], m[1], m[2], m[3]]
        });
        let text = match first & 0x0f {
            0x1 => {
                self.in_text = true;
                true
            }
            0x2 => {
                self.in_text = false;
                false
            }
            0x0 => self.in_text,
            _ => false,
        };
        if !text {
            out.extend_from_slice(&self.head);
            self.head.clear();
            self.state = if len == 0 {
                WsState::Head
            } else {
                WsState::Pass(len)
            };
            return Ok(());
        }
        if first & 0x40 != 0 {
            return Err("a compressed WebSocket text frame cannot be masked".into());
        }
        if len > MAX_MASKED_FRAME {
            return Err(format!(
                "a {len}-byte WebSocket text frame is larger than the {MAX_MASKED_FRAME} bytes Warden masks"
            ));
        }
        self.head.clear();
        self.state = WsState::Buffer {
            first,
            left: len,
            mask,
            buf: Vec::with_capacity(len as usize),
        };
        if len == 0 {
            self.emit_buffered(out);
        }
        Ok(())
    }

    fn emit_buffered(&mut self, out: &mut Vec<u8>) {
        let WsState::Buffer {
            first,
            mask,
            mut buf,
            ..
        } = std::mem::replace(&mut self.state, WsState::Head)
        else {
            return;
        };
        if let Some(m) = mask {
            for (i, b) in buf.iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
        let payload = self.masker.mask_bytes(&buf, &mut self.stats);
        out.push(first);
        let n = payload.len();
        if n < 126 {
            out.push(n as u8);
        } else if n < 65536 {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        out.extend_from_slice(&payload);
    }
}

/// Copy `from` → `to` until EOF, then shut `to`'s write side. With `rewrite`, WebSocket
/// text is masked on the way (see [`WsMasker`]); the frame counts and excerpt then
/// describe what was sent.
pub async fn pump<R, W>(
    mut from: R,
    mut to: W,
    mut ws: Option<WsFrames>,
    mut rewrite: Option<&mut WsMasker>,
) -> (Direction, Option<String>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let mut masked = Vec::new();
    let mut d = Direction::default();
    let err = loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break None,
            Ok(n) => n,
            Err(e) => break Some(e.to_string()),
        };
        let out: &[u8] = match rewrite.as_deref_mut() {
            Some(r) => {
                masked.clear();
                if let Err(e) = r.feed(&buf[..n], &mut masked) {
                    break Some(e);
                }
                &masked
            }
            None => &buf[..n],
        };
        if let Some(w) = &mut ws {
            w.feed(out);
        }
        d.bytes += out.len() as u64;
        if let Err(e) = to.write_all(out).await {
            break Some(e.to_string());
        }
    };
    let _ = to.shutdown().await;
    d.ws = ws;
    (d, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n < 65536 => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    #[test]
    fn follows_frames_in_any_chunking() {
        let mut stream = frame(0x1, b"hello", Some([1, 2, 3, 4]));
        stream.extend(frame(0x9, b"ping", None));
        stream.extend(frame(0x2, &[0u8; 300], None));
        stream.extend(frame(
            0x1,
            "w\u{f6}rld".repeat(40).as_bytes(),
            Some([9, 8, 7, 6]),
        ));
        for chunk in [1usize, 2, 3, 7, 64, 100_000] {
            let mut w = WsFrames::new(1024);
            for c in stream.chunks(chunk) {
                w.feed(c);
            }
            assert_eq!(w.frames, 4, "chunk {chunk}");
            assert_eq!(
                (w.text_messages, w.binary_messages, w.control_frames),
                (2, 1, 1)
            );
            let text = String::from_utf8(w.text.head.clone()).unwrap();
            assert!(
                text.starts_with("hello\nw\u{f6}rld"),
                "chunk {chunk}: {text}"
            );
        }
    }
}
