//! The shape of the code, checked: no import circles between the files of
//! any crate, none between the server's areas (`http/`, `oauth/`, `api/`,
//! `web/`, `services/`, `jobs/`), and no module of the server importing its
//! root (`lib.rs` only mounts the areas; the playground reaches the router
//! through the state). An import is a `crate::…` or `super::…` path in a
//! file's code, its tests left out; a parent using its own child modules is
//! how Rust nests code, not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's source files by module path (`["oauth", "token"]`).
struct Modules {
    root: PathBuf,
    files: BTreeMap<Vec<String>, PathBuf>,
}

impl Modules {
    fn read(src: &Path) -> Self {
        let mut files = BTreeMap::new();
        collect(src, src, &mut files);
        Self {
            root: src.to_owned(),
            files,
        }
    }

    /// The file a path from the crate root lands in: its longest prefix
    /// that is a module.
    fn resolve(&self, path: &[String]) -> Option<&PathBuf> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.files.get(&path[..n]))
    }

    fn name(&self, file: &Path) -> String {
        file.strip_prefix(&self.root)
            .unwrap_or(file)
            .display()
            .to_string()
    }
}

fn collect(src: &Path, dir: &Path, out: &mut BTreeMap<Vec<String>, PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(src, &path, out);
            continue;
        }
        // Test-only files (`…_test.rs`) are not part of the shape.
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.ends_with(".rs") || name.ends_with("_test.rs") {
            continue;
        }
        let relative = path.strip_prefix(src).expect("inside src");
        let mut module: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            module.pop();
        }
        out.insert(module, path);
    }
}

/// The code of a file that imports count in: no comments, no tests.
fn code(src: &str) -> String {
    let body = match src.find("\n#[cfg(test)]") {
        Some(i) => &src[..i],
        None => src,
    };
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path after `crate::` or `super::` in `code`, with `{a, b::c}`
/// groups expanded, as written (the `super`s kept).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for start in ["crate::", "super::"] {
        for (at, _) in code.match_indices(start) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let head = start.trim_end_matches("::").to_owned();
            expand(&code[at + start.len()..], vec![head], &mut found);
        }
    }
    found
}

fn expand(rest: &str, prefix: Vec<String>, found: &mut Vec<Vec<String>>) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut part = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(part.trim(), prefix.clone(), found);
                    part.clear();
                    continue;
                }
                _ => {}
            }
            part.push(c);
        }
        if !part.trim().is_empty() {
            expand(part.trim(), prefix, found);
        }
        return;
    }
    let mut path = prefix;
    let mut rest = rest;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        path.push(rest[..end].to_owned());
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(next) if next.starts_with('{') => return expand(next, path, found),
            Some(next) => rest = next,
            None => break,
        }
    }
    found.push(path);
}

/// The module path `written` means in `module` (`super` resolved).
fn absolute(module: &[String], written: &[String]) -> Vec<String> {
    let mut base: Vec<String> = match written.first().map(String::as_str) {
        Some("crate") => return written[1..].to_vec(),
        _ => module.to_vec(),
    };
    let mut rest = written;
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    base
}

/// Who imports whom, file by file.
fn imports(modules: &Modules) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (module, file) in &modules.files {
        let src = std::fs::read_to_string(file).expect("readable source");
        for written in paths(&code(&src)) {
            let target = absolute(module, &written);
            if let Some(to) = modules.resolve(&target)
                && to != file
            {
                edges.entry(file.clone()).or_default().insert(to.clone());
            }
        }
        edges.entry(file.clone()).or_default();
    }
    edges
}

/// The circles of a graph: its strongly connected parts of more than one.
fn circles<T: Ord + Clone>(edges: &BTreeMap<T, BTreeSet<T>>) -> Vec<Vec<T>> {
    let nodes: Vec<&T> = edges.keys().collect();
    let reach = |from: &T| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for next in edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&T, BTreeSet<T>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for n in &nodes {
        if done.contains(*n) {
            continue;
        }
        let circle: Vec<T> = nodes
            .iter()
            .filter(|m| reachable[*n].contains(**m) && reachable[**m].contains(*n))
            .map(|m| (*m).clone())
            .collect();
        done.extend(circle.iter().cloned());
        if circle.len() > 1 {
            found.push(circle);
        }
    }
    found
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

#[test]
fn no_crate_has_an_import_circle() {
    for name in ["core", "store", "server", "cli"] {
        let modules = Modules::read(&crate_src(name));
        assert!(modules.files.len() > 3, "{name}: no sources found");
        let edges = imports(&modules);
        let named: Vec<Vec<String>> = circles(&edges)
            .iter()
            .map(|c| c.iter().map(|f| modules.name(f)).collect())
            .collect();
        assert!(named.is_empty(), "import circles in {name}: {named:?}");
    }
}

#[test]
fn the_server_areas_depend_one_way_and_nothing_imports_the_root() {
    let modules = Modules::read(&crate_src("server"));
    let edges = imports(&modules);
    let root = modules.files[&Vec::new()].clone();
    let area = |file: &Path| {
        let parts: Vec<String> = file
            .strip_prefix(&modules.root)
            .unwrap()
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts.len() > 1 {
            parts[0].clone()
        } else {
            parts[0].trim_end_matches(".rs").to_owned()
        }
    };
    let mut areas: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut into_root = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if *to == root {
                into_root.push(modules.name(from));
            }
            let (a, b) = (area(from), area(to));
            areas.entry(a.clone()).or_default();
            if a != b {
                areas.entry(a).or_default().insert(b);
            }
        }
    }
    assert!(into_root.is_empty(), "these import lib.rs: {into_root:?}");
    for expected in ["http", "oauth", "api", "web", "services", "jobs"] {
        assert!(
            areas.contains_key(expected),
            "no area {expected}: {areas:?}"
        );
    }
    let between = circles(&areas);
    assert!(
        between.is_empty(),
        "areas that import each other: {between:?} ({areas:?})"
    );
}

#[test]
fn the_reader_sees_imports_as_rust_does() {
    let src = "use crate::{a::b, c::{d, e::F}};\nuse super::super::g;\n// crate::not\nfn f() { crate::h::i(); x_crate::no(); }\n#[cfg(test)]\nmod tests { use crate::j; }";
    let mut got = paths(&code(src));
    got.sort();
    let want: Vec<Vec<&str>> = vec![
        vec!["crate", "a", "b"],
        vec!["crate", "c", "d"],
        vec!["crate", "c", "e", "F"],
        vec!["crate", "h", "i"],
        vec!["super", "super", "g"],
    ];
    assert_eq!(got, want);
    let module = ["web".to_owned(), "console".to_owned(), "apps".to_owned()];
    let sup = ["super".to_owned(), "Answer".to_owned()];
    assert_eq!(absolute(&module, &sup), ["web", "console", "Answer"]);
    let edges = BTreeMap::from([
        (1, BTreeSet::from([2])),
        (2, BTreeSet::from([3])),
        (3, BTreeSet::from([1])),
        (4, BTreeSet::from([1])),
    ]);
    assert_eq!(circles(&edges), vec![vec![1, 2, 3]]);
}
