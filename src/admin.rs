//! The admin listener (`admin_listen`, default `127.0.0.1:9901`): `GET /metrics`,
//! `/healthz`, `/readyz`, `/version` and `/routes`. Probes are answered by fleetgate itself,
//! here and on the data listener ([`probe`]), never forwarded, never shed.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::manifest::{Condition, Manifest, Writes};
use crate::proxy::upstream::Pool;
use crate::proxy::{Gateway, Phase};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `/healthz` and `/readyz`, shared by both listeners: `(status, JSON body)`.
pub fn probe(gw: &Gateway, path: &str) -> Option<(StatusCode, Bytes)> {
    match path {
        "/healthz" => Some((StatusCode::OK, json_bytes(&healthz(gw)))),
        "/readyz" => {
            let phase = gw.phase();
            let ready = phase == Phase::Ready;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Some((
                status,
                json_bytes(&json!({ "ready": ready, "status": phase_name(phase) })),
            ))
        }
        _ => None,
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "starting",
        Phase::Ready => "ok",
        Phase::Draining => "draining",
    }
}

fn json_bytes(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON values serialize");
    out.push(b'\n');
    Bytes::from(out)
}

fn pool_json(pool: &Pool) -> Value {
    let eps = pool.endpoints();
    json!({
        "configured": pool.urls.iter().map(|u| u.to_string()).collect::<Vec<_>>(),
        "reachable": pool.reachable(),
        "endpoints": eps.iter().map(|e| json!({
            "address": e.addr.to_string(),
            "reachable": !e.is_ejected(),
            "outstanding": e.outstanding(),
        })).collect::<Vec<_>>(),
    })
}

fn healthz(gw: &Gateway) -> Value {
    let snap = gw.snapshot.load();
    json!({
        "status": phase_name(gw.phase()),
        "role": snap.config.role.as_str(),
        "node_id": snap.config.node_id,
        "version": VERSION,
        "manifest_digest": snap.manifest.digest(),
        "upstreams": {
            "fleet": pool_json(&gw.fleet),
            "ide": gw.ide.as_deref().map(pool_json),
        },
    })
}

/// The compiled manifest as JSON (`GET /routes`).
pub fn routes_json(m: &Manifest) -> Value {
    let cond = |c: &Condition| match c {
        Condition::Present => "*".to_string(),
        Condition::Equals(v) => v.clone(),
    };
    let rules: Vec<Value> = m
        .rules()
        .iter()
        .map(|r| {
            json!({
                "file": r.file,
                "line": r.line,
                "methods": r.methods.names(),
                "path": r.path,
                "class": r.class.as_str(),
                "why": r.why,
                "tenant": r.tenant,
                "degrade": r.degrade,
                "writes": r.writes.map(|w| match w { Writes::Ide => "ide", Writes::Fleet => "fleet" }),
                "read_only_safe": r.read_only_safe,
                "when": {
                    "query": r.when.query.iter().map(|(k, c)| (k.clone(), Value::from(cond(c)))).collect::<serde_json::Map<_, _>>(),
                    "header": r.when.header.iter().map(|(k, c)| (k.clone(), Value::from(cond(c)))).collect::<serde_json::Map<_, _>>(),
                },
            })
        })
        .collect();
    json!({
        "default_class": m.default_class().as_str(),
        "aliases": m.aliases().iter().map(|a| json!({"from": a.from, "to": a.to})).collect::<Vec<_>>(),
        "digest": m.digest(),
        "rules": rules,
    })
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Answer one admin request.
pub fn handle(gw: &Gateway, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"method not allowed\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Some((status, body)) = probe(gw, path) {
        return respond(status, "application/json", body);
    }
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            Bytes::from(gw.metrics.render()),
        ),
        "/version" => respond(
            StatusCode::OK,
            "application/json",
            json_bytes(&json!({ "name": "fleetgate", "version": VERSION })),
        ),
        "/routes" => respond(
            StatusCode::OK,
            "application/json",
            json_bytes(&routes_json(&gw.snapshot.load().manifest)),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found; try /healthz /readyz /metrics /version /routes\n"),
        ),
    }
}

/// Serve the admin listener until `stop` fires; then finish open requests and return.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let gw = gw.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let resp = handle(&gw, &req);
            async move { Ok::<_, Infallible>(resp) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), graceful.shutdown()).await;
}
