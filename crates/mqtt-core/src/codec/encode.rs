//! Packet encoding.
//!
//! Lengths are computed arithmetically first (property lengths included),
//! which validates every field; then the buffer is reserved once and the
//! fixed header and fields are written in a single pass. The payload is
//! copied once and never walked.
//!
//! The encoder writes what it is given: it does not re-check rules the
//! decoder enforces on the peer (allowed properties, topic syntax), except
//! where a value cannot be represented (`EncodeError`).

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use super::error::EncodeError;
use super::packet::{Connect, Packet, Publish};
use super::properties::{Properties, VARIABLE_BYTE_INTEGER_MAX};
use super::types::{ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};
use super::wire::{field_len, put_field, put_vbi, vbi_len};

/// The exact number of bytes [`encode`] will write for `packet`, fixed
/// header included. The broker uses it to respect a client's Maximum Packet
/// Size before encoding.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let sizes = measure(packet, version)?;
    Ok(1 + vbi_len(sizes.body) + sizes.body)
}

/// Append `packet`, encoded for `version`, to `buf`.
///
/// A CONNECT is encoded for its own `protocol_version`, whatever `version`
/// says (the decoder reads it by its own level too). On error nothing is
/// written.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let sizes = measure(packet, version)?;
    buf.reserve(1 + vbi_len(sizes.body) + sizes.body);
    buf.put_u8(first_byte(packet));
    // measure() checked body <= 268,435,455, so it fits a u32.
    put_vbi(buf, sizes.body as u32);
    write_body(packet, version.is_v5(), &sizes, buf);
    Ok(())
}

/// Lengths computed before writing, so each is computed once.
struct Sizes {
    /// The remaining length.
    body: usize,
    /// The packet's property list without its length prefix (5.0).
    props: usize,
    /// CONNECT's will property list without its length prefix (5.0).
    will_props: usize,
}

/// Fixed header byte 1: packet type and flags (MQTT-2.1.3-1).
fn first_byte(packet: &Packet) -> u8 {
    let packet_type = packet.packet_type();
    let flags = match packet {
        Packet::Publish(p) => publish_flags(p),
        _ => packet_type.required_flags().unwrap_or(0),
    };
    (packet_type as u8) << 4 | flags
}

#[inline]
fn publish_flags(p: &Publish) -> u8 {
    let mut flags = p.qos.as_u8() << 1;
    if p.retain {
        flags |= 0b0001;
    }
    // MQTT-3.3.1-2: DUP is 0 for every QoS 0 message, so it is never written there.
    if p.dup && p.qos != QoS::AtMostOnce {
        flags |= 0b1000;
    }
    flags
}

