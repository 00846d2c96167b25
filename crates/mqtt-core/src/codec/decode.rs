//! Incremental packet decoding.
//!
//! [`decode`] looks at the fixed header first: until it is complete nothing
//! is consumed; once it is, the packet size is checked against the maximum
//! before the body is waited for (so an oversized announcement never makes
//! us buffer or allocate). A complete packet is split off the buffer as one
//! `Bytes` and every string, binary field and payload is a slice of it.

use bytes::{Buf, Bytes, BytesMut};

use super::error::DecodeError;
use super::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PubResponse, Publish, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Will,
};
use super::properties::{Properties, PropertyContext, PropertyId};
use super::types::{
    PacketType, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions,
};
use super::wire::{read_vbi, to_topic_name, Reader};

/// The fixed header of a packet (section 2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub packet_type: PacketType,
    /// The low 4 bits of the first byte.
    pub flags: u8,
    /// The remaining length: bytes after the fixed header.
    pub remaining_length: u32,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_len: u8,
}

impl FixedHeader {
    /// The whole packet's size in bytes, as 5.0's Maximum Packet Size counts it.
    pub fn packet_len(&self) -> usize {
        self.header_len as usize + self.remaining_length as usize
    }
}

/// Parse the fixed header at the front of `buf` without consuming anything.
/// `Ok(None)` when more bytes are needed to know it.
///
/// Everything the fixed header alone can violate is rejected here, before
/// the body arrives: reserved packet types, flags (MQTT-2.1.3-1, and for
/// PUBLISH MQTT-3.3.1-4 and MQTT-3.3.1-2) and the remaining length encoding.
#[inline]
pub fn parse_fixed_header(
    buf: &[u8],
    version: ProtocolVersion,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let type_bits = first >> 4;
    let flags = first & 0x0F;
    let packet_type = match PacketType::from_u8(type_bits) {
        // AUTH exists only in 5.0; before that 15 is reserved.
        Some(PacketType::Auth) if !version.is_v5() => {
            return Err(DecodeError::ReservedPacketType(type_bits))
        }
        Some(t) => t,
        None => return Err(DecodeError::ReservedPacketType(type_bits)),
    };
    match packet_type.required_flags() {
        Some(required) => {
            // 3.1 sets DUP on a re-sent PUBREL, SUBSCRIBE or UNSUBSCRIBE (the
            // packets whose flags are 0010); 3.1.1 made that bit reserved.
            let v3_1_dup = version == ProtocolVersion::V3_1
                && required == 0b0010
                && flags == required | 0b1000;
            if flags != required && !v3_1_dup {
                return Err(DecodeError::InvalidFixedHeaderFlags { packet_type, flags });
            }
        }
        None => {
            // PUBLISH: QoS 3 is malformed (MQTT-3.3.1-4), DUP needs QoS > 0
            // (MQTT-3.3.1-2).
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::InvalidQoS);
            }
            if qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::DupWithQoS0);
            }
        }
    }
    let Some((remaining_length, n)) = read_vbi(&buf[1..])? else {
        return Ok(None);
    };
    Ok(Some(FixedHeader {
        packet_type,
        flags,
        remaining_length,
        header_len: 1 + n as u8,
    }))
}

/// Decode one packet from the front of `buf`.
///
/// `version` is the connection's negotiated version; a CONNECT is decoded
/// according to its own protocol level whatever `version` says.
/// `max_packet_size` is the largest whole packet (fixed header included) we
/// accept.
#[inline]
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = parse_fixed_header(buf, version)? else {
        return Ok(None);
    };
    let size = header.packet_len();
    // Checked before waiting for the body, so an oversized announcement
    // never makes the caller buffer it.
    if size > max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let v5 = version.is_v5();
    if header.remaining_length == 0 {
        // No reference count to take for PINGREQ and friends.
        buf.advance(size);
        return decode_body(header, Bytes::new(), v5).map(Some);
    }
    // One split for the whole packet; the header is skipped on the frozen
    // handle, which is a pointer bump.
    let mut body = buf.split_to(size).freeze();
    body.advance(header.header_len as usize);
    if header.packet_type == PacketType::Publish {
        // The hot path, kept inline so the packet is built in place.
        return decode_publish(header.flags, body, v5);
    }
    decode_body(header, body, v5).map(Some)
}

