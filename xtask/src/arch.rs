//! The architecture check (`cargo xtask arch`, also a step of `cargo xtask ci`).
//!
//! mqtt-core is sans-IO: it must not read a clock, open a socket or file,
//! spawn a thread, use async, touch the process, or depend on a runtime or
//! I/O crate. Clippy's `disallowed-methods` (crates/mqtt-core/clippy.toml)
//! catches some method calls; this check covers the rest, including imports
//! and the dependency graph, and reports each violation as `path:line: what`.
//!
//! Two checks per crate:
//! - dependencies: the `[dependencies]` tables of its Cargo.toml (direct,
//!   with their line) and `cargo tree -e normal --all-features --target all`
//!   (transitive, reported at the line of the direct dependency that pulls
//!   them in, with the chain);
//! - source: every `.rs` file under `src/`, with comments, doc comments and
//!   string/char literals blanked out first, so documentation (such as a
//!   runtime loop example in the crate docs, which is a doc test) never
//!   counts.
//!
//! Test code is excepted. The crate's `tests/`, `benches/` and `examples/`
//! directories are never scanned (only `src/` is). Inside `src/`, the
//! heuristic is exactly this:
//! - an item preceded by the attribute `#[cfg(test)]`, `#[test]`, or
//!   `#[cfg(all(test, ...))]` (with `test` as a direct argument of `all`) is
//!   blanked from that attribute to the end of the item: the first `;` or the
//!   brace matching the first `{` that follows at bracket depth 0 (so
//!   `#[cfg(test)] mod tests { ... }` anywhere in a file, and `#[test] fn`);
//! - `#[cfg(test)] mod name;` also excludes the file(s) of that module:
//!   `name.rs` and `name/` beside the declaring file's module directory;
//! - a file whose inner attribute is `#![cfg(test)]` is skipped whole.
//!
//! `#[cfg(not(test))]` and other cfg expressions count as production code.
//! `#[path = ...]` on a test module is not followed.
//!
//! rt-std (a later issue) has a dependency rule already: no async runtime
//! or event-loop crate; it applies as soon as crates/rt-std exists. Other
//! crates get their own rule by adding a [`CrateRule`] to [`RULES`].

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::util::{self, err, Result};

/// One finding, printed as `path:line: what`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub path: String,
    pub line: usize,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.what)
    }
}

/// What a crate may not depend on or do.
pub struct CrateRule {
    /// The crate's directory, relative to the repository root.
    pub dir: &'static str,
    /// Banned dependencies: a package name, or a prefix ending in `*`, and why.
    pub banned_crates: &'static [(&'static str, &'static str)],
    /// Whether the sans-IO source rules apply.
    pub sans_io_source: bool,
    /// A crate that a later issue creates: skipped (and said so) until its
    /// directory exists.
    pub planned: bool,
}

/// Runtime, I/O, clock, thread-pool and OS-randomness crates. Names ending in
/// `*` are prefixes (`futures*` covers futures-util, `quinn*` covers
/// quinn-proto: QUIC belongs to the runtimes, not to mqtt-core).
pub const SANS_IO_BANNED_CRATES: &[(&str, &str)] = &[
    ("tokio*", "async runtime"),
    ("smol", "async runtime"),
    ("async-*", "async runtime/IO"),
    ("async_*", "async runtime/IO"),
    ("futures*", "async"),
    ("mio", "I/O event loop"),
    ("polling", "I/O event loop"),
    ("glommio", "async runtime"),
    ("monoio", "async runtime"),
    ("compio*", "async runtime"),
    ("io-uring", "I/O"),
    ("embassy-*", "async runtime"),
    ("actix*", "async runtime"),
    ("pollster", "async executor"),
    ("quinn*", "QUIC I/O, which the runtimes drive"),
    ("socket2", "sockets"),
    ("rustls*", "TLS, which the runtimes own"),
    ("tokio-rustls", "TLS"),
    ("native-tls", "TLS"),
    ("openssl*", "TLS"),
    ("hyper*", "HTTP I/O"),
    ("reqwest", "HTTP I/O"),
    ("ureq", "HTTP I/O"),
    ("nix", "OS calls"),
    ("signal-hook*", "process signals"),
    ("ctrlc", "process signals"),
    ("tempfile", "file system"),
    ("memmap2", "file system"),
    ("walkdir", "file system"),
    ("notify", "file system"),
    ("rayon*", "thread pool"),
    ("threadpool", "thread pool"),
    ("quanta", "clock"),
    ("coarsetime", "clock"),
    // Randomness comes from a seeded RNG passed in (DESIGN.md), so a
    // simulation replays bit for bit; OS entropy would break that.
    ("getrandom", "OS randomness; take a seeded RNG as an input"),
];

/// rt-std runs the broker on std threads and sockets only: no async runtime
/// and no event-loop crate (quinn-proto, which is sans-IO, is fine; quinn is
/// the async wrapper).
pub const STD_RUNTIME_BANNED_CRATES: &[(&str, &str)] = &[
    ("tokio*", "async runtime"),
    ("smol", "async runtime"),
    ("async-*", "async runtime/IO"),
    ("async_*", "async runtime/IO"),
    ("futures*", "async"),
    ("mio", "I/O event loop"),
    ("polling", "I/O event loop"),
    ("glommio", "async runtime"),
    ("monoio", "async runtime"),
    ("compio*", "async runtime"),
    ("embassy-*", "async runtime"),
    ("actix*", "async runtime"),
    ("pollster", "async executor"),
    ("quinn", "async QUIC; drive quinn-proto directly"),
];

