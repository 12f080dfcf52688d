//! The compiled classifier agrees with the naive reference matcher on generated
//! manifests and requests (same rule, same class, same tenant and tenant span), and
//! every decision satisfies the fuzz target's invariants ([`super::fuzz::check_decision`]).

use proptest::prelude::*;

use super::{fuzz, reference};
use crate::manifest::classify::NoHeaders;
use crate::manifest::{Manifest, RequestParts};

#[derive(Debug, Clone)]
struct GenRule {
    methods: &'static str,
    segments: Vec<u8>,
    rest: bool,
    tenant: bool,
    when: bool,
}

const WORDS: [&str; 3] = ["a", "b", "c"];

fn gen_rule() -> impl Strategy<Value = GenRule> {
    (
        prop::sample::select(vec![
            "",
            "[\"GET\"]",
            "[\"POST\"]",
            "[\"GET\", \"PUT\"]",
            "[\"HEAD\"]",
        ]),
        prop::collection::vec(0u8..4, 0..4),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(methods, segments, rest, tenant, when)| GenRule {
            methods,
            segments,
            rest,
            tenant,
            when,
        })
}

/// Render rules as TOML. The class is a function of the rule's specificity and shape,
/// so generated manifests are never ambiguous and always load.
fn render(rules: &[GenRule]) -> String {
    let mut out = String::from(
        "[manifest]\ndefault_class = \"fleet-ok\"\naliases = [{ from = \"/z\", to = \"/a\" }]\n",
    );
    for r in rules {
        let mut path = String::new();
        let mut first_param = None;
        for (i, s) in r.segments.iter().enumerate() {
            if *s < 3 {
                path.push('/');
                path.push_str(WORDS[*s as usize]);
            } else {
                path.push_str(&format!("/{{p{i}}}"));
                first_param.get_or_insert(i);
            }
        }
        if r.rest {
            path.push_str("/{*rest}");
        }
        if path.is_empty() {
            path.push('/');
        }
        let shape: usize = path.bytes().map(|b| b as usize).sum::<usize>()
            + (r.methods.is_empty() as usize) * 7
            + r.when as usize;
        let class = if shape.is_multiple_of(2) {
            "ide-only"
        } else {
            "fleet-ok"
        };
        out.push_str("\n[[rule]]\n");
        if !r.methods.is_empty() {
            out.push_str(&format!("methods = {}\n", r.methods));
        }
        out.push_str(&format!(
            "path = \"{path}\"\nclass = \"{class}\"\nwhy = \"generated\"\n"
        ));
        if let (true, Some(i)) = (r.tenant, first_param) {
            out.push_str(&format!("tenant = \"p{i}\"\n"));
        }
        if r.when {
            out.push_str("[rule.when]\nquery = { q = \"1\" }\n");
        }
    }
    out
}

fn gen_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "x", "z"]), 0..6),
        any::<bool>(),
    )
        .prop_map(|(segs, slash)| {
            let mut p = String::new();
            for s in segs {
                p.push('/');
                p.push_str(s);
            }
            if p.is_empty() || slash {
                p.push('/');
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn compiled_agrees_with_reference(
        rules in prop::collection::vec(gen_rule(), 0..24),
        requests in prop::collection::vec(
            (prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PROPFIND"]), gen_path(), prop::option::of(prop::sample::select(vec!["q=1", "q=2", "x=1&q=1"]))),
            1..40,
        ),
    ) {
        let text = render(&rules);
        let m = Manifest::from_sources(&[("gen.toml".into(), text.clone())])
            .unwrap_or_else(|e| panic!("generated manifest must load: {e}\n{text}"));
        for (method, path, query) in &requests {
            let req = RequestParts { method, path, query: *query, headers: &NoHeaders };
            let fast = m.classify(&req);
            let slow = reference::classify(&m, &req);
            prop_assert_eq!(fast, slow, "{} {} {:?}\n{}", method, path, query, text);
            fuzz::check_decision(&m, &req, &fast);
        }
    }
}
