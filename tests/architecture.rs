//! The dependency rules of ARCHITECTURE.md ("Dependency rules"), checked on the source text,
//! as rust-analyzer's `tidy` tests do: every `crate::<module>` path in `src/` is a
//! dependency of the file's top-level module on `<module>`, and each rule lists modules a
//! module must not depend on.
//!
//! What counts: code, not comments (a doc link is not a dependency) and not test code (a
//! `#[cfg(test)]` item, a `tests.rs` file), since tests may use the interpreter as an
//! oracle. `use crate::{a, b::c}` groups count each member. (`super::super::` paths would
//! escape this scan; kiln uses `crate::` to leave a module.)
//!
//! A rule marked `pending` does not hold yet: another change of issue 15 makes it hold. It
//! prints its violations without failing; whoever merges that change sets `pending` to
//! `None` (the test says when a pending rule already holds).

use std::path::{Path, PathBuf};

struct Rule {
    /// The module the rule is about (`src/<module>.rs` or `src/<module>/`).
    module: &'static str,
    /// Modules it must not refer to.
    forbidden: &'static [&'static str],
    /// Why, in a few words (the rule's name in ARCHITECTURE.md).
    why: &'static str,
    /// `Some(what makes it hold)` while it does not hold yet.
    pending: Option<&'static str>,
}

const RULES: &[Rule] = &[
    Rule {
        module: "graph",
        forbidden: &[
            "passes",
            "jit",
            "session",
            "nn",
            "train",
            "autodiff",
            "interp",
            "text",
            "checkpoint",
            "saved",
            "data",
        ],
        why: "the graph IR knows nothing of what consumes it",
        pending: None,
    },
    Rule {
        module: "graph",
        forbidden: &["kernel"],
        why: "the graph IR knows nothing of kernels",
        pending: None,
    },
    Rule {
        module: "autodiff",
        forbidden: &[
            "passes", "jit", "session", "nn", "train", "interp", "kernel",
        ],
        why: "autodiff is a graph-to-graph transformation on the IR alone",
        pending: None,
    },
    Rule {
        module: "passes",
        forbidden: &["jit", "session", "nn", "train", "autodiff"],
        why: "passes know nothing of backends, sessions or the Keras layer",
        pending: None,
    },
    Rule {
        module: "nn",
        forbidden: &["jit", "kernel", "passes", "interp"],
        why: "nn builds graphs and runs them through a Session, never through JIT internals",
        pending: None,
    },
    Rule {
        module: "jit",
        forbidden: &["nn", "train", "autodiff", "session"],
        why: "the JIT compiles programs; it knows nothing of who built them",
        pending: None,
    },
    Rule {
        module: "jit",
        forbidden: &["interp"],
        why: "jit knows nothing of interp",
        pending: None,
    },
    Rule {
        module: "kernel",
        forbidden: &["passes", "jit", "interp", "session", "nn"],
        why: "the kernel IR is data, consumed by backends",
        pending: None,
    },
    Rule {
        module: "interp",
        forbidden: &["passes", "jit", "session", "nn", "train", "autodiff"],
        why: "the reference interpreter depends on the IR only (it is the oracle)",
        pending: None,
    },
    Rule {
        module: "text",
        forbidden: &[
            "passes", "jit", "session", "nn", "train", "autodiff", "interp",
        ],
        why: "the text format is about the IR alone",
        pending: None,
    },
    Rule {
        module: "train",
        forbidden: &["jit", "passes", "interp", "nn"],
        why: "optimizers are graph building",
        pending: None,
    },
    Rule {
        module: "session",
        forbidden: &["nn", "train"],
        why: "the session runs graphs; the layers above it build them",
        pending: None,
    },
    Rule {
        module: "dist",
        forbidden: &[
            "jit", "passes", "interp", "kernel", "nn", "train", "autodiff", "text", "data",
        ],
        why: "the distributed world is collectives and start-up agreement; it knows nothing \
              of backends or of who trains",
        pending: None,
    },
    Rule {
        module: "passes",
        forbidden: &["dist"],
        why: "passes never communicate (constant folding must not run a collective)",
        pending: None,
    },
    Rule {
        module: "graph",
        forbidden: &["dist"],
        why: "the collective op is IR; what it sums and in which order is dist's business",
        pending: None,
    },
    Rule {
        module: "autodiff",
        forbidden: &["dist"],
        why: "the gradient of all_reduce is graph building, not communication",
        pending: None,
    },
];

