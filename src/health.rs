//! `/healthz` and `/readyz`: what the state of a running fleetgate looks like to a probe
//! or an operator. Answered by fleetgate itself, on the admin listener and on the data
//! listener alike, never forwarded and never shed.
//!
//! * `/readyz`: `200 {"ready":true,"status":"ok"}` while serving; `503` while starting,
//!   from the moment a shutdown begins (so a load balancer drains this node), and, with
//!   `readiness_on_skew = "fail"`, while a trusted peer with another manifest digest was
//!   seen in the last 5 minutes (`"status":"version_skew"`).
//! * `/healthz`: always `200` while the process answers; the role, the node, the live
//!   manifest (digest, when it was loaded, the snapshot serial), the last reload error
//!   when the latest reload failed, the super_read_only switch, admission (each bulkhead and its busiest tenants),
//!   and the upstreams' endpoints.
//!
//! `GET /status.json` (admin listener only, [`status_json`]) is what the status page at
//! `GET /` renders: all of `/healthz` plus the route table with per-rule request counts,
//! guard refusal counts, the recent reload attempts and the top unlisted routes.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use crate::config::SkewPolicy;
use crate::manifest::{Condition, Rule, Writes};
use crate::state::{Phase, ReloadAttempt, Snapshot, State};
use crate::upstream::Pool;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this binary was built from (`unknown` outside git), from build.rs.
pub const COMMIT: &str = env!("FLEETGATE_COMMIT");
/// When this binary was built (UTC, RFC 3339), from build.rs.
pub const BUILT_AT: &str = env!("FLEETGATE_BUILT_AT");

/// `GET /version`.
pub fn version_json(state: &State) -> Value {
    let snap = state.snapshot();
    json!({
        "service": "fleetgate",
        "version": VERSION,
        "commit": COMMIT,
        "built_at": BUILT_AT,
        "generation": snap.config.generation,
        "node_id": snap.config.node_id,
        "role": snap.config.role.as_str(),
        "manifest_digest": snap.manifest.digest(),
    })
}

/// The answer to a probe path: `(status, JSON body)`; `None` for other paths.
pub fn probe(state: &State, path: &str) -> Option<(StatusCode, Bytes)> {
    match path {
        "/healthz" => Some((StatusCode::OK, json_bytes(&healthz(state)))),
        "/readyz" => {
            let phase = state.runtime.phase();
            let skew_fails = state.snapshot().config.readiness_on_skew == SkewPolicy::Fail
                && state.runtime.skew.recent().iter().any(|p| p.trusted);
            let ready = phase == Phase::Ready && !skew_fails;
            let (status, word) = match (ready, phase) {
                (true, _) => (StatusCode::OK, phase.as_str()),
                (false, Phase::Ready) => (StatusCode::SERVICE_UNAVAILABLE, "version_skew"),
                (false, _) => (StatusCode::SERVICE_UNAVAILABLE, phase.as_str()),
            };
            Some((
                status,
                json_bytes(&json!({ "ready": ready, "status": word })),
            ))
        }
        _ => None,
    }
}

