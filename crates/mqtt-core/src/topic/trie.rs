//! The subscription trie: which (filter, key) entries match a topic name.
//!
//! One node per filter level. A node keeps its literal children in a hash
//! map, its `+` child in its own field and the entries of filters ending in
//! `#` at this level in their own list, so matching hashes only the literal
//! level of each step and never for a wildcard. Matching walks the trie with
//! an explicit stack (inline for the first [`INLINE_FRAMES`] pending
//! branches), never recursion, so neither a deep filter nor a deep topic can
//! overflow the call stack, and a match allocates nothing in practice.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::mem;

use super::{LEVEL_SEPARATOR, MULTI_LEVEL_WILDCARD, SINGLE_LEVEL_WILDCARD};

/// Pending `+` branches kept on the call stack during a match before
/// spilling to the heap. A frame is pushed only where a node has both a `+`
/// child and further levels to match, so real topics stay far below this.
const INLINE_FRAMES: usize = 16;

/// Entry lists longer than this get a key -> position index, so insert and
/// remove stay O(1) for filters with many subscribers (`#`, `$SYS/#`, a
/// popular topic). Short lists are scanned, which is faster and smaller.
const INDEX_ABOVE: usize = 16;

/// An indexed list that shrinks below this drops its index again; the gap
/// to [`INDEX_ABOVE`] keeps a list at the boundary from rebuilding it on
/// every insert/remove.
const UNINDEX_BELOW: usize = 8;

/// A map from topic filter to a set of `(key, value)` entries, answering
/// "which entries match this topic name" for many filters at once.
///
/// - `K` names the subscriber (a session id, or for shared subscriptions the
///   group); each `(filter, key)` pair holds one `V` (subscription options,
///   identifiers...).
/// - The trie does not interpret `$share/`: store a shared subscription under
///   its inner filter (see [`super::parse_filter`]) with a key naming the
///   group.
/// - Filters are expected to be valid ([`super::validate_topic_filter`]). An
///   invalid one never panics; a `#` level ends it wherever it appears, as
///   [`super::matches`] reads it.
/// - The order of [`for_each_match`](Self::for_each_match) callbacks depends
///   only on what was inserted and removed, in which order, never on the
///   hasher, so a seeded simulation replays exactly.
/// - `S` hashes literal levels and (for long entry lists) keys. The default
///   [`RandomState`] resists hash flooding by peers choosing filter levels;
///   a keyed faster hasher can be plugged in with [`with_hasher`](Self::with_hasher).
///
/// Memory is bounded by what is inserted: [`remove`](Self::remove) prunes
/// nodes left without entries or children.
pub struct SubscriptionTrie<K, V, S = RandomState> {
    root: Node<K, V, S>,
    hasher: S,
    len: usize,
    filter_count: usize,
}

/// One filter level.
struct Node<K, V, S> {
    /// Children by literal level.
    children: HashMap<Box<str>, Node<K, V, S>, S>,
    /// The `+` child.
    plus: Option<Box<Node<K, V, S>>>,
    /// Entries of filters that end at this node.
    exact: Entries<K, V, S>,
    /// Entries of filters that end with `#` right below this node (`a/#` is
    /// stored at node `a`, `#` at the root): they match this level and
    /// everything under it.
    multi: Entries<K, V, S>,
}

/// The `(key, value)` entries of one filter.
struct Entries<K, V, S> {
    /// In insertion order, except that removal moves the last entry into the
    /// gap.
    items: Vec<(K, V)>,
    /// Key -> position in `items`, only for long lists. Boxed so the
    /// common short list costs 8 bytes here instead of a whole map (two
    /// lists per node, ~200k nodes per 100k filters).
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<K, usize, S>>>,
}

impl<K, V> SubscriptionTrie<K, V, RandomState> {
    /// An empty trie with the standard, flood-resistant hasher.
    #[must_use]
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl<K, V> Default for SubscriptionTrie<K, V, RandomState> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, S: Clone> SubscriptionTrie<K, V, S> {
    /// An empty trie whose hash maps use `hasher`.
    #[must_use]
    pub fn with_hasher(hasher: S) -> Self {
        Self {
            root: Node::new(hasher.clone()),
            hasher,
            len: 0,
            filter_count: 0,
        }
    }
}

impl<K, V, S> SubscriptionTrie<K, V, S> {
    /// The number of `(filter, key)` entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the trie holds no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of distinct filters with at least one entry.
    #[must_use]
    pub fn filter_count(&self) -> usize {
        self.filter_count
    }