/// mqtt-quic wraps quinn-proto and rustls (sans-IO state machines), so
/// those are allowed, and so is getrandom: TLS key shares and quinn's
/// token keys need OS randomness (quinn's endpoint RNG is still seeded by
/// the caller). Everything else of [`SANS_IO_BANNED_CRATES`] stays
/// (getrandom's wasm-only futures are not followed: see
/// [`WASM_BROWSER_ONLY`]).
pub const QUIC_GLUE_BANNED_CRATES: &[(&str, &str)] = &[
    ("tokio*", "async runtime"),
    ("smol", "async runtime"),
    ("async-*", "async runtime/IO"),
    ("async_*", "async runtime/IO"),
    ("futures*", "async"),
    ("mio", "I/O event loop"),
    ("polling", "I/O event loop"),
    ("glommio", "async runtime"),
    ("monoio", "async runtime"),
    ("compio*", "async runtime"),
    ("io-uring", "I/O"),
    ("embassy-*", "async runtime"),
    ("actix*", "async runtime"),
    ("pollster", "async executor"),
    ("quinn", "async QUIC; drive quinn-proto directly"),
    ("quinn-udp", "UDP sockets, which the runtimes own"),
    ("socket2", "sockets"),
    ("tokio-rustls", "TLS over async I/O"),
    ("native-tls", "TLS"),
    ("openssl*", "TLS"),
    ("hyper*", "HTTP I/O"),
    ("reqwest", "HTTP I/O"),
    ("ureq", "HTTP I/O"),
    ("nix", "OS calls"),
    ("signal-hook*", "process signals"),
    ("ctrlc", "process signals"),
    ("tempfile", "file system"),
    ("memmap2", "file system"),
    ("walkdir", "file system"),
    ("notify", "file system"),
    ("rayon*", "thread pool"),
    ("threadpool", "thread pool"),
    ("quanta", "clock"),
    ("coarsetime", "clock"),
];

/// The crates the check covers.
pub const RULES: &[CrateRule] = &[
    CrateRule {
        dir: "crates/mqtt-core",
        banned_crates: SANS_IO_BANNED_CRATES,
        sans_io_source: true,
        planned: false,
    },
    // The QUIC glue is sans-IO like the core: quinn-proto and rustls are
    // state machines; sockets and clocks stay in the runtimes and the sim.
    CrateRule {
        dir: "crates/mqtt-quic",
        banned_crates: QUIC_GLUE_BANNED_CRATES,
        sans_io_source: true,
        planned: true,
    },
    CrateRule {
        dir: "crates/rt-std",
        banned_crates: STD_RUNTIME_BANNED_CRATES,
        sans_io_source: false,
        planned: true,
    },
];

/// `cargo xtask arch`: check every rule, print the violations, fail if any.
pub fn run() -> Result<()> {
    let root = util::repo_root();
    let mut violations = Vec::new();
    let mut files = 0;
    let mut checked = 0;
    for rule in RULES {
        let crate_dir = root.join(rule.dir);
        let manifest_path = crate_dir.join("Cargo.toml");
        if rule.planned && !manifest_path.exists() {
            println!(
                "arch: {} does not exist yet; its rule waits for it",
                rule.dir
            );
            continue;
        }
        let manifest = std::fs::read_to_string(&manifest_path)
            .map_err(|e| err!("cannot read {}: {e}", manifest_path.display()))?;
        let package = package_name(&manifest)
            .ok_or_else(|| err!("{}: no [package] name", manifest_path.display()))?;
        let tree = cargo_tree(&package)?;
        checked += 1;
        violations.extend(check_dependencies(
            &util::rel(&manifest_path),
            &manifest,
            &tree,
            rule.banned_crates,
        ));
        if rule.sans_io_source {
            let (found, scanned) = check_sources(&crate_dir)?;
            violations.extend(found);
            files += scanned;
        }
    }
    if violations.is_empty() {
        println!(
            "arch: ok ({checked} crate(s): dependency graphs and {files} source file(s) checked)"
        );
        return Ok(());
    }
    for v in &violations {
        println!("{v}");
    }
    Err(err!(
        "architecture check failed: {} violation(s); mqtt-core is sans-IO (see docs/ARCHITECTURE.md)",
        violations.len()
    ))
}

/// The normal-dependency tree of `package`, one `<depth><name> v<version>...`
/// line per node, over all features and targets so an optional or
/// platform-specific dependency cannot hide.
fn cargo_tree(package: &str) -> Result<String> {
    util::output(util::cargo().args([
        "tree",
        "--quiet",
        "-p",
        package,
        "-e",
        "normal",
        "--all-features",
        "--target",
        "all",
        "--prefix",
        "depth",
        "--format",
        "{p}",
    ]))
}

// ---------------------------------------------------------------------------
// Dependencies

