//! Topic names, topic filters, matching, shared subscriptions and the
//! subscription trie.
//!
//! - [`validate_topic_name`] and [`validate_topic_filter`] apply the syntax
//!   rules of MQTT 3.1.1 and 5.0 section 4.7 (and 4.8.2 for
//!   `$share/{group}/{filter}`). They run per packet or per filter, so the
//!   broker can answer a bad filter in SUBACK and a bad topic name with a
//!   DISCONNECT, each with its own reason code.
//! - [`matches`] is the reference matcher for one filter against one topic
//!   name; [`SubscriptionTrie`] gives the same answers for many filters at
//!   once and is what the broker routes with.
//! - Nothing here normalises or rewrites strings: levels are compared byte for
//!   byte (MQTT-4.7.3-4), so `a/b` and `a/b/` are different topics.
//!
//! Normative statement ids are cited in both numberings where they differ:
//! 3.1.1 numbers the wildcard rules MQTT-4.7.1-1..3, 5.0 numbers them
//! MQTT-4.7.0-1 and MQTT-4.7.1-1..2.

mod trie;

pub use trie::SubscriptionTrie;

/// The longest topic name or filter: a UTF-8 string's two-byte length prefix
/// caps it at 65,535 bytes (MQTT-4.7.3-3).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix that makes a topic filter a shared subscription (MQTT 5.0
/// section 4.8.2).
pub const SHARED_PREFIX: &str = "$share/";

/// The topic level separator.
pub const LEVEL_SEPARATOR: char = '/';

/// The single-level wildcard, as a whole level.
pub const SINGLE_LEVEL_WILDCARD: &str = "+";

/// The multi-level wildcard, as a whole level.
pub const MULTI_LEVEL_WILDCARD: &str = "#";

/// Why a topic name or filter was refused.
///
/// Every variant is the peer's fault. The broker maps it to a reason code by
/// context: 0x90 (Topic Name invalid) for a PUBLISH, 0x8F (Topic Filter
/// invalid) in SUBACK/UNSUBACK, and 0x9E (Shared Subscriptions not supported)
/// only when shared subscriptions are switched off, which is its decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Topic names and filters are at least one character long
    /// (MQTT-4.7.3-1).
    #[error("topic is empty")]
    Empty,
    /// More than 65,535 bytes (MQTT-4.7.3-3).
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// Contains U+0000 (MQTT-4.7.3-2).
    #[error("topic contains the null character U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#` (MQTT-3.3.2-2).
    #[error("topic name contains a wildcard character")]
    WildcardInName,
    /// `#` is not alone in the last level, or `+` is not alone in its level.
    #[error("wildcard must occupy a whole level, and '#' must be the last level")]
    InvalidWildcard,
    /// The ShareName of `$share/{group}/...` is empty or contains `+` or `#`
    /// (MQTT-4.8.2-1, MQTT-4.8.2-2).
    #[error("shared subscription group name is empty or contains a wildcard")]
    InvalidSharedGroup,
    /// `$share/{group}` is not followed by `/` and a non-empty topic filter
    /// (MQTT-4.8.2-2).
    #[error("shared subscription has no topic filter after the group name")]
    InvalidSharedFilter,
    /// More levels than the broker's configured maximum.
    #[error("topic has {levels} levels, more than the maximum of {max}")]
    TooManyLevels {
        /// Levels in the refused topic.
        levels: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// A topic filter with any `$share/{group}/` prefix taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParsedFilter<'a> {
    /// An ordinary filter, matched as it is.
    Normal(&'a str),
    /// `$share/{group}/{filter}`: `filter` is what the trie stores and
    /// matches; the broker delivers each message to one member of `group`.
    Shared {
        /// The ShareName.
        group: &'a str,
        /// The topic filter after the group name.
        filter: &'a str,
    },
}

impl<'a> ParsedFilter<'a> {
    /// The filter that topics are matched against (without `$share/{group}/`).
    #[must_use]
    pub fn filter(&self) -> &'a str {
        match *self {
            ParsedFilter::Normal(filter) | ParsedFilter::Shared { filter, .. } => filter,
        }
    }

    /// The share group, if this is a shared subscription.
    #[must_use]
    pub fn group(&self) -> Option<&'a str> {
        match *self {
            ParsedFilter::Normal(_) => None,
            ParsedFilter::Shared { group, .. } => Some(group),
        }
    }

    /// Whether this is a shared subscription.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self, ParsedFilter::Shared { .. })
    }
}

