//! The module graph is a line (see the top of `src/lib.rs`): every `crate::…` path in a
//! source file may name only modules of its own layer or of a layer below, and the
//! top-level modules have no import cycle. Fails, naming the file and line, when a lower
//! module reaches up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, bottom first. A new module must be placed here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "model",
        &[
            "config", "manifest", "path", "tls", "metrics", "logging", "testing", "unlisted",
        ],
    ),
    (
        "runtime",
        &[
            "body",
            "memory",
            "upstream",
            "admission",
            "state",
            "reload",
            "health",
        ],
    ),
    ("data path", &["proxy"]),
    ("edges", &["server", "admin", "cli", "demo"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None`: lib.rs, main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

/// Every `crate::name` in the code of `text` (comments skipped), with its line.
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
        // `use crate::{a, b::c}` groups
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
        }
    }
    out
}

#[test]
fn no_module_imports_from_a_layer_above_it_and_there_are_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "{}: module `{module}` is in no layer (add it to LAYERS in tests/layering.rs and to src/lib.rs's map)",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in crate_refs(&text) {
            let Some(theirs) = layer_of(&target) else {
                continue; // an item of lib.rs, not a module
            };
            if target != module {
                edges
                    .entry(module.clone())
                    .or_default()
                    .insert(target.clone());
            }
            if theirs > own {
                problems.push(format!(
                    "{}:{line}: `{module}` ({}) uses `crate::{target}` ({}), a layer above it",
                    file.display(),
                    LAYERS[own].0,
                    LAYERS[theirs].0
                ));
            }
        }
    }
    // Cycles among top-level modules (within a layer too).
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut c = stack[i..].to_vec();
            c.push(m.to_string());
            cycles.push(c.join(" -> "));
            return;
        }
        if done.contains(m) {
            return;
        }
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            visit(next, edges, stack, done, cycles);
        }
        stack.pop();
        done.insert(m.to_string());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        visit(m, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    for c in cycles {
        problems.push(format!("import cycle: {c}"));
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    let refs =
        crate_refs("use crate::{config, proxy::x};\nlet a = crate::state::f(); // crate::admin\n");
    let names: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert!(names.contains(&"config") && names.contains(&"proxy") && names.contains(&"state"));
    assert!(!names.contains(&"admin"), "comments are skipped");
}
