//! Topic names, filters, matching and shared subscriptions against the
//! examples and normative statements of MQTT 3.1.1 / 5.0 sections 4.7 and
//! 4.8.2. Ids are given in both numberings where they differ (3.1.1 numbers
//! the wildcard rules MQTT-4.7.1-1..3, 5.0 numbers them MQTT-4.7.0-1 and
//! MQTT-4.7.1-1..2).

use mqtt_core::topic::{
    check_level_count, is_sys_topic, level_count, matches, parse_filter, validate_topic_filter,
    validate_topic_name, ParsedFilter, SubscriptionTrie, TopicError, MAX_TOPIC_LEN,
};

/// Whether `filter` matches `topic` according to both the reference matcher
/// and the trie; panics if they disagree.
fn both_match(filter: &str, topic: &str) -> bool {
    let direct = matches(filter, topic);
    let mut trie = SubscriptionTrie::new();
    trie.insert(filter, 0u8, ());
    let mut hits = 0;
    trie.for_each_match(topic, |_, ()| hits += 1);
    assert!(hits <= 1, "{filter} reported {hits} times for {topic}");
    assert_eq!(
        direct,
        hits == 1,
        "matches() and the trie disagree on {filter} vs {topic}"
    );
    direct
}

// ---- 4.7.1.2 Multi-level wildcard ---------------------------------------

#[test]
fn multi_level_wildcard_matches_parent_and_children_4_7_1_2() {
    // Non-normative example of 4.7.1.2.
    let filter = "sport/tennis/player1/#";
    assert!(both_match(filter, "sport/tennis/player1"));
    assert!(both_match(filter, "sport/tennis/player1/ranking"));
    assert!(both_match(filter, "sport/tennis/player1/score/wimbledon"));
    assert!(!both_match(filter, "sport/tennis/player2"));
    assert!(!both_match(filter, "sport/tennis"));
    // "sport/#" also matches the singular "sport".
    assert!(both_match("sport/#", "sport"));
    assert!(both_match("sport/#", "sport/"));
    // "#" matches every topic not starting with '$'.
    assert!(both_match("#", "sport"));
    assert!(both_match("#", "/"));
    assert!(both_match("#", "a/b/c/d"));
}

#[test]
fn multi_level_wildcard_placement_mqtt_4_7_1_2() {
    // 3.1.1 MQTT-4.7.1-2 / 5.0 MQTT-4.7.1-1: '#' on its own or after a
    // separator, and last.
    for ok in ["#", "sport/tennis/#", "/#", "+/#", "sport/#"] {
        assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
    }
    for bad in [
        "sport/tennis#",
        "sport/tennis/#/ranking",
        "#/",
        "##",
        "a/#b",
        "a/b#/c",
        "#+",
    ] {
        assert_eq!(
            validate_topic_filter(bad),
            Err(TopicError::InvalidWildcard),
            "{bad}"
        );
    }
}

// ---- 4.7.1.3 Single-level wildcard --------------------------------------

#[test]
fn single_level_wildcard_matches_one_level_4_7_1_3() {
    // Non-normative example of 4.7.1.3.
    let filter = "sport/tennis/+";
    assert!(both_match(filter, "sport/tennis/player1"));
    assert!(both_match(filter, "sport/tennis/player2"));
    assert!(!both_match(filter, "sport/tennis/player1/ranking"));
    // "sport/+" does not match "sport" but does match "sport/".
    assert!(!both_match("sport/+", "sport"));
    assert!(both_match("sport/+", "sport/"));
    // "/finance" matches "+/+" and "/+", but not "+".
    assert!(both_match("+/+", "/finance"));
    assert!(both_match("/+", "/finance"));
    assert!(!both_match("+", "/finance"));
    assert!(both_match("sport/+/player1", "sport/tennis/player1"));
    assert!(both_match("+/tennis/#", "sport/tennis"));
    assert!(both_match("+", "sport"));
}

#[test]
fn single_level_wildcard_occupies_whole_level_mqtt_4_7_1_3() {
    // 3.1.1 MQTT-4.7.1-3 / 5.0 MQTT-4.7.1-2: '+' at any level, but the whole
    // level.
    for ok in [
        "+",
        "+/tennis/#",
        "sport/+/player1",
        "+/+",
        "/+",
        "+/",
        "a/+/+/b",
    ] {
        assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
    }
    for bad in ["sport+", "+sport", "a/b+/c", "a/+b", "++", "a/++/b", "+#"] {
        assert_eq!(
            validate_topic_filter(bad),
            Err(TopicError::InvalidWildcard),
            "{bad}"
        );
    }
}

// ---- 4.7.2 Topics beginning with $ --------------------------------------

