//! Subscription trie: matching typical topics against 100,000 filters with
//! mixed wildcards, and subscribe/unsubscribe throughput on that trie.
//!
//! Run: `cargo bench -p sansmq-benches --bench trie`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mqtt_core::topic::SubscriptionTrie;

/// Subscriber id; the value stands for subscription options.
type Trie<S = std::hash::RandomState> = SubscriptionTrie<u32, u8, S>;

/// An FxHash-style hasher, to show what the trie's hasher parameter buys.
/// Not flood-resistant: a broker would want a keyed fast hasher instead.
#[derive(Clone, Copy, Default)]
struct FxBuild;

struct Fx(u64);

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail));
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // hashbrown takes its 7-bit tag from the top bits; fold the low ones
        // in so short keys spread.
        self.0 ^ (self.0 >> 29)
    }
}

impl BuildHasher for FxBuild {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

/// The 100,000 filters: mostly exact device topics, then wildcard shapes a
/// fleet dashboard, a per-site consumer and monitoring tools would use.
fn filters() -> Vec<(String, u32)> {
    let mut filters = Vec::with_capacity(100_000);
    let mut key = 0u32;
    let mut add = |filter: String| {
        filters.push((filter, key));
        key += 1;
    };
    // 60,000 exact: one per device.
    for i in 0..600 {
        for j in 0..100 {
            add(format!("site/{i}/dev/{j}/temp"));
        }
    }
    // 20,000 with '+' mid-filter and a trailing '#'.
    for i in 0..200 {
        for j in 0..100 {
            add(format!("site/{i}/+/{j}/#"));
        }
    }
    // 10,000 with a leading '+'.
    for i in 0..10_000 {
        add(format!("+/{i}/dev/#"));
    }
    // 9,000 with '+' for the device.
    for i in 0..9_000 {
        add(format!("site/{i}/dev/+/temp"));
    }
    // 990 $SYS per-broker filters and 5 whole-$SYS monitors.
    for i in 0..990 {
        add(format!("$SYS/brokers/{i}/clients/#"));
    }
    for _ in 0..5 {
        add("$SYS/#".to_owned());
    }
    // 5 subscribers to everything.
    for _ in 0..5 {
        add("#".to_owned());
    }
    filters
}

fn build(filters: &[(String, u32)]) -> Trie {
    build_with(filters, std::hash::RandomState::new())
}

fn build_with<S: BuildHasher + Clone>(filters: &[(String, u32)], hasher: S) -> Trie<S> {
    let mut trie = Trie::with_hasher(hasher);
    for (filter, key) in filters {
        trie.insert(filter, *key, 1);
    }
    trie
}

/// Topics a broker routes, with what makes each interesting.
const TOPICS: &[(&str, &str)] = &[
    // exact + `site/42/+/17/#` + `+/42/dev/#` + `site/42/dev/+/temp` + `#`
    ("device_hit", "site/42/dev/17/temp"),
    // no exact filter; only `+/7000/dev/#`, `site/7000/dev/+/temp`, `#`
    ("sparse_site", "site/7000/dev/5/temp"),
    // unknown first level: only `+/...` (none at level 2) and `#`
    ("miss", "factory/line/3/pressure"),
    // `$SYS/brokers/5/clients/#` and `$SYS/#`; `#` and `+/..` skipped
    ("sys", "$SYS/brokers/5/clients/connected"),
    // 10 levels
    ("deep", "site/1/dev/2/temp/a/b/c/d/e"),
];

fn bench_match(c: &mut Criterion) {
    let filters = filters();
    let started = Instant::now();
    let trie = build(&filters);
    println!(
        "trie: {} filters, {} entries, {} nodes, built in {:?}",
        trie.filter_count(),
        trie.len(),
        trie.node_count(),
        started.elapsed()
    );
    for &(name, topic) in TOPICS {
        let mut found = 0usize;
        trie.for_each_match(topic, |_, _| found += 1);
        println!("trie/match_100k/{name}: topic {topic:?} matches {found} entries");
    }
    match_group(c, "trie/match_100k", &trie);
    drop(trie);
    let trie = build_with(&filters, FxBuild);
    match_group(c, "trie/match_100k_fxhash", &trie);
    drop(trie);

    // Baseline: one lookup of the same exact topic in a flat std HashMap of
    // the 100k filter strings (what matching costs without wildcards).
    let flat: HashMap<&str, u32> = filters.iter().map(|(f, k)| (f.as_str(), *k)).collect();
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("std_hashmap_get_100k", |b| {
        b.iter(|| flat.get(black_box("site/42/dev/17/temp")).copied());
    });
    group.finish();
}

fn match_group<S: BuildHasher + Clone>(c: &mut Criterion, name: &str, trie: &Trie<S>) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for &(name, topic) in TOPICS {
        group.bench_with_input(BenchmarkId::from_parameter(name), topic, |b, topic| {
            b.iter(|| {
                let mut found = 0u32;
                trie.for_each_match(black_box(topic), |key, _| {
                    found = found.wrapping_add(*key);
                });
                found
            });
        });
    }
    group.finish();
}

fn bench_churn(c: &mut Criterion) {
    let filters = filters();
    let mut trie = build(&filters);
    let mut group = c.benchmark_group("trie/churn_100k");

    // New filters on new paths: creates and then prunes nodes.
    let fresh: Vec<String> = (0..1_000)
        .map(|i| format!("site/{}/+/{}/new/#", i % 50, i))
        .collect();
    group.throughput(Throughput::Elements(fresh.len() as u64 * 2));
    group.bench_function("insert_remove_new_filter", |b| {
        b.iter(|| {
            for (i, filter) in fresh.iter().enumerate() {
                trie.insert(filter, 1_000_000 + i as u32, 1);
            }
            for (i, filter) in fresh.iter().enumerate() {
                trie.remove(filter, &(1_000_000 + i as u32));
            }
        });
    });

    // A second subscriber on existing exact filters: no node changes.
    let existing: Vec<&str> = filters
        .iter()
        .take(60_000)
        .step_by(60)
        .map(|(f, _)| f.as_str())
        .collect();
    group.throughput(Throughput::Elements(existing.len() as u64 * 2));
    group.bench_function("insert_remove_existing_filter", |b| {
        b.iter(|| {
            for filter in &existing {
                trie.insert(filter, 2_000_000, 1);
            }
            for filter in &existing {
                trie.remove(filter, &2_000_000);
            }
        });
    });
    group.finish();
    assert_eq!(trie.len(), filters.len());

    let mut group = c.benchmark_group("trie/build");
    group.sample_size(10);
    group.throughput(Throughput::Elements(filters.len() as u64));
    group.bench_function("100k_filters", |b| b.iter(|| build(black_box(&filters))));
    group.finish();
}

criterion_group!(benches, bench_match, bench_churn);
criterion_main!(benches);