fn measure(packet: &Packet, version: ProtocolVersion) -> Result<Sizes, EncodeError> {
    let v5 = version.is_v5();
    let mut s = Sizes {
        body: 0,
        props: 0,
        will_props: 0,
    };
    s.body = match packet {
        Packet::Connect(c) => measure_connect(c, &mut s)?,
        Packet::ConnAck(c) => 2 + props_if_v5(v5, &c.properties, &mut s)?,
        Packet::Publish(p) => {
            // MQTT-2.2.1-2: a packet identifier exactly when QoS > 0.
            if (p.qos == QoS::AtMostOnce) != p.packet_id.is_none() {
                return Err(EncodeError::PacketIdMismatch);
            }
            let mut n = field_len(p.topic.len(), "topic name")?;
            if p.qos != QoS::AtMostOnce {
                n += 2;
            }
            n + props_if_v5(v5, &p.properties, &mut s)? + p.payload.len()
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            // 3.x: the packet identifier only. 5.0 short form (section 3.4.2.1)
            // when there is nothing but Success to say.
            2 + if v5 {
                code_and_props_len(r.reason_code, &r.properties, &mut s)?
            } else {
                0
            }
        }
        Packet::Subscribe(sub) => {
            let mut n = 2 + props_if_v5(v5, &sub.properties, &mut s)?;
            for (filter, _) in &sub.filters {
                n += field_len(filter.len(), "topic filter")? + 1;
            }
            n
        }
        Packet::SubAck(a) => 2 + props_if_v5(v5, &a.properties, &mut s)? + a.reason_codes.len(),
        Packet::Unsubscribe(u) => {
            let mut n = 2 + props_if_v5(v5, &u.properties, &mut s)?;
            for filter in &u.filters {
                n += field_len(filter.len(), "topic filter")?;
            }
            n
        }
        Packet::UnsubAck(u) => {
            if v5 {
                2 + props_if_v5(v5, &u.properties, &mut s)? + u.reason_codes.len()
            } else {
                // 3.1.1 section 3.11: no payload.
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => {
            if v5 {
                code_and_props_len(d.reason_code, &d.properties, &mut s)?
            } else {
                0
            }
        }
        Packet::Auth(a) => {
            if !v5 {
                return Err(EncodeError::UnsupportedInVersion("AUTH"));
            }
            code_and_props_len(a.reason_code, &a.properties, &mut s)?
        }
    };
    // Section 2.1.4: the remaining length is at most 268,435,455.
    if s.body > VARIABLE_BYTE_INTEGER_MAX as usize {
        return Err(EncodeError::PacketTooLarge(s.body));
    }
    Ok(s)
}

fn measure_connect(c: &Connect, s: &mut Sizes) -> Result<usize, EncodeError> {
    let v5 = c.protocol_version.is_v5();
    // Protocol name, level, connect flags, keep alive.
    let mut n = 2 + c.protocol_version.protocol_name().len() + 1 + 1 + 2;
    n += props_if_v5(v5, &c.properties, s)?;
    n += field_len(c.client_id.len(), "client identifier")?;
    if let Some(will) = &c.will {
        if v5 {
            s.will_props = properties_len(&will.properties)?;
            n += vbi_len(s.will_props) + s.will_props;
        }
        n += field_len(will.topic.len(), "will topic")?;
        n += field_len(will.payload.len(), "will payload")?;
    }
    if let Some(username) = &c.username {
        n += field_len(username.len(), "user name")?;
    }
    if let Some(password) = &c.password {
        n += field_len(password.len(), "password")?;
    }
    Ok(n)
}

/// A property list with its length prefix in 5.0, nothing before.
#[inline]
fn props_if_v5(v5: bool, props: &Properties, s: &mut Sizes) -> Result<usize, EncodeError> {
    if !v5 {
        return Ok(0);
    }
    s.props = properties_len(props)?;
    Ok(vbi_len(s.props) + s.props)
}

/// 5.0 reason code + properties, or nothing (the short form) for Success
/// without properties.
#[inline]
fn code_and_props_len(
    code: ReasonCode,
    props: &Properties,
    s: &mut Sizes,
) -> Result<usize, EncodeError> {
    s.props = properties_len(props)?;
    if code == ReasonCode::SUCCESS && s.props == 0 {
        Ok(0)
    } else {
        Ok(1 + vbi_len(s.props) + s.props)
    }
}

/// `1 + field` for a string or binary property.
#[inline]
fn field_prop(len: usize, field: &'static str) -> Result<usize, EncodeError> {
    Ok(1 + field_len(len, field)?)
}

/// The property list's length without its own length prefix (section 2.2.2.1).
fn properties_len(p: &Properties) -> Result<usize, EncodeError> {
    fn opt<T>(v: &Option<T>, size: usize) -> usize {
        if v.is_some() {
            1 + size
        } else {
            0
        }
    }
    let mut n = opt(&p.payload_format_indicator, 1)
        + opt(&p.message_expiry_interval, 4)
        + opt(&p.session_expiry_interval, 4)
        + opt(&p.server_keep_alive, 2)
        + opt(&p.request_problem_information, 1)
        + opt(&p.will_delay_interval, 4)
        + opt(&p.request_response_information, 1)
        + opt(&p.receive_maximum, 2)
        + opt(&p.topic_alias_maximum, 2)
        + opt(&p.topic_alias, 2)
        + opt(&p.maximum_qos, 1)
        + opt(&p.retain_available, 1)
        + opt(&p.maximum_packet_size, 4)
        + opt(&p.wildcard_subscription_available, 1)
        + opt(&p.subscription_identifier_available, 1)
        + opt(&p.shared_subscription_available, 1);
    let strings = [
        (&p.content_type, "Content Type"),
        (&p.response_topic, "Response Topic"),
        (&p.assigned_client_identifier, "Assigned Client Identifier"),
        (&p.authentication_method, "Authentication Method"),
        (&p.response_information, "Response Information"),
        (&p.server_reference, "Server Reference"),
        (&p.reason_string, "Reason String"),
    ];
    for (value, field) in strings {
        if let Some(s) = value {
            n += field_prop(s.len(), field)?;
        }
    }
    if let Some(data) = &p.correlation_data {
        n += field_prop(data.len(), "Correlation Data")?;
    }
    if let Some(data) = &p.authentication_data {
        n += field_prop(data.len(), "Authentication Data")?;
    }
    for &id in &p.subscription_identifiers {
        if id > VARIABLE_BYTE_INTEGER_MAX {
            return Err(EncodeError::ValueOutOfRange("subscription identifier"));
        }
        n += 1 + vbi_len(id as usize);
    }
    for (key, value) in &p.user_properties {
        n += 1 + field_len(key.len(), "User Property")? + field_len(value.len(), "User Property")?;
    }
    Ok(n)
}

/// Write a property list measured by [`properties_len`] as `len`, in
/// identifier order, user properties last.
fn put_properties(buf: &mut BytesMut, p: &Properties, len: usize) {
    put_vbi(buf, len as u32);
    if len == 0 {
        return;
    }
    fn byte(buf: &mut BytesMut, id: u8, v: Option<u8>) {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u8(v);
        }
    }
    fn two(buf: &mut BytesMut, id: u8, v: Option<u16>) {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u16(v);
        }
    }
    fn four(buf: &mut BytesMut, id: u8, v: Option<u32>) {
        if let Some(v) = v {
            buf.put_u8(id);
            buf.put_u32(v);
        }
    }
    fn string(v: &Option<ByteString>) -> Option<&[u8]> {
        v.as_ref().map(|s| s.as_bytes().as_ref())
    }
    fn field(buf: &mut BytesMut, id: u8, v: Option<&[u8]>) {
        if let Some(v) = v {
            buf.put_u8(id);
            put_field(buf, v);
        }
    }
    let flag = |v: Option<bool>| v.map(u8::from);
    byte(buf, 0x01, flag(p.payload_format_indicator));
    four(buf, 0x02, p.message_expiry_interval);
    field(buf, 0x03, string(&p.content_type));
    field(buf, 0x08, string(&p.response_topic));
    field(buf, 0x09, p.correlation_data.as_deref());
    for &id in &p.subscription_identifiers {
        buf.put_u8(0x0B);
        put_vbi(buf, id);
    }
    four(buf, 0x11, p.session_expiry_interval);
    field(buf, 0x12, string(&p.assigned_client_identifier));
    two(buf, 0x13, p.server_keep_alive);
    field(buf, 0x15, string(&p.authentication_method));
    field(buf, 0x16, p.authentication_data.as_deref());
    byte(buf, 0x17, flag(p.request_problem_information));
    four(buf, 0x18, p.will_delay_interval);
    byte(buf, 0x19, flag(p.request_response_information));
    field(buf, 0x1A, string(&p.response_information));
    field(buf, 0x1C, string(&p.server_reference));
    field(buf, 0x1F, string(&p.reason_string));
    two(buf, 0x21, p.receive_maximum);
    two(buf, 0x22, p.topic_alias_maximum);
    two(buf, 0x23, p.topic_alias);
    byte(buf, 0x24, p.maximum_qos.map(QoS::as_u8));
    byte(buf, 0x25, flag(p.retain_available));
    four(buf, 0x27, p.maximum_packet_size);
    byte(buf, 0x28, flag(p.wildcard_subscription_available));
    byte(buf, 0x29, flag(p.subscription_identifier_available));
    byte(buf, 0x2A, flag(p.shared_subscription_available));
    for (key, value) in &p.user_properties {
        buf.put_u8(0x26);
        put_field(buf, key.as_bytes());
        put_field(buf, value.as_bytes());
    }
}

