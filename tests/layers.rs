//! The import graph follows the layer order of `ARCHITECTURE.md`: every `crate::<module>`
//! path in `src/` (in `use` lines and in code, test modules included; comments and string
//! literals are skipped) names a module of a strictly lower layer than the file's own
//! top-level module. With a strict order there can be no cycle between modules either.
//!
//! Run alone: `cargo test --test layers`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first. A module may import only from lower numbers.
const LAYERS: &[(&str, u8)] = &[
    // The vocabulary: imports nothing of the crate.
    ("domain", 0),
    // Leaves of infrastructure: TLS files and names, the NATS connection, and the
    // `Step` a backend operation returns.
    ("tls", 1),
    ("nats", 1),
    ("step", 1),
    ("compact", 1),
    // Protocol and provider knowledge (pure).
    ("sip", 2),
    ("providers", 3),
    // The pure cores: classification, then the policy (which compiles the
    // classifier's overrides from its file).
    ("classify", 4),
    ("policy", 5),
    // Data: history, idempotency, the event log (domain, nats and step only).
    ("store", 4),
    ("events", 4),
    // The one report flow.
    ("pipeline", 6),
    // What the edges share: credentials, quotas, telemetry, the generated contract.
    ("auth", 7),
    ("admission", 7),
    ("quota", 7),
    ("telemetry", 7),
    ("proto", 7),
    // The edges.
    ("api", 8),
    ("webhooks", 8),
    // Wiring: configuration, the server, the command line.
    ("config", 9),
    ("server", 10),
    ("cli", 11),
    // Test support of the fuzz targets (reads configurations).
    ("fuzzing", 11),
];

fn rank(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

/// The text of a Rust file without comments and without the contents of string and
/// character literals (so that `"crate::x"` in a message is not an import).
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').map_or(bytes.len(), |n| i + n);
            i = end;
        } else if rest.starts_with("/*") {
            let mut depth = 0usize;
            let mut j = i;
            while j < bytes.len() {
                if text[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if text[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = j;
        } else if let Some(len) = raw_string_len(rest) {
            out.push_str("\"\"");
            i += len;
        } else if bytes[i] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if bytes[i] == b'\'' && is_char_literal(rest) {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'\'' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("' '");
            i = j + 1;
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// `r"..."`, `r#"..."#`, `br"..."`: the literal's length in bytes.
fn raw_string_len(rest: &str) -> Option<usize> {
    let start = if rest.starts_with("br") {
        2
    } else if rest.starts_with('r') {
        1
    } else {
        return None;
    };
    let hashes = rest[start..].bytes().take_while(|b| *b == b'#').count();
    if rest.as_bytes().get(start + hashes) != Some(&b'"') {
        return None;
    }
    let close = format!("\"{}", "#".repeat(hashes));
    let body = start + hashes + 1;
    rest[body..].find(&close).map(|n| body + n + close.len())
}

/// A character literal rather than a lifetime (`'a`) or a label.
fn is_char_literal(rest: &str) -> bool {
    let b = rest.as_bytes();
    (b.len() > 2 && b[1] == b'\\') || rest.chars().nth(2) == Some('\'')
}

/// The top-level modules a file's code names through `crate::`.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `call_outcome::crate::` cannot happen; `$crate::` in macros names this crate too.
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        push_first_segment(&item, &mut found);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            push_first_segment(&item, &mut found);
        } else {
            push_first_segment(trimmed, &mut found);
        }
    }
    found
}

fn push_first_segment(path: &str, found: &mut BTreeSet<String>) {
    let name: String = path
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !name.is_empty() && name != "self" {
        found.insert(name);
    }
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/api/layers/auth.rs` → `api`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        _ => Some(first.trim_end_matches(".rs").to_owned()),
    }
}

#[test]
fn imports_only_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut upward = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let own = rank(&module).unwrap_or_else(|| {
            panic!(
                "{module} (from {}) has no layer in tests/layers.rs: give it one",
                file.display()
            )
        });
        let code = code_only(&std::fs::read_to_string(file).expect("read"));
        for target in imported_modules(&code) {
            if target == module {
                continue;
            }
            let Some(theirs) = rank(&target) else {
                panic!(
                    "{} names crate::{target}, which has no layer",
                    file.display()
                );
            };
            graph
                .entry(module.clone())
                .or_default()
                .insert(target.clone());
            if theirs >= own {
                upward.push(format!(
                    "{} ({module}, layer {own}) imports crate::{target} (layer {theirs})",
                    file.strip_prefix(&src).expect("under src").display()
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not go down the layers:\n  {}",
        upward.join("\n  ")
    );
    // The vocabulary is a leaf.
    assert!(
        graph.get("domain").is_none_or(BTreeSet::is_empty),
        "domain imports {:?}",
        graph.get("domain")
    );
    // The data backends see the vocabulary, the NATS connection, `Step` and the record
    // compactor only.
    for data in ["store", "events"] {
        let allowed: BTreeSet<String> = ["domain", "nats", "step", "compact"]
            .map(String::from)
            .into();
        let used = graph.get(data).cloned().unwrap_or_default();
        assert!(used.is_subset(&allowed), "{data} imports {used:?}");
    }
}

#[test]
fn the_scanner_sees_grouped_imports_and_skips_comments_and_strings() {
    let code = code_only(
        "use crate::{domain::{A, B}, sip};\n// use crate::server;\n/* crate::cli */\n\
         let s = \"crate::api\"; let r = r#\"crate::config\"#; let c = '\"';\n\
         fn f<'a>(x: &'a str) { crate::policy::decide(x); }\n",
    );
    let found: Vec<String> = imported_modules(&code).into_iter().collect();
    assert_eq!(found, ["domain", "policy", "sip"]);
}
