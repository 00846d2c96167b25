//! Property tests: the trie against a brute-force model built on
//! `topic::matches`, and `matches` against an independent recursive reading
//! of MQTT 4.7.1 / 4.7.2 (MQTT-4.7.2-1 for `$` topics).

use std::collections::{BTreeMap, BTreeSet};

use mqtt_core::topic::{
    matches, parse_filter, validate_topic_filter, validate_topic_name, SubscriptionTrie,
};
use proptest::prelude::*;

fn topic_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => prop_oneof![Just("a"), Just("b"), Just("c")],
        1 => Just(""),
        1 => prop_oneof![Just("$SYS"), Just("$x")],
    ]
}

/// Valid topic names over a small alphabet so filters hit them often.
fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(topic_level(), 1..6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic name", |t| validate_topic_name(t).is_ok())
}

/// Valid filters: `+` at random levels, `#` at the end at random, `$`
/// levels anywhere (including first).
fn topic_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        3 => prop_oneof![Just("a"), Just("b"), Just("c")],
        2 => Just("+"),
        1 => Just(""),
        1 => Just("$SYS"),
    ];
    (prop::collection::vec(level, 0..5), any::<bool>())
        .prop_map(|(levels, hash)| {
            let mut filter = levels.join("/");
            if hash || levels.is_empty() {
                if !levels.is_empty() {
                    filter.push('/');
                }
                filter.push('#');
            }
            filter
        })
        .prop_filter("valid topic filter", |f| validate_topic_filter(f).is_ok())
}

/// MQTT 4.7.1 read literally, on level slices: `#` matches the rest
/// (including nothing, its parent level), `+` exactly one level.
fn spec_levels_match(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", _)), _) => true,
        (Some((&"+", f_rest)), Some((_, t_rest))) => spec_levels_match(f_rest, t_rest),
        (Some((f, f_rest)), Some((t, t_rest))) => f == t && spec_levels_match(f_rest, t_rest),
        (None, None) => true,
        _ => false,
    }
}

fn spec_matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    // MQTT-4.7.2-1.
    if topic.starts_with('$') && matches!(f.first(), Some(&"+") | Some(&"#")) {
        return false;
    }
    spec_levels_match(&f, &t)
}

#[derive(Debug, Clone)]
enum Op {
    Insert { filter: usize, key: u8, value: u32 },
    Remove { filter: usize, key: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<prop::sample::Index>(), 0u8..4, any::<u32>()).prop_map(|(f, key, value)| {
            Op::Insert { filter: f.index(usize::MAX), key, value }
        }),
        2 => (any::<prop::sample::Index>(), 0u8..4).prop_map(|(f, key)| {
            Op::Remove { filter: f.index(usize::MAX), key }
        }),
    ]
}