/// Every packet but PUBLISH.
#[inline(never)]
fn decode_body(header: FixedHeader, body: Bytes, v5: bool) -> Result<Packet, DecodeError> {
    let packet_type = header.packet_type;
    let mut r = Reader::new(body, packet_type);
    Ok(match packet_type {
        // Only a PUBLISH with remaining length 0 gets here (and fails on its
        // topic name); `decode` takes the others straight to decode_publish.
        PacketType::Publish => match decode_publish(header.flags, r.into_rest(), v5)? {
            Some(packet) => packet,
            None => return Err(DecodeError::TopicNameEmpty),
        },
        PacketType::Connect => Packet::Connect(decode_connect(&mut r)?),
        PacketType::ConnAck => Packet::ConnAck(decode_connack(&mut r, v5)?),
        PacketType::PubAck => Packet::PubAck(decode_pub_response(&mut r, v5)?),
        PacketType::PubRec => Packet::PubRec(decode_pub_response(&mut r, v5)?),
        PacketType::PubRel => Packet::PubRel(decode_pub_response(&mut r, v5)?),
        PacketType::PubComp => Packet::PubComp(decode_pub_response(&mut r, v5)?),
        PacketType::Subscribe => Packet::Subscribe(decode_subscribe(&mut r, v5)?),
        PacketType::SubAck => Packet::SubAck(decode_suback(&mut r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(&mut r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(decode_unsuback(&mut r, v5)?),
        PacketType::PingReq => {
            r.finish()?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            r.finish()?;
            Packet::PingResp
        }
        PacketType::Disconnect => {
            let (reason_code, properties) =
                decode_code_and_properties(&mut r, v5, PropertyContext::Disconnect)?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        PacketType::Auth => {
            // parse_fixed_header rejected AUTH before 5.0.
            let (reason_code, properties) =
                decode_code_and_properties(&mut r, true, PropertyContext::Auth)?;
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        }
    })
}

/// Properties of a 5.0 packet, `Properties::default()` (no allocation) before.
#[inline]
fn properties_if_v5(
    r: &mut Reader,
    v5: bool,
    ctx: PropertyContext,
) -> Result<Properties, DecodeError> {
    if v5 {
        decode_properties(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

/// PUBLISH (section 3.3). Returns the `decode` result directly and fills
/// the properties in place: a `Packet` is close to 1 KB, and every move of
/// it is a memcpy on the hottest path. Always `Some`.
#[inline(always)]
fn decode_publish(flags: u8, body: Bytes, v5: bool) -> Result<Option<Packet>, DecodeError> {
    let mut r = Reader::new(body, PacketType::Publish);
    let qos = match (flags >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        // Already rejected by parse_fixed_header; kept for totality.
        _ => return Err(DecodeError::InvalidQoS),
    };
    // The topic is validated after the payload is split off: the payload
    // handle's update then has time to reach memory before the packet is
    // assembled (otherwise the reload stalls on store forwarding).
    let raw_topic = r.binary("topic name")?;
    // The packet identifier is present only for QoS 1 and 2 (MQTT-2.2.1-2).
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(r.packet_id()?)
    };
    if !v5 {
        let payload = r.into_rest();
        let topic = to_topic_name(raw_topic, "topic name")?;
        // 3.x has no Topic Alias: the topic name is never empty (MQTT-4.7.3-1).
        if topic.is_empty() {
            return Err(DecodeError::TopicNameEmpty);
        }
        return Ok(Some(Packet::Publish(Publish {
            dup: flags & 0b1000 != 0,
            qos,
            retain: flags & 0b0001 != 0,
            topic,
            packet_id,
            properties: Properties::default(),
            payload,
        })));
    }
    let topic = to_topic_name(raw_topic, "topic name")?;
    let mut packet = Packet::Publish(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties: Properties::default(),
        payload: Bytes::new(),
    });
    if let Packet::Publish(publish) = &mut packet {
        decode_properties_into(&mut r, PropertyContext::Publish, &mut publish.properties)?;
        // An empty topic name needs a Topic Alias (5.0 section 3.3.2.1).
        if publish.topic.is_empty() && publish.properties.topic_alias.is_none() {
            return Err(DecodeError::TopicNameEmpty);
        }
        publish.payload = r.into_rest();
    }
    Ok(Some(packet))
}

fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name_is = {
        let name = r.field_slice("protocol name")?;
        match name {
            b"MQTT" => Some(false),
            b"MQIsdp" => Some(true),
            _ => None,
        }
    };
    let level = r.u8("protocol level")?;
    // MQTT-3.1.2-1 (name) and MQTT-3.1.2-2 (level). "MQIsdp" goes with 3.
    let protocol_version = match (name_is, level) {
        (None, _) => return Err(DecodeError::InvalidProtocolName),
        (Some(false), 4) => ProtocolVersion::V3_1_1,
        (Some(false), 5) => ProtocolVersion::V5,
        (Some(true), 3) => ProtocolVersion::V3_1,
        (Some(_), level) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
    };
    let v5 = protocol_version.is_v5();

    let flags = r.u8("connect flags")?;
    // MQTT-3.1.2-3: the reserved bit must be 0.
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0b11;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    // MQTT-3.1.2-11, -13, -15: no will QoS or retain without a will.
    if !will_flag && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    // MQTT-3.1.2-14: will QoS 3 is malformed.
    let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQoS)?;
    // MQTT-3.1.2-22 (3.1.1): a password needs a user name; 5.0 dropped the rule.
    if !v5 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties = properties_if_v5(r, v5, PropertyContext::Connect)?;

    // Payload order (section 3.1.3): client id, will, user name, password.
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = properties_if_v5(r, v5, PropertyContext::Will)?;
        let topic = r.topic_name("will topic")?;
        if topic.is_empty() {
            return Err(DecodeError::TopicNameEmpty);
        }
        let payload = r.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol_version,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_connack(r: &mut Reader, v5: bool) -> Result<ConnAck, DecodeError> {
    let ack_flags = r.u8("acknowledge flags")?;
    // MQTT-3.2.2-1: bits 7..1 are reserved.
    if ack_flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let code = r.u8("reason code")?;
    let reason_code = if v5 {
        valid_code(code, PacketType::ConnAck)?
    } else {
        ReasonCode::from_v3_connack_code(code).ok_or(DecodeError::InvalidConnectReturnCode(code))?
    };
    let properties = properties_if_v5(r, v5, PropertyContext::ConnAck)?;
    r.finish()?;
    Ok(ConnAck {
        session_present: ack_flags & 0x01 != 0,
        reason_code,
        properties,
    })
}

#[inline]
fn valid_code(code: u8, packet_type: PacketType) -> Result<ReasonCode, DecodeError> {
    let reason = ReasonCode(code);
    if reason.valid_for(packet_type) {
        Ok(reason)
    } else {
        Err(DecodeError::InvalidReasonCode { packet_type, code })
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (sections 3.4 - 3.7).
fn decode_pub_response(r: &mut Reader, v5: bool) -> Result<PubResponse, DecodeError> {
    let packet_id = r.packet_id()?;
    // 3.x: exactly the packet identifier. 5.0: remaining length 2 means
    // Success with no properties (section 3.4.2.1).
    if !v5 || r.is_empty() {
        r.finish()?;
        return Ok(PubResponse::new(packet_id));
    }
    let reason_code = valid_code(r.u8("reason code")?, r.packet_type)?;
    // Remaining length 3: a reason code and no property length.
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        decode_properties(r, PropertyContext::PubResponse)?
    };
    r.finish()?;
    Ok(PubResponse {
        packet_id,
        reason_code,
        properties,
    })
}

/// DISCONNECT and AUTH: remaining length 0 means Success with no
/// properties, 1 a reason code only (sections 3.14.2.1, 3.15.2.1).
fn decode_code_and_properties(
    r: &mut Reader,
    v5: bool,
    ctx: PropertyContext,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !v5 || r.is_empty() {
        r.finish()?;
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let reason_code = valid_code(r.u8("reason code")?, r.packet_type)?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        decode_properties(r, ctx)?
    };
    r.finish()?;
    Ok((reason_code, properties))
}

/// How many length-prefixed entries (each followed by `extra` bytes) the
/// rest of the body holds, to size the Vec once. Stops at a truncated one;
/// the real parse reports it.
fn count_entries(mut rest: &[u8], extra: usize) -> usize {
    let mut n = 0;
    while rest.len() >= 2 {
        let step = 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]])) + extra;
        n += 1;
        rest = rest.get(step..).unwrap_or(&[]);
    }
    n
}

fn decode_subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = properties_if_v5(r, v5, PropertyContext::Subscribe)?;
    let mut filters = Vec::with_capacity(count_entries(r.peek_rest(), 1));
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        // MQTT-4.7.3-1: filters are at least one character. Wildcard
        // placement is checked by the topic module, per filter.
        if filter.is_empty() {
            return Err(DecodeError::TopicFilterEmpty);
        }
        let options = decode_subscription_options(r.u8("subscription options")?, v5)?;
        filters.push((filter, options));
    }
    // MQTT-3.8.3-2 (3.1.1: MQTT-3.8.3-3).
    if filters.is_empty() {
        return Err(DecodeError::SubscribeWithoutFilters);
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The options byte after each SUBSCRIBE filter (section 3.8.3.1).
#[inline]
fn decode_subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, DecodeError> {
    // 3.1.1 MQTT-3-8.3-4: bits 7..2 reserved; 5.0 MQTT-3.8.3-5: bits 7..6.
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(DecodeError::SubscriptionOptionsReserved);
    }
    let qos = QoS::from_u8(byte & 0b11).ok_or(DecodeError::InvalidQoS)?;
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendOnSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::InvalidRetainHandling),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