/// A source file: its path from the crate root and its lines of code (test code and
/// comments blanked, so line numbers stay true).
struct Source {
    path: PathBuf,
    module: String,
    lines: Vec<String>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Blanks comments and `#[cfg(test)]` items (the attribute's item, up to its balanced
/// closing brace or its `;`).
fn code_lines(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut in_block_comment = false;
    let mut skip_depth: Option<i32> = None;
    let mut skip_next_item = false;
    for line in text.lines() {
        let mut code = String::new();
        let mut rest = line;
        loop {
            if in_block_comment {
                match rest.find("*/") {
                    Some(i) => {
                        rest = &rest[i + 2..];
                        in_block_comment = false;
                    }
                    None => break,
                }
            } else {
                let lc = rest.find("//");
                let bc = rest.find("/*");
                match (lc, bc) {
                    (Some(l), b) if b.is_none_or(|b| l < b) => {
                        code.push_str(&rest[..l]);
                        break;
                    }
                    (_, Some(b)) => {
                        code.push_str(&rest[..b]);
                        rest = &rest[b + 2..];
                        in_block_comment = true;
                    }
                    _ => {
                        code.push_str(rest);
                        break;
                    }
                }
            }
        }
        let trimmed = code.trim();
        if let Some(depth) = skip_depth.as_mut() {
            *depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
            if *depth <= 0 {
                skip_depth = None;
            }
            out.push(String::new());
            continue;
        }
        if skip_next_item && !trimmed.is_empty() && !trimmed.starts_with("#[") {
            skip_next_item = false;
            let depth = code.matches('{').count() as i32 - code.matches('}').count() as i32;
            if depth > 0 {
                skip_depth = Some(depth);
            }
            out.push(String::new());
            continue;
        }
        if trimmed == "#[cfg(test)]" {
            skip_next_item = true;
        }
        out.push(code);
    }
    out
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            Source {
                path: p.strip_prefix(root).unwrap().to_path_buf(),
                module,
                lines: code_lines(&text),
            }
        })
        .collect()
}