/// `name` in the `[package]` table.
pub fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(|l| strip_toml_comment(l).trim()) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "name" {
                    return Some(value.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    None
}

/// A dependency declared in a manifest: the package it names (after any
/// `package = "..."` rename) and the 1-based line of its declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredDep {
    pub package: String,
    pub line: usize,
}

/// Why `name` is banned, if it is.
pub fn banned_reason(name: &str, banned: &[(&'static str, &'static str)]) -> Option<&'static str> {
    banned.iter().find_map(|&(pattern, why)| {
        let hit = match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        };
        hit.then_some(why)
    })
}

/// The normal dependencies of a Cargo.toml: `[dependencies]`,
/// `[target.<cfg>.dependencies]`, and their `[dependencies.<name>]` forms.
/// Dev- and build-dependencies are not part of the shipped crate.
/// A small line-based reader of the TOML subset manifests use.
pub fn parse_dependencies(manifest: &str) -> Vec<DeclaredDep> {
    #[derive(PartialEq)]
    enum Section {
        Other,
        Table,
        /// `[dependencies.<key>]`: one dependency whose `package` may follow.
        Single(usize),
    }
    let mut deps: Vec<DeclaredDep> = Vec::new();
    let mut section = Section::Other;
    for (idx, raw) in manifest.lines().enumerate() {
        let line = strip_toml_comment(raw).trim();
        if line.starts_with('[') {
            section = Section::Other;
            if line.starts_with("[[") {
                continue;
            }
            let header = line.trim_start_matches('[').trim_end_matches(']').trim();
            if header == "dependencies"
                || (header.starts_with("target.") && header.ends_with(".dependencies"))
            {
                section = Section::Table;
            } else if let Some(key) = single_dep_header(header) {
                deps.push(DeclaredDep {
                    package: key,
                    line: idx + 1,
                });
                section = Section::Single(deps.len() - 1);
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        match section {
            Section::Other => {}
            Section::Table => {
                // `name = ...`, `name.workspace = true`, `"name" = ...`
                let name = key.split('.').next().unwrap_or(key).trim_matches('"');
                let package = package_rename(value).unwrap_or_else(|| name.to_owned());
                deps.push(DeclaredDep {
                    package,
                    line: idx + 1,
                });
            }
            Section::Single(i) => {
                if key == "package" {
                    deps[i].package = value.trim().trim_matches('"').to_owned();
                }
            }
        }
    }
    deps
}

fn single_dep_header(header: &str) -> Option<String> {
    let rest = if let Some(rest) = header.strip_prefix("dependencies.") {
        rest
    } else if header.starts_with("target.") {
        let at = header.rfind(".dependencies.")?;
        &header[at + ".dependencies.".len()..]
    } else {
        return None;
    };
    Some(rest.trim_matches('"').to_owned())
}

/// `{ package = "tokio", version = "1" }` -> `tokio`.
fn package_rename(value: &str) -> Option<String> {
    let mut rest = value;
    while let Some(at) = rest.find("package") {
        let before_ok = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident_char(c) && c != '-');
        let after = rest[at + "package".len()..].trim_start();
        if before_ok {
            if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start().strip_prefix('"')?;
                return Some(v[..v.find('"')?].to_owned());
            }
        }
        rest = &rest[at + "package".len()..];
    }
    None
}