fn decode_suback(r: &mut Reader, v5: bool) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = properties_if_v5(r, v5, PropertyContext::SubAck)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = r.u8("reason code")?;
        let reason = if v5 {
            valid_code(code, PacketType::SubAck)?
        } else {
            // 3.1.1 section 3.9.3: 0x00, 0x01, 0x02 and 0x80 only.
            match code {
                0x00 | 0x01 | 0x02 | 0x80 => ReasonCode(code),
                _ => {
                    return Err(DecodeError::InvalidReasonCode {
                        packet_type: PacketType::SubAck,
                        code,
                    })
                }
            }
        };
        reason_codes.push(reason);
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

fn decode_unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = properties_if_v5(r, v5, PropertyContext::Unsubscribe)?;
    let mut filters = Vec::with_capacity(count_entries(r.peek_rest(), 0));
    while !r.is_empty() {
        let filter = r.string("topic filter")?;
        if filter.is_empty() {
            return Err(DecodeError::TopicFilterEmpty);
        }
        filters.push(filter);
    }
    // MQTT-3.10.3-2.
    if filters.is_empty() {
        return Err(DecodeError::UnsubscribeWithoutFilters);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn decode_unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    if !v5 {
        // 3.1.1 section 3.11: the packet identifier only.
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            reason_codes: Vec::new(),
            properties: Properties::default(),
        });
    }
    let properties = decode_properties(r, PropertyContext::UnsubAck)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        reason_codes.push(valid_code(r.u8("reason code")?, PacketType::UnsubAck)?);
    }
    Ok(UnsubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

/// The name `PropertyNotAllowed` reports for a property list.
const fn context_name(ctx: PropertyContext) -> &'static str {
    match ctx {
        PropertyContext::Connect => "CONNECT",
        PropertyContext::Will => "Will Properties",
        PropertyContext::ConnAck => "CONNACK",
        PropertyContext::Publish => "PUBLISH",
        PropertyContext::PubResponse => "PUBACK/PUBREC/PUBREL/PUBCOMP",
        PropertyContext::Subscribe => "SUBSCRIBE",
        PropertyContext::SubAck => "SUBACK",
        PropertyContext::Unsubscribe => "UNSUBSCRIBE",
        PropertyContext::UnsubAck => "UNSUBACK",
        PropertyContext::Disconnect => "DISCONNECT",
        PropertyContext::Auth => "AUTH",
    }
}

