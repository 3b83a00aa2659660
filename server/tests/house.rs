//! The floor plan of `server/src`, checked from the source text: which file imports which
//! (`crate::`, `super::` and child-module paths, `use` lists included), no import cycle between
//! files, every module importing only downstream on the data path or from beside it, and no
//! server file (server/src, server/lsl/src) over 400 lines. Reads the code as text, so it needs
//! nothing built and fails on the commit that breaks the plan, naming the files and paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the top floor down. A module may import from its own floor's module
/// and from any module on a lower floor, never from a higher one. The data path runs
/// ingest -> session -> window -> decode -> (record) -> publish; the last four floors are what
/// stands beside the path (the ports' transport; the signal processing the session's filters and
/// the windows' resampling use; principals, model cards, the buffer budget; configuration,
/// metrics, clocks, ids, rings, shutdown).
const FLOORS: &[&[&str]] = &[
    &["server", "cli"],
    &["grpc", "http", "demo", "replay"],
    &["app"],
    &["cluster"],
    &["attach", "calibrate"],
    &["ingest"],
    &["session"],
    &["window"],
    &["decode"],
    &["record"],
    &["publish"],
    &["transport"],
    &["dsp"],
    &["auth", "card", "budget"],
    &["config", "metrics", "clock", "id", "ring", "shutdown"],
];

const MAX_LINES: usize = 400;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file with its module path (`decode/mod.rs` -> ["decode"]). The binary's
/// `main.rs` is its own crate and stands above everything.
fn module_files() -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("reading server/src") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = src_dir();
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&root).expect("under src");
        let mut segments: Vec<String> = relative.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let last = segments.pop().expect("file name");
        match last.as_str() {
            "main.rs" if segments.is_empty() => continue,
            "lib.rs" if segments.is_empty() => {}
            "mod.rs" => {}
            name => segments.push(name.trim_end_matches(".rs").to_string()),
        }
        modules.insert(segments, file);
    }
    modules
}

/// The source without comments, string and char literals, and `#[cfg(test)]` modules (tests
/// are not rooms of the house).
fn code_of(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |end| end + 2);
        } else if rest.starts_with("r\"") || rest.starts_with("r#\"") {
            let hashes = rest[1..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            i += body + rest[body..].find(&close).map_or(rest.len() - body, |end| end + close.len());
            out.push_str("\"\"");
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if bytes[i] == b'\'' && is_char_literal(rest) {
            i += rest[1..].find('\'').map_or(1, |end| end + 2);
            out.push_str("' '");
        } else {
            let c = rest.chars().next().expect("non-empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
    strip_test_modules(&out)
}

/// `'x'` or `'\n'` rather than a lifetime `'a`.
fn is_char_literal(rest: &str) -> bool {
    let mut chars = rest.chars().skip(1);
    matches!((chars.next(), chars.next()), (Some('\\'), _) | (Some(_), Some('\'')))
}

fn strip_test_modules(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let after = &out[at..];
        let Some(open) = after.find('{') else { break };
        let (mut depth, mut end) = (0usize, after.len());
        for (k, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(at..at + end, "");
    }
    out
}

/// Child modules a file declares (`mod ring;`, `pub mod lsl;`).
fn declared_children(code: &str) -> BTreeSet<String> {
    let mut children = BTreeSet::new();
    let words: Vec<&str> = code.split(|c: char| c.is_whitespace()).filter(|w| !w.is_empty()).collect();
    for pair in words.windows(2) {
        if pair[0] == "mod" && pair[1].ends_with(';') {
            children.insert(pair[1].trim_end_matches(';').to_string());
        }
    }
    children
}

/// Every path that starts with `crate::`, `super::`, `self::` or a declared child module,
/// with `{a, b::c}` lists expanded, as written (first segment included).
fn paths_in(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let at_word_start = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
        if at_word_start && (chars[i].is_alphabetic() || chars[i] == '_') {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let followed_by_path = chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':');
            if followed_by_path && (matches!(word.as_str(), "crate" | "super" | "self") || children.contains(&word)) {
                let (paths, end) = parse_tree(&chars, start);
                found.extend(paths);
                i = end;
            }
        } else {
            i += 1;
        }
    }
    found
}

/// Parses `a::b::{c, d::e}` starting at `i`; returns the expanded paths and where it ended.
fn parse_tree(chars: &[char], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        while chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        if chars.get(i) == Some(&'{') {
            let mut paths = Vec::new();
            i += 1;
            loop {
                while chars.get(i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                    i += 1;
                }
                match chars.get(i) {
                    None => return (paths, i),
                    Some('}') => return (paths, i + 1),
                    _ => {}
                }
                let (inner, end) = parse_tree(chars, i);
                for mut path in inner {
                    let mut full = prefix.clone();
                    full.append(&mut path);
                    paths.push(full);
                }
                if end == i {
                    i += 1; // not a path (e.g. `*`): skip it
                } else {
                    i = end;
                }
            }
        }
        let start = i;
        while chars.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
            i += 1;
        }
        if i == start {
            return (vec![prefix], i);
        }
        prefix.push(chars[start..i].iter().collect());
        if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// The absolute module path a written path points into, from the file at `module`.
/// A `foo.rs` or `foo/mod.rs` file is module `foo`: `super` is its parent either way.
fn absolute(module: &[String], written: &[String]) -> Vec<String> {
    let mut base: Vec<String> = module.to_vec();
    let mut segments = written;
    match segments.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            segments = &segments[1..];
        }
        Some("self") => segments = &segments[1..],
        Some("super") => {
            while segments.first().is_some_and(|s| s == "super") {
                base.pop();
                segments = &segments[1..];
            }
        }
        _ => {} // a child module of this one
    }
    base.extend(segments.iter().cloned());
    base
}

