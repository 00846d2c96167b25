//! What a bench run measured: shared counters while it runs, and the final
//! summary (human-readable or one JSON line for `cargo xtask bench broker`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, 1 µs to 1 hour, 3 significant
/// digits (0.1 % error): enough for loopback and for a stalled broker.
pub(super) const LATENCY_MAX_US: u64 = 3_600_000_000;

pub(super) fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1,
    // high >= 2 * low, sigfig <= 5), so this cannot fail.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Wall-clock nanoseconds since the Unix epoch: the timestamp in the first 8
/// bytes of every payload. Wall clock, not `Instant`, so a `bench sub` in
/// another process on the same machine can compute latencies too.
pub(super) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// CPU time (user + system) this process used so far: CLOCK_PROCESS_CPUTIME_ID,
/// the same total as getrusage(RUSAGE_SELF) with nanosecond resolution.
pub(super) fn process_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Raise the soft RLIMIT_NOFILE to the hard limit when `needed` descriptors
/// would not fit; returns the soft limit in force.
pub(super) fn raise_nofile(needed: u64) -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|cur| cur < needed) {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current
}

/// Counters every connection task adds to (in batches, not per message).
#[derive(Debug)]
pub(super) struct Shared {
    /// Reference point of the `*_ns` fields.
    pub base: Instant,
    /// When publishing started (all clients connected and subscribed).
    pub t0: OnceLock<Instant>,
    pub connected: AtomicU64,
    pub connect_errors: AtomicU64,
    pub subscribed: AtomicU64,
    pub subscribe_errors: AtomicU64,
    /// Subscribers that never got a CONNACK (they will not subscribe).
    pub subs_not_connected: AtomicU64,
    /// Connections that ended without our DISCONNECT after CONNACK.
    pub conn_lost: AtomicU64,
    /// Publishes handed to the socket.
    pub sent: AtomicU64,
    /// QoS 1/2 publishes acknowledged with success.
    pub acked: AtomicU64,
    /// Publishes refused by the client or the server.
    pub publish_errors: AtomicU64,
    pub received: AtomicU64,
    /// Tasks that ended (publishers, and all tasks).
    pub pubs_done: AtomicU64,
    pub tasks_done: AtomicU64,
    /// Nanoseconds after `base`: first connect attempt (min), last CONNACK
    /// (max), last publish handed over (max), last message received (max).
    pub first_attempt_ns: AtomicU64,
    pub last_connack_ns: AtomicU64,
    pub last_sent_ns: AtomicU64,
    pub last_recv_ns: AtomicU64,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            t0: OnceLock::new(),
            connected: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
            subscribe_errors: AtomicU64::new(0),
            subs_not_connected: AtomicU64::new(0),
            conn_lost: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            pubs_done: AtomicU64::new(0),
            tasks_done: AtomicU64::new(0),
            first_attempt_ns: AtomicU64::new(u64::MAX),
            last_connack_ns: AtomicU64::new(0),
            last_sent_ns: AtomicU64::new(0),
            last_recv_ns: AtomicU64::new(0),
        }
    }

    pub fn since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Per-task counts, added to [`Shared`] once per wake-up.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub sent: u64,
    pub acked: u64,
    pub publish_errors: u64,
    pub received: u64,
    /// Counted in `sent` but never left the client's queue (a publisher
    /// that gave up waiting): taken back from the shared count.
    pub unsent: u64,
}

impl Pending {
    pub fn flush(&mut self, shared: &Shared, now: Instant) {
        let add = |c: &AtomicU64, n: &mut u64| {
            if *n > 0 {
                c.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        };
        if self.sent > 0 {
            shared
                .last_sent_ns
                .fetch_max(shared.since_base(now), Ordering::Relaxed);
        }
        if self.received > 0 {
            shared
                .last_recv_ns
                .fetch_max(shared.since_base(now), Ordering::Relaxed);
        }
        add(&shared.sent, &mut self.sent);
        add(&shared.acked, &mut self.acked);
        add(&shared.publish_errors, &mut self.publish_errors);
        add(&shared.received, &mut self.received);
        if self.unsent > 0 {
            shared.sent.fetch_sub(self.unsent, Ordering::Relaxed);
            self.unsent = 0;
        }
    }
}

/// The final result of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub mode: &'static str,
    pub pub_clients: u64,
    pub sub_clients: u64,
    pub idle_clients: u64,
    pub qos: u8,
    pub size: u64,
    pub connected: u64,
    pub connect_errors: u64,
    /// First connect attempt to last CONNACK.
    pub connect_s: f64,
    pub connect_rate: f64,
    pub subscribe_errors: u64,
    pub conn_lost: u64,
    pub sent: u64,
    pub acked: u64,
    pub publish_errors: u64,
    pub received: u64,
    /// Start of publishing to the last publish handed over.
    pub send_s: f64,
    /// Start of publishing (or of listening) to the last message received.
    pub recv_s: f64,
    pub sent_rate: f64,
    pub recv_rate: f64,
    pub lat_count: u64,
    pub lat_p50_us: u64,
    pub lat_p90_us: u64,
    pub lat_p99_us: u64,
    pub lat_max_us: u64,
    pub lat_mean_us: f64,
    /// This process's CPU time (user + system) over the whole run.
    pub cpu_s: f64,
    pub wall_s: f64,
}

