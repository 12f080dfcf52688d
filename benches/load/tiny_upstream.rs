//! A tiny upstream for the load harness: answers a request without a body with a fixed
//! 1 KiB body (`200`, `content-type: text/plain`), HTTP/1.1 and h2c, keep-alive. A request
//! with a body is read to its end and discarded, and the answer says how many bytes came:
//! `200`, `x-received-bytes: N`, body `N\n`.
//!
//! `benches/load/run.sh --smoke` uses it where nginx may not be installed (bodiless
//! GETs); the full harness uses it as the sink of workload 5's uploads, which nginx
//! cannot discard without spooling them to disk first.
//!
//! Run: `tiny_upstream 127.0.0.1:8080`.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

static BODY: [u8; 1024] = [b'x'; 1024];

fn text(body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = req.into_body();
    if body.is_end_stream() {
        return Ok(text(Bytes::from_static(&BODY)));
    }
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => {
                // The body broke off: say so (if anyone still listens) with what came.
                let mut resp = text(Bytes::from(format!("{received}\n")));
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(resp);
            }
        }
    }
    let mut resp = text(Bytes::from(format!("{received}\n")));
    resp.headers_mut()
        .insert("x-received-bytes", HeaderValue::from(received));
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
