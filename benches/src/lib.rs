//! Workloads shared by the criterion benchmarks.

pub mod codec {
    //! Packets for the codec benchmarks, built once and encoded with our
    //! encoder. The byte strings are also what the `mqttbytes` baseline
    //! decodes, so both decoders see identical input.

    use bytes::{Bytes, BytesMut};
    use mqtt_core::codec::{
        encode, ByteString, Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
        RetainHandling, Subscribe, SubscriptionOptions, Will,
    };

    /// One benchmark workload: a packet, its version and its encoding.
    #[derive(Debug, Clone)]
    pub struct Workload {
        /// A short id for benchmark names, e.g. `publish_64B_qos0_v311`.
        pub name: &'static str,
        pub version: ProtocolVersion,
        pub packet: Packet,
        /// `packet` encoded for `version`.
        pub bytes: Bytes,
    }

    impl Workload {
        fn new(name: &'static str, version: ProtocolVersion, packet: Packet) -> Self {
            let bytes = encode_to_bytes(&packet, version);
            Self {
                name,
                version,
                packet,
                bytes,
            }
        }
    }

    /// Encode one packet into fresh `Bytes`.
    pub fn encode_to_bytes(packet: &Packet, version: ProtocolVersion) -> Bytes {
        let mut buf = BytesMut::new();
        encode(packet, version, &mut buf).expect("benchmark packets are encodable");
        buf.freeze()
    }

    /// `copies` back-to-back copies of `bytes` in one receive buffer, as a
    /// connection's read buffer holds them.
    pub fn repeated(bytes: &[u8], copies: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(bytes.len() * copies);
        for _ in 0..copies {
            buf.extend_from_slice(bytes);
        }
        buf
    }

    fn id(n: u16) -> PacketId {
        PacketId::new(n).expect("non-zero packet id")
    }

    fn s(v: &'static str) -> ByteString {
        ByteString::from_static(v)
    }

    /// A PUBLISH whose payload is sized so the whole packet is `total` bytes.
    fn sized_publish(
        version: ProtocolVersion,
        total: usize,
        mut publish: Publish,
    ) -> (ProtocolVersion, Packet) {
        publish.payload = Bytes::new();
        let overhead = encode_to_bytes(&Packet::Publish(publish.clone()), version).len();
        // The remaining length may need one more byte once the payload is in.
        let mut payload_len = total - overhead;
        loop {
            publish.payload = Bytes::from(vec![0x5A; payload_len]);
            let len = encode_to_bytes(&Packet::Publish(publish.clone()), version).len();
            if len <= total {
                break;
            }
            payload_len -= len - total;
        }
        (version, Packet::Publish(publish))
    }

    /// (a) A 64-byte QoS 0 PUBLISH, MQTT 3.1.1: the telemetry common case.
    pub fn publish_small_v311() -> Workload {
        let (version, packet) = sized_publish(
            ProtocolVersion::V3_1_1,
            64,
            Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: s("sensors/building-1/floor-2/temp"),
                packet_id: None,
                properties: Properties::default(),
                payload: Bytes::new(),
            },
        );
        Workload::new("publish_64B_qos0_v311", version, packet)
    }

    /// (b) A 1 KiB QoS 1 PUBLISH, MQTT 5.0, with the properties a
    /// request/response application sends.
    pub fn publish_1k_v5() -> Workload {
        let (version, packet) = sized_publish(
            ProtocolVersion::V5,
            1024,
            Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: s("devices/acme-42/events/state"),
                packet_id: Some(id(4242)),
                properties: Properties {
                    payload_format_indicator: Some(true),
                    message_expiry_interval: Some(3600),
                    content_type: Some(s("application/json")),
                    response_topic: Some(s("devices/acme-42/replies")),
                    correlation_data: Some(Bytes::from_static(b"0123456789abcdef")),
                    user_properties: vec![(s("trace-id"), s("4bf92f3577b34da6"))],
                    ..Properties::default()
                },
                payload: Bytes::new(),
            },
        );
        Workload::new("publish_1KiB_qos1_v5_props", version, packet)
    }

    /// (c) A 5.0 CONNECT with a will (and will properties), user
    /// properties, user name and password.
    pub fn connect_v5() -> Workload {
        let packet = Packet::Connect(Connect {
            protocol_version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: s("acme-42-gateway-7f3a"),
            will: Some(Will {
                topic: s("devices/acme-42/status"),
                payload: Bytes::from_static(b"{\"online\":false}"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties {
                    will_delay_interval: Some(30),
                    message_expiry_interval: Some(86_400),
                    content_type: Some(s("application/json")),
                    user_properties: vec![(s("reason"), s("unexpected"))],
                    ..Properties::default()
                },
            }),
            username: Some(s("gateway-7f3a")),
            password: Some(Bytes::from_static(b"s3cr3t-t0k3n")),
            properties: Properties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(100),
                maximum_packet_size: Some(1 << 20),
                topic_alias_maximum: Some(16),
                user_properties: vec![
                    (s("region"), s("eu-west-1")),
                    (s("firmware"), s("2.4.1")),
                    (s("model"), s("gw-7")),
                ],
                ..Properties::default()
            },
        });
        Workload::new("connect_v5_will_user_props", ProtocolVersion::V5, packet)
    }

    /// (d) A SUBSCRIBE with 10 filters, MQTT 3.1.1.
    pub fn subscribe_10_v311() -> Workload {
        let filters = [
            "devices/+/status",
            "devices/+/events/#",
            "sensors/building-1/+/temp",
            "sensors/building-2/#",
            "alerts/critical",
            "alerts/warning",
            "$SYS/broker/clients/connected",
            "cmd/acme-42/+",
            "config/acme-42",
            "ota/acme-42/firmware",
        ];
        let packet = Packet::Subscribe(Subscribe {
            packet_id: id(7),
            filters: filters
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let qos = match i % 3 {
                        0 => QoS::AtMostOnce,
                        1 => QoS::AtLeastOnce,
                        _ => QoS::ExactlyOnce,
                    };
                    (ByteString::from(*f), SubscriptionOptions::new(qos))
                })
                .collect(),
            properties: Properties::default(),
        });
        Workload::new("subscribe_10_filters_v311", ProtocolVersion::V3_1_1, packet)
    }

    /// A 5.0 SUBSCRIBE with 10 filters and full subscription options, for
    /// benches that want the 5.0 path.
    pub fn subscribe_10_v5() -> Workload {
        let mut w = subscribe_10_v311();
        if let Packet::Subscribe(sub) = &mut w.packet {
            for (_, o) in &mut sub.filters {
                o.no_local = true;
                o.retain_handling = RetainHandling::SendIfNew;
            }
            sub.properties.subscription_identifiers = vec![17];
        }
        Workload::new("subscribe_10_filters_v5", ProtocolVersion::V5, w.packet)
    }

    /// The four workloads of the codec benchmark, in order (a) to (d).
    pub fn all() -> Vec<Workload> {
        vec![
            publish_small_v311(),
            publish_1k_v5(),
            connect_v5(),
            subscribe_10_v311(),
        ]
    }
}