/// Node count the trie must have after pruning: the root plus one node per
/// distinct path prefix (levels before `#`) of a live filter.
fn expected_nodes(model: &BTreeMap<(String, u8), u32>) -> usize {
    let mut prefixes = BTreeSet::new();
    for (filter, _) in model.keys() {
        let path: Vec<&str> = filter.split('/').take_while(|l| *l != "#").collect();
        for n in 1..=path.len() {
            prefixes.insert(path[..n].to_vec());
        }
    }
    prefixes.len() + 1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// MQTT-4.7.1-2/-3 (3.1.1), MQTT-4.7.1-1/-2 (5.0) and MQTT-4.7.2-1:
    /// after random inserts and removes, `for_each_match` reports exactly
    /// the live entries whose filter `matches` the topic, once each; `get`,
    /// `len`, `filter_count` agree with the model and removes prune every
    /// node no live filter needs.
    #[test]
    fn trie_agrees_with_brute_force(
        filters in prop::collection::vec(topic_filter(), 1..24),
        ops in prop::collection::vec(op(), 0..80),
        topics in prop::collection::vec(topic_name(), 1..16),
    ) {
        let mut trie: SubscriptionTrie<u8, (String, u32)> = SubscriptionTrie::new();
        let mut model: BTreeMap<(String, u8), u32> = BTreeMap::new();
        for op in &ops {
            match *op {
                Op::Insert { filter, key, value } => {
                    let filter = &filters[filter % filters.len()];
                    prop_assert_eq!(validate_topic_filter(filter), Ok(()));
                    let old = trie.insert(filter, key, (filter.clone(), value));
                    let expected = model.insert((filter.clone(), key), value);
                    prop_assert_eq!(old.map(|(_, v)| v), expected);
                }
                Op::Remove { filter, key } => {
                    let filter = &filters[filter % filters.len()];
                    let old = trie.remove(filter, &key);
                    let expected = model.remove(&(filter.clone(), key));
                    prop_assert_eq!(old.map(|(_, v)| v), expected);
                }
            }
        }
        prop_assert_eq!(trie.len(), model.len());
        let distinct: BTreeSet<&String> = model.keys().map(|(f, _)| f).collect();
        prop_assert_eq!(trie.filter_count(), distinct.len());
        prop_assert_eq!(trie.node_count(), expected_nodes(&model));
        for filter in &filters {
            for key in 0..4u8 {
                prop_assert_eq!(
                    trie.get(filter, &key).map(|(_, v)| *v),
                    model.get(&(filter.clone(), key)).copied()
                );
            }
        }
        for topic in &topics {
            let mut got = Vec::new();
            trie.for_each_match(topic, |key, (filter, value)| {
                got.push((filter.clone(), *key, *value));
            });
            got.sort();
            let mut want: Vec<(String, u8, u32)> = model
                .iter()
                .filter(|((filter, _), _)| matches(filter, topic))
                .map(|((filter, key), value)| (filter.clone(), *key, *value))
                .collect();
            want.sort();
            prop_assert_eq!(got, want, "topic {}", topic);
        }
        // Removing everything prunes back to the bare root.
        for (filter, key) in model.keys() {
            prop_assert!(trie.remove(filter, key).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.filter_count(), 0);
        prop_assert_eq!(trie.node_count(), 1);
    }

    /// `matches` agrees with a literal recursive reading of 4.7.1 and
    /// MQTT-4.7.2-1.
    #[test]
    fn matches_agrees_with_spec_reading(filter in topic_filter(), topic in topic_name()) {
        prop_assert_eq!(matches(&filter, &topic), spec_matches(&filter, &topic));
    }

    /// Shared filters built from a valid group and filter parse back to
    /// their parts (MQTT-4.8.2-1, MQTT-4.8.2-2).
    #[test]
    fn shared_filters_round_trip(group in "[a-zA-Z0-9_$-]{1,8}", filter in topic_filter()) {
        let raw = format!("$share/{group}/{filter}");
        let parsed = parse_filter(&raw).map(|p| (p.group(), p.filter()));
        prop_assert_eq!(parsed, Ok((Some(group.as_str()), filter.as_str())));
    }

    /// Arbitrary strings never panic validation, matching or the trie; a
    /// string that passes as a name is also a valid filter (unless it reads
    /// as an incomplete `$share/` filter).
    #[test]
    fn arbitrary_input_never_panics(filter in "[a+#/$\\x00é]{0,12}", topic in "[a+#/$\\x00é]{0,12}") {
        let name_ok = validate_topic_name(&topic).is_ok();
        if name_ok && !topic.starts_with("$share/") {
            prop_assert_eq!(validate_topic_filter(&topic), Ok(()));
        }
        let _ = parse_filter(&filter);
        let _ = matches(&filter, &topic);
        let mut trie = SubscriptionTrie::new();
        trie.insert(&filter, 1u8, ());
        trie.for_each_match(&topic, |_, ()| {});
        prop_assert_eq!(trie.remove(&filter, &1), Some(()));
        prop_assert_eq!(trie.node_count(), 1);
    }
}
