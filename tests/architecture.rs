//! The layout's invariants, checked from the sources (docs/ARCHITECTURE.md names them):
//! no import cycles between modules in either crate; the daemon's layers import only
//! downwards; the core crate depends on no client, runtime or server crate and does no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/http/api.rs` → `http::api`; `src/http/mod.rs` → `http`; `src/lib.rs` → ``.
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap_or(file).with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).filter(|p| p != "mod" && p != "lib").collect();
    parts.join("::")
}

/// The sources without comments and string literals' contents (a doc comment naming a path
/// is not an import).
fn code_only(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every `crate::a::b` path a file names, as module paths (`a::b`, then trimmed to known
/// modules by the caller), including grouped imports (`use crate::{a, b::c}`).
fn crate_paths(text: &str, prefix: &str) -> Vec<String> {
    let code = code_only(text);
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(item.trim().split(" as ").next().unwrap_or_default().to_string());
            }
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            out.push(rest[..end].trim_end_matches(':').to_string());
        }
    }
    out
}

/// Module → modules it imports, over the files under `root` (only modules that exist).
fn graph(root: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(root, f)).filter(|m| !m.is_empty() && m != "main").collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(root, file);
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // A file's own tests may reach anywhere below it; only the code above them counts.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for path in crate_paths(text, prefix) {
            // The longest existing module that the path starts with.
            let segs: Vec<&str> = path.split("::").collect();
            let target = (1..=segs.len()).rev().map(|n| segs[..n].join("::")).find(|m| modules.contains(m));
            if let Some(to) = target {
                if to != from && !from.starts_with(&format!("{to}::")) {
                    graph.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    graph
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// A cycle in the graph, if there is one (as the list of modules around it).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(n: &str, g: &BTreeMap<String, BTreeSet<String>>, stack: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn top_level(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos {
            if top(from) != top(to) {
                out.entry(top(from).to_string()).or_default().insert(top(to).to_string());
            }
        }
    }
    out
}

#[test]
fn the_checker_finds_imports_and_cycles() {
    let paths = crate_paths("use crate::http::api::{x, y};\nuse crate::{config::Config, metrics};\n// crate::nope\nlet a = xcrate::no;", "crate::");
    assert_eq!(paths, ["http::api::", "config::Config", "metrics"].map(|s| s.trim_end_matches(':').to_string()));
    let g = BTreeMap::from([("a".to_string(), BTreeSet::from(["b".to_string()])), ("b".to_string(), BTreeSet::from(["a".to_string()]))]);
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "a".into()]));
}

#[test]
fn no_import_cycles_in_the_daemon_or_the_core() {
    for root in [repo().join("src"), repo().join("crates/core/src")] {
        let g = graph(&root, "crate::");
        assert!(!g.is_empty(), "{}: no imports found: the checker is broken", root.display());
        assert_eq!(find_cycle(&g), None, "an import cycle between the modules of {}", root.display());
        assert_eq!(find_cycle(&top_level(&g)), None, "an import cycle between the top-level modules of {}", root.display());
    }
}

#[test]
fn the_daemons_layers_import_only_downwards() {
    // http → reload → service → {registry, kube, hub, proxy}; config, metrics and sources are leaves.
    let rank = |m: &str| match m {
        "http" => 4,
        "reload" => 3,
        "service" => 2,
        "registry" | "kube" | "hub" | "proxy" => 1,
        "config" | "metrics" | "sources" => 0,
        other => panic!("module {other} has no layer: add it here and to docs/ARCHITECTURE.md"),
    };
    let g = top_level(&graph(&repo().join("src"), "crate::"));
    for (from, tos) in &g {
        for to in tos {
            assert!(rank(to) < rank(from), "{from} imports {to}, which is not below it");
        }
    }
    assert!(g.get("registry").is_none_or(|t| !t.contains("kube")) && g.get("kube").is_none_or(|t| !t.contains("registry")));
}

#[test]
fn the_core_depends_on_no_client_runtime_or_server_and_does_no_io() {
    let manifest = std::fs::read_to_string(repo().join("crates/core/Cargo.toml")).expect("core manifest");
    let deps: toml::Table = toml::from_str(&manifest).expect("toml");
    let names: Vec<&String> =
        ["dependencies", "build-dependencies"].iter().filter_map(|section| deps.get(*section).and_then(|d| d.as_table())).flat_map(|t| t.keys()).collect();
    for forbidden in ["kube", "tokio", "axum", "utoipa", "figment", "notify", "reqwest", "hyper", "tower"] {
        assert!(!names.iter().any(|n| n.as_str() == forbidden || n.starts_with(&format!("{forbidden}-"))), "fleetspawn-core depends on {forbidden}");
    }
    let mut files = Vec::new();
    rust_files(&repo().join("crates/core/src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        let code = code_only(text.split("#[cfg(test)]").next().unwrap_or_default());
        for io in ["std::fs", "std::net", "std::env", "std::process", "File::open", "::now()", "SystemTime", "Instant::", "println!", "eprintln!"] {
            assert!(!code.contains(io), "{} does I/O or reads the clock ({io})", file.display());
        }
    }
}
