//! The floor of our stack: a bare hyper forwarder with nothing of fleetgate in it.
//!
//! hyper-util's auto server (HTTP/1.1 and h2c) on `LISTEN`, hyper-util's legacy client
//! (keep-alive pool) to one `UPSTREAM`; no classification, no layers, no limits. Headers
//! pass through except the hop-by-hop ones. The tokio runtime is multi-threaded
//! (`TOKIO_WORKER_THREADS` sets its size). Used by `benches/load/run.sh`.
//!
//! Run: `bare_forwarder 127.0.0.1:8081 127.0.0.1:8080`.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type Body = Either<Incoming, Full<Bytes>>;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    authority: &'static str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("http://{authority}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    *req.uri_mut() = uri;
    // An h2c request goes upstream as HTTP/1.1.
    *req.version_mut() = Version::HTTP_11;
    strip_hop_by_hop(req.headers_mut());
    match client.request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::new())));
    *resp.status_mut() = code;
    resp
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_forwarder LISTEN UPSTREAM   (e.g. 127.0.0.1:8081 127.0.0.1:8080)");
        std::process::exit(2);
    };
    let authority: &'static str = Box::leak(upstream.into_boxed_str());
    let listen: std::net::SocketAddr = listen.parse()?;
    // BARE_PER_CORE=N: N threads, each with a current-thread runtime, its own
    // SO_REUSEPORT listener and its own client pool, instead of one multi-thread runtime.
    let per_core: usize = std::env::var("BARE_PER_CORE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if per_core == 0 {
        return tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(listen, authority, false));
    }
    let threads: Vec<_> = (0..per_core)
        .map(|_| {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(serve(listen, authority, true))
                    .expect("serve")
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

async fn serve(
    listen: std::net::SocketAddr,
    authority: &'static str,
    reuseport: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(reuseport)?;
    socket.bind(listen)?;
    let listener = socket.listen(1024)?;
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build_http::<Incoming>();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(client.clone(), authority, req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