    /// The number of nodes, the root included: one per distinct filter
    /// prefix (up to a `#`). Walks the whole trie, so it is for metrics and
    /// tests, not the hot path.
    #[must_use]
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

impl<K: Eq + Hash + Clone, V, S: BuildHasher + Clone> SubscriptionTrie<K, V, S> {
    /// Stores `value` for `(filter, key)`, returning the value it replaces.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let (node, multi) = descend_or_create(&mut self.root, filter, &self.hasher);
        let entries = if multi {
            &mut node.multi
        } else {
            &mut node.exact
        };
        let was_empty = entries.is_empty();
        let old = entries.insert(key, value, &self.hasher);
        if old.is_none() {
            self.len += 1;
            if was_empty {
                self.filter_count += 1;
            }
        }
        old
    }

    /// Removes `(filter, key)` and returns its value, pruning nodes left
    /// without entries or children.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let entries = find_entries_mut(&mut self.root, filter)?;
        let value = entries.remove(key)?;
        let now_empty = entries.is_empty();
        self.len -= 1;
        if now_empty {
            self.filter_count -= 1;
            self.prune(filter);
        }
        Some(value)
    }

    /// The value stored for `(filter, key)`.
    #[must_use]
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        find_entries(&self.root, filter)?.get(key)
    }

    /// The value stored for `(filter, key)`, mutably.
    pub fn get_mut(&mut self, filter: &str, key: &K) -> Option<&mut V> {
        find_entries_mut(&mut self.root, filter)?.get_mut(key)
    }

    /// Calls `f` once for every `(key, value)` whose filter matches the topic
    /// name `topic`, with the same answers as [`super::matches`]: a key
    /// subscribed through several matching filters is reported once per
    /// filter, and filters starting with `+` or `#` skip topics starting
    /// with `$` (MQTT-4.7.2-1).
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&K, &V)) {
        let mut stack = Stack::<Frame<'_, K, V, S>>::new();
        let root = &self.root;
        let (first, rest) = split_first_level(topic);
        // MQTT-4.7.2-1: the root's `#` entries and `+` child are the filters
        // that start with a wildcard.
        if !super::is_sys_topic(topic) {
            root.multi.for_each(&mut f);
            if let Some(plus) = root.plus.as_deref() {
                stack.push((plus, rest));
            }
        }
        if let Some(child) = root.literal_child(first) {
            stack.push((child, rest));
        }
        while let Some((mut node, mut rest)) = stack.pop() {
            // `node` has consumed one topic level; `rest` holds the levels
            // still to match, None when the topic is used up. The literal
            // child is followed in this loop, only `+` branches are stacked.
            loop {
                // `#` matches this level's remainder, including nothing.
                node.multi.for_each(&mut f);
                let Some(remaining) = rest else {
                    node.exact.for_each(&mut f);
                    break;
                };
                let (level, next) = split_first_level(remaining);
                if let Some(plus) = node.plus.as_deref() {
                    stack.push((plus, next));
                }
                match node.literal_child(level) {
                    Some(child) => {
                        node = child;
                        rest = next;
                    }
                    None => break,
                }
            }
        }
    }

    /// Cuts the chain of nodes on `filter`'s path that no longer hold
    /// entries or other children. Called after its last entry went away.
    fn prune(&mut self, filter: &str) {
        // Find the deepest node that must stay: the root, or any node with
        // entries or a child off the path. The edge below it is the cut.
        let mut node = &self.root;
        let mut keep_depth = 0;
        let mut cut_level = None;
        for (depth, level) in path_levels(filter).enumerate() {
            if depth == 0 || !node.is_bare_link() {
                keep_depth = depth;
                cut_level = Some(level);
            }
            match child(node, level) {
                Some(next) => node = next,
                None => return,
            }
        }
        if !node.is_empty() {
            return;
        }
        let Some(cut_level) = cut_level else {
            // The filter ended at the root (`#`): the root always stays.
            return;
        };
        let mut keep = &mut self.root;
        for level in path_levels(filter).take(keep_depth) {
            match child_mut(keep, level) {
                Some(next) => keep = next,
                None => return,
            }
        }
        // Dropping the cut chain is iterative (see `Node::drop`).
        if cut_level == SINGLE_LEVEL_WILDCARD {
            keep.plus = None;
        } else {
            keep.children.remove(cut_level);
            // A node that once had many children gives the table back.
            let children = &mut keep.children;
            if children.capacity() > 16 && children.len() < children.capacity() / 4 {
                children.shrink_to_fit();
            }
        }
    }
}

