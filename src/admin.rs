//! The admin listener (`admin_listen`, default `127.0.0.1:9901`): `GET /metrics`,
//! `/healthz`, `/readyz`, `/version`, `/routes`, `/routes/unlisted`, `/admission`,
//! the status page `/` and its data `/status.json`, `POST /reload` and
//! `POST /super-read-only`.
//!
//! The status page is one self-contained HTML document (inline CSS and script, no other
//! asset) compiled into the binary; it polls `/status.json` every 2 seconds and writes
//! every value into the page as text. It is served with a content security policy that
//! lets it load nothing but its own inline code and fetch only from this listener.
//!
//! `GET` endpoints are open: kubelet probes and Prometheus reach them over the pod
//! network. Mutating endpoints (`POST`) are accepted only from a loopback peer, or, when
//! `[admin] token_file` is set, only with `Authorization: Bearer <token>` (from any peer,
//! loopback included; compared in constant time); anything else is `403`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::health::{admission_json, json_bytes, probe, status_json, version_json};
use crate::manifest::{Condition, Manifest, Writes};
use crate::reload::{Reloader, Trigger};
use crate::state::{AdminToken, State};

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

/// The status page (`GET /`).
const STATUS_PAGE: &str = include_str!("admin/status.html");

/// The status page's policy: its own inline style and script, fetches to this listener,
/// nothing else (no images, fonts, frames, forms or other origins).
const STATUS_PAGE_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /`: the status page, with headers that keep it from being framed, sniffed,
/// cached, or made to load anything from elsewhere.
fn status_page() -> Response<Full<Bytes>> {
    let mut r = respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(STATUS_PAGE.as_bytes()),
    );
    let h = r.headers_mut();
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(STATUS_PAGE_CSP),
    );
    no_store(h);
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// `cache-control: no-store` and `x-content-type-options: nosniff`.
fn no_store(h: &mut HeaderMap) {
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

/// May this request use a mutating endpoint? See the module docs.
fn authorized(token: Option<&AdminToken>, peer: SocketAddr, headers: &HeaderMap) -> bool {
    match token {
        Some(token) => headers
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|presented| token.matches(presented)),
        None => peer.ip().is_loopback(),
    }
}

/// Answer one admin request from `peer`.
pub async fn handle(
    state: &State,
    reloader: &Reloader,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let method = req.method();
    if method == Method::POST && (path == "/reload" || path == "/super-read-only") {
        if !authorized(state.snapshot().admin_token.as_ref(), peer, req.headers()) {
            return forbidden(peer);
        }
        if path == "/reload" {
            return reload(reloader).await;
        }
        return super_read_only(state, peer, req).await;
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        let allow = if path == "/reload" || path == "/super-read-only" {
            "POST"
        } else {
            "GET, HEAD"
        };
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return r;
    }
    if let Some((status, body)) = probe(state, path) {
        return respond(status, "application/json", body);
    }
    match path {
        "/" => status_page(),
        "/status.json" => {
            let mut r = respond(
                StatusCode::OK,
                "application/json",
                json_bytes(&status_json(state)),
            );
            no_store(r.headers_mut());
            r
        }
        "/metrics" => {
            state.runtime.refresh_gauges();
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                Bytes::from(state.runtime.metrics.render()),
            )
        }
        "/routes/unlisted" => respond(
            StatusCode::OK,
            "application/json",
            json_bytes(&state.runtime.unlisted.to_json()),
        ),
        "/admission" => respond(
            StatusCode::OK,
            "application/json",
            json_bytes(&admission_json(state, 20)),
        ),
        "/version" => respond(
            StatusCode::OK,
            "application/json",
            json_bytes(&version_json(state)),
        ),
        "/routes" => respond(
            StatusCode::OK,
            "application/json",
            json_bytes(&routes_json(&state.snapshot().manifest)),
        ),
        "/reload" => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload\n");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            r
        }
        _ => not_found(),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    text(
        StatusCode::NOT_FOUND,
        "not found; try GET / /status.json /healthz /readyz /metrics /version /routes /routes/unlisted /admission, POST /reload /super-read-only\n",
    )
}

fn forbidden(peer: SocketAddr) -> Response<Full<Bytes>> {
    tracing::warn!(peer = %peer, "admin POST refused: not a loopback peer, or no valid bearer token");
    text(
        StatusCode::FORBIDDEN,
        "forbidden: POST endpoints need a loopback peer, or the bearer token of [admin] token_file\n",
    )
}

/// `POST /reload`: `200` with the new digest, or `422` with the reason nothing changed.
async fn reload(reloader: &Reloader) -> Response<Full<Bytes>> {
    match reloader.reload(Trigger::Admin).await {
        Ok(done) => respond(
            StatusCode::OK,
            "application/json",
            json_bytes(&json!({
                "status": "reloaded",
                "digest": done.digest,
                "serial": done.serial,
                "manifest_changed": done.manifest_changed,
            })),
        ),
        Err(e) => text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload refused; the previous configuration stays live:\n{e}\n"),
        ),
    }
}

/// `POST /super-read-only` with `{"enabled": true|false}`: flip the switch.
async fn super_read_only(
    state: &State,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    const LIMIT: usize = 4096;
    let body = match http_body_util::Limited::new(req.into_body(), LIMIT)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                "expected a JSON body of at most 4 KiB: {\"enabled\": true|false}\n",
            )
        }
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Switch {
        enabled: bool,
    }
    let wanted: Switch = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"enabled\": true|false}}: {e}\n"),
            )
        }
    };
    let was = state.runtime.set_super_read_only(wanted.enabled);
    tracing::warn!(peer = %peer, enabled = wanted.enabled, was, "POST /super-read-only");
    respond(
        StatusCode::OK,
        "application/json",
        json_bytes(&json!({ "super_read_only": wanted.enabled, "was": was })),
    )
}

/// Serve the admin listener until `stop` fires; then finish open requests and return.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    reloader: Arc<Reloader>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
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
        let state = state.clone();
        let reloader = reloader.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let state = state.clone();
            let reloader = reloader.clone();
            async move { Ok::<_, Infallible>(handle(&state, &reloader, peer, req).await) }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn without_a_token_only_loopback_peers_may_post() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5000".parse().unwrap();
        let pod: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert!(authorized(None, lo, &headers(None)));
        assert!(authorized(None, lo6, &headers(None)));
        assert!(!authorized(None, pod, &headers(None)));
        assert!(
            !authorized(None, pod, &headers(Some("Bearer anything"))),
            "no token configured: a bearer header does not open the door"
        );
    }

    #[test]
    fn with_a_token_every_peer_needs_it() {
        let token = AdminToken::new("s3cret".into());
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let pod: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        for peer in [lo, pod] {
            assert!(!authorized(Some(&token), peer, &headers(None)));
            assert!(!authorized(
                Some(&token),
                peer,
                &headers(Some("Bearer wrong"))
            ));
            assert!(!authorized(
                Some(&token),
                peer,
                &headers(Some("Bearer s3cre"))
            ));
            assert!(!authorized(
                Some(&token),
                peer,
                &headers(Some("Basic s3cret"))
            ));
            assert!(authorized(
                Some(&token),
                peer,
                &headers(Some("Bearer s3cret"))
            ));
        }
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }
}
