//! A tiny upstream for the load harness's `--smoke` run: answers every request with a
//! fixed 1 KiB body (`200`, `content-type: text/plain`), HTTP/1.1 and h2c, keep-alive.
//! Used by `benches/load/run.sh --smoke` where nginx may not be installed.
//!
//! Run: `tiny_upstream 127.0.0.1:8080`.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

static BODY: [u8; 1024] = [b'x'; 1024];

async fn answer(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(&BODY)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    Ok(resp)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(listen) = std::env::args().nth(1) else {
        eprintln!("usage: tiny_upstream LISTEN   (e.g. 127.0.0.1:8080)");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