/// The 5.0 reason code + properties measured by [`code_and_props_len`].
#[inline]
fn put_code_and_props(buf: &mut BytesMut, code: ReasonCode, p: &Properties, len: usize) {
    if code == ReasonCode::SUCCESS && len == 0 {
        return;
    }
    buf.put_u8(code.0);
    put_properties(buf, p, len);
}

/// The options byte after each SUBSCRIBE filter (section 3.8.3.1); 3.x has
/// the QoS bits only.
#[inline]
fn subscription_options_byte(o: &SubscriptionOptions, v5: bool) -> u8 {
    let mut byte = o.qos.as_u8();
    if v5 {
        byte |= u8::from(o.no_local) << 2
            | u8::from(o.retain_as_published) << 3
            | (o.retain_handling as u8) << 4;
    }
    byte
}

fn write_body(packet: &Packet, v5: bool, s: &Sizes, buf: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => write_connect(c, s, buf),
        Packet::ConnAck(c) => {
            buf.put_u8(u8::from(c.session_present));
            if v5 {
                buf.put_u8(c.reason_code.0);
                put_properties(buf, &c.properties, s.props);
            } else {
                buf.put_u8(c.reason_code.to_v3_connack_code());
            }
        }
        Packet::Publish(p) => {
            put_field(buf, p.topic.as_bytes());
            if let Some(id) = p.packet_id {
                buf.put_u16(id.get());
            }
            if v5 {
                put_properties(buf, &p.properties, s.props);
            }
            buf.put_slice(&p.payload);
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            buf.put_u16(r.packet_id.get());
            if v5 {
                put_code_and_props(buf, r.reason_code, &r.properties, s.props);
            }
        }
        Packet::Subscribe(sub) => {
            buf.put_u16(sub.packet_id.get());
            if v5 {
                put_properties(buf, &sub.properties, s.props);
            }
            for (filter, options) in &sub.filters {
                put_field(buf, filter.as_bytes());
                buf.put_u8(subscription_options_byte(options, v5));
            }
        }
        Packet::SubAck(a) => {
            buf.put_u16(a.packet_id.get());
            if v5 {
                put_properties(buf, &a.properties, s.props);
                for code in &a.reason_codes {
                    buf.put_u8(code.0);
                }
            } else {
                // 3.1.1 knows 0, 1, 2 and 0x80 (Failure) only.
                for code in &a.reason_codes {
                    buf.put_u8(if code.0 <= 2 { code.0 } else { 0x80 });
                }
            }
        }
        Packet::Unsubscribe(u) => {
            buf.put_u16(u.packet_id.get());
            if v5 {
                put_properties(buf, &u.properties, s.props);
            }
            for filter in &u.filters {
                put_field(buf, filter.as_bytes());
            }
        }
        Packet::UnsubAck(u) => {
            buf.put_u16(u.packet_id.get());
            if v5 {
                put_properties(buf, &u.properties, s.props);
                for code in &u.reason_codes {
                    buf.put_u8(code.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                put_code_and_props(buf, d.reason_code, &d.properties, s.props);
            }
        }
        Packet::Auth(a) => put_code_and_props(buf, a.reason_code, &a.properties, s.props),
    }
}

fn write_connect(c: &Connect, s: &Sizes, buf: &mut BytesMut) {
    let v5 = c.protocol_version.is_v5();
    put_field(buf, c.protocol_version.protocol_name().as_bytes());
    buf.put_u8(c.protocol_version.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0x04 | will.qos.as_u8() << 3 | u8::from(will.retain) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        put_properties(buf, &c.properties, s.props);
    }
    put_field(buf, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        if v5 {
            put_properties(buf, &will.properties, s.will_props);
        }
        put_field(buf, will.topic.as_bytes());
        put_field(buf, &will.payload);
    }
    if let Some(username) = &c.username {
        put_field(buf, username.as_bytes());
    }
    if let Some(password) = &c.password {
        put_field(buf, password);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::decode::decode;
    use super::super::packet::{
        Auth, ConnAck, Disconnect, PubResponse, SubAck, Subscribe, UnsubAck, Unsubscribe, Will,
    };
    use super::super::types::{PacketId, RetainHandling};
    use super::super::{DecodeError, MAX_PACKET_SIZE};
    use super::*;

    const ALL: [ProtocolVersion; 3] = [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ];

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    fn s(v: &'static str) -> ByteString {
        ByteString::from_static(v)
    }

    /// Properties for 5.0 samples, empty for 3.x.
    fn props(v: ProtocolVersion, fill: impl FnOnce(&mut Properties)) -> Properties {
        let mut p = Properties::default();
        if v.is_v5() {
            fill(&mut p);
            p.user_properties.push((s("k"), s("v")));
        }
        p
    }

    /// encode -> check encoded_len -> every strict prefix is incomplete ->
    /// decode whole -> equal, buffer drained.
    fn round_trip(packet: &Packet, v: ProtocolVersion) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(packet, v, &mut buf).unwrap();
        assert_eq!(encoded_len(packet, v).unwrap(), buf.len(), "{packet:?} {v}");
        let bytes = buf.to_vec();
        for cut in 0..bytes.len() {
            let mut part = BytesMut::from(&bytes[..cut]);
            assert_eq!(decode(&mut part, v, MAX_PACKET_SIZE), Ok(None), "cut {cut}");
            assert_eq!(part.len(), cut, "consumed nothing");
        }
        let decoded = decode(&mut buf, v, MAX_PACKET_SIZE).unwrap().unwrap();
        assert_eq!(&decoded, packet, "{v}");
        assert!(buf.is_empty());
        bytes
    }

    fn samples(v: ProtocolVersion) -> Vec<Packet> {
        let v5 = v.is_v5();
        let mut out = vec![
            Packet::Connect(Connect {
                protocol_version: v,
                clean_start: true,
                keep_alive: 60,
                client_id: s("client-1"),
                will: Some(Will {
                    topic: s("will/topic"),
                    payload: Bytes::from_static(b"bye"),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: props(v, |p| {
                        p.will_delay_interval = Some(10);
                        p.content_type = Some(s("text/plain"));
                        p.payload_format_indicator = Some(true);
                    }),
                }),
                username: Some(s("user")),
                password: Some(Bytes::from_static(b"\x00\xFFpw")),
                properties: props(v, |p| {
                    p.session_expiry_interval = Some(3600);
                    p.receive_maximum = Some(100);
                    p.maximum_packet_size = Some(1 << 20);
                    p.request_problem_information = Some(false);
                    p.authentication_method = Some(s("SCRAM"));
                    p.authentication_data = Some(Bytes::from_static(b"\x01\x02"));
                }),
            }),
            Packet::Connect(Connect {
                protocol_version: v,
                clean_start: false,
                keep_alive: 0,
                client_id: s(""),
                will: None,
                username: None,
                password: None,
                properties: Properties::default(),
            }),
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason_code: ReasonCode::SUCCESS,
                properties: props(v, |p| {
                    p.assigned_client_identifier = Some(s("auto-1"));
                    p.maximum_qos = Some(QoS::AtLeastOnce);
                    p.retain_available = Some(false);
                    p.wildcard_subscription_available = Some(true);
                    p.subscription_identifier_available = Some(true);
                    p.shared_subscription_available = Some(false);
                    p.server_keep_alive = Some(30);
                    p.topic_alias_maximum = Some(10);
                    p.response_information = Some(s("resp/"));
                    p.server_reference = Some(s("other:1883"));
                    p.reason_string = Some(s("ok"));
                }),
            }),
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::NOT_AUTHORIZED,
                properties: Properties::default(),
            }),
        ];
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            out.push(Packet::Publish(Publish {
                dup: qos != QoS::AtMostOnce,
                qos,
                retain: qos == QoS::ExactlyOnce,
                topic: s("a/b/c"),
                packet_id: (qos != QoS::AtMostOnce).then(|| pid(7)),
                properties: props(v, |p| {
                    p.message_expiry_interval = Some(5);
                    p.response_topic = Some(s("reply/here"));
                    p.correlation_data = Some(Bytes::from_static(b"id"));
                    p.subscription_identifiers = vec![1, 268_435_455];
                }),
                payload: Bytes::from(vec![0xAB; 300]),
            }));
        }
        if v5 {
            // An empty topic with a Topic Alias (5.0 section 3.3.2.1).
            out.push(Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: s(""),
                packet_id: None,
                properties: Properties {
                    topic_alias: Some(3),
                    ..Properties::default()
                },
                payload: Bytes::new(),
            }));
        }
        let responses = [
            (ReasonCode::SUCCESS, Properties::default()),
            (ReasonCode(0x92), Properties::default()),
            (
                ReasonCode::SUCCESS,
                props(v, |p| p.reason_string = Some(s("why"))),
            ),
        ];
        for (code, properties) in responses {
            let code = if v5 { code } else { ReasonCode::SUCCESS };
            let r = PubResponse {
                packet_id: pid(9),
                reason_code: code,
                properties,
            };
            // 0x92 is valid for PUBREL/PUBCOMP only; PUBACK/PUBREC get 0x10.
            let ack = PubResponse {
                reason_code: if code.0 == 0x92 {
                    ReasonCode(0x10)
                } else {
                    code
                },
                ..r.clone()
            };
            out.push(Packet::PubAck(ack.clone()));
            out.push(Packet::PubRec(ack));
            out.push(Packet::PubRel(r.clone()));
            out.push(Packet::PubComp(r));
        }
        let full = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: v5,
            retain_as_published: v5,
            retain_handling: if v5 {
                RetainHandling::DoNotSend
            } else {
                RetainHandling::SendOnSubscribe
            },
        };
        out.extend([
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                filters: vec![
                    (s("a/+/c"), SubscriptionOptions::new(QoS::AtMostOnce)),
                    (s("#"), full),
                    (s("$share/g/x"), SubscriptionOptions::new(QoS::AtLeastOnce)),
                ],
                properties: props(v, |p| p.subscription_identifiers = vec![42]),
            }),
            Packet::SubAck(SubAck {
                packet_id: pid(1),
                reason_codes: vec![
                    ReasonCode::GRANTED_QOS_0,
                    ReasonCode::GRANTED_QOS_2,
                    ReasonCode::UNSPECIFIED_ERROR,
                ],
                properties: props(v, |_| {}),
            }),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(65_535),
                filters: vec![s("a/b"), s("c/#")],
                properties: props(v, |_| {}),
            }),
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(65_535),
                reason_codes: if v5 {
                    vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
                } else {
                    Vec::new()
                },
                properties: props(v, |_| {}),
            }),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect(Disconnect::default()),
        ]);
        if v5 {
            out.extend([
                Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                    properties: Properties::default(),
                }),
                Packet::Disconnect(Disconnect {
                    reason_code: ReasonCode::SERVER_MOVED,
                    properties: props(v, |p| {
                        p.session_expiry_interval = Some(0);
                        p.server_reference = Some(s("b:1883"));
                    }),
                }),
                Packet::Auth(Auth::default()),
                Packet::Auth(Auth {
                    reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                    properties: props(v, |p| {
                        p.authentication_method = Some(s("SCRAM"));
                        p.authentication_data = Some(Bytes::from_static(b"nonce"));
                    }),
                }),
            ]);
        }
        out
    }

    #[test]
    fn every_packet_type_round_trips_in_every_version() {
        for v in ALL {
            let samples = samples(v);
            let mut types: Vec<u8> = samples.iter().map(|p| p.packet_type() as u8).collect();
            types.sort_unstable();
            types.dedup();
            assert_eq!(types.len(), if v.is_v5() { 15 } else { 14 });
            for p in &samples {
                round_trip(p, v);
            }
        }
    }

    #[test]
    fn exact_bytes_of_small_packets() {
        let v4 = ProtocolVersion::V3_1_1;
        let v5 = ProtocolVersion::V5;
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("a/b"),
            packet_id: Some(pid(10)),
            properties: Properties::default(),
            payload: Bytes::from_static(b"hi"),
        });
        assert_eq!(
            round_trip(&publish, v4),
            [0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i']
        );
        // 5.0 adds a property length of 0.
        assert_eq!(
            round_trip(&publish, v5),
            [0x32, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00, b'h', b'i']
        );
        // Short forms: PUBACK remaining length 2, DISCONNECT/AUTH 0.
        let ack = Packet::PubAck(PubResponse::new(pid(1)));
        assert_eq!(round_trip(&ack, v5), [0x40, 0x02, 0x00, 0x01]);
        let rel = Packet::PubRel(PubResponse::new(pid(1)));
        assert_eq!(round_trip(&rel, v4), [0x62, 0x02, 0x00, 0x01]);
        assert_eq!(
            round_trip(&Packet::Disconnect(Disconnect::default()), v5),
            [0xE0, 0x00]
        );
        assert_eq!(round_trip(&Packet::Auth(Auth::default()), v5), [0xF0, 0x00]);
        assert_eq!(round_trip(&Packet::PingReq, v4), [0xC0, 0x00]);
        let connect = Packet::Connect(Connect {
            protocol_version: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive: 60,
            client_id: s("c"),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        });
        assert_eq!(
            round_trip(&connect, v5),
            [0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'c']
        );
    }

    #[test]
    fn v3_mappings() {
        let v4 = ProtocolVersion::V3_1_1;
        // CONNACK codes map to 3.1.1 return codes.
        let connack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::BANNED,
            properties: Properties::default(),
        });
        let mut buf = BytesMut::new();
        encode(&connack, v4, &mut buf).unwrap();
        assert_eq!(&buf[..], [0x20, 0x02, 0x00, 0x05]);
        // SUBACK: 0/1/2 as is, every failure as 0x80.
        let suback = Packet::SubAck(SubAck {
            packet_id: pid(2),
            reason_codes: vec![ReasonCode(1), ReasonCode::NOT_AUTHORIZED, ReasonCode(0x80)],
            properties: Properties::default(),
        });
        buf.clear();
        encode(&suback, v4, &mut buf).unwrap();
        assert_eq!(&buf[..], [0x90, 0x05, 0x00, 0x02, 0x01, 0x80, 0x80]);
        // PUB* reason codes and properties do not exist in 3.x.
        let ack = Packet::PubAck(PubResponse {
            packet_id: pid(3),
            reason_code: ReasonCode::NOT_AUTHORIZED,
            properties: Properties {
                reason_string: Some(s("no")),
                ..Properties::default()
            },
        });
        buf.clear();
        encode(&ack, v4, &mut buf).unwrap();
        assert_eq!(&buf[..], [0x40, 0x02, 0x00, 0x03]);
    }

    #[test]
    fn encode_errors() {
        let v4 = ProtocolVersion::V3_1_1;
        let v5 = ProtocolVersion::V5;
        let mut buf = BytesMut::new();
        assert_eq!(
            encode(&Packet::Auth(Auth::default()), v4, &mut buf),
            Err(EncodeError::UnsupportedInVersion("AUTH"))
        );
        let mut publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("t"),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::new(),
        };
        assert_eq!(
            encode(&Packet::Publish(publish.clone()), v4, &mut buf),
            Err(EncodeError::PacketIdMismatch)
        );
        publish.packet_id = Some(pid(1));
        publish.topic = ByteString::from("x".repeat(65_536));
        assert_eq!(
            encoded_len(&Packet::Publish(publish.clone()), v4),
            Err(EncodeError::FieldTooLong {
                field: "topic name",
                len: 65_536
            })
        );
        publish.topic = s("t");
        publish.properties.subscription_identifiers = vec![268_435_456];
        assert_eq!(
            encoded_len(&Packet::Publish(publish.clone()), v5),
            Err(EncodeError::ValueOutOfRange("subscription identifier"))
        );
        publish.properties.subscription_identifiers.clear();
        publish.payload = Bytes::from(vec![0; 268_435_455]);
        assert_eq!(
            encoded_len(&Packet::Publish(publish), v4),
            Err(EncodeError::PacketTooLarge(268_435_455 + 5))
        );
        assert!(buf.is_empty(), "nothing written on error");
    }

    #[test]
    fn decode_rejects_what_encode_would_not_produce() {
        // DUP on a QoS 0 PUBLISH is dropped by the encoder (MQTT-3.3.1-2)...
        let p = Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: s("t"),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::new(),
        });
        let mut buf = BytesMut::new();
        encode(&p, ProtocolVersion::V3_1_1, &mut buf).unwrap();
        assert_eq!(buf[0], 0x30);
        // ...and rejected by the decoder.
        let mut bad = BytesMut::from(&[0x38, 0x03, 0x00, 0x01, b't'][..]);
        assert_eq!(
            decode(&mut bad, ProtocolVersion::V3_1_1, MAX_PACKET_SIZE),
            Err(DecodeError::DupWithQoS0)
        );
    }
}
