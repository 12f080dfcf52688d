//! One worker thread's idle keep-alive connections to plain-http endpoints, and the
//! connections themselves: hyper's HTTP/1.1 client connection over TCP, driven by a task
//! on the thread that opened it.
//!
//! A connection is taken out for one request and comes back when that request's response
//! body has ended ([`Reuse`] travels with the response, inside the endpoint's in-flight
//! count). Idle connections are kept per endpoint address (so a reload that keeps an
//! endpoint keeps them), the most recently used handed out first. [`KeepAlive::purge`],
//! called about every 100 ms, closes those idle for [`POOL_IDLE`] and, beyond
//! `upstreams.max_idle_per_endpoint` per endpoint, those idle for [`PURGE_AFTER`], the
//! least recently used first: a burst's connections do not stay open with their buffers
//! once it has passed, while a swing of load within a second (an HTTP/2 client's streams
//! arriving in waves) keeps the connections it will want again. A cap at the moment a
//! connection comes back (nginx's `keepalive N`) closed and reopened connections at every
//! such swing: measured in docs/performance.md.
//!
//! This replaces hyper-util's pooled client for plain endpoints: no pool key to hash, no
//! lock shared between threads, no task spawned per request to wait for the connection to
//! become idle again (docs/performance.md, tuning log). `https` endpoints still use
//! hyper-util's client (see [`super::client`]).

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::RequestBody;

/// Idle keep-alive connections to upstreams are closed after this long.
pub const POOL_IDLE: Duration = Duration::from_secs(90);

/// Idle connections beyond `upstreams.max_idle_per_endpoint` are closed once idle this
/// long (see the module docs).
pub const PURGE_AFTER: Duration = Duration::from_secs(1);

/// The sending side of one upstream connection.
pub type Sender = http1::SendRequest<RequestBody>;

/// One upstream connection as the pool lends it: hyper's sending side (what it
/// dereferences to) and the connection's first-byte clock.
pub struct Conn {
    sender: Sender,
    /// The `first_byte` deadline of the request the connection carries, kept from one
    /// request to the next and pushed later for each: tokio moves a pending timer later
    /// without touching its timer wheel, where a new timer for every request was an
    /// insert and a removal (0.7k instructions a request, docs/performance.md).
    first_byte: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    fn new(sender: Sender) -> Conn {
        Conn {
            sender,
            first_byte: Box::pin(tokio::time::sleep(POOL_IDLE)),
        }
    }

    /// The sending side and the first-byte clock, borrowed apart (the exchange sets the
    /// clock with `reset` once the request is sent, then waits on it).
    pub fn parts(&mut self) -> (&mut Sender, Pin<&mut tokio::time::Sleep>) {
        (&mut self.sender, self.first_byte.as_mut())
    }
}

