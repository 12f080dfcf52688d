//! A raw-TCP upstream that misbehaves in one chosen way, for the fault suite.
//!
//! It reads each request head itself (and a `Content-Length` body), records
//! `METHOD TARGET` for every head it received and counts the connections it accepted, so a
//! test can tell whether the proxy ever sent a request twice. Then it does what its
//! [`Mode`] says. [`BadUpstream::kill`] (or drop) stops listening and resets every open
//! connection (`SO_LINGER` 0), the way a crashed process's sockets end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the upstream does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers every request `200` with `{"server":"bad"}` (keep-alive).
    Healthy,
    /// As [`Mode::Healthy`], each answer after this many milliseconds.
    Slow(u64),
    /// Accepts the connection and closes it at once, reading nothing.
    AcceptClose,
    /// Reads the request, sends half a status line, then resets the connection.
    ResetMidHead,
    /// Reads the request, sends a head promising 1000 bytes and 10 of them, then resets.
    ResetMidBody,
    /// Reads the request, sends a head promising 1000 bytes and 10 of them, then sends
    /// nothing more (the connection stays open until the proxy closes it or it is killed).
    StallMidBody,
    /// Reads the request and never answers (the connection stays open until killed).
    HangBeforeHead,
    /// Reads the request and answers with a head that is not HTTP.
    MalformedHead,
    /// Answers one request [`Mode::Healthy`] (keep-alive, no `Connection: close`), then
    /// closes the connection 50 ms later: an upstream whose keep-alive timeout is short.
    CloseAfterAnswer,
    /// Answers the first request of each connection [`Mode::Healthy`] (keep-alive), then
    /// reads the next and never answers it.
    HangOnSecond,
    /// Answers `200` with `Content-Length: 5` and writes, in the same segment, those 5
    /// bytes followed by a complete second response (`SMUGGLED`); then keeps serving the
    /// connection with [`Mode::Healthy`] answers.
    OverlongBody,
}

/// What the upstream saw.
#[derive(Default)]
struct Log {
    /// `METHOD TARGET` of every request head received, in order.
    requests: Mutex<Vec<String>>,
    connections: AtomicUsize,
}

pub struct BadUpstream {
    pub addr: SocketAddr,
    log: Arc<Log>,
    kill: watch::Sender<bool>,
}

impl BadUpstream {
    /// Listen on 127.0.0.1 port 0 and behave as `mode`.
    pub async fn start(mode: Mode) -> BadUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let (kill, rx) = watch::channel(false);
        tokio::spawn(accept(listener, mode, log.clone(), rx));
        BadUpstream { addr, log, kill }
    }

    /// An upstream that is up (serving [`Mode::Healthy`]) for `period`, then down
    /// (nothing listening, open connections reset) for `period`, over and over on the
    /// same port until killed.
    pub async fn flapping(period: Duration) -> BadUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let (kill, mut rx) = watch::channel(false);
        let l = log.clone();
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(up) = listener.take() else { return };
                // One up period: its own kill switch, so its connections end with it.
                let (down, down_rx) = watch::channel(false);
                tokio::spawn(accept(up, Mode::Healthy, l.clone(), down_rx));
                let killed = tokio::select! {
                    _ = tokio::time::sleep(period) => false,
                    _ = rx.changed() => true,
                };
                let _ = down.send(true);
                if killed {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = rx.changed() => return,
                }
                // The port is ours again (SO_REUSEADDR): retry briefly if the old socket
                // is still being torn down.
                for _ in 0..50 {
                    if let Ok(l) = TcpListener::bind(addr).await {
                        listener = Some(l);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
        BadUpstream { addr, log, kill }
    }

    /// `METHOD TARGET` of every request head received so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.requests.lock().unwrap().clone()
    }

    /// How many requests whose target contains `marker` arrived.
    pub fn count(&self, marker: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.contains(marker))
            .count()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::Relaxed)
    }

    /// Stop listening and reset every open connection.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }
}

impl Drop for BadUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept(listener: TcpListener, mode: Mode, log: Arc<Log>, mut kill: watch::Receiver<bool>) {
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            _ = kill.changed() => return,
        };
        log.connections.fetch_add(1, Ordering::Relaxed);
        let (log, mut kill) = (log.clone(), kill.clone());
        tokio::spawn(async move {
            let mut tcp = tcp;
            tokio::select! {
                _ = serve(&mut tcp, mode, &log) => {}
                _ = kill.changed() => {}
            }
            // Whatever ended the connection, end it with a reset, as a dying process would.
            let _ = tcp.set_zero_linger();
            drop(tcp);
        });
    }
}

const HEALTHY: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"server\":\"bad\"}";

/// Serve one connection in `mode`; returning resets it.
async fn serve(tcp: &mut TcpStream, mode: Mode, log: &Log) {
    if mode == Mode::AcceptClose {
        return;
    }
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        let Some(()) = read_request(tcp, &mut buf, log).await else {
            return;
        };
        served += 1;
        let answer: &[u8] = match mode {
            Mode::Healthy => HEALTHY,
            Mode::HangOnSecond if served == 1 => HEALTHY,
            Mode::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                HEALTHY
            }
            Mode::AcceptClose => return,
            Mode::ResetMidHead => {
                let _ = tcp.write_all(b"HTTP/1.1 20").await;
                let _ = tcp.flush().await;
                // Let the half line reach the proxy before the reset does.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            Mode::ResetMidBody => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                let _ = tcp.flush().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            Mode::StallMidBody => {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                    .await;
                let mut sink = [0u8; 1024];
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Mode::HangBeforeHead | Mode::HangOnSecond => {
                // Until the proxy gives up and closes, or the test kills us.
                let mut sink = [0u8; 1024];
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Mode::MalformedHead => {
                let _ = tcp.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
                let _ = tcp.flush().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            Mode::CloseAfterAnswer => {
                if tcp.write_all(HEALTHY).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // A clean close (FIN), as an upstream's keep-alive timeout does.
                let _ = tcp.shutdown().await;
                let mut sink = [0u8; 1024];
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Mode::OverlongBody => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED",
        };
        if tcp.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Read one request head (and its `Content-Length` body) from `tcp`, keeping what follows
/// in `buf`; record it. `None` when the peer closed or sent something unparsable.
async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>, log: &Log) -> Option<()> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                let line = format!("{} {}", req.method.unwrap_or("?"), req.path.unwrap_or("?"));
                let len: usize = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                log.requests.lock().unwrap().push(line);
                while buf.len() < head + len {
                    let n = tcp.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                    buf.extend_from_slice(&chunk[..n]);
                }
                buf.drain(..head + len);
                return Some(());
            }
            Ok(httparse::Status::Partial) => {
                let n = tcp.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(_) => return None,
        }
    }
}