impl<K, V, S> fmt::Debug for SubscriptionTrie<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .field("filter_count", &self.filter_count)
            .finish_non_exhaustive()
    }
}

/// The levels of `filter` that are nodes: all of them up to the first `#`.
fn path_levels(filter: &str) -> impl Iterator<Item = &str> + Clone {
    filter
        .split(LEVEL_SEPARATOR)
        .take_while(|level| *level != MULTI_LEVEL_WILDCARD)
}

/// The first level of `topic` and the rest after its separator (None when
/// there is no separator, i.e. this was the last level).
fn split_first_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once(LEVEL_SEPARATOR) {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

fn child<'n, K, V, S: BuildHasher>(
    node: &'n Node<K, V, S>,
    level: &str,
) -> Option<&'n Node<K, V, S>> {
    if level == SINGLE_LEVEL_WILDCARD {
        node.plus.as_deref()
    } else {
        node.children.get(level)
    }
}

fn child_mut<'n, K, V, S: BuildHasher>(
    node: &'n mut Node<K, V, S>,
    level: &str,
) -> Option<&'n mut Node<K, V, S>> {
    if level == SINGLE_LEVEL_WILDCARD {
        node.plus.as_deref_mut()
    } else {
        node.children.get_mut(level)
    }
}

/// The entry list `filter` is stored in, if its path exists.
fn find_entries<'n, K, V, S: BuildHasher>(
    mut node: &'n Node<K, V, S>,
    filter: &str,
) -> Option<&'n Entries<K, V, S>> {
    for level in filter.split(LEVEL_SEPARATOR) {
        if level == MULTI_LEVEL_WILDCARD {
            return Some(&node.multi);
        }
        node = child(node, level)?;
    }
    Some(&node.exact)
}

fn find_entries_mut<'n, K, V, S: BuildHasher>(
    mut node: &'n mut Node<K, V, S>,
    filter: &str,
) -> Option<&'n mut Entries<K, V, S>> {
    for level in filter.split(LEVEL_SEPARATOR) {
        if level == MULTI_LEVEL_WILDCARD {
            return Some(&mut node.multi);
        }
        node = child_mut(node, level)?;
    }
    Some(&mut node.exact)
}

/// The node `filter` is stored at, created as needed, and whether it goes in
/// the `#` list.
fn descend_or_create<'n, K, V, S: BuildHasher + Clone>(
    mut node: &'n mut Node<K, V, S>,
    filter: &str,
    hasher: &S,
) -> (&'n mut Node<K, V, S>, bool) {
    for level in filter.split(LEVEL_SEPARATOR) {
        if level == MULTI_LEVEL_WILDCARD {
            return (node, true);
        }
        node = if level == SINGLE_LEVEL_WILDCARD {
            node.plus
                .get_or_insert_with(|| Box::new(Node::new(hasher.clone())))
        } else {
            // Look up before `entry` so an existing level costs no key
            // allocation; the borrow checker needs the second lookup.
            let children = &mut node.children;
            if !children.contains_key(level) {
                children.insert(Box::from(level), Node::new(hasher.clone()));
            }
            match children.get_mut(level) {
                Some(child) => child,
                None => unreachable!("level inserted just above"),
            }
        };
    }
    (node, false)
}