impl Deref for Conn {
    type Target = Sender;
    fn deref(&self) -> &Sender {
        &self.sender
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Sender {
        &mut self.sender
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One worker's idle connections (see the module docs).
pub struct KeepAlive {
    /// By endpoint address; each list oldest first. Only its own worker thread uses it:
    /// the lock is never contended.
    idle: Mutex<Vec<(SocketAddr, Vec<Idle>)>>,
    /// `upstreams.max_idle_per_endpoint` (set again on reload).
    max_idle: AtomicUsize,
}

impl KeepAlive {
    pub fn new(max_idle: usize) -> KeepAlive {
        KeepAlive {
            idle: Mutex::default(),
            max_idle: AtomicUsize::new(max_idle),
        }
    }

    /// Keep at most `max` idle connections per endpoint from now on (longer lists shrink
    /// at the next [`KeepAlive::purge`]s; `0`: a connection closes when its response ends).
    pub fn set_max_idle(&self, max: usize) {
        self.max_idle.store(max, Ordering::Relaxed);
    }

    /// An idle connection to `addr` that can take a request now, if there is one: the
    /// most recently used first. Closed ones met on the way are dropped; one still
    /// finishing its last response stays for later. At most `TAKE_LOOKS` (4) live ones are
    /// looked at, so a take costs the same however many connections are idle.
    pub fn take(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = &mut idle.iter_mut().find(|(a, _)| *a == addr)?.1;
        expire(list, Instant::now());
        let mut looked = 0;
        let mut i = list.len();
        while i > 0 && looked < TAKE_LOOKS {
            i -= 1;
            if list[i].conn.is_closed() {
                list.remove(i);
            } else if list[i].conn.is_ready() {
                return Some(list.remove(i).conn);
            } else {
                looked += 1;
            }
        }
        None
    }

    /// `conn` is idle again (its last response has ended). Dropped instead (which ends
    /// the connection) when none is to be kept.
    fn put(&self, addr: SocketAddr, conn: Conn) {
        if conn.is_closed() || self.max_idle.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = match idle.iter().position(|(a, _)| *a == addr) {
            Some(i) => &mut idle[i].1,
            None => {
                idle.push((addr, Vec::new()));
                &mut idle.last_mut().expect("just pushed").1
            }
        };
        expire(list, now);
        list.push(Idle { conn, since: now });
    }

    /// Close what should not stay idle any longer, as of `now`: connections the upstream
    /// closed, those idle for [`POOL_IDLE`], and, beyond the most to keep per endpoint,
    /// those idle for [`PURGE_AFTER`] (the least recently used first). Dropping hyper's
    /// sending side ends its connection on its own worker thread.
    pub fn purge(&self, now: Instant) {
        let max = self.max_idle.load(Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for (_, list) in idle.iter_mut() {
            list.retain(|c| !c.conn.is_closed());
            expire(list, now);
            let excess = list.len().saturating_sub(max);
            let stale = list[..excess]
                .iter()
                .take_while(|c| now.saturating_duration_since(c.since) >= PURGE_AFTER)
                .count();
            list.drain(..stale);
        }
        // Endpoints with nothing idle (gone in a reload, or quiet) keep no entry.
        idle.retain(|(_, list)| !list.is_empty());
    }

    /// How many idle connections there are (closed ones included until next used).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap();
        idle.iter().map(|(_, l)| l.len()).sum()
    }
}

/// How many live idle connections a take looks at before it opens a new one instead.
const TAKE_LOOKS: usize = 4;

/// Drop the connections idle for longer than [`POOL_IDLE`]: the oldest, at the front.
/// (Closed ones deeper in the list go when a take meets them, or when they expire.)
fn expire(list: &mut Vec<Idle>, now: Instant) {
    let old = list
        .iter()
        .take_while(|c| now.saturating_duration_since(c.since) > POOL_IDLE)
        .count();
    if old > 0 {
        list.drain(..old);
    }
}

/// Open a connection to `addr` within `timeout`; its task runs on the calling thread's
/// runtime until the connection closes (or is upgraded and handed over).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<Conn> {
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out (timeouts.connect)",
            ))
        }
    };
    tcp.set_nodelay(true)?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Conn::new(sender))
}

/// A connection lent to one request: back to its worker's idle list when dropped (with
/// the response body, once it has ended).
pub struct Reuse {
    conn: Option<Conn>,
    addr: SocketAddr,
    pool: Arc<KeepAlive>,
}

impl Reuse {
    pub fn new(conn: Conn, addr: SocketAddr, pool: Arc<KeepAlive>) -> Reuse {
        Reuse {
            conn: Some(conn),
            addr,
            pool,
        }
    }
}

impl std::fmt::Debug for Reuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reuse").field("addr", &self.addr).finish()
    }
}