/// The spec's name of a property, used as the `field` of `UnexpectedEnd`,
/// `InvalidUtf8` and `NullCharacter`.
const fn property_name(id: PropertyId) -> &'static str {
    match id {
        PropertyId::PayloadFormatIndicator => "Payload Format Indicator",
        PropertyId::MessageExpiryInterval => "Message Expiry Interval",
        PropertyId::ContentType => "Content Type",
        PropertyId::ResponseTopic => "Response Topic",
        PropertyId::CorrelationData => "Correlation Data",
        PropertyId::SubscriptionIdentifier => "Subscription Identifier",
        PropertyId::SessionExpiryInterval => "Session Expiry Interval",
        PropertyId::AssignedClientIdentifier => "Assigned Client Identifier",
        PropertyId::ServerKeepAlive => "Server Keep Alive",
        PropertyId::AuthenticationMethod => "Authentication Method",
        PropertyId::AuthenticationData => "Authentication Data",
        PropertyId::RequestProblemInformation => "Request Problem Information",
        PropertyId::WillDelayInterval => "Will Delay Interval",
        PropertyId::RequestResponseInformation => "Request Response Information",
        PropertyId::ResponseInformation => "Response Information",
        PropertyId::ServerReference => "Server Reference",
        PropertyId::ReasonString => "Reason String",
        PropertyId::ReceiveMaximum => "Receive Maximum",
        PropertyId::TopicAliasMaximum => "Topic Alias Maximum",
        PropertyId::TopicAlias => "Topic Alias",
        PropertyId::MaximumQoS => "Maximum QoS",
        PropertyId::RetainAvailable => "Retain Available",
        PropertyId::UserProperty => "User Property",
        PropertyId::MaximumPacketSize => "Maximum Packet Size",
        PropertyId::WildcardSubscriptionAvailable => "Wildcard Subscription Available",
        PropertyId::SubscriptionIdentifierAvailable => "Subscription Identifier Available",
        PropertyId::SharedSubscriptionAvailable => "Shared Subscription Available",
    }
}

