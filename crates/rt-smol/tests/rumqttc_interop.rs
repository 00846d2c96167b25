//! A third-party client library (rumqttc, MQTT 3.1.1 and 5.0) against the
//! real `sansmq` binary.

use std::path::Path;
use std::time::Duration;

use sansmq_tests::process::{Runtime, Sansmq};
use sansmq_tests::runtime_matrix;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;
use tokio::time::timeout;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sansmq"))
}

const T: Duration = Duration::from_secs(10);

/// MQTT 3.1.1 through rumqttc's v4 client.
mod v4 {
    use super::*;
    pub use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, Publish, QoS};

    pub struct Client {
        pub client: AsyncClient,
        pub rx: UnboundedReceiver<Packet>,
        pub task: JoinHandle<()>,
        pub session_present: bool,
    }

    /// Connect and wait for a successful CONNACK; every incoming packet
    /// after it is forwarded to `rx`. The event loop stops at the first
    /// error (no automatic reconnection hides a failure).
    pub async fn connect(port: u16, id: &str, tune: impl FnOnce(&mut MqttOptions)) -> Client {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        tune(&mut o);
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, mut rx) = unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(p) = ev {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            }
        });
        let session_present = match timeout(T, rx.recv()).await {
            Ok(Some(Packet::ConnAck(a))) => {
                assert_eq!(a.code, rumqttc::ConnectReturnCode::Success, "{id}");
                a.session_present
            }
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        };
        Client {
            client,
            rx,
            task,
            session_present,
        }
    }

    impl Client {
        /// The next incoming packet matching `pick`, others skipped.
        pub async fn wait<R>(&mut self, what: &str, pick: impl Fn(&Packet) -> Option<R>) -> R {
            let found = timeout(T, async {
                while let Some(p) = self.rx.recv().await {
                    if let Some(r) = pick(&p) {
                        return Some(r);
                    }
                }
                None
            })
            .await;
            match found {
                Ok(Some(r)) => r,
                _ => panic!("no {what} within {T:?}"),
            }
        }

        pub async fn publish_msg(&mut self, what: &str) -> Publish {
            self.wait(what, |p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client
                .subscribe(filter, qos)
                .await
                .expect("queue SUBSCRIBE");
            self.wait("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
                .await;
        }

        /// Publish and wait for the flow to complete (PUBACK / PUBCOMP).
        pub async fn publish(&mut self, topic: &str, qos: QoS, payload: &str) {
            self.client
                .publish(topic, qos, false, payload.as_bytes().to_vec())
                .await
                .expect("queue PUBLISH");
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.wait("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                        .await
                }
                QoS::ExactlyOnce => {
                    self.wait("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
                        .await
                }
            }
        }
    }
}

/// MQTT 5.0 through rumqttc's v5 client.
mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, Publish, PublishProperties};
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    pub struct Client {
        pub client: AsyncClient,
        pub rx: UnboundedReceiver<Packet>,
        pub task: JoinHandle<()>,
    }

    pub async fn connect(port: u16, id: &str, tune: impl FnOnce(&mut MqttOptions)) -> Client {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        tune(&mut o);
        let (client, mut el) = AsyncClient::new(o, 64);
        let (tx, mut rx) = unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event::Incoming(p) = ev {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            }
        });
        match timeout(T, rx.recv()).await {
            Ok(Some(Packet::ConnAck(a))) => assert_eq!(
                a.code,
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success,
                "{id}"
            ),
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        }
        Client { client, rx, task }
    }

    impl Client {
        pub async fn wait<R>(&mut self, what: &str, pick: impl Fn(&Packet) -> Option<R>) -> R {
            let found = timeout(T, async {
                while let Some(p) = self.rx.recv().await {
                    if let Some(r) = pick(&p) {
                        return Some(r);
                    }
                }
                None
            })
            .await;
            match found {
                Ok(Some(r)) => r,
                _ => panic!("no {what} within {T:?}"),
            }
        }

        pub async fn publish_msg(&mut self, what: &str) -> Publish {
            self.wait(what, |p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client
                .subscribe(filter, qos)
                .await
                .expect("queue SUBSCRIBE");
            self.wait("SUBACK", |p| matches!(p, Packet::SubAck(_)).then_some(()))
                .await;
        }

        pub async fn publish(&mut self, topic: &str, qos: QoS, payload: &str) {
            self.client
                .publish(topic, qos, false, payload.as_bytes().to_vec())
                .await
                .expect("queue PUBLISH");
            self.wait_flow(qos).await;
        }

        pub async fn wait_flow(&mut self, qos: QoS) {
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.wait("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                        .await
                }
                QoS::ExactlyOnce => {
                    self.wait("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
                        .await
                }
            }
        }
    }
}