impl Drop for Reuse {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put(self.addr, conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/1.1 server answering `200 ok` on every request of every connection.
    async fn server() -> SocketAddr {
        counting_server().await.0
    }

    /// [`server`], with the number of its connections still open.
    async fn counting_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let counted = open.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let open = counted.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, open)
    }

    async fn get(sender: &mut Conn) {
        use http_body_util::BodyExt;
        let req = http::Request::get("/")
            .header("host", "x")
            .body(RequestBody::empty())
            .unwrap();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ok");
    }

    #[tokio::test]
    async fn a_connection_comes_back_and_is_reused_most_recent_first() {
        let addr = server().await;
        let pool = Arc::new(KeepAlive::new(64));
        assert!(pool.take(addr).is_none());
        let mut a = connect(addr, Duration::from_secs(5)).await.unwrap();
        let mut b = connect(addr, Duration::from_secs(5)).await.unwrap();
        get(&mut a).await;
        get(&mut b).await;
        drop(Reuse::new(a, addr, pool.clone()));
        drop(Reuse::new(b, addr, pool.clone()));
        assert_eq!(pool.idle_count(), 2);
        let mut again = pool.take(addr).expect("an idle connection");
        get(&mut again).await;
        assert_eq!(pool.idle_count(), 1);
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(pool.take(other).is_none(), "kept per endpoint");
    }

    /// Wait (at most 10 s) until the server has `n` connections open; how many it has.
    async fn until_open(open: &AtomicUsize, n: usize) -> usize {
        for _ in 0..1000 {
            if open.load(Ordering::SeqCst) == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        open.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn beyond_the_most_to_keep_the_least_recently_used_close_after_a_second() {
        let (addr, open) = counting_server().await;
        let pool = Arc::new(KeepAlive::new(2));
        let mut conns = Vec::new();
        for _ in 0..4 {
            let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
            get(&mut c).await;
            conns.push(c);
        }
        // Every `since` falls between `before` and `after`, however long the drops take.
        let before = Instant::now();
        for c in conns {
            drop(Reuse::new(c, addr, pool.clone()));
        }
        let after = Instant::now();
        // A swing of load: all four kept for now.
        pool.purge(before);
        assert_eq!(pool.idle_count(), 4);
        pool.purge(before + PURGE_AFTER - Duration::from_millis(1));
        assert_eq!(pool.idle_count(), 4, "not idle for long enough yet");
        // A second later, the two least recently used are closed, at the upstream too.
        pool.purge(after + PURGE_AFTER);
        assert_eq!(pool.idle_count(), 2);
        assert_eq!(until_open(&open, 2).await, 2);
        // The two kept work.
        let mut a = pool.take(addr).unwrap();
        let mut b = pool.take(addr).unwrap();
        get(&mut a).await;
        get(&mut b).await;
        drop(Reuse::new(a, addr, pool.clone()));
        drop(Reuse::new(b, addr, pool.clone()));
        assert_eq!(pool.idle_count(), 2);
        // Idle for `POOL_IDLE`, every one goes.
        pool.purge(Instant::now() + POOL_IDLE + Duration::from_secs(1));
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(until_open(&open, 0).await, 0);
    }

    #[tokio::test]
    async fn with_none_to_keep_a_connection_closes_when_its_response_ends() {
        let (addr, open) = counting_server().await;
        let pool = Arc::new(KeepAlive::new(64));
        pool.set_max_idle(0);
        let mut c = connect(addr, Duration::from_secs(5)).await.unwrap();
        get(&mut c).await;
        drop(Reuse::new(c, addr, pool.clone()));
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(until_open(&open, 0).await, 0);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_handed_out() {
        // An upstream that accepts, answers nothing and closes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                drop(tcp);
            }
        });
        let pool = Arc::new(KeepAlive::new(64));
        let sender = connect(addr, Duration::from_secs(5)).await.unwrap();
        // The connection task sees the close.
        for _ in 0..100 {
            if sender.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sender.is_closed());
        drop(Reuse::new(sender, addr, pool.clone()));
        assert!(pool.take(addr).is_none());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error() {
        // Bound, never listening (and kept bound: no other test can take the port).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        assert!(connect(addr, Duration::from_secs(5)).await.is_err());
        drop(socket);
    }
}
