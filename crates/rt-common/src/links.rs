//! The runtimes' bookkeeping of bridge transports: which link of which
//! bridge is the current one. Every `Dial` opens a new link with a new
//! generation; inputs (up, failed, bytes, down) carry the generation they
//! were made for, so an input from a link the core already closed or
//! abandoned is ignored instead of being applied to its successor.
//!
//! No protocol here (the bridge state machine is the core's) and no I/O:
//! `T` is whatever the runtime keeps per link (a write queue, a task).

use mqtt_core::node::{BridgeId, Node};

/// One transport of one bridge: which bridge, and which of its dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub id: BridgeId,
    pub generation: u64,
}

/// The current link of a bridge.
#[derive(Debug)]
pub struct LinkState<T> {
    pub generation: u64,
    /// The transport reported itself up (a dial in progress otherwise).
    pub up: bool,
    /// What was dialed, for logs.
    pub address: String,
    /// The runtime's own handle on the transport.
    pub io: T,
}

#[derive(Debug)]
struct Slot<T> {
    name: String,
    next_generation: u64,
    link: Option<LinkState<T>>,
}

/// One slot per bridge of a [`Node`], in index order.
#[derive(Debug)]
pub struct BridgeLinks<T> {
    slots: Vec<Slot<T>>,
}

impl<T> BridgeLinks<T> {
    pub fn new(node: &Node) -> Self {
        let slots = (0..node.bridge_count())
            .map(|i| Slot {
                name: node
                    .bridge(BridgeId(i))
                    .map_or_else(|| format!("#{i}"), |b| b.name().to_owned()),
                next_generation: 0,
                link: None,
            })
            .collect();
        Self { slots }
    }

    /// The bridge's name, for logs.
    pub fn name(&self, id: BridgeId) -> &str {
        self.slots.get(id.0).map_or("?", |s| s.name.as_str())
    }

    /// Every bridge's name, in index order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// The bridge's link if `link` is still its current one.
    pub fn current(&mut self, link: Link) -> Option<&mut LinkState<T>> {
        self.slots
            .get_mut(link.id.0)?
            .link
            .as_mut()
            .filter(|l| l.generation == link.generation)
    }

    /// The bridge's current link, whatever its generation.
    pub fn get(&self, id: BridgeId) -> Option<&LinkState<T>> {
        self.slots.get(id.0)?.link.as_ref()
    }

    /// Forget the bridge's current link and hand it back (to close it).
    pub fn take(&mut self, id: BridgeId) -> Option<LinkState<T>> {
        self.slots.get_mut(id.0)?.link.take()
    }

    /// Forget `link` if it is still current, handing it back.
    pub fn take_current(&mut self, link: Link) -> Option<LinkState<T>> {
        let slot = self.slots.get_mut(link.id.0)?;
        if slot.link.as_ref()?.generation != link.generation {
            return None;
        }
        slot.link.take()
    }

    /// Forget every link (shutdown), handing them back.
    pub fn take_all(&mut self) -> Vec<LinkState<T>> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.link.take())
            .collect()
    }

    /// A new link for a `Dial` of bridge `id`: the returned [`Link`] names
    /// it in the inputs the transport sends. The previous link, if any, is
    /// handed back to be closed. `None` for an unknown bridge.
    pub fn open(
        &mut self,
        id: BridgeId,
        address: String,
        io: impl FnOnce(Link) -> T,
    ) -> Option<(Link, Option<LinkState<T>>)> {
        let slot = self.slots.get_mut(id.0)?;
        let old = slot.link.take();
        slot.next_generation += 1;
        let link = Link {
            id,
            generation: slot.next_generation,
        };
        slot.link = Some(LinkState {
            generation: link.generation,
            up: false,
            address,
            io: io(link),
        });
        Some((link, old))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use mqtt_core::bridge::BridgeConfig;
    use mqtt_core::broker::BrokerConfig;

    use super::*;

    fn node() -> Node {
        let b = BridgeConfig {
            name: "cloud".into(),
            addresses: vec!["127.0.0.1:1".into()],
            ..Default::default()
        };
        Node::new(BrokerConfig::default(), vec![b], Instant::now()).expect("valid bridge")
    }

    #[test]
    fn inputs_of_a_replaced_link_are_ignored() {
        let mut links = BridgeLinks::<u32>::new(&node());
        assert_eq!(links.name(BridgeId(0)), "cloud");
        let (first, old) = links
            .open(BridgeId(0), "a".into(), |_| 1)
            .expect("bridge 0");
        assert!(old.is_none());
        let (second, old) = links
            .open(BridgeId(0), "b".into(), |_| 2)
            .expect("bridge 0");
        assert_eq!(old.map(|l| l.io), Some(1));
        assert!(links.current(first).is_none());
        assert!(links.take_current(first).is_none());
        assert_eq!(links.current(second).map(|l| l.io), Some(2));
        assert_eq!(
            links.take_current(second).map(|l| l.address),
            Some("b".into())
        );
        assert!(links.get(BridgeId(0)).is_none());
        assert!(links.open(BridgeId(1), "x".into(), |_| 3).is_none());
    }
}
