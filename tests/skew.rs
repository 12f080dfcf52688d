//! Version skew between two fleetgates with different manifests, readiness on skew for
//! trusted peers only, and `/version`.

mod support;

use fleetgate::config::{Role, SkewPolicy};
use support::*;

/// An inner fleetgate (role ide, generation g2, a manifest with one extra rule) and an
/// edge (role serve, generation g1) whose ide upstream is the inner one.
async fn pair(trusted: &'static str) -> (Setup, Setup) {
    let inner = Setup::role(Role::Ide)
        .config(move |c| {
            c.node_id = "inner-node".into();
            c.generation = "g2".into();
            c.readiness_on_skew = SkewPolicy::Fail;
            c.trusted_peers = vec![trusted.parse().unwrap()];
        })
        .start()
        .await;
    inner.routes.write(
        "20-extra.toml",
        "[[rule]]\npath = \"/reports/{id}\"\nclass = \"ide-only\"\nwhy = \"a newer manifest\"\n",
    );
    assert_eq!(
        send("POST", &inner.admin_url("/reload"), &[]).await.status,
        200
    );
    let inner_addr = inner.srv.addr;
    let edge = Setup::role(Role::Serve)
        .config(move |c| {
            c.generation = "g1".into();
            c.upstreams.ide = Some(url(inner_addr));
        })
        .start()
        .await;
    assert_ne!(edge.manifest_digest(), inner.manifest_digest());
    (edge, inner)
}

#[tokio::test]
async fn a_peer_with_another_manifest_is_reported_and_fails_readiness_when_trusted() {
    let (edge, inner) = pair("127.0.0.0/8").await;
    let h = get(&inner.admin_url("/healthz")).await.json();
    assert_eq!(h["version_skew"], false);
    assert_eq!(get(&inner.admin_url("/readyz")).await.status, 200);

    // An ide-only request goes through the edge to the inner fleetgate.
    let a = get(&edge.url("/api/w1/files/a")).await;
    assert_eq!(a.status, 200);
    let seen = inner.fleet.seen();
    assert_eq!(
        seen[0].headers["x-fleetgate-generation"], "g2",
        "the inner node stamps its own"
    );

    let h = get(&inner.admin_url("/healthz")).await.json();
    assert_eq!(h["version_skew"], true, "{h}");
    let peer = &h["skew"]["peers"][0];
    assert_eq!(peer["digest"], edge.manifest_digest().as_str());
    assert_eq!(peer["generation"], "g1");
    assert_eq!(peer["trusted"], true);
    let r = get(&inner.admin_url("/readyz")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "version_skew");
    let m = metrics(&inner.srv).await;
    assert!(m.contains("fleetgate_version_skew 1"), "{m}");
    assert!(m.contains("fleetgate_skewed_requests_total 1"), "{m}");
    // The edge saw no other digest.
    assert_eq!(
        get(&edge.admin_url("/healthz")).await.json()["version_skew"],
        false
    );

    // Once the inner node loads the same manifest, the skew is gone.
    std::fs::remove_file(inner.routes.path().join("20-extra.toml")).unwrap();
    assert_eq!(
        send("POST", &inner.admin_url("/reload"), &[]).await.status,
        200
    );
    assert_eq!(inner.manifest_digest(), edge.manifest_digest());
    assert_eq!(get(&inner.admin_url("/readyz")).await.status, 200);
    edge.shutdown().await;
    inner.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_peer_is_reported_but_cannot_fail_readiness() {
    let (edge, inner) = pair("10.0.0.0/8").await;
    assert_eq!(get(&edge.url("/api/w1/files/a")).await.status, 200);
    let h = get(&inner.admin_url("/healthz")).await.json();
    assert_eq!(h["version_skew"], true);
    assert_eq!(h["skew"]["peers"][0]["trusted"], false);
    assert_eq!(get(&inner.admin_url("/readyz")).await.status, 200);
    // A client forging the header directly is reported the same way, never trusted.
    let a = send(
        "GET",
        &inner.url("/x"),
        &[("x-fleetgate-manifest", "forged")],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(get(&inner.admin_url("/readyz")).await.status, 200);
    edge.shutdown().await;
    inner.shutdown().await;
}

#[tokio::test]
async fn version_names_the_build_the_generation_and_the_manifest() {
    let setup = Setup::role(Role::Serve)
        .config(|c| c.generation = "2026-11-30.1".into())
        .start()
        .await;
    let v = get(&setup.admin_url("/version")).await.json();
    assert_eq!(v["service"], "fleetgate");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["generation"], "2026-11-30.1");
    assert_eq!(v["node_id"], "test-node");
    assert_eq!(v["role"], "serve");
    assert_eq!(v["manifest_digest"], setup.manifest_digest().as_str());
    let commit = v["commit"].as_str().unwrap();
    assert!(
        commit == "unknown" || commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "{commit}"
    );
    let built = v["built_at"].as_str().unwrap();
    assert!(
        built.len() == 20 && built.ends_with('Z') && built.as_bytes()[10] == b'T',
        "{built}"
    );
    setup.shutdown().await;
}
