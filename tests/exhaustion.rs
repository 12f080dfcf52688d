//! Resource exhaustion, through real sockets: slow heads, slow bodies, slow readers,
//! header floods, and the HTTP/2 floods (rapid reset, too many streams, CONTINUATION).
//! Throughout each attack a well-behaved client is still answered, and the attacker's
//! connections are cut by the documented limit. The 20,000-connection case is an ignored
//! test (it needs a raised descriptor limit); docs/reliability.md has its command and
//! figures.

mod support;

use std::time::Duration;

use fleetgate::config::Role;
use support::h2raw::{self, RawH2};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A well-behaved request while an attack is under way: it must be answered.
async fn still_served(setup: &Setup) {
    let a = tokio::time::timeout(Duration::from_secs(10), get(&setup.url("/threads")))
        .await
        .expect("a well-behaved client is answered during the attack");
    assert_eq!(a.status, 200);
}

/// Read until EOF or `wait`; `(bytes, closed)`.
async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    (out, closed)
}

/// The sum of every number named `key` anywhere in `v`.
fn sum_of(v: &serde_json::Value, key: &str) -> u64 {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, x)| {
                if k == key {
                    x.as_u64().unwrap_or(0)
                } else {
                    sum_of(x, key)
                }
            })
            .sum(),
        serde_json::Value::Array(a) => a.iter().map(|x| sum_of(x, key)).sum(),
        _ => 0,
    }
}

#[tokio::test]
async fn slowloris_heads_are_cut_at_the_header_read_deadline() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.header_read = Duration::from_millis(800))
        .start()
        .await;
    // 200 connections that each trickle a head and never finish it.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = setup.connect().await;
        s.write_all(b"GET /threads HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let trickle = async {
        for i in 0..4 {
            for s in slow.iter_mut() {
                let _ = s.write_all(format!("x-{i}: y\r\n").as_bytes()).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::join!(trickle, still_served(&setup));
    // Every slow connection is closed (with a 408 or without a word) by the deadline.
    for s in slow.iter_mut() {
        let (bytes, closed) = read_until_closed(s, Duration::from_secs(5)).await;
        assert!(closed, "a slow head is still open");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            bytes.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text:?}"
        );
    }
    assert!(
        setup.fleet.seen().len() == 1,
        "only the good request was forwarded"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn a_stalled_upload_is_cut_at_the_idle_timeout() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.timeouts.idle = Duration::from_millis(500))
        .start()
        .await;
    let mut s = setup.connect().await;
    // A read with a body (the test manifest has no fleet rule that takes writes): ten
    // bytes of a promised 100,000, then nothing.
    s.write_all(b"GET /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n0123456789")
        .await
        .unwrap();
    still_served(&setup).await;
    let (bytes, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "the stalled upload is still open");
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    setup.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_a_large_response_is_cut_and_frees_its_slot() {
    let setup = Setup::role(Role::Serve)
        .config(|c| {
            c.timeouts.idle = Duration::from_millis(800);
            c.timeouts.send = Duration::from_millis(800);
        })
        .start()
        .await;
    let mut s = setup.connect().await;
    s.write_all(b"GET /download/512 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read a little, then nothing: the proxy's buffers and the socket's fill up.
    let mut first = [0u8; 1024];
    let _ = s.read(&mut first).await.unwrap();
    still_served(&setup).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = setup
        .fleet
        .state
        .sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 64 * MIB,
        "the upstream was read far ahead of a client that reads nothing: {sent} bytes"
    );
    // The proxy gave up on the client: its admission slot is free again.
    let admission = get(&setup.admin_url("/admission")).await.json();
    assert_eq!(
        sum_of(&admission, "inflight"),
        0,
        "a slot is still held: {admission}"
    );
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(30)).await;
    assert!(
        closed,
        "the connection of a client that stopped reading is still open"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn header_floods_get_431_and_nothing_is_forwarded() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.limits.max_header_bytes = 16 * 1024)
        .start()
        .await;
    let many: String = (0..2000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big = format!("x-big: {}\r\n", "a".repeat(64 * 1024));
    let attacks = [many, big];
    let mut runs = Vec::new();
    for _ in 0..25 {
        for a in &attacks {
            let req = format!("GET /threads HTTP/1.1\r\nhost: x\r\n{a}\r\n");
            let addr = setup.srv.addr;
            runs.push(async move { raw(addr, req.as_bytes()).await });
        }
    }
    let (answers, ()) = tokio::join!(futures_util::future::join_all(runs), still_served(&setup));
    for a in answers {
        let text = String::from_utf8_lossy(&a);
        assert!(
            text.starts_with("HTTP/1.1 431"),
            "{:?}",
            &text[..text.len().min(80)]
        );
    }
    assert_eq!(
        setup.fleet.seen().len(),
        1,
        "only the good request was forwarded"
    );
    // The same over HTTP/2: a header block above the limit.
    let mut conn = RawH2::connect(setup.srv.addr).await;
    let value = "a".repeat(32 * 1024);
    let fields = h2raw::request_fields("GET", "/threads", "x", &[("x-big", value.as_str())]);
    conn.request(1, &fields, &[]).await;
    let outcome = conn.outcome(1, Duration::from_secs(5)).await;
    assert!(
        matches!(
            outcome,
            h2raw::Outcome::Status(431) | h2raw::Outcome::Reset(_) | h2raw::Outcome::GoAway(_)
        ),
        "{outcome:?}"
    );
    assert_eq!(setup.fleet.seen().len(), 1);
    setup.shutdown().await;
}

#[tokio::test]
async fn h2_rapid_reset_is_cut_off() {
    let setup = Setup::role(Role::Serve).start().await;
    let mut conn = RawH2::connect(setup.srv.addr).await;
    // CVE-2023-44487: open a stream and cancel it at once, as fast as possible.
    let mut burst = Vec::new();
    for i in 0..5000u32 {
        let stream = 2 * i + 1;
        let block = h2raw::header_block(&h2raw::request_fields("GET", "/hold", "x", &[]));
        burst.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            stream,
            &block,
        ));
        burst.extend(h2raw::frame(
            h2raw::RST_STREAM,
            0,
            stream,
            &8u32.to_be_bytes(),
        ));
    }
    conn.send(&burst).await;
    // The server ends the connection (GOAWAY) rather than serving 5000 cancelled requests.
    let mut goaway = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some((kind, _, _, payload))) =
        tokio::time::timeout_at(deadline, conn.read_frame()).await
    {
        if kind == h2raw::GOAWAY {
            goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
    }
    still_served(&setup).await;
    let forwarded = setup.fleet.seen().len();
    setup.fleet.state.release.notify_waiters();
    assert!(goaway.is_some(), "no GOAWAY after 5000 rapid resets");
    assert!(
        forwarded < 1000,
        "{forwarded} cancelled requests reached the upstream"
    );
    setup.shutdown().await;
}

