use fleetgate::manifest::{Manifest, RequestParts, classify::NoHeaders};
use std::time::Instant;
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(10000);
    let mut t = String::from("[manifest]\ndefault_class = \"fleet-ok\"\n");
    for i in 0..n {
        let g = i % 64;
        let m = if i % 2 == 0 { "GET" } else { "POST" };
        let tail = if i % 3 == 0 { "/{*rest}" } else { "/{id}" };
        let class = if i % 5 == 0 { "ide-only" } else { "fleet-ok" };
        t.push_str(&format!("[[rule]]\nmethods=[\"{m}\"]\npath=\"/api{g}/{{ws}}/res{i}{tail}\"\nclass=\"{class}\"\nwhy=\"g\"\ntenant=\"ws\"\n"));
    }
    let t0 = Instant::now();
    let parsed = fleetgate::manifest::load::parse_sources(&[("x.toml".into(), t.clone())]).unwrap();
    println!("parse {:?}", t0.elapsed());
    drop(parsed);
    let t0 = Instant::now();
    let man = Manifest::from_sources(&[("x.toml".into(), t)]).unwrap();
    println!("compile {n}: {:?}, dfa {} bytes", t0.elapsed(), man.automaton_bytes());
    let paths: Vec<String> = (0..n).map(|i| format!("/api{}/w1/res{}/abc", i % 64, i)).collect();
    let t0 = Instant::now();
    let mut c = 0;
    for _ in 0..200 { for (i,p) in paths.iter().enumerate() {
        let d = man.classify(&RequestParts{method: if i%2==0 {"GET"} else {"POST"}, path: p, query: None, headers: &NoHeaders});
        if d.rule.is_some() { c += 1; }
    }}
    println!("classify avg {:?} ({c} matched)", t0.elapsed() / (200 * n as u32));
}
#[allow(dead_code)]
fn phases() {}
