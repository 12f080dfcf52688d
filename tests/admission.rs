//! Admission control through real sockets: a noisy tenant is shed while quiet ones are
//! not, a shed request is never forwarded, slots are held until the body (or the
//! WebSocket) ends, probes are never shed, a cancelled waiter frees its place.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetgate::config::Role;
use http_body_util::{BodyExt, Empty, StreamBody};
use support::*;

/// A shed answer as seen by a client: status, `Retry-After`, `x-fleetgate-shed`.
type ShedAnswer = (u16, Option<String>, Option<String>);

/// What one tenant's client got: successes, shed answers, anything else.
type Outcome = (usize, Vec<ShedAnswer>, Vec<String>);

/// Closed-loop requests of one tenant until `stop`.
fn tenant_loop(
    url: String,
    tenant: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Outcome> {
    tokio::spawn(async move {
        let client = client();
        let (mut ok, mut shed, mut other) = (0, Vec::new(), Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let req = http::Request::get(&url)
                .header("x-tenant-id", tenant)
                .body(Empty::new().map_err(|e| match e {}).boxed())
                .unwrap();
            match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    let h = |n: &str| {
                        resp.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(String::from)
                    };
                    let (retry, reason) = (h("retry-after"), h("x-fleetgate-shed"));
                    let _ = resp.into_body().collect().await;
                    match status {
                        200 => ok += 1,
                        503 => {
                            shed.push((status, retry, reason));
                            // A shed client backs off a little, as a real one would.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        s => other.push(format!("status {s}")),
                    }
                }
                Ok(Err(e)) => other.push(format!("error {e}")),
                Err(_) => other.push("timeout".into()),
            }
        }
        (ok, shed, other)
    })
}

#[tokio::test]
async fn a_noisy_tenant_is_shed_and_quiet_tenants_are_not() {
    let setup = Setup::role(Role::Serve)
        .config(|c| {
            c.access_log = false;
            c.admission.max_inflight = 8;
            c.admission.queue_per_tenant = 4;
            c.admission.queue_timeout = Duration::from_millis(300);
            c.admission.tenant_header = Some("x-tenant-id".into());
        })
        .start()
        .await;
    let url = setup.url("/threads/sleep/40");
    let stop = Arc::new(AtomicBool::new(false));
    let noisy: Vec<_> = (0..32)
        .map(|_| tenant_loop(url.clone(), "noisy", stop.clone()))
        .collect();
    let quiet: Vec<_> = ["quiet-a", "quiet-b"]
        .into_iter()
        .map(|t| tenant_loop(url.clone(), t, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let busy = get(&setup.admin_url("/admission")).await.json();
    tokio::time::sleep(Duration::from_millis(900)).await;
    stop.store(true, Ordering::Relaxed);

    for q in quiet {
        let (ok, shed, other) = q.await.unwrap();
        assert!(ok > 5, "a quiet tenant was served ({ok})");
        assert!(shed.is_empty(), "a quiet tenant was shed: {shed:?}");
        assert!(other.is_empty(), "{other:?}");
    }
    let (mut ok, mut shed) = (0, Vec::new());
    for n in noisy {
        let (o, s, other) = n.await.unwrap();
        assert!(other.is_empty(), "{other:?}");
        ok += o;
        shed.extend(s);
    }
    assert!(ok > 0, "the noisy tenant gets its share");
    assert!(!shed.is_empty(), "the noisy tenant is shed");
    for (status, retry, reason) in &shed {
        assert_eq!(*status, 503);
        let secs: u32 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!((1..=30).contains(&secs), "{secs}");
        let reason = reason.as_deref().expect("x-fleetgate-shed");
        assert!(
            ["global", "tenant", "queue-timeout"].contains(&reason),
            "{reason}"
        );
    }

    // While busy, /admission named the noisy tenant among the top tenants of the fleet
    // bulkhead; per-tenant figures are not metric labels.
    let fleet = &busy["fleet"];
    assert_eq!(fleet["max_inflight"], 8, "{busy}");
    let top: Vec<&str> = fleet["top_tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(top.first(), Some(&"noisy"), "{busy}");
    let m = metrics(&setup.srv).await;
    assert!(m.contains("fleetgate_admission_shed_total{reason="), "{m}");
    assert!(m.contains("fleetgate_admission_wait_seconds_count"), "{m}");
    assert!(
        m.contains(r#"fleetgate_admission_inflight{target="fleet"}"#),
        "{m}"
    );
    assert!(!m.contains("noisy"), "no tenant label: {m}");
    setup.shutdown().await;
}

/// A one-slot bulkhead without a queue.
async fn one_slot() -> Setup {
    Setup::role(Role::Serve)
        .with_ide()
        .config(|c| {
            c.admission.max_inflight = 1;
            c.admission.ide_max_inflight = 1;
            c.admission.queue_per_tenant = 0;
        })
        .start()
        .await
}

#[tokio::test]
async fn a_shed_request_is_never_forwarded_and_its_body_never_read() {
    let setup = one_slot().await;
    let held = tokio::spawn({
        let url = setup.url("/threads/hold");
        async move { get(&url).await }
    });
    while setup.fleet.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A body that never ends: a forwarded request would hang; a shed one is answered.
    let (_tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (f, rx))
    }));
    // A read with a body (a write would be redirected to the ide by the guard).
    let req = http::Request::get(setup.url("/threads/new"))
        .body(BodyExt::boxed(body))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), client().request(req))
        .await
        .expect("answered without reading the body")
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(resp.headers().contains_key("x-fleetgate-shed"));
    assert_eq!(
        setup.fleet.seen().len(),
        1,
        "the shed request never reached the upstream"
    );
    // Probes are never shed.
    assert_eq!(get(&setup.url("/healthz")).await.status, 200);
    assert_eq!(get(&setup.url("/readyz")).await.status, 200);
    setup.fleet.state.release.notify_one();
    assert_eq!(held.await.unwrap().status, 200);
    setup.shutdown().await;
}