#[tokio::test]
async fn h2_streams_beyond_the_concurrency_limit_are_refused() {
    let setup = Setup::role(Role::Serve).start().await;
    let mut conn = RawH2::connect(setup.srv.addr).await;
    // Streams that never end (no END_STREAM): each holds a slot of the connection.
    let mut burst = Vec::new();
    for i in 0..400u32 {
        let block =
            h2raw::header_block(&h2raw::request_fields("POST", "/api/ws1/runs/x", "x", &[]));
        burst.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS,
            2 * i + 1,
            &block,
        ));
    }
    conn.send(&burst).await;
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some((kind, _, _, payload))) =
        tokio::time::timeout_at(deadline, conn.read_frame()).await
    {
        if kind == h2raw::RST_STREAM && u32::from_be_bytes(payload[..4].try_into().unwrap()) == 0x7
        {
            refused += 1;
        }
        if kind == h2raw::GOAWAY {
            break;
        }
    }
    // fleetgate allows 256 concurrent streams per connection.
    assert!(
        refused >= 400 - 256,
        "only {refused} of 400 streams refused (REFUSED_STREAM)"
    );
    still_served(&setup).await;
    setup.shutdown().await;
}

#[tokio::test]
async fn h2_continuation_flood_is_cut_at_the_header_limit() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.limits.max_header_bytes = 16 * 1024)
        .start()
        .await;
    let mut conn = RawH2::connect(setup.srv.addr).await;
    let block = h2raw::header_block(&h2raw::request_fields("GET", "/threads", "x", &[]));
    conn.send(&h2raw::frame(h2raw::HEADERS, 0, 1, &block)).await;
    // Endless CONTINUATION frames, none with END_HEADERS: 64 MiB if nobody stops us.
    let filler = h2raw::header_block(&[(b"x-f", &[b'a'; 16000][..])]);
    let mut sent = 0usize;
    let mut cut = false;
    for _ in 0..4096 {
        if conn
            .tcp
            .write_all(&h2raw::frame(h2raw::CONTINUATION, 0, 1, &filler))
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        sent += filler.len();
    }
    let outcome = conn.outcome(1, Duration::from_secs(5)).await;
    assert!(
        cut || outcome.refused(),
        "the flood was not cut: {outcome:?} after {sent} bytes"
    );
    assert!(
        sent < 16 * 1024 * 1024,
        "the server took {sent} bytes of one header block"
    );
    still_served(&setup).await;
    assert!(setup.fleet.seen().len() == 1);
    setup.shutdown().await;
}