/// Every `crate::<module>` reference in the file: (line number, module).
fn references(s: &Source) -> Vec<(usize, String)> {
    let mut out = vec![];
    let ident = |t: &str| -> String {
        t.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, line) in s.lines.iter().enumerate() {
        for (at, _) in line.match_indices("crate::") {
            let before = line[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `kiln_crate::`, not a path of this crate
            }
            let rest = &line[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c, ...}`, possibly over several lines.
                let mut text = group.to_string();
                let mut k = i + 1;
                while !balanced(&text) && k < s.lines.len() {
                    text.push_str(&s.lines[k]);
                    k += 1;
                }
                for m in top_level_members(&text) {
                    out.push((i + 1, m));
                }
            } else {
                out.push((i + 1, ident(rest)));
            }
        }
    }
    out
}

/// True once the group's closing brace has been read (depth back below zero).
fn balanced(text: &str) -> bool {
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return true,
            '}' => depth -= 1,
            _ => {}
        }
    }
    false
}

/// The first path segment of each member of a `{...}` group (the text after `{`).
fn top_level_members(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut depth = 0;
    let mut start = true;
    let mut cur = String::new();
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                start = true;
                continue;
            }
            _ => {}
        }
        if depth == 0 && start {
            if c.is_alphanumeric() || c == '_' {
                cur.push(c);
                continue;
            }
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                start = false;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Each reference of `rule.module` to a forbidden module, as `path:line: refers to ...`.
fn violations(rule: &Rule, sources: &[Source]) -> Vec<String> {
    let mut broken = vec![];
    for s in sources.iter().filter(|s| s.module == rule.module) {
        for (line, m) in references(s) {
            if rule.forbidden.contains(&m.as_str()) {
                broken.push(format!("{}:{line}: refers to crate::{m}", s.path.display()));
            }
        }
    }
    broken
}

#[test]
fn dependency_rules_hold() {
    let sources = sources();
    assert!(sources.len() > 20, "the scan found the sources");
    let mut failures = vec![];
    for rule in RULES {
        let broken = violations(rule, &sources);
        let title = format!(
            "{} (`{}` must not use {})",
            rule.why,
            rule.module,
            rule.forbidden.join(", ")
        );
        match (rule.pending, broken.is_empty()) {
            (None, true) => {}
            (None, false) => failures.push(format!("{title}:\n  {}", broken.join("\n  "))),
            (Some(_), true) => {
                println!("pending rule already holds, set `pending: None`: {title}")
            }
            (Some(when), false) => {
                println!("pending rule ({when}): {title}:\n  {}", broken.join("\n  "))
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dependency rules broken:\n{}",
        failures.join("\n")
    );
}

/// Only `src/dist/mpi.rs` names the `mpi` crate (issue 19): elsewhere in `dist`, `mpi::`
/// is that file's module (`mod mpi;` in `dist/mod.rs`), and no other module says `mpi` at all,
/// so the default build (no `mpi` feature) and every other module stay free of MPI.
#[test]
fn only_dist_mpi_names_the_mpi_crate() {
    let sources = sources();
    let backend = Path::new("src/dist/mpi.rs");
    let own: Vec<String> = sources
        .iter()
        .find(|s| s.path == backend)
        .expect("src/dist/mpi.rs exists")
        .lines
        .iter()
        .filter_map(|l| {
            let l = l.trim();
            let item = l
                .strip_prefix("pub(super) fn ")
                .or_else(|| l.strip_prefix("pub(super) use mpi::environment::"))?;
            Some(
                item.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            )
        })
        .collect();
    assert!(own.iter().any(|i| i == "all_reduce"), "{own:?}");
    let mut found = vec![];
    for s in sources.iter().filter(|s| s.path != backend) {
        for (i, line) in s.lines.iter().enumerate() {
            for (at, _) in line.match_indices("mpi") {
                let before = line[..at].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || "_\"`".contains(c)) {
                    continue;
                }
                let rest = &line[at + 3..];
                if rest.starts_with(|c: char| c.is_alphanumeric() || "_\"`".contains(c)) {
                    continue; // `mpirun`, `mpi_x`, a feature's name in a string
                }
                let item: String = rest
                    .trim_start_matches("::")
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let local = s.path == Path::new("src/dist/mod.rs")
                    && (rest.starts_with(';') || own.contains(&item));
                if !local {
                    found.push(format!("{}:{}: {}", s.path.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the mpi crate named outside src/dist/mpi.rs:\n  {}",
        found.join("\n  ")
    );
}

/// Invariant 9: `unsafe` only in `src/jit`.
#[test]
fn only_the_jit_contains_unsafe() {
    let mut found = vec![];
    for s in sources().iter().filter(|s| s.module != "jit") {
        for (i, line) in s.lines.iter().enumerate() {
            let hit = line.match_indices("unsafe").any(|(at, w)| {
                let before = line[..at].chars().last();
                let after = line[at + w.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            });
            if hit {
                found.push(format!("{}:{}", s.path.display(), i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "`unsafe` outside src/jit:\n  {}",
        found.join("\n  ")
    );
}

/// The scanner itself: groups, comments and test items.
#[test]
fn the_scan_reads_paths_groups_and_skips_comments_and_tests() {
    let text = "use crate::graph::op::Op;\n\
                // use crate::jit;\n\
                use crate::{passes::Pass, session,\n    text::{Dumper}};\n\
                /// [`crate::nn`]\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::interp;\n}\n\
                fn f() { crate::kernel::Kernel::kind(); }\n";
    let s = Source {
        path: PathBuf::from("x.rs"),
        module: "x".into(),
        lines: code_lines(text),
    };
    let refs: Vec<(usize, String)> = references(&s);
    let mods: Vec<&str> = refs.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(mods, ["graph", "passes", "session", "text", "kernel"]);
    assert_eq!(refs[0].0, 1);
    assert_eq!(refs.last().unwrap().0, 10);
}

/// A rule broken by a synthetic file names the file and the line.
#[test]
fn a_broken_rule_names_the_file_and_line() {
    let s = Source {
        path: PathBuf::from("src/graph/new.rs"),
        module: "graph".into(),
        lines: code_lines(
            "use crate::shape::Shape;\n\nfn f() { crate::passes::dce::remove_dead; }\n",
        ),
    };
    let rule = &RULES[0];
    assert_eq!(
        violations(rule, &[s]),
        ["src/graph/new.rs:3: refers to crate::passes"]
    );
}