#[test]
fn dollar_topics_not_matched_by_leading_wildcard_mqtt_4_7_2_1() {
    // MQTT-4.7.2-1 and the non-normative examples of 4.7.2.
    assert!(!both_match("#", "$SYS/x"));
    assert!(!both_match("#", "$SYS"));
    assert!(!both_match("+/monitor/Clients", "$SYS/monitor/Clients"));
    assert!(!both_match("+", "$SYS"));
    assert!(!both_match("+/#", "$SYS/x"));
    assert!(!both_match("#", "$share/g/x"));
    assert!(both_match("$SYS/#", "$SYS/x"));
    assert!(both_match("$SYS/#", "$SYS/monitor/Clients"));
    assert!(both_match("$SYS/#", "$SYS"));
    assert!(both_match("$SYS/monitor/+", "$SYS/monitor/Clients"));
    assert!(both_match("$SYS/+/Clients", "$SYS/monitor/Clients"));
    // Only the first level is special: a '$' further on is an ordinary
    // character.
    assert!(both_match("+/$SYS", "a/$SYS"));
    assert!(both_match("a/#", "a/$SYS/x"));
    assert!(is_sys_topic("$SYS/broker/uptime"));
    assert!(is_sys_topic("$"));
    assert!(!is_sys_topic("SYS/$"));
}

// ---- 4.7.3 Topic semantic and usage -------------------------------------

#[test]
fn levels_compare_byte_for_byte_mqtt_4_7_3_4() {
    // MQTT-4.7.3-4: no normalisation; case, spaces and separators count.
    assert!(!both_match("ACCOUNTS", "Accounts"));
    assert!(both_match("Accounts payable", "Accounts payable"));
    assert!(!both_match("/finance", "finance"));
    assert!(!both_match("finance", "finance/"));
    assert!(both_match("/", "/"));
    assert!(both_match("caf\u{e9}/+", "caf\u{e9}/x"));
    assert!(!both_match("cafe\u{301}/+", "caf\u{e9}/x"));
    assert_eq!(validate_topic_name("Accounts payable"), Ok(()));
    assert_eq!(validate_topic_name("/"), Ok(()));
    assert_eq!(validate_topic_name("//"), Ok(()));
}

#[test]
fn names_and_filters_at_least_one_character_mqtt_4_7_3_1() {
    assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
    assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
    assert_eq!(parse_filter(""), Err(TopicError::Empty));
}

#[test]
fn no_null_character_mqtt_4_7_3_2() {
    assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
    assert_eq!(validate_topic_name("\0"), Err(TopicError::NullCharacter));
    assert_eq!(
        validate_topic_filter("a/\0/+"),
        Err(TopicError::NullCharacter)
    );
    assert_eq!(
        validate_topic_filter("$share/g\0/a"),
        Err(TopicError::NullCharacter)
    );
    assert_eq!(
        validate_topic_filter("$share/g/a\0"),
        Err(TopicError::NullCharacter)
    );
}

#[test]
fn at_most_65535_bytes_mqtt_4_7_3_3() {
    let max = "a".repeat(MAX_TOPIC_LEN);
    assert_eq!(validate_topic_name(&max), Ok(()));
    assert_eq!(validate_topic_filter(&max), Ok(()));
    let over = "a".repeat(MAX_TOPIC_LEN + 1);
    assert_eq!(validate_topic_name(&over), Err(TopicError::TooLong));
    assert_eq!(validate_topic_filter(&over), Err(TopicError::TooLong));
    // Bytes, not characters: 'é' is two bytes in UTF-8.
    let wide = "\u{e9}".repeat(MAX_TOPIC_LEN / 2 + 1);
    assert_eq!(validate_topic_name(&wide), Err(TopicError::TooLong));
    let shared = format!("$share/g/{}", "a".repeat(MAX_TOPIC_LEN));
    assert_eq!(validate_topic_filter(&shared), Err(TopicError::TooLong));
}

// ---- 3.3.2 / 4.7.1: wildcards in topic names ----------------------------

#[test]
fn topic_name_has_no_wildcards_mqtt_3_3_2_2() {
    // MQTT-3.3.2-2, and 3.1.1 MQTT-4.7.1-1 / 5.0 MQTT-4.7.0-1.
    for bad in ["a/+", "a/#", "+", "#", "a+b", "sport/tennis#", "$SYS/#"] {
        assert_eq!(
            validate_topic_name(bad),
            Err(TopicError::WildcardInName),
            "{bad}"
        );
    }
    for ok in ["a", "sport/tennis/player1", "$SYS/broker", "a b/c"] {
        assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
    }
}

// ---- Level limits ---------------------------------------------------------

