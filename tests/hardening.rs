//! The first attacks of the reliability suite, through real sockets: authority
//! confusion, servlet path parameters, proxy credentials. Each request is either refused
//! with 400 before anything is forwarded, or the upstream receives one consistent form.

mod support;

use support::*;

/// Send raw bytes; the status code of the answer.
async fn status_of(setup: &Setup, request: &str) -> u16 {
    let out = raw(setup.srv.addr, request.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test]
async fn host_must_be_one_valid_authority() {
    let setup = Setup::serve_without_ide().await;
    let cases = [
        ("GET /threads HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\nconnection: close\r\n\r\n", 400),
        ("GET /threads HTTP/1.1\r\nconnection: close\r\n\r\n", 400),
        ("GET /threads HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n\r\n", 400),
        ("GET /threads HTTP/1.1\r\nhost: user@evil\r\nconnection: close\r\n\r\n", 400),
        ("GET /threads HTTP/1.0\r\n\r\n", 200),
        ("GET /threads HTTP/1.1\r\nhost: app.example\r\nconnection: close\r\n\r\n", 200),
    ];
    for (request, want) in cases {
        assert_eq!(status_of(&setup, request).await, want, "{request:?}");
    }
    assert_eq!(
        setup.fleet.seen().len(),
        2,
        "only the valid requests were forwarded"
    );
    // HTTP/1.0 without Host goes upstream (as HTTP/1.1) with the endpoint's authority.
    assert_eq!(
        setup.fleet.seen()[0].headers["host"],
        setup.fleet.addr.to_string().as_str()
    );
    assert_eq!(setup.fleet.seen()[1].headers["host"], "app.example");

    // Absolute form: the target's authority is the one the upstream gets.
    let req = "GET http://real.example/threads HTTP/1.1\r\nhost: other.example\r\nconnection: close\r\n\r\n";
    assert_eq!(status_of(&setup, req).await, 200);
    let seen = setup.fleet.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.headers.get_all("host").iter().count(), 1);
    assert_eq!(last.headers["host"], "real.example");
    assert_eq!(last.path, "/threads", "origin-form upstream");
    // Probes answer without a Host.
    assert_eq!(
        status_of(&setup, "GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n").await,
        200
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn dot_segments_with_servlet_parameters_are_refused() {
    let setup = Setup::serve().await;
    for path in [
        "/api/ws1/threads/..;/files",
        "/threads/.;/../api/ws1/files",
        "/api/ws1/threads/%2e%2e;jsessionid=x/files",
        "/api/ws1/threads/..%3B/files",
    ] {
        let a = get(&setup.url(path)).await;
        assert_eq!(a.status, 400, "{path}");
        assert!(
            String::from_utf8_lossy(&a.body).contains(";parameters"),
            "{path}"
        );
    }
    assert!(setup.fleet.seen().is_empty() && setup.ide().seen().is_empty());
    // Parameters on ordinary segments pass unchanged.
    let a = get(&setup.url("/threads;v=1/x")).await;
    assert_eq!(a.status, 200);
    assert_eq!(setup.fleet.seen()[0].path, "/threads;v=1/x");
    setup.shutdown().await;
}

#[tokio::test]
async fn proxy_credentials_are_not_forwarded() {
    let setup = Setup::serve_without_ide().await;
    let a = send(
        "GET",
        &setup.url("/threads"),
        &[
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("authorization", "Bearer app"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = &setup.fleet.seen()[0].headers;
    assert!(!seen.contains_key("proxy-authorization"));
    assert_eq!(seen["authorization"], "Bearer app");
    setup.shutdown().await;
}
