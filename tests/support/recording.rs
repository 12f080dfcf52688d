//! A byte-recording HTTP/1.1 upstream for the attack suites.
//!
//! Unlike the hyper upstream in `support`, this one parses what it receives itself, the
//! way a lenient backend would, and keeps both the exact bytes of every connection and
//! each request it framed. Anything a careful backend would find ambiguous (both
//! `Content-Length` and `Transfer-Encoding`, two lengths, a coding other than `chunked`,
//! a non-canonical chunk line) is recorded as an anomaly: a proxy must never send one.
//! It answers every request with `200` and `recorded METHOD TARGET body=N`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the upstream framed it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Framing a careful backend would refuse or could read two ways.
    pub anomalies: Vec<String>,
}

impl Recorded {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

#[derive(Default)]
struct Log {
    connections: Vec<Vec<u8>>,
    requests: Vec<Recorded>,
}

pub struct RecordingUpstream {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl RecordingUpstream {
    pub async fn start() -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let l = log.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let index = {
                    let mut g = l.lock().unwrap();
                    g.connections.push(Vec::new());
                    g.connections.len() - 1
                };
                tokio::spawn(serve(tcp, l.clone(), index));
            }
        });
        RecordingUpstream { addr, log }
    }

    /// Every request framed so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().requests.clone()
    }

    /// The requests whose target contains `marker`.
    pub fn requests_with(&self, marker: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.target.contains(marker))
            .collect()
    }

    /// The exact bytes received on every connection.
    pub fn connection_bytes(&self) -> Vec<Vec<u8>> {
        self.log.lock().unwrap().connections.clone()
    }
}

async fn serve(mut tcp: TcpStream, log: Arc<Mutex<Log>>, index: usize) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse_request(&buf) {
            Parsed::Complete(request, used) => {
                buf.drain(..used);
                let answer = format!(
                    "recorded {} {} body={}",
                    request.method,
                    request.target,
                    request.body.len()
                );
                log.lock().unwrap().requests.push(request);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                if tcp.write_all(head.as_bytes()).await.is_err()
                    || tcp.write_all(answer.as_bytes()).await.is_err()
                {
                    return;
                }
                continue;
            }
            Parsed::Invalid(why) => {
                log.lock().unwrap().requests.push(Recorded {
                    method: "<invalid>".into(),
                    target: String::new(),
                    headers: Vec::new(),
                    body: Vec::new(),
                    anomalies: vec![why],
                });
                let _ = tcp
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
            Parsed::Partial => {}
        }
        let n = match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        log.lock().unwrap().connections[index].extend_from_slice(&chunk[..n]);
    }
}

enum Parsed {
    Complete(Recorded, usize),
    Partial,
    Invalid(String),
}

fn parse_request(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Invalid(format!("head: {e}")),
    };
    let mut anomalies = Vec::new();
    if buf[..head_len]
        .windows(2)
        .any(|w| w[1] == b'\n' && w[0] != b'\r')
    {
        anomalies.push("bare LF in head".to_string());
    }
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let values = |name: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    };
    let lengths = values("content-length");
    let codings = values("transfer-encoding");
    if !lengths.is_empty() && !codings.is_empty() {
        anomalies.push("both content-length and transfer-encoding".into());
    }
    if lengths.len() > 1 {
        anomalies.push(format!("{} content-length fields", lengths.len()));
    }
    if codings.len() > 1 {
        anomalies.push(format!("{} transfer-encoding fields", codings.len()));
    }
    if values("host").len() != 1 {
        anomalies.push(format!("{} host fields", values("host").len()));
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default().to_string();
    let rest = &buf[head_len..];
    let (body, used) = if let Some(coding) = codings.last() {
        if !coding.eq_ignore_ascii_case(b"chunked") {
            anomalies.push(format!(
                "transfer-encoding {:?}",
                String::from_utf8_lossy(coding)
            ));
        }
        match parse_chunked(rest, &mut anomalies) {
            Some(Ok((body, used))) => (body, used),
            Some(Err(why)) => return Parsed::Invalid(why),
            None => return Parsed::Partial,
        }
    } else if let Some(length) = lengths.first() {
        let text = std::str::from_utf8(length).unwrap_or("");
        let Ok(n) = text.parse::<usize>() else {
            return Parsed::Invalid(format!("content-length {text:?}"));
        };
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            anomalies.push(format!("content-length {text:?}"));
        }
        if rest.len() < n {
            return Parsed::Partial;
        }
        (rest[..n].to_vec(), n)
    } else {
        (Vec::new(), 0)
    };
    Parsed::Complete(
        Recorded {
            method,
            target,
            headers,
            body,
            anomalies,
        },
        head_len + used,
    )
}

/// A chunked body: `None` while incomplete.
fn parse_chunked(
    mut rest: &[u8],
    anomalies: &mut Vec<String>,
) -> Option<Result<(Vec<u8>, usize), String>> {
    let start = rest.len();
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        if line.contains(&b';') {
            anomalies.push("chunk extension".into());
        }
        let Ok(size_str) = std::str::from_utf8(size_text) else {
            return Some(Err("chunk size not text".into()));
        };
        let Ok(size) = usize::from_str_radix(size_str, 16) else {
            return Some(Err(format!("chunk size {size_str:?}")));
        };
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let end = rest.windows(2).position(|w| w == b"\r\n")?;
                if end > 0 {
                    anomalies.push("trailer field".into());
                }
                rest = &rest[end + 2..];
                if end == 0 {
                    return Some(Ok((body, start - rest.len())));
                }
            }
        }
        if rest.len() < size + 2 {
            return None;
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Some(Err("chunk data not followed by CRLF".into()));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