/// A property list (section 2.2.2): a variable byte integer length, then
/// properties that must fill exactly that many bytes.
fn decode_properties(r: &mut Reader, ctx: PropertyContext) -> Result<Properties, DecodeError> {
    let mut props = Properties::default();
    decode_properties_into(r, ctx, &mut props)?;
    Ok(props)
}

/// [`decode_properties`] into an existing (default) `Properties`.
fn decode_properties_into(
    r: &mut Reader,
    ctx: PropertyContext,
    props: &mut Properties,
) -> Result<(), DecodeError> {
    let len = r.vbi("property length")? as usize;
    if len == 0 {
        return Ok(());
    }
    if len > r.remaining() {
        return Err(DecodeError::UnexpectedEnd {
            packet_type: r.packet_type,
            field: "properties",
        });
    }
    let outer_end = r.limit(len);
    // Property ids are below 64: one bit each to spot repeats.
    let mut seen: u64 = 0;
    while !r.is_empty() {
        let byte = r.u8("property identifier")?;
        let id = PropertyId::from_u8(byte).ok_or(DecodeError::UnknownProperty(byte))?;
        if !id.allowed_in(ctx) {
            return Err(DecodeError::PropertyNotAllowed {
                property: id,
                context: context_name(ctx),
            });
        }
        let bit = 1u64 << byte;
        if seen & bit != 0 && !id.may_repeat(ctx) {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= bit;
        decode_property(r, id, props)?;
    }
    r.restore_end(outer_end);
    Ok(())
}

/// A property whose value must be 0 or 1.
#[inline]
fn flag(r: &mut Reader, id: PropertyId) -> Result<bool, DecodeError> {
    match r.u8(property_name(id))? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

/// A two- or four-byte property that must not be 0.
#[inline]
fn non_zero<T: PartialEq + Default>(value: T, id: PropertyId) -> Result<T, DecodeError> {
    if value == T::default() {
        Err(DecodeError::InvalidPropertyValue(id))
    } else {
        Ok(value)
    }
}

fn decode_property(r: &mut Reader, id: PropertyId, p: &mut Properties) -> Result<(), DecodeError> {
    let name = property_name(id);
    match id {
        PropertyId::PayloadFormatIndicator => p.payload_format_indicator = Some(flag(r, id)?),
        PropertyId::MessageExpiryInterval => p.message_expiry_interval = Some(r.u32(name)?),
        PropertyId::ContentType => p.content_type = Some(r.string(name)?),
        PropertyId::ResponseTopic => p.response_topic = Some(r.string(name)?),
        PropertyId::CorrelationData => p.correlation_data = Some(r.binary(name)?),
        PropertyId::SubscriptionIdentifier => {
            // 1..=268,435,455 (section 3.3.2.3.8); the VBI caps the top.
            let value = non_zero(r.vbi(name)?, id)?;
            p.subscription_identifiers.push(value);
        }
        PropertyId::SessionExpiryInterval => p.session_expiry_interval = Some(r.u32(name)?),
        PropertyId::AssignedClientIdentifier => {
            p.assigned_client_identifier = Some(r.string(name)?)
        }
        PropertyId::ServerKeepAlive => p.server_keep_alive = Some(r.u16(name)?),
        PropertyId::AuthenticationMethod => p.authentication_method = Some(r.string(name)?),
        PropertyId::AuthenticationData => p.authentication_data = Some(r.binary(name)?),
        PropertyId::RequestProblemInformation => p.request_problem_information = Some(flag(r, id)?),
        PropertyId::WillDelayInterval => p.will_delay_interval = Some(r.u32(name)?),
        PropertyId::RequestResponseInformation => {
            p.request_response_information = Some(flag(r, id)?)
        }
        PropertyId::ResponseInformation => p.response_information = Some(r.string(name)?),
        PropertyId::ServerReference => p.server_reference = Some(r.string(name)?),
        PropertyId::ReasonString => p.reason_string = Some(r.string(name)?),
        PropertyId::ReceiveMaximum => p.receive_maximum = Some(non_zero(r.u16(name)?, id)?),
        PropertyId::TopicAliasMaximum => p.topic_alias_maximum = Some(r.u16(name)?),
        PropertyId::TopicAlias => {
            // MQTT-3.3.2-8: a Topic Alias of 0 is not permitted.
            let alias = r.u16(name)?;
            if alias == 0 {
                return Err(DecodeError::TopicAliasZero);
            }
            p.topic_alias = Some(alias);
        }
        PropertyId::MaximumQoS => {
            p.maximum_qos = Some(if flag(r, id)? {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            })
        }
        PropertyId::RetainAvailable => p.retain_available = Some(flag(r, id)?),
        PropertyId::UserProperty => {
            let key = r.string(name)?;
            let value = r.string(name)?;
            p.user_properties.push((key, value));
        }
        PropertyId::MaximumPacketSize => p.maximum_packet_size = Some(non_zero(r.u32(name)?, id)?),
        PropertyId::WildcardSubscriptionAvailable => {
            p.wildcard_subscription_available = Some(flag(r, id)?)
        }
        PropertyId::SubscriptionIdentifierAvailable => {
            p.subscription_identifier_available = Some(flag(r, id)?)
        }
        PropertyId::SharedSubscriptionAvailable => {
            p.shared_subscription_available = Some(flag(r, id)?)
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn dec(bytes: &[u8], v: ProtocolVersion, max: u32) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), v, max)
    }

    #[test]
    fn incomplete_input_consumes_nothing() {
        let mut buf = BytesMut::from(&[0x30, 0x05, 0x00, 0x01][..]);
        assert_eq!(decode(&mut buf, V4, 1024), Ok(None));
        assert_eq!(buf.len(), 4);
        // Two packets back to back: one at a time, exactly their bytes.
        let mut buf = BytesMut::from(&[0xC0, 0x00, 0xD0, 0x00, 0xC0][..]);
        assert_eq!(decode(&mut buf, V4, 1024), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut buf, V4, 1024), Ok(Some(Packet::PingResp)));
        assert_eq!(decode(&mut buf, V4, 1024), Ok(None));
        assert_eq!(&buf[..], [0xC0]);
    }

    #[test]
    fn packet_too_large_is_known_from_the_header() {
        // 2 + 200 bytes announced, 3 present, maximum 100.
        assert_eq!(
            dec(&[0x30, 0xC8, 0x01], V4, 100),
            Err(DecodeError::PacketTooLarge {
                size: 203,
                max: 100
            })
        );
        // Exactly the maximum is fine.
        assert_eq!(dec(&[0xC0, 0x00], V4, 2), Ok(Some(Packet::PingReq)));
        assert_eq!(
            dec(&[0xC0, 0x00], V4, 1),
            Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
        );
    }

    #[test]
    fn fixed_header_rules() {
        assert_eq!(
            dec(&[0x00], V4, 100),
            Err(DecodeError::ReservedPacketType(0))
        );
        assert_eq!(
            dec(&[0xF0, 0x00], V4, 100),
            Err(DecodeError::ReservedPacketType(15))
        );
        assert!(matches!(
            dec(&[0xF0, 0x00], V5, 100),
            Ok(Some(Packet::Auth(_)))
        ));
        // MQTT-2.1.3-1.
        assert_eq!(
            dec(&[0x60, 0x02, 0x00, 0x01], V4, 100),
            Err(DecodeError::InvalidFixedHeaderFlags {
                packet_type: PacketType::PubRel,
                flags: 0
            })
        );
        // MQTT-3.3.1-4.
        assert_eq!(dec(&[0x36], V4, 100), Err(DecodeError::InvalidQoS));
        assert_eq!(
            dec(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], V4, u32::MAX),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        // PINGREQ with a body.
        assert_eq!(
            dec(&[0xC0, 0x01, 0x00], V4, 100),
            Err(DecodeError::TrailingBytes {
                packet_type: PacketType::PingReq,
                count: 1
            })
        );
    }

    #[test]
    fn connect_is_decoded_by_its_own_level() {
        // A 5.0 CONNECT (property length 0) on a connection that says 3.1.1.
        let bytes = [
            0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 10, 0, 0, 1, b'c',
        ];
        let Ok(Some(Packet::Connect(c))) = dec(&bytes, V4, 100) else {
            panic!("not a CONNECT");
        };
        assert_eq!(c.protocol_version, ProtocolVersion::V5);
        assert_eq!(c.client_id, "c");
        // MQIsdp goes with level 3 only.
        let bytes = [
            0x10, 0x0F, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 4, 0x02, 0, 10, 0, 1, b'c',
        ];
        assert_eq!(
            dec(&bytes, V4, 100),
            Err(DecodeError::UnsupportedProtocolLevel(4))
        );
    }

    #[test]
    fn publish_payload_is_a_slice_of_the_buffer() {
        let mut buf = BytesMut::from(&[0x30, 0x06, 0x00, 0x01, b't', b'x', b'y', b'z'][..]);
        let start = buf.as_ptr() as usize;
        let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V4, 100) else {
            panic!("not a PUBLISH");
        };
        assert_eq!(p.topic, "t");
        assert_eq!(&p.payload[..], b"xyz");
        assert_eq!(p.payload.as_ptr() as usize, start + 5, "zero-copy payload");
        assert_eq!(
            p.topic.as_bytes().as_ptr() as usize,
            start + 4,
            "zero-copy topic"
        );
    }
}