/// The file defining the longest module prefix of `path`.
fn resolve<'a>(modules: &'a BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<&'a Vec<String>> {
    (0..=path.len()).rev().find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

struct House {
    /// file module -> (imported module -> the paths written for it)
    imports: BTreeMap<Vec<String>, BTreeMap<Vec<String>, BTreeSet<String>>>,
    lines: BTreeMap<Vec<String>, usize>,
}

fn read_house() -> House {
    let modules = module_files();
    let mut imports = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("reading a source file");
        lines.insert(module.clone(), text.lines().count());
        let code = code_of(&text);
        let children = declared_children(&code);
        let mut edges: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
        for written in paths_in(&code, &children) {
            let target = absolute(module, &written);
            if let Some(file_module) = resolve(&modules, &target)
                && file_module != module
            {
                edges.entry(file_module.clone()).or_default().insert(written.join("::"));
            }
        }
        imports.insert(module.clone(), edges);
    }
    House { imports, lines }
}

fn name(module: &[String]) -> String {
    if module.is_empty() { "lib.rs".into() } else { module.join("/") }
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(house: &House) -> Vec<Vec<Vec<String>>> {
    struct Tarjan<'a> {
        house: &'a House,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Vec<String>) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.house.imports[v].keys() {
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
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.out.push(component);
                }
            }
        }
    }
    let mut tarjan =
        Tarjan { house, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), out: Vec::new() };
    for v in house.imports.keys() {
        if !tarjan.index.contains_key(v) {
            tarjan.visit(v);
        }
    }
    tarjan.out
}

fn floor_of(top: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&top))
}

#[test]
fn no_import_cycle_between_server_files() {
    let house = read_house();
    let found = cycles(&house);
    let mut report = String::new();
    for component in &found {
        let members: BTreeSet<&Vec<String>> = component.iter().collect();
        report.push_str(&format!("cycle among {:?}:\n", component.iter().map(|m| name(m)).collect::<Vec<_>>()));
        for from in component {
            for (to, written) in &house.imports[from] {
                if members.contains(to) {
                    report.push_str(&format!("  {} -> {}: {:?}\n", name(from), name(to), written));
                }
            }
        }
    }
    assert!(found.is_empty(), "import cycles in server/src:\n{report}");
}

#[test]
fn every_module_imports_only_downstream_or_beside() {
    let house = read_house();
    let mut wrong = Vec::new();
    for (from, edges) in &house.imports {
        let Some(from_top) = from.first() else { continue };
        let from_floor = floor_of(from_top).unwrap_or_else(|| panic!("server/src/{from_top} is on no floor of FLOORS: add it"));
        for (to, written) in edges {
            let Some(to_top) = to.first() else {
                wrong.push(format!("{} imports the crate root (lib.rs): {written:?}", name(from)));
                continue;
            };
            if to_top == from_top {
                continue;
            }
            let to_floor = floor_of(to_top).unwrap_or_else(|| panic!("server/src/{to_top} is on no floor of FLOORS: add it"));
            if to_floor <= from_floor {
                wrong.push(format!("{} imports {} on the same or a higher floor: {written:?}", name(from), name(to)));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the floor plan:\n{}", wrong.join("\n"));
}

#[test]
fn no_server_file_over_400_lines() {
    let house = read_house();
    let mut long: Vec<String> =
        house.lines.iter().filter(|&(_, &n)| n > MAX_LINES).map(|(m, n)| format!("{} has {n} lines", name(m))).collect();
    // The liblsl wrapper crate (server/lsl) is a server file too.
    let lsl = Path::new(env!("CARGO_MANIFEST_DIR")).join("lsl/src");
    let mut pending = vec![lsl];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading server/lsl/src") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let n = std::fs::read_to_string(&path).expect("reading a source file").lines().count();
                if n > MAX_LINES {
                    long.push(format!("{} has {n} lines", path.display()));
                }
            }
        }
    }
    assert!(long.is_empty(), "split these by job:\n{}", long.join("\n"));
}

#[test]
fn the_reader_sees_use_lists_super_and_child_paths() {
    let code = code_of(
        "use crate::a::{b, c::{D, e::F}};\nuse super::x::Y; // crate::not_this\nfn f() { ring::push(); let s = \"crate::nor_this\"; }\nmod ring;",
    );
    let children = declared_children(&code);
    let paths: Vec<String> = paths_in(&code, &children).iter().map(|p| p.join("::")).collect();
    assert_eq!(paths, ["crate::a::b", "crate::a::c::D", "crate::a::c::e::F", "super::x::Y", "ring::push"]);
    let mut modules = BTreeMap::new();
    for m in [vec![], vec!["a".to_string()], vec!["a".to_string(), "c".to_string()]] {
        modules.insert(m, PathBuf::new());
    }
    let target = absolute(&[], &["crate".into(), "a".into(), "c".into(), "D".into()]);
    assert_eq!(resolve(&modules, &target), Some(&vec!["a".to_string(), "c".to_string()]));
    let parent = absolute(&["a".into(), "c".into()], &["super".into(), "Z".into()]);
    assert_eq!(resolve(&modules, &parent), Some(&vec!["a".to_string()]));
}
