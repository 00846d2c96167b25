//! The real `sansmq` binary as a child process: started on a free loopback
//! port, its log captured for assertions, killed on drop.
//!
//! The port is chosen by the broker itself (`--port 0`) and read back from
//! its "listening" log line, so two tests can never race for a port.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a broker may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Log lines shared with the reader threads.
#[derive(Default)]
struct LogBuf {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl LogBuf {
    fn push(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
        self.grew.notify_all();
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The first line (from `from` on) that satisfies `pred`, waiting up to
    /// `timeout`.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let Ok(mut lines) = self.lines.lock() else {
            return None;
        };
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = match self.grew.wait_timeout(lines, left) {
                Ok((l, _)) => l,
                Err(_) => return None,
            };
        }
    }
}

/// A temporary directory removed on drop (no extra crate needed).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sansmq-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write `text` to `name` in this directory and return its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write a temporary file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which runtime drives the broker (`sansmq start --runtime ...`). The
/// end-to-end suites run one body under each (see
/// [`runtime_matrix!`](crate::runtime_matrix)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// rt-smol (async; the binary's default).
    Smol,
    /// rt-std (plain threads).
    Std,
}

impl Runtime {
    pub const ALL: [Runtime; 2] = [Runtime::Smol, Runtime::Std];

    /// The value of `--runtime`.
    pub fn arg(self) -> &'static str {
        match self {
            Runtime::Smol => "smol",
            Runtime::Std => "std",
        }
    }
}

/// A running `sansmq start`.
pub struct Sansmq {
    child: Child,
    /// The first listener's address.
    pub addr: SocketAddr,
    log: Arc<LogBuf>,
    _dir: TempDir,
}

fn spawn_line_reader(src: impl Read + Send + 'static, log: Arc<LogBuf>, echo: &'static str) {
    thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            // Shown by the test harness only when a test fails.
            eprintln!("[{echo}] {line}");
            log.push(line);
        }
    });
}

impl Sansmq {
    /// `sansmq start` with no config file, on a free port of 127.0.0.1.
    pub fn start_default(bin: &Path) -> Self {
        Self::start(bin, None, &[])
    }

    /// [`Self::start_default`] on the given runtime.
    pub fn start_default_on(runtime: Runtime, bin: &Path) -> Self {
        Self::start_on(runtime, bin, None, &[])
    }

    /// `sansmq start --port 0 [--config <file with config_toml>] <args>`
    /// on the default runtime (rt-smol); see [`Self::start_on`].
    pub fn start(bin: &Path, config_toml: Option<&str>, args: &[&str]) -> Self {
        Self::start_on(Runtime::Smol, bin, config_toml, args)
    }

    /// `sansmq start --runtime <runtime> --port 0 [--config <file with
    /// config_toml>] <args>`, logging at info (debug for the runtime
    /// crates) whatever RUST_LOG says. Returns once the broker logged its
    /// listening address and that port accepts.
    pub fn start_on(
        runtime: Runtime,
        bin: &Path,
        config_toml: Option<&str>,
        args: &[&str],
    ) -> Self {
        let dir = TempDir::new("broker");
        let mut cmd = Command::new(bin);
        cmd.arg("start")
            .arg("--runtime")
            .arg(runtime.arg())
            .arg("--port")
            .arg("0")
            .arg("--log-level")
            .arg("info,rt_smol=debug,rt_std=debug,rt_common=debug");
        if let Some(toml) = config_toml {
            cmd.arg("--config").arg(dir.file("sansmq.toml", toml));
        }
        cmd.args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let log = Arc::new(LogBuf::default());
        if let Some(out) = child.stdout.take() {
            spawn_line_reader(out, log.clone(), "sansmq stdout");
        }
        if let Some(err) = child.stderr.take() {
            spawn_line_reader(err, log.clone(), "sansmq");
        }
        let line = log.wait_for(START_TIMEOUT, |l| l.contains("listening"));
        let addr = line
            .as_deref()
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sansmq did not report a listening address within {START_TIMEOUT:?}; log:\n{}",
                log.snapshot().join("\n")
            );
        };
        // The log line is written after bind+listen, so this connects at once.
        if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sansmq logged {addr} but it does not accept: {e}");
        }
        Self {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.snapshot().join("\n")
    }

    /// Wait up to `timeout` for a log line containing every one of `needles`.
    pub fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.log
            .wait_for(timeout, |l| needles.iter().all(|n| l.contains(n)))
    }

    /// Like [`Self::wait_for_log`] but panics with the whole log when absent.
    pub fn expect_log(&self, needles: &[&str], timeout: Duration) -> String {
        self.wait_for_log(needles, timeout).unwrap_or_else(|| {
            panic!(
                "no log line containing {needles:?} within {timeout:?}; log:\n{}",
                self.log()
            )
        })
    }

    /// Send a signal by name ("TERM", "INT") with the `kill` utility.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Wait for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }
}

impl Drop for Sansmq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `child` for exit until `timeout` (bounded; no extra threads).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Run `bin args...` to completion (killed after `timeout`), capturing output.
pub fn run_with_timeout(bin: &Path, args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    // Readers on threads so a chatty child cannot block on a full pipe.
    let out = child.stdout.take().map(|mut s| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    let err = child.stderr.take().map(|mut s| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} did not finish within {timeout:?}",
                bin.display()
            );
        }
    };
    Output {
        status,
        stdout: out.and_then(|h| h.join().ok()).unwrap_or_default(),
        stderr: err.and_then(|h| h.join().ok()).unwrap_or_default(),
    }
}

/// The path of an external tool, or a loud failure: tests never skip
/// because a tool is missing.
pub fn require_tool(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let mut candidates: Vec<PathBuf> = std::env::split_paths(&dirs).collect();
    // The broker itself installs to sbin, which a non-root PATH may lack.
    candidates.push(PathBuf::from("/usr/sbin"));
    candidates.push(PathBuf::from("/usr/local/sbin"));
    for dir in candidates {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed: this test needs Mosquitto's tools (Debian packages \
         `mosquitto-clients` and `mosquitto`; `cargo xtask ci` installs them). Not skipping."
    );
}