#[tokio::test]
async fn the_slot_is_held_until_the_response_body_ends() {
    let setup = one_slot().await;
    let req = http::Request::get(setup.url("/events/sse"))
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let mut sse = client().request(req).await.unwrap().into_body();
    let first = sse.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    // The head has arrived, the body is still streaming: the slot is still taken.
    assert_eq!(get(&setup.url("/threads")).await.status, 503);
    setup.fleet.state.release.notify_one();
    sse.collect().await.unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = get(&setup.url("/threads")).await.status.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 200, "the slot was released when the body ended");
    setup.shutdown().await;
}

#[tokio::test]
async fn a_websocket_holds_its_slot_of_the_ide_bulkhead_for_its_life() {
    let setup = one_slot().await;
    let url = format!("ws://{}/ws/term/1", setup.srv.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert_eq!(resp.headers()["x-fleetgate-target"], "ide");
        }
        other => panic!(
            "a second WebSocket got in: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // The fleet bulkhead is separate: a slow ide cannot starve local reads.
    assert_eq!(get(&setup.url("/threads")).await.status, 200);
    ws.close(None).await.unwrap();
    drop(ws);
    let mut opened = false;
    for _ in 0..100 {
        if tokio_tungstenite::connect_async(&url).await.is_ok() {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(opened, "the slot was released when the tunnel closed");
    setup.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_waiter_frees_its_queue_place_at_once() {
    let setup = Setup::role(Role::Serve)
        .config(|c| {
            c.admission.max_inflight = 1;
            c.admission.queue_per_tenant = 1;
            c.admission.queue_timeout = Duration::from_secs(30);
        })
        .start()
        .await;
    let hold_url = setup.url("/threads/hold");
    let held = tokio::spawn(async move { get(&hold_url).await });
    while setup.fleet.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let queued_url = setup.url("/threads/1");
    let waiter = tokio::spawn(async move { get(&queued_url).await });
    let queued = |j: &serde_json::Value| j["fleet"]["queued"].as_u64().unwrap();
    let mut j = get(&setup.admin_url("/admission")).await.json();
    for _ in 0..100 {
        if queued(&j) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        j = get(&setup.admin_url("/admission")).await.json();
    }
    assert_eq!(queued(&j), 1, "{j}");
    // The client goes away: its place is freed, so the next one may queue.
    waiter.abort();
    let _ = waiter.await;
    for _ in 0..100 {
        j = get(&setup.admin_url("/admission")).await.json();
        if queued(&j) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(queued(&j), 0, "{j}");
    let next_url = setup.url("/threads/2");
    let next = tokio::spawn(async move { get(&next_url).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    setup.fleet.state.release.notify_one();
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(
        next.await.unwrap().status,
        200,
        "the next client got the slot"
    );
    setup.shutdown().await;
}