/// Pretty JSON with a final newline.
pub fn json_bytes(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON values serialize");
    out.push(b'\n');
    Bytes::from(out)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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

/// Each enabled bulkhead: limits, occupancy, drain rate, sheds, and its `top` busiest
/// tenants (per-tenant figures are never metric labels; they are here).
pub fn admission_json(state: &State, top: usize) -> Value {
    let mut out = serde_json::Map::new();
    for (upstream, s) in state.runtime.bulkheads.stats(top) {
        out.insert(
            upstream.as_str().to_string(),
            json!({
                "max_inflight": s.max_inflight,
                "inflight": s.inflight,
                "queued": s.queued,
                "tenants_active": s.tenants_active,
                "drain_rate": s.drain_rate,
                "shed": { "global": s.shed[0], "tenant": s.shed[1], "queue-timeout": s.shed[2] },
                "top_tenants": s.top.iter().map(|t| json!({
                    "tenant": t.tenant,
                    "weight": t.weight,
                    "inflight": t.inflight,
                    "queued": t.queued,
                    "share": t.share,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    Value::Object(out)
}

fn healthz(state: &State) -> Value {
    let snap = state.snapshot();
    let peers = state.runtime.skew.recent();
    let reload = state.runtime.reload_status();
    let last_reload_error = reload.last_error.as_ref().map(|message| {
        json!({
            "message": message,
            "at": reload.last_error_at.map(httpdate::fmt_http_date),
            "at_unix": reload.last_error_at.map(unix),
        })
    });
    json!({
        "status": state.runtime.phase().as_str(),
        "role": snap.config.role.as_str(),
        "node_id": snap.config.node_id,
        "version": VERSION,
        "manifest_digest": snap.manifest.digest(),
        "manifest": {
            "digest": snap.manifest.digest(),
            "rules": snap.manifest.rules().len(),
            "loaded_at": httpdate::fmt_http_date(snap.loaded_at),
            "loaded_at_unix": unix(snap.loaded_at),
            "serial": snap.serial,
        },
        "last_reload_error": last_reload_error,
        "super_read_only": state.runtime.super_read_only(),
        "generation": snap.config.generation,
        "version_skew": !peers.is_empty(),
        "skew": skew_json(&snap, &peers),
        "admission": admission_json(state, 5),
        "upstreams": {
            "fleet": pool_json(&snap.fleet),
            "ide": snap.ide.as_deref().map(pool_json),
        },
    })
}

fn skew_json(snap: &Snapshot, peers: &[crate::state::SkewedPeer]) -> Value {
    json!({
        "readiness_on_skew": snap.config.readiness_on_skew.as_str(),
        "window_seconds": crate::state::SKEW_WINDOW.as_secs(),
        "peers": peers.iter().map(|p| json!({
            "digest": p.digest,
            "generation": p.generation,
            "address": p.address.to_string(),
            "trusted": p.trusted,
            "requests": p.requests,
            "first_seen": httpdate::fmt_http_date(p.first_seen),
            "last_seen": httpdate::fmt_http_date(p.last_seen),
        })).collect::<Vec<_>>(),
    })
}

/// A time as `{"at": HTTP date, "at_unix": seconds}` fields, under `name` and
/// `name_unix`.
fn time_fields(out: &mut serde_json::Map<String, Value>, name: &str, t: SystemTime) {
    out.insert(name.into(), httpdate::fmt_http_date(t).into());
    out.insert(format!("{name}_unix"), unix(t).into());
}

/// What sets a rule apart beyond its class, as short words for the status page:
/// `tenant={ws}`, `degrade`, `writes=ide`, `read_only_safe`, `query:k=v`, `header:k`.
fn rule_flags(r: &Rule) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(t) = &r.tenant {
        flags.push(format!("tenant={{{t}}}"));
    }
    if r.degrade {
        flags.push("degrade".into());
    }
    match r.writes {
        Some(Writes::Ide) => flags.push("writes=ide".into()),
        Some(Writes::Fleet) => flags.push("writes=fleet".into()),
        None => {}
    }
    if r.read_only_safe {
        flags.push("read_only_safe".into());
    }
    for (kind, conds) in [("query", &r.when.query), ("header", &r.when.header)] {
        for (k, c) in conds {
            flags.push(match c {
                Condition::Present => format!("{kind}:{k}"),
                Condition::Equals(v) => format!("{kind}:{k}={v}"),
            });
        }
    }
    flags
}

fn reload_json(a: &ReloadAttempt) -> Value {
    let mut out = serde_json::Map::new();
    time_fields(&mut out, "at", a.at);
    out.insert("trigger".into(), a.trigger.into());
    out.insert("ok".into(), a.applied.is_some().into());
    out.insert(
        "digest".into(),
        a.applied.as_ref().map(|(d, _)| d.as_str()).into(),
    );
    out.insert("serial".into(), a.applied.as_ref().map(|(_, s)| *s).into());
    out.insert("error".into(), a.error.as_deref().into());
    Value::Object(out)
}

/// The guard's counts by action and reason, as `fleetgate_guard_total` has them.
fn guard_counts(state: &State) -> Vec<Value> {
    use prometheus::core::Collector;
    let mut out = Vec::new();
    for family in state.runtime.metrics.guard.collect() {
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.get_name() == name)
                    .map_or("", |l| l.get_value())
                    .to_string()
            };
            out.push(json!({
                "action": label("action"),
                "reason": label("reason"),
                "count": m.get_counter().get_value() as u64,
            }));
        }
    }
    out
}

/// How many unlisted routes `GET /status.json` lists.
pub const STATUS_UNLISTED_TOP: usize = 10;

/// `GET /status.json` on the admin listener: everything the status page shows, read
/// from one snapshot. The fields are listed in the operations guide ("Status page").
pub fn status_json(state: &State) -> Value {
    let snap = state.snapshot();
    let rt = &state.runtime;
    let peers = rt.skew.recent();
    let hits = &snap.rule_hits;

    let mut manifest = serde_json::Map::new();
    manifest.insert("digest".into(), snap.manifest.digest().into());
    manifest.insert("rules".into(), snap.manifest.rules().len().into());
    manifest.insert(
        "default_class".into(),
        snap.manifest.default_class().as_str().into(),
    );
    manifest.insert("serial".into(), snap.serial.into());
    time_fields(&mut manifest, "loaded_at", snap.loaded_at);

    let mut routes = serde_json::Map::new();
    time_fields(&mut routes, "counts_since", hits.since());
    routes.insert(
        "rules".into(),
        snap.manifest
            .rules()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "index": i,
                    "location": r.location(),
                    "methods": r.methods.names(),
                    "path": r.path,
                    "class": r.class.as_str(),
                    "flags": rule_flags(r),
                    "why": r.why,
                    "requests": hits.rule(i),
                })
            })
            .collect::<Vec<_>>()
            .into(),
    );
    routes.insert("unlisted_requests".into(), hits.unlisted().into());

    let mut unlisted = rt.unlisted.report();
    unlisted.routes.truncate(STATUS_UNLISTED_TOP);

    let mut out = serde_json::Map::new();
    out.insert("service".into(), "fleetgate".into());
    out.insert("status".into(), rt.phase().as_str().into());
    out.insert("role".into(), snap.config.role.as_str().into());
    out.insert("node_id".into(), snap.config.node_id.clone().into());
    out.insert("generation".into(), snap.config.generation.clone().into());
    out.insert("version".into(), VERSION.into());
    out.insert("commit".into(), COMMIT.into());
    out.insert("built_at".into(), BUILT_AT.into());
    time_fields(&mut out, "generated_at", SystemTime::now());
    out.insert("manifest".into(), Value::Object(manifest));
    out.insert("version_skew".into(), (!peers.is_empty()).into());
    out.insert("skew".into(), skew_json(&snap, &peers));
    out.insert("routes".into(), Value::Object(routes));
    out.insert("admission".into(), admission_json(state, 5));
    out.insert(
        "guard".into(),
        json!({
            "super_read_only": rt.super_read_only(),
            "unlisted_writes": snap.config.guard.unlisted_writes.as_str(),
            "counts": guard_counts(state),
        }),
    );
    out.insert(
        "upstreams".into(),
        json!({
            "fleet": pool_json(&snap.fleet),
            "ide": snap.ide.as_deref().map(pool_json),
        }),
    );
    out.insert(
        "reloads".into(),
        rt.reload_history()
            .iter()
            .map(reload_json)
            .collect::<Vec<_>>()
            .into(),
    );
    out.insert(
        "unlisted".into(),
        serde_json::to_value(unlisted).expect("plain data serializes"),
    );
    Value::Object(out)
}