impl Summary {
    pub(super) fn set_latency(&mut self, h: &Histogram<u64>) {
        self.lat_count = h.len();
        if h.is_empty() {
            return;
        }
        self.lat_p50_us = h.value_at_quantile(0.50);
        self.lat_p90_us = h.value_at_quantile(0.90);
        self.lat_p99_us = h.value_at_quantile(0.99);
        self.lat_max_us = h.max();
        self.lat_mean_us = h.mean();
    }

    /// One line of flat JSON: numbers, and `mode` as the only string.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(800);
        let _ = write!(s, "{{\"mode\":\"{}\"", self.mode);
        let ints: [(&str, u64); 19] = [
            ("pub_clients", self.pub_clients),
            ("sub_clients", self.sub_clients),
            ("idle_clients", self.idle_clients),
            ("qos", u64::from(self.qos)),
            ("size", self.size),
            ("connected", self.connected),
            ("connect_errors", self.connect_errors),
            ("subscribe_errors", self.subscribe_errors),
            ("conn_lost", self.conn_lost),
            ("sent", self.sent),
            ("acked", self.acked),
            ("publish_errors", self.publish_errors),
            ("received", self.received),
            ("lat_count", self.lat_count),
            ("lat_p50_us", self.lat_p50_us),
            ("lat_p90_us", self.lat_p90_us),
            ("lat_p99_us", self.lat_p99_us),
            ("lat_max_us", self.lat_max_us),
            ("errors", self.errors()),
        ];
        for (k, v) in ints {
            let _ = write!(s, ",\"{k}\":{v}");
        }
        let floats: [(&str, f64); 9] = [
            ("connect_s", self.connect_s),
            ("connect_rate", self.connect_rate),
            ("send_s", self.send_s),
            ("recv_s", self.recv_s),
            ("sent_rate", self.sent_rate),
            ("recv_rate", self.recv_rate),
            ("lat_mean_us", self.lat_mean_us),
            ("cpu_s", self.cpu_s),
            ("wall_s", self.wall_s),
        ];
        for (k, v) in floats {
            let v = if v.is_finite() { v } else { 0.0 };
            let _ = write!(s, ",\"{k}\":{v:.3}");
        }
        s.push('}');
        s
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors + self.subscribe_errors + self.conn_lost + self.publish_errors
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "sansmq bench {}: {} publishers, {} subscribers, {} idle, QoS {}, {}-byte payloads",
            self.mode, self.pub_clients, self.sub_clients, self.idle_clients, self.qos, self.size
        );
        let _ = writeln!(
            s,
            "connections: {} connected, {} connect errors in {:.2} s ({:.0}/s), {} lost, {} subscribe errors",
            self.connected,
            self.connect_errors,
            self.connect_s,
            self.connect_rate,
            self.conn_lost,
            self.subscribe_errors
        );
        if self.pub_clients > 0 {
            let _ = writeln!(
                s,
                "sent:        {} in {:.2} s ({:.0} msg/s), {} acknowledged, {} publish errors",
                self.sent, self.send_s, self.sent_rate, self.acked, self.publish_errors
            );
        }
        if self.sub_clients > 0 {
            let _ = writeln!(
                s,
                "received:    {} in {:.2} s ({:.0} msg/s)",
                self.received, self.recv_s, self.recv_rate
            );
            let _ = writeln!(
                s,
                "latency:     p50 {} µs, p90 {} µs, p99 {} µs, max {} µs, mean {:.0} µs ({} samples)",
                self.lat_p50_us,
                self.lat_p90_us,
                self.lat_p99_us,
                self.lat_max_us,
                self.lat_mean_us,
                self.lat_count
            );
        }
        let _ = writeln!(
            s,
            "own cpu:     {:.2} s over {:.2} s ({:.0} % of one core)",
            self.cpu_s,
            self.wall_s,
            if self.wall_s > 0.0 {
                100.0 * self.cpu_s / self.wall_s
            } else {
                0.0
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_one_flat_line_with_every_field() {
        let mut h = new_histogram();
        for v in [100, 200, 300, 400, 10_000] {
            h.record(v).expect("in range");
        }
        let mut s = Summary {
            mode: "pubsub",
            sent: 5,
            received: 5,
            ..Summary::default()
        };
        s.set_latency(&h);
        let json = s.to_json();
        assert!(!json.contains('\n'));
        assert!(json.starts_with("{\"mode\":\"pubsub\""));
        assert!(json.contains("\"lat_count\":5"));
        assert!(json.contains("\"received\":5"));
        assert!(s.lat_p50_us <= s.lat_p90_us && s.lat_p90_us <= s.lat_p99_us);
        assert!(s.lat_p99_us <= s.lat_max_us);
        assert!(json.ends_with('}'));
    }

    #[test]
    fn unix_nanos_moves_forward() {
        let a = unix_nanos();
        let b = unix_nanos();
        assert!(a > 0 && b >= a);
    }
}