/// Rules shared by names and filters: non-empty (MQTT-4.7.3-1) and at most
/// 65,535 bytes (MQTT-4.7.3-3). Length first so a huge string is refused
/// without being scanned.
fn check_length(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        Err(TopicError::Empty)
    } else if topic.len() > MAX_TOPIC_LEN {
        Err(TopicError::TooLong)
    } else {
        Ok(())
    }
}

/// Checks a topic name as it appears in PUBLISH (or a will topic).
///
/// # Errors
/// - [`TopicError::Empty`] (MQTT-4.7.3-1).
/// - [`TopicError::TooLong`], over 65,535 bytes (MQTT-4.7.3-3).
/// - [`TopicError::NullCharacter`] (MQTT-4.7.3-2).
/// - [`TopicError::WildcardInName`] (MQTT-3.3.2-2; MQTT-4.7.1-1 in 3.1.1,
///   MQTT-4.7.0-1 in 5.0).
///
/// Names starting with `$` are valid here; whether a client may publish to
/// `$SYS/...` is the broker's policy ([`is_sys_topic`]).
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_length(name)?;
    // One pass over the bytes: '+', '#' and NUL are ASCII, so they can't
    // occur inside a multi-byte UTF-8 sequence.
    for &b in name.as_bytes() {
        match b {
            0 => return Err(TopicError::NullCharacter),
            b'+' | b'#' => return Err(TopicError::WildcardInName),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a topic filter as it appears in SUBSCRIBE or UNSUBSCRIBE,
/// including `$share/{group}/{filter}` (see [`parse_filter`]).
///
/// # Errors
/// - [`TopicError::Empty`], [`TopicError::TooLong`],
///   [`TopicError::NullCharacter`] (MQTT-4.7.3-1..3).
/// - [`TopicError::InvalidWildcard`] when `#` is not alone in the last level
///   (MQTT-4.7.1-2 in 3.1.1, MQTT-4.7.1-1 in 5.0) or `+` not alone in its
///   level (MQTT-4.7.1-3 in 3.1.1, MQTT-4.7.1-2 in 5.0).
/// - [`TopicError::InvalidSharedGroup`], [`TopicError::InvalidSharedFilter`]
///   (MQTT-4.8.2-1, MQTT-4.8.2-2).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    parse_filter(filter).map(|_| ())
}

/// Validates `filter` and splits off a `$share/{group}/` prefix.
///
/// Only a filter starting with exactly `$share/` is shared; `$share` alone or
/// `$shared/x` are ordinary filters (matching `$`-topics literally). MQTT
/// 3.1.1 has no shared subscriptions: whether a 3.1.1 client's `$share/`
/// filter is shared is the broker's decision, this parser just reports it.
///
/// An invalid wildcard inside the filter after the group is reported as
/// [`TopicError::InvalidWildcard`], like any other filter's.
///
/// # Errors
/// As [`validate_topic_filter`].
pub fn parse_filter(filter: &str) -> Result<ParsedFilter<'_>, TopicError> {
    check_length(filter)?;
    let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
        check_filter_levels(filter)?;
        return Ok(ParsedFilter::Normal(filter));
    };
    // The group ends at the first '/', so it can never contain one
    // (MQTT-4.8.2-2); a missing '/' means no filter follows.
    let (group, inner) = match rest.split_once(LEVEL_SEPARATOR) {
        Some((group, inner)) => (group, Some(inner)),
        None => (rest, None),
    };
    // MQTT-4.8.2-1: ShareName at least one character long.
    if group.is_empty() {
        return Err(TopicError::InvalidSharedGroup);
    }
    for &b in group.as_bytes() {
        match b {
            0 => return Err(TopicError::NullCharacter),
            // MQTT-4.8.2-2: no '+' or '#' in the ShareName.
            b'+' | b'#' => return Err(TopicError::InvalidSharedGroup),
            _ => {}
        }
    }
    // MQTT-4.8.2-2: the '/' after the ShareName is followed by a Topic
    // Filter, which is at least one character long (MQTT-4.7.3-1).
    let inner = match inner {
        Some(inner) if !inner.is_empty() => inner,
        _ => return Err(TopicError::InvalidSharedFilter),
    };
    check_filter_levels(inner)?;
    Ok(ParsedFilter::Shared {
        group,
        filter: inner,
    })
}

