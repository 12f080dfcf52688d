//! A raw HTTP/2 (h2c, prior knowledge) client that writes frames byte by byte, so the
//! attack suites can send what no well-behaved client library would: connection-specific
//! fields, CR/LF in values, a `content-length` that disagrees with the DATA frames,
//! floods of resets and CONTINUATION frames. Header blocks are HPACK literals without
//! indexing and without Huffman coding; of the response only the `:status` is decoded.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// How the server answered one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response head with this status.
    Status(u16),
    /// The stream was reset with this error code.
    Reset(u32),
    /// The connection was closed with GOAWAY and this error code, the stream unanswered.
    GoAway(u32),
    /// The connection closed (or the wait ran out) without an answer for the stream.
    NoAnswer,
}

impl Outcome {
    /// A 400 or a stream/connection error: the request was refused as malformed.
    pub fn refused(&self) -> bool {
        matches!(
            self,
            Outcome::Status(400) | Outcome::Reset(_) | Outcome::GoAway(_)
        )
    }
}

fn integer(out: &mut Vec<u8>, prefix_bits: u8, first: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// An HPACK block of literal fields (without indexing, new name, no Huffman).
pub fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        integer(&mut out, 7, 0, name.len());
        out.extend_from_slice(name);
        integer(&mut out, 7, 0, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The standard request pseudo-fields for `path` plus `extra`.
pub fn request_fields<'a>(
    method: &'a str,
    path: &'a str,
    authority: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a [u8], &'a [u8])> {
    let mut v: Vec<(&[u8], &[u8])> = vec![
        (b":method", method.as_bytes()),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", authority.as_bytes()),
    ];
    v.extend(extra.iter().map(|(k, val)| (k.as_bytes(), val.as_bytes())));
    v
}

/// An open h2c connection that has sent its preface and SETTINGS.
pub struct RawH2 {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawH2 {
    pub async fn connect(addr: SocketAddr) -> RawH2 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        tcp.write_all(&hello).await.unwrap();
        RawH2 {
            tcp,
            buf: Vec::new(),
        }
    }

    /// Write raw bytes (one or more frames). Errors are ignored: the server may already
    /// have closed the connection, which the read side reports.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.tcp.write_all(bytes).await;
    }

    /// Send HEADERS (with END_HEADERS) for `stream`, then optional DATA frames; the last
    /// frame carries END_STREAM.
    pub async fn request(&mut self, stream: u32, fields: &[(&[u8], &[u8])], data: &[&[u8]]) {
        let block = header_block(fields);
        let flags = END_HEADERS | if data.is_empty() { END_STREAM } else { 0 };
        let mut bytes = frame(HEADERS, flags, stream, &block);
        for (i, d) in data.iter().enumerate() {
            let end = if i + 1 == data.len() { END_STREAM } else { 0 };
            bytes.extend(frame(DATA, end, stream, d));
        }
        self.send(&bytes).await;
    }

    /// Read one frame: (type, flags, stream, payload); `None` on close.
    pub async fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16
                    | (self.buf[1] as usize) << 8
                    | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let kind = self.buf[3];
                    let flags = self.buf[4];
                    let stream =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                            & 0x7fff_ffff;
                    let payload = self.buf[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    return Some((kind, flags, stream, payload));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Read frames (acknowledging SETTINGS, answering PING) until `stream` is answered,
    /// reset, or the connection ends; gives up after `wait`.
    pub async fn outcome(&mut self, stream: u32, wait: Duration) -> Outcome {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.read_frame()).await;
            let Ok(Some((kind, flags, id, payload))) = next else {
                return Outcome::NoAnswer;
            };
            match kind {
                SETTINGS if flags & 1 == 0 => self.send(&frame(SETTINGS, 1, 0, &[])).await,
                PING if flags & 1 == 0 => self.send(&frame(PING, 1, 0, &payload)).await,
                HEADERS if id == stream => return Outcome::Status(status_of(&payload, flags)),
                RST_STREAM if id == stream => {
                    return Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()))
                }
                GOAWAY => {
                    let last = u32::from_be_bytes(payload[..4].try_into().unwrap()) & 0x7fff_ffff;
                    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                    if last < stream {
                        return Outcome::GoAway(code);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The `:status` of a response header block (the first field, as every server sends it).
fn status_of(payload: &[u8], flags: u8) -> u16 {
    let mut p = payload;
    if flags & 0x8 != 0 {
        // PADDED
        let pad = p[0] as usize;
        p = &p[1..p.len() - pad];
    }
    if flags & 0x20 != 0 {
        // PRIORITY
        p = &p[5..];
    }
    let first = p[0];
    // Indexed fields of the static table: 8..=14 are the `:status` values.
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if first & 0x80 != 0 {
        let index = (first & 0x7f) as usize;
        return STATIC
            .get(index.wrapping_sub(8))
            .copied()
            .unwrap_or_else(|| panic!("first field is static entry {index}, not :status"));
    }
    // A literal with the indexed name `:status` (index 8): incremental indexing (01),
    // without indexing (0000) or never indexed (0001).
    let name_index = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    assert_eq!(name_index, 8, "first field is not :status: {p:?}");
    let huffman = p[1] & 0x80 != 0;
    let len = (p[1] & 0x7f) as usize;
    let value = &p[2..2 + len];
    let digits = if huffman {
        huffman_digits(value)
    } else {
        String::from_utf8(value.to_vec()).unwrap()
    };
    digits.parse().unwrap()
}

/// Decode a Huffman-coded string of ASCII digits (RFC 7541 Appendix B: `0`-`2` are the
/// 5-bit codes 0-2, `3`-`9` the 6-bit codes 0x19-0x1f).
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut out = String::new();
    let mut i = 0;
    while i + 5 <= bits.len() {
        let v5 = bits[i..i + 5].iter().fold(0u8, |a, b| a << 1 | b);
        if v5 == 0x1f {
            break; // padding (all ones)
        }
        if v5 < 3 {
            out.push((b'0' + v5) as char);
            i += 5;
        } else {
            let v6 = v5 << 1 | bits[i + 5];
            out.push((b'3' + (v6 - 0x19)) as char);
            i += 6;
        }
    }
    out
}