impl<K, V, S> Node<K, V, S> {
    fn new(hasher: S) -> Self {
        Self {
            children: HashMap::with_hasher(hasher),
            plus: None,
            exact: Entries::new(),
            multi: Entries::new(),
        }
    }

    /// The child for a literal topic level. Chains of single children are
    /// common (`dev/17/temp`), and comparing one key is cheaper than hashing
    /// the level; an empty map returns before hashing too.
    #[inline]
    fn literal_child(&self, level: &str) -> Option<&Self>
    where
        S: BuildHasher,
    {
        if self.children.len() == 1 {
            let (key, child) = self.children.iter().next()?;
            return (**key == *level).then_some(child);
        }
        self.children.get(level)
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    /// No entries and no children: nothing needs this node.
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.multi.is_empty() && self.child_count() == 0
    }

    /// No entries and exactly one child (the one on the path being pruned):
    /// this node only exists to lead there.
    fn is_bare_link(&self) -> bool {
        self.exact.is_empty() && self.multi.is_empty() && self.child_count() == 1
    }
}

impl<K, V, S> Drop for Node<K, V, S> {
    /// Tears the subtree down with a heap stack: the default drop glue would
    /// recurse once per level, and a peer-chosen filter can be ~32k levels
    /// deep, enough to overflow a thread's stack.
    fn drop(&mut self) {
        if self.child_count() == 0 {
            return;
        }
        let mut stack: Vec<Node<K, V, S>> = Vec::new();
        stack.extend(self.children.drain().map(|(_, node)| node));
        stack.extend(self.plus.take().map(|node| *node));
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, node)| node));
            stack.extend(node.plus.take().map(|node| *node));
            // `node` drops here childless, so this drop doesn't recurse.
        }
    }
}

impl<K, V, S> Entries<K, V, S> {
    fn new() -> Self {
        Self {
            items: Vec::new(),
            index: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn for_each(&self, f: &mut impl FnMut(&K, &V)) {
        for (key, value) in &self.items {
            f(key, value);
        }
    }
}

impl<K: Eq + Hash + Clone, V, S: BuildHasher + Clone> Entries<K, V, S> {
    fn position(&self, key: &K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.items.iter().position(|(k, _)| k == key),
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        let i = self.position(key)?;
        self.items.get(i).map(|(_, value)| value)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.position(key)?;
        self.items.get_mut(i).map(|(_, value)| value)
    }

    fn insert(&mut self, key: K, value: V, hasher: &S) -> Option<V> {
        if let Some(i) = self.position(&key) {
            if let Some((_, old)) = self.items.get_mut(i) {
                return Some(mem::replace(old, value));
            }
        }
        match &mut self.index {
            Some(index) => {
                index.insert(key.clone(), self.items.len());
            }
            None if self.items.len() >= INDEX_ABOVE => {
                let mut index =
                    HashMap::with_capacity_and_hasher(self.items.len() + 1, hasher.clone());
                for (i, (k, _)) in self.items.iter().enumerate() {
                    index.insert(k.clone(), i);
                }
                index.insert(key.clone(), self.items.len());
                self.index = Some(Box::new(index));
            }
            None => {}
        }
        self.items.push((key, value));
        None
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.position(key)?;
        if i >= self.items.len() {
            return None;
        }
        let (_, value) = self.items.swap_remove(i);
        if let Some(index) = &mut self.index {
            index.remove(key);
            // The former last entry now sits at `i`.
            if let Some((moved, _)) = self.items.get(i) {
                if let Some(slot) = index.get_mut(moved) {
                    *slot = i;
                }
            }
            if self.items.len() < UNINDEX_BELOW {
                self.index = None;
            }
        }
        // Give back memory after a mass unsubscribe from one filter.
        if self.items.capacity() > 8 && self.items.len() < self.items.capacity() / 4 {
            self.items.shrink_to(self.items.len() * 2);
        }
        Some(value)
    }
}

/// A pending `+` branch: the node reached and the topic levels still to
/// match.
type Frame<'a, K, V, S> = (&'a Node<K, V, S>, Option<&'a str>);

/// A LIFO stack that keeps its first [`INLINE_FRAMES`] items inline and
/// spills the rest to the heap.
struct Stack<T: Copy> {
    inline: [Option<T>; INLINE_FRAMES],
    inline_len: usize,
    spill: Vec<T>,
}

impl<T: Copy> Stack<T> {
    fn new() -> Self {
        Self {
            inline: [None; INLINE_FRAMES],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, item: T) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = Some(item);
                self.inline_len += 1;
            }
            None => self.spill.push(item),
        }
    }