#[test]
fn level_count_and_limit() {
    assert_eq!(level_count("sport/tennis/player1"), 3);
    assert_eq!(level_count("/finance"), 2);
    assert_eq!(level_count("sport/"), 2);
    assert_eq!(check_level_count("a/b/c", 3), Ok(()));
    assert_eq!(
        check_level_count("a/b/c/", 3),
        Err(TopicError::TooManyLevels { levels: 4, max: 3 })
    );
}

// ---- 4.8.2 Shared subscriptions -------------------------------------------

#[test]
fn shared_filter_parses_group_and_filter_mqtt_4_8_2_1() {
    // MQTT-4.8.2-1: starts with "$share/" and a non-empty ShareName.
    assert_eq!(
        parse_filter("$share/consumer1/sport/tennis/+"),
        Ok(ParsedFilter::Shared {
            group: "consumer1",
            filter: "sport/tennis/+"
        })
    );
    // 4.8.2 example: the filter after the group may itself start with '/'.
    assert_eq!(
        parse_filter("$share/consumer1//finance"),
        Ok(ParsedFilter::Shared {
            group: "consumer1",
            filter: "/finance"
        })
    );
    assert_eq!(
        parse_filter("$share/g/#"),
        Ok(ParsedFilter::Shared {
            group: "g",
            filter: "#"
        })
    );
    assert_eq!(
        parse_filter("$share/g/$SYS/#"),
        Ok(ParsedFilter::Shared {
            group: "g",
            filter: "$SYS/#"
        })
    );
    assert_eq!(
        parse_filter("$share//x"),
        Err(TopicError::InvalidSharedGroup)
    );
    assert_eq!(parse_filter("$share/"), Err(TopicError::InvalidSharedGroup));
}

#[test]
fn shared_group_rules_mqtt_4_8_2_2() {
    // MQTT-4.8.2-2: no '+' or '#' in the ShareName ('/' ends it), then '/'
    // and a topic filter.
    for bad in ["$share/a+b/x", "$share/+/x", "$share/#/x", "$share/g#/x"] {
        assert_eq!(
            parse_filter(bad),
            Err(TopicError::InvalidSharedGroup),
            "{bad}"
        );
    }
    for bad in ["$share/g", "$share/g/", "$share/consumer1"] {
        assert_eq!(
            parse_filter(bad),
            Err(TopicError::InvalidSharedFilter),
            "{bad}"
        );
        assert_eq!(
            validate_topic_filter(bad),
            Err(TopicError::InvalidSharedFilter)
        );
    }
    // The filter after the group follows the ordinary rules.
    assert_eq!(
        parse_filter("$share/g/a#"),
        Err(TopicError::InvalidWildcard)
    );
    assert_eq!(
        parse_filter("$share/g/a/#/b"),
        Err(TopicError::InvalidWildcard)
    );
    // UTF-8 group names are fine.
    assert_eq!(
        parse_filter("$share/gr\u{fc}ppe/a"),
        Ok(ParsedFilter::Shared {
            group: "gr\u{fc}ppe",
            filter: "a"
        })
    );
}

#[test]
fn only_exact_share_prefix_is_shared() {
    assert_eq!(parse_filter("$share"), Ok(ParsedFilter::Normal("$share")));
    assert_eq!(
        parse_filter("$shared/g/x"),
        Ok(ParsedFilter::Normal("$shared/g/x"))
    );
    assert_eq!(
        parse_filter("$SHARE/g/x"),
        Ok(ParsedFilter::Normal("$SHARE/g/x"))
    );
    assert_eq!(parse_filter("a/+/#"), Ok(ParsedFilter::Normal("a/+/#")));
    assert_eq!(
        parse_filter("x/$share/g/a"),
        Ok(ParsedFilter::Normal("x/$share/g/a"))
    );
}

// ---- SubscriptionTrie API -------------------------------------------------

fn collect(trie: &SubscriptionTrie<&'static str, u32>, topic: &str) -> Vec<(&'static str, u32)> {
    let mut found = Vec::new();
    trie.for_each_match(topic, |k, v| found.push((*k, *v)));
    found.sort_unstable();
    found
}

