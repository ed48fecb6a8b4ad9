//! The shape of the code, checked: the import graph of the server crate's modules has
//! no cycle, only the backends (and the wiring that picks one) name an engine, and the
//! clients stand apart from the server.
//! A module's imports are read from its source (`crate::x` paths, comments left out),
//! so a new `use` that closes a loop fails here with the loop named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// `text` without `//` comments (doc comments included) and string literals' insides
/// left as they are (a path in a string is rare, and only over-reports).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module each source file belongs to, and its code.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for file in sources(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        modules.entry(top).or_default().push_str(&code);
    }
    modules
}

/// The modules `code` names as `crate::name` or inside `crate::{…}`.
fn imports(code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let words: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter_map(|path| path.split("::").next())
                .collect()
        } else {
            vec![
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default(),
            ]
        };
        names.extend(
            words
                .into_iter()
                .filter(|word| known.contains(*word))
                .map(str::to_owned),
        );
    }
    names
}

/// A cycle through `start`, if the graph has one: the path back to it.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|name| name == start) {
        let mut cycle = path[at..].to_vec();
        cycle.push(start.to_owned());
        return Some(cycle);
    }
    if done.contains(start) {
        return None;
    }
    path.push(start.to_owned());
    for next in &graph[start] {
        if let Some(cycle) = cycle_from(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(start.to_owned());
    None
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|(name, code)| {
            let mut names = imports(code, &known);
            names.remove(name);
            (name.clone(), names)
        })
        .collect();
    // The checker itself: a graph with a loop is caught.
    let looped: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert!(cycle_from(&looped, "a", &mut Vec::new(), &mut BTreeSet::new()).is_some());
    assert!(
        graph["api"].contains("sandbox") && graph["sandbox"].contains("backend"),
        "the graph was read: {graph:?}"
    );

    let mut done = BTreeSet::new();
    for name in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, name, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_client_crate_stands_apart_from_the_server() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/client/Cargo.toml"),
    )
    .unwrap();
    assert!(
        !manifest.contains("path = \"../..\"") && !manifest.contains("repobox ="),
        "the client crate depends on the server: {manifest}"
    );
    for (name, code) in modules() {
        if name == "cli" || name == "mcp" {
            for server_only in ["crate::api", "crate::sandbox", "crate::job"] {
                assert!(
                    !code.contains(server_only),
                    "{name} imports {server_only}: clients go through repobox_client"
                );
            }
        }
    }
}

/// Modules that may name an engine: the engines' own, and the wiring that picks one.
const ENGINE_MODULES: &[&str] = &["docker", "kubernetes", "server"];

#[test]
fn only_the_backends_and_the_wiring_name_an_engine() {
    let modules = modules();
    assert!(
        modules["docker"].contains("bollard::"),
        "the docker module was read"
    );
    for (name, code) in &modules {
        if ENGINE_MODULES.contains(&name.as_str()) {
            continue;
        }
        for engine in ["crate::docker", "crate::kubernetes", "bollard::", "kube::"] {
            assert!(
                !code.contains(engine),
                "{name} names an engine ({engine}): go through crate::backend"
            );
        }
    }
}
