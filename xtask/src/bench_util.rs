//! What `cargo xtask bench broker` and `cargo xtask bench quic` share:
//! building sansmq, free ports, broker processes killed on drop, waiting
//! for them to come up, and reading `sansmq bench --json` summaries.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::util::{self, err, Result};

/// The directory cargo builds into (CARGO_TARGET_DIR when set).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                util::repo_root().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| util::repo_root().join("target"))
}

/// `cargo build --release` of the sansmq binary; `who` names the command
/// in the progress line (`bench broker`).
pub(crate) fn build_sansmq(who: &str) -> Result<PathBuf> {
    println!("{who}: building sansmq (release)");
    util::run(util::cargo().args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "rt-smol",
        "--bin",
        "sansmq",
    ]))?;
    let bin = target_dir().join("release/sansmq");
    if !bin.is_file() {
        return Err(err!("{} is missing after the build", bin.display()));
    }
    Ok(bin)
}

/// The value `v` of option `flag` as a `T` that `ok` accepts; else an
/// error saying what was `expected`.
pub(crate) fn parse_value<T: FromStr>(
    flag: &str,
    v: &str,
    ok: impl Fn(&T) -> bool,
    expected: &str,
) -> Result<T> {
    v.parse::<T>()
        .ok()
        .filter(|x| ok(x))
        .ok_or_else(|| err!("{flag}: expected {expected}, got `{v}`"))
}

/// A free TCP port on loopback (free now; another process may take it).
pub(crate) fn free_tcp_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| err!("cannot find a free TCP port: {e}"))
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `log` created, as a process's stdout and stderr.
pub(crate) fn log_files(log: &Path) -> Result<(File, File)> {
    let out = File::create(log).map_err(|e| err!("cannot create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| err!("{e}"))?;
    Ok((out, err))
}

/// A child killed (and reaped) when dropped, unless taken.
pub(crate) struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub(crate) fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub(crate) fn take(mut self) -> Result<Child> {
        self.0.take().ok_or_else(|| err!("child already taken"))
    }

    /// The child (`None` once taken, which `take` prevents by consuming).
    pub(crate) fn child(&mut self) -> Result<&mut Child> {
        self.0.as_mut().ok_or_else(|| err!("child already taken"))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How [`wait_ready`] ended.
pub(crate) enum Ready {
    Yes,
    Exited(ExitStatus),
    TimedOut,
}

/// Poll every 20 ms until `ready()`, `child` exits, or `limit` passes.
pub(crate) fn wait_ready(
    child: &mut Child,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Ready {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return Ready::Yes;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Ready::Exited(status);
        }
        if Instant::now() >= deadline {
            return Ready::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for `child` at most `limit`, killing it when it takes longer; its
/// output, and whether it was killed.
pub(crate) fn wait_output(mut child: Child, limit: Duration) -> Result<(Output, bool)> {
    let deadline = Instant::now() + limit;
    let mut hung = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                hung = true;
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(err!("waiting for a bench process: {e}")),
        }
    }
    // The summary is one short line, far below the pipe buffer, so reading
    // after the exit cannot deadlock.
    let out = child
        .wait_with_output()
        .map_err(|e| err!("reading a bench process's output: {e}"))?;
    Ok((out, hung))
}

/// The numbers of the bench's one-line JSON summary (its last line that
/// starts with `{`); `who` names the process in errors.
pub(crate) fn summary_json(out: &Output, who: &str) -> Result<BTreeMap<String, f64>> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(err!(
            "{who} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| err!("{who} printed no JSON summary: {stdout}"))?;
    parse_flat_json(json)
}

/// `{"k":1.5,"mode":"x",...}`: the bench's flat summary; numbers only are
/// kept (the summary has no nested values and no commas inside strings).
pub(crate) fn parse_flat_json(line: &str) -> Result<BTreeMap<String, f64>> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .ok_or_else(|| err!("not a JSON object: {line}"))?;
    let mut map = BTreeMap::new();
    for pair in body.split(',') {
        let (k, v) = pair
            .split_once(':')
            .ok_or_else(|| err!("malformed JSON pair `{pair}`"))?;
        let k = k.trim().trim_matches('"');
        if let Ok(v) = v.trim().parse::<f64>() {
            map.insert(k.to_owned(), v);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_json_numbers_parse() {
        let m = parse_flat_json(r#"{"mode":"pubsub","received":12,"recv_rate":3.500}"#)
            .expect("parses");
        assert_eq!(m.get("received"), Some(&12.0));
        assert_eq!(m.get("recv_rate"), Some(&3.5));
        assert!(!m.contains_key("mode"));
    }

    #[test]
    fn option_values_parse_or_say_what_was_expected() {
        assert_eq!(
            parse_value("--runs", "3", |n: &usize| *n >= 1, "n").ok(),
            Some(3)
        );
        let e = parse_value("--runs", "0", |n: &usize| *n >= 1, "a positive integer");
        assert_eq!(
            e.map_err(|e| e.to_string()),
            Err("--runs: expected a positive integer, got `0`".to_owned())
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