fn strip_toml_comment(line: &str) -> &str {
    // A `#` inside a quoted string (a cfg expression, say) is not a comment.
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Crates that only exist for wasm32 in a browser (`getrandom`'s JS entropy
/// source pulls `js-sys`, which pulls futures for JS promises). `--target
/// all` shows them; what they pull in is never built on a host that runs a
/// broker, so the check does not follow them. They are not banned
/// themselves, so a direct use would still be seen in review.
const WASM_BROWSER_ONLY: &[&str] = &["js-sys", "wasm-bindgen", "wasm-bindgen-futures", "web-sys"];

/// Banned crates among the declared dependencies (at their line) and in the
/// `cargo tree --prefix depth` output (at the line of the direct dependency
/// that pulls them in). Each banned package is reported once.
pub fn check_dependencies(
    manifest_path: &str,
    manifest: &str,
    tree: &str,
    banned: &[(&'static str, &'static str)],
) -> Vec<Violation> {
    let declared = parse_dependencies(manifest);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for dep in &declared {
        if let Some(why) = banned_reason(&dep.package, banned) {
            if seen.insert(dep.package.clone()) {
                out.push(Violation {
                    path: manifest_path.to_owned(),
                    line: dep.line,
                    what: format!("depends on `{}` ({why})", dep.package),
                });
            }
        }
    }
    // The chain from the root to the current node: chain[d] is the last
    // package seen at depth d.
    let mut chain: Vec<String> = Vec::new();
    for line in tree.lines() {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let Ok(depth) = line[..digits].parse::<usize>() else {
            continue;
        };
        let Some(name) = line[digits..].split_whitespace().next() else {
            continue;
        };
        chain.truncate(depth);
        chain.push(name.to_owned());
        if depth == 0 {
            continue;
        }
        // Below a browser-only crate, nothing is ever built for a broker.
        if chain[..chain.len() - 1]
            .iter()
            .any(|c| WASM_BROWSER_ONLY.contains(&c.as_str()))
        {
            continue;
        }
        if let Some(why) = banned_reason(name, banned) {
            if !seen.insert(name.to_owned()) {
                continue;
            }
            let via = &chain[1];
            let line = declared
                .iter()
                .find(|d| &d.package == via)
                .map_or(1, |d| d.line);
            out.push(Violation {
                path: manifest_path.to_owned(),
                line,
                what: format!("depends on `{name}` ({why}) through {}", chain.join(" -> ")),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Source

/// Scan every `.rs` file under `<crate_dir>/src`; returns the violations and
/// the number of files scanned.
pub fn check_sources(crate_dir: &Path) -> Result<(Vec<Violation>, usize)> {
    let src = crate_dir.join("src");
    let files = util::files_with_ext(&src, "rs")?;
    let mut texts = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| err!("cannot read {}: {e}", path.display()))?;
        texts.push((path, text));
    }
    // First pass: out-of-line `#[cfg(test)] mod x;` declarations.
    let mut excluded: Vec<PathBuf> = Vec::new();
    for (path, text) in &texts {
        let code = strip_comments_and_literals(text);
        let (_, test_mods) = blank_test_items(&code);
        let dir = module_dir(path);
        for m in test_mods {
            excluded.push(dir.join(format!("{m}.rs")));
            excluded.push(dir.join(&m));
        }
    }
    let mut violations = Vec::new();
    let mut scanned = 0;
    for (path, text) in &texts {
        if excluded.iter().any(|ex| path.starts_with(ex)) {
            continue;
        }
        scanned += 1;
        violations.extend(check_source(&util::rel(path), text));
    }
    violations.sort();
    Ok((violations, scanned))
}

/// The directory holding the files of `path`'s child modules.
fn module_dir(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new("."));
    match path.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs" | "main.rs" | "mod.rs") => parent.to_path_buf(),
        _ => parent.join(path.file_stem().unwrap_or_default()),
    }
}

/// What a source violation is about; each is reported at most once per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Clock,
    Socket,
    File,
    Thread,
    Async,
    Process,
    Terminal,
}

impl Kind {
    fn describe(self, found: &str) -> String {
        match self {
            Kind::Clock => format!("reads the clock (`{found}`): take `now: Instant` as an input"),
            Kind::Socket => format!("opens a socket (`{found}`): sockets belong to the runtime"),
            Kind::File => format!("touches the file system (`{found}`)"),
            Kind::Thread => format!("uses threads (`{found}`)"),
            Kind::Async => format!("uses async (`{found}`): the core is synchronous"),
            Kind::Process => format!("touches the process (`{found}`)"),
            Kind::Terminal => {
                format!("prints to the terminal (`{found}`): report through events or metrics")
            }
        }
    }
}

/// Patterns matched in code (after comments, literals and test items are
/// blanked and whitespace around `::` and `.` is removed), at identifier
/// boundaries. `std::net` is handled separately (address types are allowed).
const CODE_PATTERNS: &[(&str, Kind)] = &[
    ("Instant::now", Kind::Clock),
    ("SystemTime::now", Kind::Clock),
    // `Instant::elapsed()` and `SystemTime::elapsed()` read the clock; a
    // method taking `now` as an argument does not match.
    (".elapsed()", Kind::Clock),
    ("TcpStream", Kind::Socket),
    ("TcpListener", Kind::Socket),
    ("UdpSocket", Kind::Socket),
    ("ToSocketAddrs", Kind::Socket),
    ("std::fs", Kind::File),
    ("File::", Kind::File),
    ("OpenOptions", Kind::File),
    ("std::thread", Kind::Thread),
    ("thread::spawn", Kind::Thread),
    ("thread::sleep", Kind::Thread),
    ("async", Kind::Async),
    (".await", Kind::Async),
    ("std::process", Kind::Process),
    ("std::env", Kind::Process),
    ("println!", Kind::Terminal),
    ("print!", Kind::Terminal),
    ("eprintln!", Kind::Terminal),
    ("eprint!", Kind::Terminal),
    ("dbg!", Kind::Terminal),
    ("io::stdin", Kind::Terminal),
    ("io::stdout", Kind::Terminal),
    ("io::stderr", Kind::Terminal),
];

/// Path prefixes checked on every expanded `use` path (so grouped imports
/// such as `use std::{fs, thread};` are caught too).
const USE_PATTERNS: &[(&str, Kind)] = &[
    ("std::fs", Kind::File),
    ("std::thread", Kind::Thread),
    ("std::process", Kind::Process),
    ("std::env", Kind::Process),
    ("std::io::stdin", Kind::Terminal),
    ("std::io::stdout", Kind::Terminal),
    ("std::io::stderr", Kind::Terminal),
];

/// `std::net` items that are plain address types (re-exports of `core::net`).
const NET_ADDRESS_TYPES: &[&str] = &[
    "IpAddr",
    "Ipv4Addr",
    "Ipv6Addr",
    "SocketAddr",
    "SocketAddrV4",
    "SocketAddrV6",
    "AddrParseError",
    "Ipv6MulticastScope",
];

/// The violations in one source file.
pub fn check_source(path: &str, text: &str) -> Vec<Violation> {
    let stripped = strip_comments_and_literals(text);
    if is_test_only_file(&stripped) {
        return Vec::new();
    }
    let (code, _) = blank_test_items(&stripped);
    let mut found: Vec<(usize, Kind, String)> = Vec::new();

    for (idx, line) in code.lines().enumerate() {
        let compact = compact(line);
        for &(pattern, kind) in CODE_PATTERNS {
            if !find_word(&compact, pattern).is_empty() {
                found.push((idx + 1, kind, pattern.to_owned()));
            }
        }
        for at in find_word(&compact, "std::net") {
            let rest = &compact[at + "std::net".len()..];
            if rest.starts_with("::{") {
                continue; // a grouped import: checked path by path below
            }
            let item: String = rest
                .strip_prefix("::")
                .unwrap_or("")
                .chars()
                .take_while(|&c| is_ident_char(c))
                .collect();
            if !NET_ADDRESS_TYPES.contains(&item.as_str()) {
                let shown = if item.is_empty() {
                    "std::net".to_owned()
                } else {
                    format!("std::net::{item}")
                };
                found.push((idx + 1, Kind::Socket, shown));
            }
        }
    }

    for (line, path_text) in use_paths(&code) {
        for &(pattern, kind) in USE_PATTERNS {
            if path_text == pattern || path_text.starts_with(&format!("{pattern}::")) {
                found.push((line, kind, path_text.clone()));
            }
        }
        if let Some(rest) = path_text
            .strip_prefix("std::net")
            .filter(|r| r.is_empty() || r.starts_with("::"))
        {
            let item = rest
                .trim_start_matches(':')
                .split("::")
                .next()
                .unwrap_or("");
            if !NET_ADDRESS_TYPES.contains(&item) {
                found.push((line, Kind::Socket, path_text.clone()));
            }
        }
    }

    // One report per line and kind: the first pattern found names it.
    found.sort_by_key(|(line, kind, _)| (*line, *kind));
    found.dedup_by_key(|(line, kind, _)| (*line, *kind));
    found
        .into_iter()
        .map(|(line, kind, what)| Violation {
            path: path.to_owned(),
            line,
            what: kind.describe(&what),
        })
        .collect()
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Byte offsets where `pattern` occurs in `hay` at identifier boundaries:
/// `async` does not match `is_async`, `File::` does not match `MyFile::`.
fn find_word(hay: &str, pattern: &str) -> Vec<usize> {
    let starts_ident = pattern.chars().next().is_some_and(is_ident_char);
    let ends_ident = pattern.chars().next_back().is_some_and(is_ident_char);
    hay.match_indices(pattern)
        .filter(|&(at, _)| {
            let before = hay[..at].chars().next_back();
            let after = hay[at + pattern.len()..].chars().next();
            // `::std::fs` is a path; `a.std` is a field, still a boundary.
            let before_ok = !starts_ident || before.is_none_or(|c| !is_ident_char(c));
            let after_ok = !ends_ident || after.is_none_or(|c| !is_ident_char(c));
            before_ok && after_ok
        })
        .map(|(at, _)| at)
        .collect()
}

/// Remove whitespace next to `::` and before `.`, so `Instant :: now` and
/// `x\n    .await` style spacing still match (within a line).
fn compact(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    for (i, &c) in chars.iter().enumerate() {
        if c.is_whitespace() {
            let prev = out.chars().next_back();
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if prev == Some(':') || matches!(next, Some(':') | Some('.')) || out.is_empty() {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Replace comments (line, block, nested, doc) and the contents of string,
/// byte-string, raw-string and char literals with spaces, keeping newlines
/// so line numbers stay right. Lifetimes (`'a`) are left alone.
pub fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < n {
        let ch = c[i];
        let prev_ident = i > 0 && is_ident_char(c[i - 1]);
        if ch == '/' && at(i + 1) == '/' {
            while i < n && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < n {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            continue;
        }
        // Raw strings: r"..", r#".."#, br"..", cr#".."#.
        if !prev_ident && (ch == 'r' || (matches!(ch, 'b' | 'c') && at(i + 1) == 'r')) {
            let mut j = if ch == 'r' { i + 1 } else { i + 2 };
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) == '"' {
                out.extend(&c[i..=j]);
                i = j + 1;
                while i < n {
                    if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                        out.push('"');
                        out.extend(std::iter::repeat_n('#', hashes));
                        i += 1 + hashes;
                        break;
                    }
                    out.push(blank(c[i]));
                    i += 1;
                }
                continue;
            }
        }
        if ch == '"' {
            out.push('"');
            i += 1;
            while i < n {
                match c[i] {
                    '\\' => {
                        out.push(' ');
                        if i + 1 < n {
                            out.push(blank(c[i + 1]));
                        }
                        i += 2;
                    }
                    '"' => {
                        out.push('"');
                        i += 1;
                        break;
                    }
                    other => {
                        out.push(blank(other));
                        i += 1;
                    }
                }
            }
            continue;
        }
        if ch == '\'' {
            // '\n', '\'', '\u{1F600}': an escape runs to the next quote.
            if at(i + 1) == '\\' {
                out.push('\'');
                let mut j = i + 3; // skip the backslash and the escaped char
                while j < n && c[j] != '\'' && c[j] != '\n' {
                    j += 1;
                }
                for _ in i + 1..j {
                    out.push(' ');
                }
                out.push('\'');
                i = j + 1;
                continue;
            }
            // 'x' (including '"'); otherwise a lifetime or label.
            if at(i + 2) == '\'' && at(i + 1) != '\n' {
                out.push_str("' '");
                i += 3;
                continue;
            }
        }
        out.push(ch);
        i += 1;
    }
    out
}

/// True when the file opens with `#![cfg(test)]`.
fn is_test_only_file(code: &str) -> bool {
    let mut rest = code.trim_start();
    while let Some(after) = rest.strip_prefix("#!") {
        let Some(end) = after.find(']') else {
            return false;
        };
        let attr: String = after[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if attr == "[cfg(test)" {
            return true;
        }
        rest = after[end + 1..].trim_start();
    }
    false
}

/// Whether the inside of `#[...]` marks a test-only item (see the module
/// docs for the exact heuristic).
fn is_test_attr(inner: &str) -> bool {
    let attr: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    if attr == "test" || attr == "cfg(test)" {
        return true;
    }
    if let Some(args) = attr
        .strip_prefix("cfg(all(")
        .and_then(|a| a.strip_suffix("))"))
    {
        return split_top_level(args, ',').any(|a| a == "test");
    }
    false
}

/// Split at `sep` outside brackets.
fn split_top_level(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

/// Blank every test-only item (see the module docs) in stripped code; also
/// return the names of out-of-line test modules (`#[cfg(test)] mod x;`).
fn blank_test_items(code: &str) -> (String, Vec<String>) {
    let mut bytes = code.as_bytes().to_vec();
    let mut test_mods = Vec::new();
    let mut search = 0;
    while let Some(rel_at) = code[search..].find("#[") {
        let start = search + rel_at;
        let Some(attr_end) = matching(code, start + 1) else {
            break;
        };
        search = attr_end + 1;
        if !is_test_attr(&code[start + 2..attr_end]) {
            continue;
        }
        // Skip further attributes, then find the end of the item.
        let mut i = attr_end + 1;
        loop {
            let rest = &code[i..];
            let trimmed = rest.trim_start();
            i += rest.len() - trimmed.len();
            if trimmed.starts_with("#[") {
                match matching(code, i + 1) {
                    Some(e) => i = e + 1,
                    None => break,
                }
            } else {
                break;
            }
        }
        let item_start = i;
        let mut depth = 0i32;
        let mut end = code.len();
        for (off, c) in code[item_start..].char_indices() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                ';' if depth == 0 => {
                    end = item_start + off + 1;
                    let words: Vec<&str> = code[item_start..end - 1].split_whitespace().collect();
                    if let [.., "mod", name] = words.as_slice() {
                        test_mods.push((*name).to_owned());
                    }
                    break;
                }
                '{' if depth == 0 => {
                    end = matching(code, item_start + off).map_or(code.len(), |e| e + 1);
                    break;
                }
                _ => {}
            }
        }
        for b in &mut bytes[start..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        search = end;
    }
    // Regions start and end on ASCII characters, so blanking every byte in
    // between (multi-byte characters included) leaves valid UTF-8.
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    (text, test_mods)
}

/// The index of the bracket closing the one at `open` (`(`, `[` or `{`).
fn matching(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (off, c) in code[open..].char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + off);
                }
            }
            _ => {}
        }
    }
    None
}

/// Every path a `use` declaration imports, expanded (`use std::{fs, net::X}`
/// gives `std::fs` and `std::net::X`), with the line of its `use`.
fn use_paths(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for at in find_word(code, "use") {
        let after = &code[at + 3..];
        if !after.starts_with(char::is_whitespace) {
            continue;
        }
        let Some(end) = after.find(';') else {
            continue;
        };
        let line = code[..at].matches('\n').count() + 1;
        let mut paths = Vec::new();
        expand_use("", &after[..end], &mut paths);
        out.extend(paths.into_iter().map(|p| (line, p)));
    }
    out
}

fn expand_use(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: String = tree[..open].split_whitespace().collect();
        let Some(close) = tree.rfind('}') else {
            return;
        };
        for part in split_top_level(&tree[open + 1..close], ',') {
            if !part.trim().is_empty() {
                expand_use(&format!("{prefix}{head}"), part, out);
            }
        }
        return;
    }
    let mut path = String::new();
    for token in tree.split_whitespace() {
        if token == "as" {
            break;
        }
        path.push_str(token);
    }
    let full = format!("{prefix}{path}");
    let full = full.trim_start_matches("::");
    let full = full.strip_suffix("::self").unwrap_or(full);
    out.push(full.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(violations: &[Violation]) -> Vec<usize> {
        violations.iter().map(|v| v.line).collect()
    }

    #[test]
    fn strips_comments_strings_and_chars_but_keeps_lines() {
        let src = "let a = \"Instant::now() // not code\"; // Instant::now\n\
                   /* std::fs /* nested */ TcpStream */ let b = 'x';\n\
                   let c = r#\"async \"fn\"#; let d = '\\''; let e = '\"';\n\
                   fn f<'a>(x: &'a str) -> char { 'y' }\n\
                   /// doc: thread::spawn\n\
                   //! inner doc: std::env\n\
                   let g = b\"std::process\"; let h = br\"x\\\";\n";
        let out = strip_comments_and_literals(src);
        assert_eq!(out.lines().count(), src.lines().count());
        for banned in [
            "Instant",
            "std::fs",
            "TcpStream",
            "async",
            "thread",
            "std::env",
            "process",
            "nested",
        ] {
            assert!(!out.contains(banned), "{banned} left in:\n{out}");
        }
        assert!(out.contains("fn f<'a>(x: &'a str) -> char"), "{out}");
        assert!(out.contains("let h = br\""), "{out}");
    }

    #[test]
    fn reports_each_kind_with_path_and_line() {
        let src = "\
use std::time::{Duration, Instant};
pub fn tick(now: Instant) -> Duration { now - now }
fn a() { let _ = Instant::now(); }
fn b() { let _ = std::time::SystemTime::now(); }
fn c() { let _ = std::net::TcpStream::connect(\"x\"); }
fn d() { let _ = std::fs::read(\"f\"); }
fn e() { let _ = File::open(\"f\"); }
fn f() { std::thread::spawn(|| ()); }
async fn g() {}
fn h() { let _ = async move { x.await }; }
fn i() { std::process::exit(1); }
fn j() { let _ = std::env::var(\"X\"); }
fn k(s: UdpSocket) {}
fn l() { println!(\"hi\"); }
fn m(t: Instant) -> Duration { t.elapsed() }
";
        let v = check_source("crates/mqtt-core/src/x.rs", src);
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines_of(&v),
            vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            "{shown:#?}"
        );
        assert_eq!(
            shown[0],
            "crates/mqtt-core/src/x.rs:3: reads the clock (`Instant::now`): take `now: Instant` as an input"
        );
        assert!(shown[2].contains("opens a socket"), "{}", shown[2]);
        assert!(shown[3].contains("file system"), "{}", shown[3]);
        assert!(shown[6].contains("async"), "{}", shown[6]);
        assert!(shown[8].contains("std::process"), "{}", shown[8]);
        assert!(shown[9].contains("std::env"), "{}", shown[9]);
    }

    #[test]
    fn allows_address_types_and_lookalikes() {
        let src = "\
use std::net::{IpAddr, SocketAddr};
use std::net::Ipv4Addr as V4;
use core::net::SocketAddrV6;
pub struct ProfileFile; impl ProfileFile { fn new() {} }
fn a() { ProfileFile::new(); let is_async = true; let s = \"std::fs\"; }
fn b(addr: std::net::SocketAddr, now: Instant) { timer.elapsed(now); }
pub fn handle_timeout(&mut self, now: Instant) {}
";
        let v = check_source("x.rs", src);
        assert!(v.is_empty(), "{v:#?}");
    }

    #[test]
    fn catches_grouped_and_nested_imports() {
        let src = "\
use std::{fs, io};
use std::net::{SocketAddr, UdpSocket};
use std::{net::{IpAddr, TcpListener}, thread};
use std::net;
use std::{env as e, process::Command};
";
        let v = check_source("x.rs", src);
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(lines_of(&v), vec![1, 2, 3, 3, 4, 5], "{shown:#?}");
        assert!(shown[0].contains("std::fs"), "{}", shown[0]);
        assert!(shown[2].contains("TcpListener"), "{}", shown[2]);
        assert!(shown[3].contains("std::thread"), "{}", shown[3]);
    }

    #[test]
    fn skips_test_items_but_not_code_after_them() {
        let src = "\
pub fn ok() {}
#[cfg(test)]
mod tests {
    use std::time::Instant;
    #[test]
    fn t() { let _ = Instant::now(); std::thread::spawn(|| {}); }
}
#[test]
fn lone_test() { let _ = std::fs::read(\"x\"); }
#[cfg(all(test, feature = \"x\"))]
fn helper() { let _ = std::env::args(); }
#[cfg(not(test))]
fn prod() { let _ = Instant::now(); }
fn after() { let _ = SystemTime::now(); }
";
        let v = check_source("x.rs", src);
        assert_eq!(lines_of(&v), vec![13, 14], "{v:#?}");
    }

    #[test]
    fn test_item_ending_in_semicolon_and_brackets() {
        let src = "\
#[cfg(test)]
const X: [u8; 2] = [1, 2];
#[cfg(test)]
use std::fs;
fn f() { let _ = std::fs::read(\"x\"); }
";
        let v = check_source("x.rs", src);
        assert_eq!(lines_of(&v), vec![5], "{v:#?}");
    }

    #[test]
    fn whole_file_cfg_test_is_skipped() {
        let src = "//! helpers\n#![cfg(test)]\nfn f() { let _ = Instant::now(); }\n";
        assert!(check_source("x.rs", src).is_empty());
    }

    #[test]
    fn out_of_line_test_modules_are_skipped() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-arch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let write = |rel: &str, text: &str| -> Result<()> {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap_or(&dir)).map_err(|e| err!("{e}"))?;
            std::fs::write(&path, text).map_err(|e| err!("{e}"))
        };
        write("src/lib.rs", "pub mod codec;\n#[cfg(test)]\nmod tests;\n")?;
        write("src/tests.rs", "fn t() { let _ = std::fs::read(\"x\"); }\n")?;
        write(
            "src/codec/mod.rs",
            "#[cfg(test)] mod vectors;\nmod decode;\n",
        )?;
        write(
            "src/codec/vectors/mod.rs",
            "fn t() { let _ = Instant::now(); }\n",
        )?;
        write(
            "src/codec/decode.rs",
            "\n\nfn f() { std::thread::sleep(d); }\n",
        )?;
        let (v, scanned) = check_sources(&dir)?;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(scanned, 3);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(v[0].path.ends_with("src/codec/decode.rs"), "{v:#?}");
        assert_eq!(v[0].line, 3);
        Ok(())
    }

    const MANIFEST: &str = r#"[package]
name = "mqtt-core"

[dependencies]
bytes.workspace = true
rt = { package = "tokio", version = "1" }
futures-util = "0.3"
thiserror = { workspace = true }

[dependencies.quinn-proto]
version = "0.11"

[target.'cfg(unix)'.dependencies]
mio = "1"   # "a comment"

[dev-dependencies]
tokio = "1"
tempfile = "3"

[build-dependencies]
async-std = "1"
"#;

    #[test]
    fn parses_declared_dependencies() {
        let deps = parse_dependencies(MANIFEST);
        let names: Vec<(&str, usize)> = deps.iter().map(|d| (d.package.as_str(), d.line)).collect();
        assert_eq!(
            names,
            vec![
                ("bytes", 5),
                ("tokio", 6),
                ("futures-util", 7),
                ("thiserror", 8),
                ("quinn-proto", 10),
                ("mio", 14)
            ]
        );
    }

    #[test]
    fn flags_banned_direct_and_transitive_dependencies() {
        let tree = "\
0mqtt-core v0.1.0 (/work/main/crates/mqtt-core)
1bytes v1.10.1
1thiserror v2.0.12
2thiserror-impl v2.0.12 (proc-macro)
1harmless v1.0.0
2socket2 v0.5.8
3libc v0.2.170
2rustls v0.23.0
1bytes v1.10.1 (*)
";
        let manifest = "[dependencies]\nbytes = \"1\"\nthiserror = \"2\"\nharmless = \"1\"\n";
        let v = check_dependencies(
            "crates/mqtt-core/Cargo.toml",
            manifest,
            tree,
            SANS_IO_BANNED_CRATES,
        );
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "crates/mqtt-core/Cargo.toml:4: depends on `socket2` (sockets) through mqtt-core -> harmless -> socket2",
                "crates/mqtt-core/Cargo.toml:4: depends on `rustls` (TLS, which the runtimes own) through mqtt-core -> harmless -> rustls",
            ]
        );

        let v = check_dependencies("Cargo.toml", MANIFEST, "", SANS_IO_BANNED_CRATES);
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines_of(&v),
            vec![6, 7, 10, 14],
            "dev- and build-dependencies are allowed: {shown:#?}"
        );
    }

    #[test]
    fn browser_only_subtrees_are_not_followed() {
        let tree = "0rt-std v0.1.0
1mqtt-quic v0.1.0
2getrandom v0.3.0
3js-sys v0.3.0
4futures-util v0.3.0
5futures-core v0.3.0
2futures-core v0.3.0
";
        let manifest = "[dependencies]\nmqtt-quic = \"1\"\n";
        let v = check_dependencies(
            "crates/rt-std/Cargo.toml",
            manifest,
            tree,
            STD_RUNTIME_BANNED_CRATES,
        );
        let shown: Vec<String> = v.iter().map(ToString::to_string).collect();
        // Only the futures-core reached outside js-sys counts.
        assert_eq!(
            shown,
            vec!["crates/rt-std/Cargo.toml:2: depends on `futures-core` (async) through rt-std -> mqtt-quic -> futures-core"]
        );
    }

    #[test]
    fn reads_the_package_name() {
        assert_eq!(package_name(MANIFEST).as_deref(), Some("mqtt-core"));
        assert_eq!(package_name("[lib]\nname = \"x\"\n"), None);
    }

    #[test]
    fn std_runtime_rule_bans_async_but_not_quinn_proto() {
        for name in [
            "tokio",
            "smol",
            "async-io",
            "futures-lite",
            "mio",
            "polling",
            "quinn",
        ] {
            assert!(
                banned_reason(name, STD_RUNTIME_BANNED_CRATES).is_some(),
                "{name}"
            );
        }
        for name in ["quinn-proto", "quinn-udp", "rustls", "socket2", "mqtt-core"] {
            assert!(
                banned_reason(name, STD_RUNTIME_BANNED_CRATES).is_none(),
                "{name}"
            );
        }
    }

    #[test]
    fn banned_names_and_prefixes() {
        for name in [
            "tokio",
            "tokio-util",
            "smol",
            "async-io",
            "async-std",
            "mio",
            "futures",
            "futures-lite",
            "quinn",
            "quinn-proto",
            "socket2",
            "rustls",
            "getrandom",
        ] {
            assert!(
                banned_reason(name, SANS_IO_BANNED_CRATES).is_some(),
                "{name}"
            );
        }
        for name in [
            "bytes",
            "bytestring",
            "thiserror",
            "rand_xoshiro",
            "rand_core",
            "smallvec",
            "smoltcp",
        ] {
            assert!(
                banned_reason(name, SANS_IO_BANNED_CRATES).is_none(),
                "{name}"
            );
        }
    }
}
