//! The world: virtual clock, hosts, the step loop, trace and failures.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::check::Checks;
use super::net::{ConnId, HostId, LinkConfig, NetEvent, Network, PartitionKind, SockId};
use super::SimRng;

/// What runs on a host. Every input comes with [`Cx`], whose `now` is the
/// virtual time; after every input the world calls [`Node::drain`] and then
/// reads [`Node::poll_timeout`] again. A bridge node (broker + bridge FSM)
/// and QUIC endpoints implement this too.
pub trait Node: Any {
    /// Called once, when the host is added.
    fn start(&mut self, _cx: &mut Cx<'_>) {}
    /// The earliest instant the node wants `handle_timeout`.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Called at (never before) `poll_timeout`.
    fn handle_timeout(&mut self, cx: &mut Cx<'_>);
    fn handle_net(&mut self, event: NetEvent, cx: &mut Cx<'_>);
    /// Move the state machines' outputs (`poll_transmit`, `poll_event`)
    /// into the network and the checkers until they are quiet.
    fn drain(&mut self, cx: &mut Cx<'_>);
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// A node's view of the world during one input.
pub struct Cx<'a> {
    pub now: Instant,
    pub base: Instant,
    pub host: HostId,
    pub net: &'a mut Network,
    pub rng: &'a mut SimRng,
    pub checks: &'a mut Checks,
    pub trace: &'a mut Trace,
}

impl Cx<'_> {
    pub fn dial(&mut self, to: HostId) -> SockId {
        let sock = self.net.dial(self.now, self.host, to, self.rng);
        self.trace
            .record(self.now, self.host, "dial", sock.0, u64::from(to.0));
        sock
    }

    pub fn send(&mut self, sock: SockId, data: Bytes) {
        self.trace
            .record_bytes(self.now, self.host, "send", sock.0, &data);
        self.net.send(self.now, sock, data, self.rng);
    }

    /// One datagram to `to` (QUIC over simulated UDP).
    pub fn send_datagram(&mut self, to: HostId, data: Bytes) {
        self.trace
            .record_bytes(self.now, self.host, "send-dgram", u64::from(to.0), &data);
        self.net
            .send_datagram(self.now, self.host, to, data, self.rng);
    }

    pub fn close(&mut self, sock: SockId) {
        self.trace.record(self.now, self.host, "close", sock.0, 0);
        self.net.close(self.now, sock, self.rng);
    }

    pub fn reset(&mut self, sock: SockId) {
        self.trace.record(self.now, self.host, "reset", sock.0, 0);
        self.net.reset(self.now, sock, self.rng);
    }

    /// Virtual time since the world began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// Record a node-level fact in the trace (and its hash).
    pub fn note(&mut self, what: &'static str, a: u64, b: u64) {
        self.trace.record(self.now, self.host, what, a, b);
    }
}

/// A rolling hash of everything that happened, plus the last entries for
/// failure reports.
#[derive(Debug)]
pub struct Trace {
    base: Instant,
    hash: u64,
    entries: u64,
    tail: VecDeque<TailEntry>,
    /// `SIM_TRACE=1`: print every entry as it happens (for replays).
    verbose: bool,
}

/// One trace entry kept for reports; segments keep their bytes (a cheap
/// `Bytes` clone) and are decoded only when printed.
type TailEntry = (Duration, HostId, &'static str, u64, u64, Option<Bytes>);

const TAIL: usize = 60;

impl Trace {
    fn new(base: Instant) -> Self {
        Self {
            base,
            hash: 0xcbf2_9ce4_8422_2325,
            entries: 0,
            tail: VecDeque::with_capacity(TAIL),
            verbose: std::env::var_os("SIM_TRACE").is_some_and(|v| v != "0"),
        }
    }

    fn mix(&mut self, v: u64) {
        // FNV-1a over the value's bytes: stable across runs and platforms.
        for b in v.to_le_bytes() {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn record(&mut self, now: Instant, host: HostId, what: &'static str, a: u64, b: u64) {
        self.record_with(now, host, what, a, b, None);
    }

    fn record_with(
        &mut self,
        now: Instant,
        host: HostId,
        what: &'static str,
        a: u64,
        b: u64,
        data: Option<Bytes>,
    ) {
        let at = now - self.base;
        self.mix(at.as_nanos() as u64);
        self.mix(u64::from(host.0));
        for byte in what.bytes() {
            self.mix(u64::from(byte));
        }
        self.mix(a);
        self.mix(b);
        self.entries += 1;
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back((at, host, what, a, b, data));
        if self.verbose {
            if let Some(e) = self.tail.back() {
                eprintln!("{}", format_entry(e));
            }
        }
    }

    /// Like `record`, with `b` = a hash of the bytes.
    pub fn record_bytes(
        &mut self,
        now: Instant,
        host: HostId,
        what: &'static str,
        a: u64,
        data: &Bytes,
    ) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in data.iter() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let b = h ^ ((data.len() as u64) << 48);
        self.record_with(now, host, what, a, b, Some(data.clone()));
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().map(format_entry).collect()
    }
}

fn format_entry((at, host, what, a, b, data): &TailEntry) -> String {
    match data {
        Some(d) => format!(
            "  +{:>14.6}s host{:<4} {what:<12} sock {a} {}",
            at.as_secs_f64(),
            host.0,
            describe_packets(d)
        ),
        None => format!(
            "  +{:>14.6}s host{:<4} {what:<12} {a} {b:#x}",
            at.as_secs_f64(),
            host.0
        ),
    }
}

/// MQTT packets in a segment, briefly: type, QoS/DUP and packet id of
/// PUBLISH, the simulated message id, the id of acknowledgements. Packets
/// cut by the segment end are marked `...`.
pub fn describe_packets(data: &[u8]) -> String {
    const NAMES: [&str; 16] = [
        "?",
        "CONNECT",
        "CONNACK",
        "PUBLISH",
        "PUBACK",
        "PUBREC",
        "PUBREL",
        "PUBCOMP",
        "SUBSCRIBE",
        "SUBACK",
        "UNSUBSCRIBE",
        "UNSUBACK",
        "PINGREQ",
        "PINGRESP",
        "DISCONNECT",
        "AUTH",
    ];
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(&first) = rest.first() {
        let mut len = 0usize;
        let mut i = 1;
        let mut shift = 0;
        loop {
            let Some(&b) = rest.get(i) else {
                out.push("...".to_owned());
                return out.join(" ");
            };
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 || shift > 21 {
                break;
            }
        }
        let Some(body) = rest.get(i..i + len) else {
            out.push(format!("{}...", NAMES[usize::from(first >> 4)]));
            return out.join(" ");
        };
        let kind = first >> 4;
        let id = |at: usize| {
            body.get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let mut s = NAMES[usize::from(kind)].to_owned();
        match kind {
            3 => {
                let qos = (first >> 1) & 3;
                let topic_len = usize::from(id(0).unwrap_or(0));
                s.push_str(&format!("(q{qos}"));
                if first & 8 != 0 {
                    s.push_str(",dup");
                }
                if qos > 0 {
                    s.push_str(&format!(",id{}", id(2 + topic_len).unwrap_or(0)));
                }
                if let Some(pos) = body.windows(4).position(|w| w == b"sim1") {
                    if let Some(m) = super::check::MsgId::parse(&body[pos..]) {
                        s.push_str(&format!(",p{}#{}", m.publisher, m.seq));
                    }
                }
                s.push(')');
            }
            4..=7 | 9 | 11 => s.push_str(&format!("({})", id(0).unwrap_or(0))),
            _ => {}
        }
        out.push(s);
        rest = &rest[i + len..];
    }
    out.join(" ")
}

/// A failed run: the seed, what broke, and the end of the trace.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub at: Duration,
    pub problems: Vec<String>,
    pub trace_tail: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at +{:.6}s ({} problems):",
            self.seed,
            self.at.as_secs_f64(),
            self.problems.len()
        )?;
        for p in self.problems.iter().take(20) {
            writeln!(f, "  - {p}")?;
        }
        if self.problems.len() > 20 {
            writeln!(f, "  ... {} more", self.problems.len() - 20)?;
        }
        writeln!(
            f,
            "trace up to the first problem (or the end): time, host, what, socket, packets"
        )?;
        for line in &self.trace_tail {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

type Action = Box<dyn FnOnce(&mut World)>;

/// The deterministic world. See the module docs of [`super`].
pub struct World {
    seed: u64,
    base: Instant,
    now: Instant,
    rng: SimRng,
    net: Network,
    nodes: Vec<Box<dyn Node>>,
    /// (deadline, host) of every node that has one: the next timer is the
    /// first entry, without scanning thousands of nodes.
    timers: BTreeSet<(Instant, HostId)>,
    deadlines: Vec<Option<Instant>>,
    actions: BTreeMap<(Instant, u64), Action>,
    action_seq: u64,
    pub checks: Checks,
    trace: Trace,
    steps: u64,
    steps_at_instant: u64,
    /// Steps allowed at one instant before the run is declared a livelock.
    pub max_steps_per_instant: u64,
    /// Steps allowed in total.
    pub max_steps: u64,
    /// The trace tail when the first problem was recorded.
    first_problem_tail: Option<Vec<String>>,
}

impl World {
    /// The only wall-clock read of a run: the base of the virtual clock.
    pub fn new(seed: u64, default_link: LinkConfig) -> Self {
        let base = Instant::now();
        Self {
            seed,
            base,
            now: base,
            rng: SimRng::new(seed),
            net: Network::new(default_link),
            nodes: Vec::new(),
            timers: BTreeSet::new(),
            deadlines: Vec::new(),
            actions: BTreeMap::new(),
            action_seq: 0,
            checks: Checks::default(),
            trace: Trace::new(base),
            steps: 0,
            steps_at_instant: 0,
            max_steps_per_instant: 1_000_000,
            max_steps: 200_000_000,
            first_problem_tail: None,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn base(&self) -> Instant {
        self.base
    }

    /// Virtual time since the world began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    pub fn net(&mut self) -> &mut Network {
        &mut self.net
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    pub fn trace_entries(&self) -> u64 {
        self.trace.entries()
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The id the next [`World::add_host`] returns (to set a partition or
    /// link before a node that dials at once is added).
    pub fn next_host(&self) -> HostId {
        HostId(self.nodes.len() as u32)
    }

    /// Add a host running `node`; `listening` = accepts dials.
    pub fn add_host(&mut self, node: Box<dyn Node>, listening: bool) -> HostId {
        let host = self.net.add_host(listening);
        self.nodes.push(node);
        self.deadlines.push(None);
        self.touch(host, |n, cx| n.start(cx));
        host
    }

    /// Typed access to a node.
    pub fn node<N: Node>(&self, host: HostId) -> &N {
        self.nodes
            .get(host.0 as usize)
            .and_then(|n| n.as_any().downcast_ref::<N>())
            .unwrap_or_else(|| panic!("host {} is not a {}", host.0, std::any::type_name::<N>()))
    }

    /// Act on a node now (a scenario command); its outputs are drained and
    /// its timer re-read afterwards.
    pub fn with_node<N: Node, R>(
        &mut self,
        host: HostId,
        f: impl FnOnce(&mut N, &mut Cx<'_>) -> R,
    ) -> R {
        self.touch(host, |n, cx| {
            let n = n.as_any_mut().downcast_mut::<N>().unwrap_or_else(|| {
                panic!("host {} is not a {}", cx.host.0, std::any::type_name::<N>())
            });
            f(n, cx)
        })
    }

    fn touch<R>(&mut self, host: HostId, f: impl FnOnce(&mut dyn Node, &mut Cx<'_>) -> R) -> R {
        let i = host.0 as usize;
        let node = &mut self.nodes[i];
        let mut cx = Cx {
            now: self.now,
            base: self.base,
            host,
            net: &mut self.net,
            rng: &mut self.rng,
            checks: &mut self.checks,
            trace: &mut self.trace,
        };
        let r = f(node.as_mut(), &mut cx);
        node.drain(&mut cx);
        if self.first_problem_tail.is_none() && !self.checks.problems.is_empty() {
            self.first_problem_tail = Some(self.trace.tail());
        }
        let next = node.poll_timeout();
        if let Some(old) = self.deadlines[i].take() {
            self.timers.remove(&(old, host));
        }
        if let Some(t) = next {
            // A deadline in the past is due now.
            let t = t.max(self.now);
            self.timers.insert((t, host));
            self.deadlines[i] = Some(t);
        }
        r
    }

    /// Run `f` at `base + at` (or now, if that has passed).
    pub fn schedule(&mut self, at: Duration, f: impl FnOnce(&mut World) + 'static) {
        let t = (self.base + at).max(self.now);
        self.action_seq += 1;
        self.actions.insert((t, self.action_seq), Box::new(f));
    }

    /// The next instant something happens.
    pub fn next_event(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(t, _)| *t);
        let net = self.net.next_delivery();
        let action = self.actions.keys().next().map(|(t, _)| *t);
        [timer, net, action].into_iter().flatten().min()
    }

    /// One step: the earliest timer, else delivery, else action. Returns
    /// false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.next_event() else {
            return false;
        };
        self.advance_to(t);
        self.steps += 1;
        if self.steps > self.max_steps {
            self.die("step budget exhausted");
        }
        if let Some(&(at, host)) = self.timers.first() {
            if at <= self.now {
                self.trace.record(self.now, host, "timeout", 0, 0);
                self.touch(host, |n, cx| n.handle_timeout(cx));
                return true;
            }
        }
        if let Some((host, ev)) = self.net.pop_due(self.now) {
            match &ev {
                NetEvent::Data { sock, data } => self
                    .trace
                    .record_bytes(self.now, host, "recv", sock.0, data),
                other => {
                    let what = match other {
                        NetEvent::Accepted { .. } => "accepted",
                        NetEvent::Connected { .. } => "connected",
                        NetEvent::DialFailed { .. } => "dial-failed",
                        NetEvent::Closed { reset: true, .. } => "rst",
                        _ => "fin",
                    };
                    self.trace.record(self.now, host, what, other.sock().0, 0);
                }
            }
            self.touch(host, |n, cx| n.handle_net(ev, cx));
            return true;
        }
        if let Some((&key, _)) = self.actions.iter().next() {
            if key.0 <= self.now {
                if let Some(action) = self.actions.remove(&key) {
                    action(self);
                }
                return true;
            }
        }
        true
    }

    fn advance_to(&mut self, t: Instant) {
        if t > self.now {
            self.now = t;
            self.steps_at_instant = 0;
        } else {
            self.steps_at_instant += 1;
            if self.steps_at_instant > self.max_steps_per_instant {
                self.die("livelock: too many steps without time advancing");
            }
        }
    }

    fn die(&self, why: &str) -> ! {
        let f = self.failure(vec![why.to_owned()]);
        panic!("{f}");
    }

    /// Run until `base + at` (time is there afterwards even if idle).
    pub fn run_until(&mut self, at: Duration) {
        let end = self.base + at;
        while self.next_event().is_some_and(|t| t <= end) {
            self.step();
        }
        if end > self.now {
            self.now = end;
            self.steps_at_instant = 0;
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let at = self.elapsed() + d;
        self.run_until(at);
    }

    // ----- faults ----------------------------------------------------------

    /// Cut `a` from `b` from now for `d`.
    pub fn partition(&mut self, a: HostId, b: HostId, d: Duration, kind: PartitionKind) {
        let now = self.now;
        self.trace
            .record(now, a, "partition", u64::from(b.0), d.as_micros() as u64);
        self.net.partition(a, b, now, now + d, kind);
    }

    pub fn set_listening(&mut self, host: HostId, listening: bool) {
        self.trace
            .record(self.now, host, "listen", u64::from(listening), 0);
        self.net.set_listening(host, listening);
    }

    /// A middlebox resets every connection between `a` and `b`.
    pub fn reset_between(&mut self, a: HostId, b: HostId) {
        for id in self.net.conns_between(a, b) {
            self.trace
                .record(self.now, a, "net-rst", id.0, u64::from(b.0));
            self.net.reset_conn(self.now, id);
        }
    }

    /// Every connection between `a` and `b` goes silent; nobody is told.
    pub fn blackhole_between(&mut self, a: HostId, b: HostId) {
        for id in self.net.conns_between(a, b) {
            self.trace
                .record(self.now, a, "blackhole", id.0, u64::from(b.0));
            self.net.blackhole(self.now, id);
        }
    }

    /// `host`'s ends of its connections to `peer` vanish without FIN: `host`
    /// learns at once, `peer` only by its own timers.
    pub fn vanish_between(&mut self, host: HostId, peer: HostId) {
        let ids: Vec<ConnId> = self.net.conns_between(host, peer);
        for id in ids {
            if let Some(sock) = self.net.sock_of(id, host) {
                self.trace
                    .record(self.now, host, "vanish", id.0, u64::from(peer.0));
                self.net.vanish(self.now, sock);
            }
        }
    }

    // ----- results ---------------------------------------------------------

    /// The run's failure report with `problems`.
    pub fn failure(&self, problems: Vec<String>) -> Failure {
        Failure {
            seed: self.seed,
            at: self.elapsed(),
            problems,
            trace_tail: self
                .first_problem_tail
                .clone()
                .unwrap_or_else(|| self.trace.tail()),
        }
    }

    /// Ok if no checker recorded a problem.
    pub fn result(&self) -> Result<(), Failure> {
        if self.checks.problems.is_empty() {
            Ok(())
        } else {
            Err(self.failure(self.checks.problems.clone()))
        }
    }
}