/// Wildcard placement and NUL, in one pass over the bytes.
fn check_filter_levels(filter: &str) -> Result<(), TopicError> {
    let bytes = filter.as_bytes();
    let mut level_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0 => return Err(TopicError::NullCharacter),
            // '+' must be the whole level: first in it and followed by '/'
            // or the end.
            b'+' if i != level_start || !matches!(bytes.get(i + 1), None | Some(b'/')) => {
                return Err(TopicError::InvalidWildcard);
            }
            // '#' must be the whole last level.
            b'#' if i != level_start || i + 1 != bytes.len() => {
                return Err(TopicError::InvalidWildcard);
            }
            b'/' => level_start = i + 1,
            _ => {}
        }
    }
    Ok(())
}

/// The number of levels in a topic name or filter: one more than the number
/// of `/` separators (`"a"` has 1, `"/"` has 2, `"a/b/"` has 3).
#[must_use]
pub fn level_count(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

/// Refuses a topic with more than `max` levels, for the broker's
/// configurable level limit. This also bounds the depth of the trie.
///
/// # Errors
/// [`TopicError::TooManyLevels`] with the level count and `max`.
pub fn check_level_count(topic: &str, max: usize) -> Result<(), TopicError> {
    let levels = level_count(topic);
    if levels > max {
        Err(TopicError::TooManyLevels { levels, max })
    } else {
        Ok(())
    }
}

/// Whether a topic starts with `$` (`$SYS/...`, and also `$share/...` as a
/// filter). Such topic names are not matched by filters whose first level is
/// a wildcard (MQTT-4.7.2-1), and clients normally can't publish to them.
#[must_use]
pub fn is_sys_topic(topic: &str) -> bool {
    topic.starts_with('$')
}

/// Whether the first level of `filter` is `+` or `#`.
fn starts_with_wildcard_level(filter: &str) -> bool {
    let first = filter.split(LEVEL_SEPARATOR).next().unwrap_or(filter);
    first == SINGLE_LEVEL_WILDCARD || first == MULTI_LEVEL_WILDCARD
}

/// Whether the plain (not `$share/`) topic filter `filter` matches the topic
/// name `topic`.
///
/// - `+` matches exactly one level, which may be empty (`+/+` matches
///   `/finance`).
/// - `#` matches its parent level and any number of child levels
///   (`sport/#` matches `sport`, `sport/` and `sport/a/b`).
/// - A filter starting with a wildcard level does not match a topic starting
///   with `$` (MQTT-4.7.2-1).
/// - Other levels compare byte for byte (MQTT-4.7.3-4).
///
/// Both arguments are expected to be valid; for invalid ones the answer is
/// unspecified but it never panics. [`SubscriptionTrie::for_each_match`]
/// agrees with this function for every valid filter.
#[must_use]
pub fn matches(filter: &str, topic: &str) -> bool {
    if is_sys_topic(topic) && starts_with_wildcard_level(filter) {
        return false;
    }
    let mut filter_levels = filter.split(LEVEL_SEPARATOR);
    let mut topic_levels = topic.split(LEVEL_SEPARATOR);
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // '#' also matches when the topic has run out: the parent level.
            (Some(MULTI_LEVEL_WILDCARD), _) => return true,
            (Some(SINGLE_LEVEL_WILDCARD), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_count_counts_empty_levels() {
        assert_eq!(level_count("a"), 1);
        assert_eq!(level_count("/"), 2);
        assert_eq!(level_count("a/b/"), 3);
        assert_eq!(level_count(""), 1);
    }

    #[test]
    fn check_level_count_reports_levels_and_max() {
        assert_eq!(check_level_count("a/b/c", 3), Ok(()));
        assert_eq!(
            check_level_count("a/b/c/d", 3),
            Err(TopicError::TooManyLevels { levels: 4, max: 3 })
        );
    }

    #[test]
    fn parsed_filter_accessors() {
        let shared = ParsedFilter::Shared {
            group: "g",
            filter: "a/#",
        };
        assert_eq!(shared.filter(), "a/#");
        assert_eq!(shared.group(), Some("g"));
        assert!(shared.is_shared());
        let normal = ParsedFilter::Normal("a/+");
        assert_eq!(normal.filter(), "a/+");
        assert_eq!(normal.group(), None);
        assert!(!normal.is_shared());
    }
}
