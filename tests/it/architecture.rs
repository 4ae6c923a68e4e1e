//! The house's rules, held against the tree: no import circle among the
//! files of `src/`, every import going down the floors that
//! docs/architecture.md lists (or sideways within one), and the README's
//! architecture section naming every module there is. Imports are read
//! the way `../shared/tools/circles.py` reads them: every `crate::` path
//! and `super::` name outside `#[cfg(test)]`, resolved to the file of the
//! longest module prefix that exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

tests! {
    no_file_of_src_imports_itself_through_others;
    every_import_goes_down_the_floors_the_docs_list;
    the_readme_names_every_module_and_points_at_the_floors;
    the_checks_find_a_circle_and_an_upward_import;
}

type Module = Vec<String>;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file of `src/` by its module path (`site::check::items` is
/// `["site", "check", "items"]`; `lib.rs` and `main.rs` are the root,
/// `[]`), with its text up to its tests.
fn files() -> BTreeMap<Module, String> {
    let src = repo().join("src");
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&src).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap().with_extension("");
        let mut module: Module = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            module.pop();
        }
        let text = fs::read_to_string(path).unwrap();
        let code = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .to_owned();
        files.insert(module, code);
    }
    files
}

/// The lower-case `a::b::c` path at the start of `s`.
fn path_at(s: &str) -> Module {
    let end = s
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end]
        .split("::")
        .take_while(|p| !p.is_empty() && !p.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

/// The module paths a file's code names.
fn references(module: &Module, code: &str) -> Vec<Module> {
    let mut refs = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::{C, d}};`: every lower-case path inside.
            let group = &group[..group.find("};").unwrap_or(group.len())];
            for word in group.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            {
                let path = path_at(word);
                if !path.is_empty() {
                    refs.push(path);
                }
            }
        } else {
            refs.push(path_at(rest));
        }
    }
    for (at, _) in code.match_indices("super::") {
        let name = path_at(&code[at + "super::".len()..]);
        if let (Some(first), Some((_, parent))) = (name.first(), module.split_last()) {
            let mut target = parent.to_vec();
            target.push(first.clone());
            refs.push(target);
        }
    }
    refs
}

/// The file-level import graph: each file and the files it imports.
fn graph(files: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges = BTreeMap::new();
    for (module, code) in files {
        let mut targets = BTreeSet::new();
        for reference in references(module, code) {
            let target = (1..=reference.len())
                .rev()
                .map(|n| reference[..n].to_vec())
                .find(|prefix| files.contains_key(prefix));
            if let Some(target) = target.filter(|t| t != module) {
                targets.insert(target);
            }
        }
        edges.insert(module.clone(), targets);
    }
    edges
}

/// The strongly connected components of more than one file (Tarjan).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.edges[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.join("::"));
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

/// docs/architecture.md's floors: each top-level module and its floor.
fn floors() -> BTreeMap<String, usize> {
    let doc = fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let mut floors = BTreeMap::new();
    let mut floor = None;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            floor = heading.split('.').next().and_then(|n| n.parse().ok());
        } else if let (Some(name), Some(floor)) = (line.strip_prefix("- `"), floor) {
            let name = name.split('`').next().unwrap().to_owned();
            assert!(
                floors.insert(name.clone(), floor).is_none(),
                "docs/architecture.md lists `{name}` twice"
            );
        }
    }
    floors
}

fn no_file_of_src_imports_itself_through_others() {
    let circles = circles(&graph(&files()));
    assert!(
        circles.is_empty(),
        "import circles among src/'s files (a stage must import only earlier ones):\n{}",
        circles
            .iter()
            .map(|c| format!("  {}", c.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn every_import_goes_down_the_floors_the_docs_list() {
    let files = files();
    let floors = floors();
    let top: BTreeSet<&String> = files.keys().filter_map(|m| m.first()).collect();
    let listed: BTreeSet<&String> = floors.keys().collect();
    assert_eq!(
        top, listed,
        "the top-level modules of src/ (left) and those docs/architecture.md lists (right)"
    );
    let mut upward = Vec::new();
    for (from, targets) in graph(&files) {
        let Some(from_top) = from.first() else {
            continue;
        };
        for to in targets {
            let Some(to_top) = to.first() else { continue };
            if floors[to_top] > floors[from_top] {
                upward.push(format!(
                    "  {} (floor {}) imports {} (floor {})",
                    from.join("::"),
                    floors[from_top],
                    to.join("::"),
                    floors[to_top]
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that go up a floor:\n{}",
        upward.join("\n")
    );
}

fn the_readme_names_every_module_and_points_at_the_floors() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Architecture\n")
        .nth(1)
        .expect("the README has an Architecture section");
    let section = section.split("\n## ").next().unwrap();
    assert!(
        section.contains("docs/architecture.md"),
        "the README's architecture section links docs/architecture.md"
    );
    let missing: Vec<String> = floors()
        .into_keys()
        .filter(|m| !section.contains(&format!("`{m}`")) && !section.contains(&format!("`{m}::")))
        .collect();
    assert!(
        missing.is_empty(),
        "modules the README's architecture section does not name: {missing:?}"
    );
}

/// The checks themselves see what they must: a planted circle and a
/// planted upward import are found.
fn the_checks_find_a_circle_and_an_upward_import() {
    let mut files = BTreeMap::new();
    let m = |s: &str| s.split("::").map(str::to_owned).collect::<Module>();
    files.insert(m("model"), "use crate::render::Site;".to_owned());
    files.insert(
        m("render"),
        "use crate::{error::Error, model::{self, Release}};".to_owned(),
    );
    files.insert(m("render::feed"), "use super::archive::path;".to_owned());
    files.insert(m("render::archive"), String::new());
    files.insert(m("error"), String::new());
    let edges = graph(&files);
    assert_eq!(
        edges[&m("render::feed")],
        BTreeSet::from([m("render::archive")])
    );
    assert_eq!(
        edges[&m("render")],
        BTreeSet::from([m("error"), m("model")])
    );
    assert_eq!(circles(&edges), vec![vec!["model", "render"]]);
    let floors = floors();
    assert!(floors["render"] > floors["model"]);
}
