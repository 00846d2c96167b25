//! Outbound packet-id allocation of a session.
// Tests play the runtime: one base instant.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mqtt_core::broker::{Delivery, InflightMessage, InflightState, Message, SessionState};
use mqtt_core::codec::{PacketId, Properties, ProtocolVersion, QoS};

#[test]
fn packet_ids_skip_ids_in_flight_and_wrap() {
    // MQTT-2.2.1-3 (3.1.1: MQTT-2.3.1-2): an id in flight is never handed out again.
    let t0 = Instant::now();
    let mut s = SessionState::new("c".into(), ProtocolVersion::V5);
    s.last_packet_id = u16::MAX - 1;
    let msg = Arc::new(Message {
        topic: "t".into(),
        payload: Bytes::new(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::default(),
        publisher: None,
        expires_at: None,
    });
    for id in [u16::MAX, 1, 2] {
        let pid = PacketId::new(id).unwrap();
        s.inflight.push_back(InflightMessage {
            packet_id: pid,
            delivery: Delivery {
                message: msg.clone(),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_identifiers: vec![],
            },
            state: InflightState::AwaitingPubAck,
            sent_at: t0,
        });
    }
    assert_eq!(s.next_packet_id().map(|p| p.get()), Some(3));
    assert_eq!(s.next_packet_id().map(|p| p.get()), Some(4));
}