    fn pop(&mut self) -> Option<T> {
        // Spilled items were pushed after the inline ones.
        if let Some(item) = self.spill.pop() {
            return Some(item);
        }
        self.inline_len = self.inline_len.checked_sub(1)?;
        self.inline.get_mut(self.inline_len).and_then(Option::take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_spills_and_stays_lifo() {
        let mut stack = Stack::<usize>::new();
        for i in 0..40 {
            stack.push(i);
        }
        for i in (0..40).rev() {
            assert_eq!(stack.pop(), Some(i));
        }
        assert_eq!(stack.pop(), None);
        stack.push(7);
        assert_eq!(stack.pop(), Some(7));
        assert_eq!(stack.pop(), None);
    }

    #[test]
    fn entries_index_survives_growth_and_shrink() {
        let hasher = RandomState::new();
        let mut entries = Entries::<u32, u32, RandomState>::new();
        for k in 0..100 {
            assert_eq!(entries.insert(k, k * 10, &hasher), None);
        }
        assert!(entries.index.is_some());
        assert_eq!(entries.insert(5, 55, &hasher), Some(50));
        for k in (0..100).step_by(2) {
            assert_eq!(entries.remove(&k), Some(if k == 5 { 55 } else { k * 10 }));
        }
        for k in 0..100 {
            let expected = (k % 2 == 1).then_some(if k == 5 { 55 } else { k * 10 });
            assert_eq!(entries.get(&k).copied(), expected, "key {k}");
        }
        for k in (1..100).step_by(2) {
            assert!(entries.remove(&k).is_some());
        }
        assert!(entries.index.is_none());
        assert!(entries.is_empty());
        assert_eq!(entries.remove(&1), None);
    }

    #[test]
    fn remove_prunes_to_an_empty_root() {
        let mut trie = SubscriptionTrie::new();
        for filter in ["a/b/c", "a/+/c/#", "a/b", "#", "+", "a/b/c/d/e/f"] {
            trie.insert(filter, 1u8, ());
        }
        for filter in ["a/b/c", "a/+/c/#", "a/b", "#", "+", "a/b/c/d/e/f"] {
            assert_eq!(trie.remove(filter, &1), Some(()));
        }
        assert!(trie.root.is_empty());
        assert_eq!(trie.root.children.len(), 0);
        assert_eq!(trie.filter_count(), 0);
    }

    #[test]
    fn remove_keeps_nodes_still_in_use() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b/c", 1u8, ());
        trie.insert("a/b", 1u8, ());
        trie.insert("a/x/y", 1u8, ());
        trie.remove("a/b/c", &1);
        let a = trie.root.children.get("a").expect("a");
        let b = a.children.get("b").expect("b stays: it has an entry");
        assert!(b.children.is_empty(), "c was pruned");
        trie.remove("a/b", &1);
        let a = trie.root.children.get("a").expect("a stays: x/y below");
        assert!(!a.children.contains_key("b"));
        assert!(a.children.contains_key("x"));
    }

    #[test]
    fn very_deep_filters_do_not_overflow_the_stack() {
        // ~32k levels: the most a 65,535-byte filter can have.
        let deep = "a/".repeat(32_000) + "#";
        let topic = "a/".repeat(32_000) + "z";
        let mut trie = SubscriptionTrie::new();
        trie.insert(&deep, 1u8, ());
        let plus = "+/".repeat(20_000) + "#";
        trie.insert(&plus, 2u8, ());
        let mut found = Vec::new();
        trie.for_each_match(&topic, |k, ()| found.push(*k));
        found.sort_unstable();
        assert_eq!(found, [1, 2]);
        assert_eq!(trie.remove(&plus, &2), Some(()));
        // Dropping with a deep chain left is iterative too.
        drop(trie);
    }
}