async fn v4_every_qos_both_directions(rt: Runtime) {
    use v4::QoS;
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let mut a = v4::connect(port, "v4-a", |_| {}).await;
    let mut b = v4::connect(port, "v4-b", |_| {}).await;
    a.subscribe("to/a/#", QoS::ExactlyOnce).await;
    b.subscribe("to/b/#", QoS::ExactlyOnce).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("to/a/{qos:?}");
        b.publish(&topic, qos, "b->a").await;
        let m = a.publish_msg("message at a").await;
        assert_eq!(
            (m.topic.as_str(), &m.payload[..], m.qos),
            (&*topic, &b"b->a"[..], qos)
        );

        let topic = format!("to/b/{qos:?}");
        a.publish(&topic, qos, "a->b").await;
        let m = b.publish_msg("message at b").await;
        assert_eq!(
            (m.topic.as_str(), &m.payload[..], m.qos),
            (&*topic, &b"a->b"[..], qos)
        );
    }
    // A subscription at QoS 0 downgrades a QoS 2 message.
    a.subscribe("low/#", QoS::AtMostOnce).await;
    b.publish("low/x", QoS::ExactlyOnce, "down").await;
    let m = a.publish_msg("downgraded").await;
    assert_eq!(m.qos, QoS::AtMostOnce);
}
runtime_matrix!(#[tokio::test] async v4_every_qos_both_directions);

async fn v5_every_qos_both_directions(rt: Runtime) {
    use v5::QoS;
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let mut a = v5::connect(port, "v5-a", |_| {}).await;
    let mut b = v5::connect(port, "v5-b", |_| {}).await;
    a.subscribe("to/a/#", QoS::ExactlyOnce).await;
    b.subscribe("to/b/#", QoS::ExactlyOnce).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("to/a/{qos:?}");
        b.publish(&topic, qos, "b->a").await;
        let m = a.publish_msg("message at a").await;
        assert_eq!(
            (&m.topic[..], &m.payload[..], m.qos),
            (topic.as_bytes(), &b"b->a"[..], qos)
        );

        let topic = format!("to/b/{qos:?}");
        a.publish(&topic, qos, "a->b").await;
        let m = b.publish_msg("message at b").await;
        assert_eq!(
            (&m.topic[..], &m.payload[..], m.qos),
            (topic.as_bytes(), &b"a->b"[..], qos)
        );
    }
}
runtime_matrix!(#[tokio::test] async v5_every_qos_both_directions);

async fn will_of_a_killed_client_arrives(rt: Runtime) {
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();

    let mut watcher = v4::connect(port, "will-watcher", |_| {}).await;
    watcher.subscribe("will/#", v4::QoS::AtLeastOnce).await;

    let doomed = v4::connect(port, "doomed-v4", |o| {
        o.set_last_will(v4::LastWill::new(
            "will/v4",
            "bye v4",
            v4::QoS::AtLeastOnce,
            false,
        ));
    })
    .await;
    // Killing the event loop drops the socket without DISCONNECT.
    doomed.task.abort();
    let m = watcher.publish_msg("v4 will").await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/v4", &b"bye v4"[..])
    );

    let doomed = v5::connect(port, "doomed-v5", |o| {
        o.set_last_will(v5::LastWill::new(
            "will/v5",
            "bye v5",
            v5::QoS::AtLeastOnce,
            false,
            None,
        ));
    })
    .await;
    doomed.task.abort();
    let m = watcher.publish_msg("v5 will").await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("will/v5", &b"bye v5"[..])
    );

    broker.expect_log(
        &[
            "client disconnected",
            "doomed-v5",
            "closed by the transport",
        ],
        T,
    );
}
runtime_matrix!(#[tokio::test] async will_of_a_killed_client_arrives);

async fn persistent_session_survives_reconnect(rt: Runtime) {
    use v4::QoS;
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let persistent = |o: &mut v4::MqttOptions| {
        o.set_clean_session(false);
    };

    let mut first = v4::connect(port, "persistent", persistent).await;
    assert!(!first.session_present);
    first.subscribe("ps/#", QoS::AtLeastOnce).await;
    first.client.disconnect().await.expect("queue DISCONNECT");
    // The event loop ends once the broker closes the connection.
    timeout(T, &mut first.task)
        .await
        .expect("disconnect completes")
        .expect("event loop task");
    broker.expect_log(
        &[
            "client disconnected",
            "persistent",
            "client sent DISCONNECT",
        ],
        T,
    );

    let mut publisher = v4::connect(port, "ps-publisher", |_| {}).await;
    publisher
        .publish("ps/1", QoS::AtLeastOnce, "while away")
        .await;

    let mut again = v4::connect(port, "persistent", persistent).await;
    assert!(again.session_present, "session should be present");
    let m = again.publish_msg("queued message").await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("ps/1", &b"while away"[..])
    );
    // And the subscription itself survived.
    publisher.publish("ps/2", QoS::AtLeastOnce, "live").await;
    let m = again.publish_msg("live message").await;
    assert_eq!(&m.payload[..], b"live");
}
runtime_matrix!(#[tokio::test] async persistent_session_survives_reconnect);

async fn shared_subscription_splits_messages(rt: Runtime) {
    use v5::QoS;
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let mut s1 = v5::connect(port, "share-1", |_| {}).await;
    let mut s2 = v5::connect(port, "share-2", |_| {}).await;
    s1.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    s2.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    let mut p = v5::connect(port, "share-pub", |_| {}).await;
    const N: usize = 10;
    for i in 0..N {
        p.publish(&format!("jobs/{i}"), QoS::AtLeastOnce, &i.to_string())
            .await;
    }
    // Collect until all N arrived (bounded by T per message).
    let mut got1 = Vec::new();
    let mut got2 = Vec::new();
    while got1.len() + got2.len() < N {
        tokio::select! {
            m = s1.publish_msg("shared message at 1") => got1.push(m.payload),
            m = s2.publish_msg("shared message at 2") => got2.push(m.payload),
        }
    }
    assert!(!got1.is_empty() && !got2.is_empty(), "{got1:?} / {got2:?}");
    let mut all: Vec<String> = got1
        .iter()
        .chain(&got2)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    all.sort_by_key(|s| s.parse::<usize>().unwrap_or(usize::MAX));
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(all, expected, "each message exactly once across the group");
}
runtime_matrix!(#[tokio::test] async shared_subscription_splits_messages);

async fn v5_properties_arrive_intact(rt: Runtime) {
    use v5::QoS;
    let broker = Sansmq::start_default_on(rt, bin());
    let port = broker.port();
    let mut sub = v5::connect(port, "props-sub", |_| {}).await;
    sub.subscribe("props/#", QoS::AtLeastOnce).await;
    let mut publ = v5::connect(port, "props-pub", |_| {}).await;
    let props = v5::PublishProperties {
        payload_format_indicator: Some(1),
        user_properties: vec![
            ("k1".into(), "v1".into()),
            ("k2".into(), "v2 with spaces".into()),
            ("k1".into(), "again".into()),
        ],
        content_type: Some("text/plain".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"\x00\x01corr")),
        ..Default::default()
    };
    publ.client
        .publish_with_properties("props/x", QoS::AtLeastOnce, false, "body", props.clone())
        .await
        .expect("queue PUBLISH");
    publ.wait_flow(QoS::AtLeastOnce).await;
    let m = sub.publish_msg("message with properties").await;
    let got = m.properties.expect("properties present");
    assert_eq!(got.user_properties, props.user_properties);
    assert_eq!(got.content_type, props.content_type);
    assert_eq!(got.response_topic, props.response_topic);
    assert_eq!(got.correlation_data, props.correlation_data);
    assert_eq!(got.payload_format_indicator, props.payload_format_indicator);
    assert_eq!(&m.payload[..], b"body");
}
runtime_matrix!(#[tokio::test] async v5_properties_arrive_intact);