#[test]
fn trie_insert_replaces_and_counts() {
    let mut trie = SubscriptionTrie::new();
    assert!(trie.is_empty());
    assert_eq!(trie.insert("a/+", "c1", 1), None);
    assert_eq!(trie.insert("a/+", "c2", 2), None);
    assert_eq!(trie.insert("a/#", "c1", 3), None);
    assert_eq!(trie.insert("a/+", "c1", 10), Some(1));
    assert_eq!(trie.len(), 3);
    assert_eq!(trie.filter_count(), 2);
    assert_eq!(trie.get("a/+", &"c1"), Some(&10));
    assert_eq!(trie.get("a/#", &"c2"), None);
    assert_eq!(trie.get("a", &"c1"), None);
    assert_eq!(trie.get("zzz/+", &"c1"), None);
    if let Some(v) = trie.get_mut("a/#", &"c1") {
        *v = 30;
    }
    assert_eq!(trie.get("a/#", &"c1"), Some(&30));
    assert_eq!(trie.get_mut("b/#", &"c1"), None);
    assert_eq!(trie.remove("a/+", &"nobody"), None);
    assert_eq!(trie.remove("nowhere", &"c1"), None);
    assert_eq!(trie.remove("a/+", &"c1"), Some(10));
    assert_eq!(trie.len(), 2);
    assert_eq!(trie.filter_count(), 2);
    assert_eq!(trie.remove("a/+", &"c2"), Some(2));
    assert_eq!(trie.filter_count(), 1);
    assert_eq!(trie.remove("a/#", &"c1"), Some(30));
    assert!(trie.is_empty());
    assert_eq!(trie.filter_count(), 0);
    assert_eq!(trie.node_count(), 1, "everything but the root pruned");
}

#[test]
fn trie_overlapping_subscriptions_report_each_filter() {
    // One key matching through several filters gets one callback per filter:
    // the broker merges them per version (3.1.1 section 3.3.5, 5.0 3.3.4).
    let mut trie = SubscriptionTrie::new();
    trie.insert("sport/#", "c1", 1);
    trie.insert("sport/tennis/+", "c1", 2);
    trie.insert("sport/tennis/player1", "c1", 3);
    trie.insert("#", "c2", 4);
    trie.insert("+/+/player1", "c2", 5);
    trie.insert("$SYS/#", "c3", 6);
    trie.insert("sport/tennis/player1/#", "c3", 7);
    assert_eq!(
        collect(&trie, "sport/tennis/player1"),
        [
            ("c1", 1),
            ("c1", 2),
            ("c1", 3),
            ("c2", 4),
            ("c2", 5),
            ("c3", 7)
        ]
    );
    assert_eq!(collect(&trie, "$SYS/broker/load"), [("c3", 6)]);
    assert_eq!(collect(&trie, "news"), [("c2", 4)]);
}

#[test]
fn trie_stores_shared_subscriptions_by_inner_filter() {
    // The broker parses "$share/{group}/{filter}" and keys the entry by the
    // group; the trie only sees the inner filter.
    let mut trie: SubscriptionTrie<String, Vec<&str>> = SubscriptionTrie::new();
    for (client, raw) in [
        ("c1", "$share/workers/jobs/+"),
        ("c2", "$share/workers/jobs/+"),
        ("c3", "$share/audit/#"),
    ] {
        let Ok(ParsedFilter::Shared { group, filter }) = parse_filter(raw) else {
            panic!("{raw} is a shared filter");
        };
        let key = format!("$share/{group}");
        if let Some(members) = trie.get_mut(filter, &key) {
            members.push(client);
        } else {
            trie.insert(filter, key, vec![client]);
        }
    }
    let mut groups = Vec::new();
    trie.for_each_match("jobs/42", |k, members| {
        groups.push((k.clone(), members.clone()))
    });
    groups.sort();
    assert_eq!(
        groups,
        [
            ("$share/audit".to_owned(), vec!["c3"]),
            ("$share/workers".to_owned(), vec!["c1", "c2"]),
        ]
    );
    // MQTT-4.7.2-1 applies to the inner filter: "#" skips $ topics.
    let mut hits = 0;
    trie.for_each_match("$SYS/x", |_, _| hits += 1);
    assert_eq!(hits, 0);
}

#[test]
fn trie_many_subscribers_on_one_filter() {
    // Long entry lists switch to an index; all operations stay consistent.
    let mut trie = SubscriptionTrie::new();
    for i in 0..1_000u32 {
        trie.insert("#", i, i);
        trie.insert("a/+", i, i + 1);
    }
    assert_eq!(trie.len(), 2_000);
    assert_eq!(trie.filter_count(), 2);
    let mut count = 0;
    trie.for_each_match("a/b", |_, _| count += 1);
    assert_eq!(count, 2_000);
    for i in (0..1_000u32).filter(|i| i % 3 != 0) {
        assert_eq!(trie.remove("#", &i), Some(i));
    }
    for i in 0..1_000u32 {
        let expected = (i % 3 == 0).then_some(i);
        assert_eq!(trie.get("#", &i).copied(), expected);
    }
    assert_eq!(trie.insert("#", 3, 99), Some(3));
    assert_eq!(trie.get("#", &3), Some(&99));
}
