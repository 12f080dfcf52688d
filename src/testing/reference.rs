//! A deliberately naive matcher: every rule, segment by segment, in load order, then
//! the most specific match by [`precedence`]. It exists to check the compiled automaton
//! (property tests, fuzzing); the proxy never uses it.

use crate::manifest::classify::when_holds;
use crate::manifest::compile::precedence;
use crate::manifest::{pattern, Decision, Manifest, RequestParts};

/// Classify like [`Manifest::classify`], by brute force.
pub fn classify<'a>(m: &'a Manifest, req: &RequestParts<'a>) -> Decision<'a> {
    let path = m.rewrite(req.path);
    let segs: Vec<&str> = path.segments().collect();
    let rules = m.rules();
    let mut best: Option<usize> = None;
    for (i, rule) in rules.iter().enumerate() {
        if rule.methods.matches(req.method)
            && pattern::matches(&rule.segments, &segs)
            && when_holds(rule, req)
            && best.is_none_or(|b| precedence(rules, i, b).is_lt())
        {
            best = Some(i);
        }
    }
    match best {
        None => Decision {
            class: m.default_class(),
            rule: None,
            rule_index: None,
            tenant: None,
            tenant_at: None,
        },
        Some(i) => {
            let k = rules[i].tenant_segment;
            Decision {
                class: rules[i].class,
                rule: Some(&rules[i]),
                rule_index: Some(i),
                // The text from the split segments, the span from the rewrite.
                tenant: k.and_then(|k| segs.get(k).copied()),
                tenant_at: k.and_then(|k| path.segment(k)).map(|(_, at)| at),
            }
        }
    }
}
