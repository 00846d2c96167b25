//! One malformed input per validation rule, with the exact [`DecodeError`]
//! and the 5.0 reason code the broker would report for it, plus the
//! incremental-decoding contract (incomplete input, maximum packet size
//! from the fixed header alone, several packets in one buffer).
//!
//! Each row cites the normative statement it checks: 5.0 ids unless marked
//! "3.1.1" (whose numbering differs: e.g. its UTF-8 rules are MQTT-1.5.3-x
//! and its reserved flags MQTT-2.2.2-x). Rules without an id cite their
//! section. `field` strings in the expected errors are the decoder's names
//! for the field that failed.

mod common;

use bytes::BytesMut;
use common::encode_checked;
use mqtt_core::codec::{
    decode, parse_fixed_header, DecodeError, Packet, PacketType, PropertyId, ProtocolVersion,
    PubResponse, ReasonCode, MAX_PACKET_SIZE,
};

use DecodeError as E;
use PacketType as T;
use ProtocolVersion::{V3_1, V3_1_1, V5};

struct Row {
    /// The normative statement (or section) the row checks.
    cite: &'static str,
    version: ProtocolVersion,
    bytes: &'static [u8],
    expected: DecodeError,
    reason: ReasonCode,
    /// The maximum packet size the decoder is given.
    max: u32,
}

const MALFORMED: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;
const UNSUPPORTED_VERSION: u8 = 0x84;
const TOPIC_NAME_INVALID: u8 = 0x90;
const TOPIC_ALIAS_INVALID: u8 = 0x94;
const PACKET_TOO_LARGE: u8 = 0x95;

fn row(
    cite: &'static str,
    version: ProtocolVersion,
    bytes: &'static [u8],
    expected: DecodeError,
    reason: u8,
) -> Row {
    Row {
        cite,
        version,
        bytes,
        expected,
        reason: ReasonCode(reason),
        max: MAX_PACKET_SIZE,
    }
}

/// A row decoded with a small maximum packet size.
fn row_max(
    cite: &'static str,
    version: ProtocolVersion,
    bytes: &'static [u8],
    max: u32,
    expected: DecodeError,
    reason: u8,
) -> Row {
    Row {
        max,
        ..row(cite, version, bytes, expected, reason)
    }
}

fn utf8(field: &'static str) -> DecodeError {
    E::InvalidUtf8 { field }
}

fn null(field: &'static str) -> DecodeError {
    E::NullCharacter { field }
}

fn end(packet_type: PacketType, field: &'static str) -> DecodeError {
    E::UnexpectedEnd { packet_type, field }
}

fn trailing(packet_type: PacketType, count: usize) -> DecodeError {
    E::TrailingBytes { packet_type, count }
}

fn flags(packet_type: PacketType, flags: u8) -> DecodeError {
    E::InvalidFixedHeaderFlags { packet_type, flags }
}

fn bad_code(packet_type: PacketType, code: u8) -> DecodeError {
    E::InvalidReasonCode { packet_type, code }
}

fn not_allowed(property: PropertyId, context: &'static str) -> DecodeError {
    E::PropertyNotAllowed { property, context }
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    vec![
        // ---- Fixed header (section 2.1) ----
        row("2.1.2 table 2-1: type 0 is Reserved/Forbidden", V5,
            &[0x00, 0x00], E::ReservedPacketType(0), MALFORMED),
        row("3.1.1 2.2.1 table 2.1: type 15 is Reserved/Forbidden before 5.0", V3_1_1,
            &[0xF0, 0x00], E::ReservedPacketType(15), MALFORMED),
        row("3.1 has no AUTH either", V3_1,
            &[0xF0, 0x00], E::ReservedPacketType(15), MALFORMED),
        row("MQTT-2.1.3-1 / 3.1.1 MQTT-2.2.2-1: CONNECT flags 0000", V5,
            &[0x11, 0x00], flags(T::Connect, 0x1), MALFORMED),
        row("MQTT-2.1.3-1: PUBACK flags 0000", V5,
            &[0x41, 0x02, 0x00, 0x01], flags(T::PubAck, 0x1), MALFORMED),
        row("MQTT-3.6.1-1: PUBREL flags 0010", V3_1_1,
            &[0x60, 0x02, 0x00, 0x01], flags(T::PubRel, 0x0), MALFORMED),
        row("MQTT-3.8.1-1: SUBSCRIBE flags 0010", V3_1_1,
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], flags(T::Subscribe, 0x0), MALFORMED),
        row("MQTT-3.10.1-1: UNSUBSCRIBE flags 0010", V5,
            &[0xA0, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'], flags(T::Unsubscribe, 0x0), MALFORMED),
        row("3.1.1 MQTT-3.6.1-1: DUP on PUBREL is reserved after 3.1", V3_1_1,
            &[0x6A, 0x02, 0x00, 0x01], flags(T::PubRel, 0xA), MALFORMED),
        row("MQTT-3.8.1-1: DUP on SUBSCRIBE is reserved after 3.1", V5,
            &[0x8A, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x00], flags(T::Subscribe, 0xA), MALFORMED),
        row("3.1 2.1: only DUP may join QoS 1 on a re-sent SUBSCRIBE", V3_1,
            &[0x8B, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], flags(T::Subscribe, 0xB), MALFORMED),
        row("3.1 PUBACK: DUP, QoS and RETAIN are not used", V3_1,
            &[0x48, 0x02, 0x00, 0x01], flags(T::PubAck, 0x8), MALFORMED),
        row("MQTT-2.1.3-1: PINGREQ flags 0000", V3_1_1,
            &[0xC8, 0x00], flags(T::PingReq, 0x8), MALFORMED),
        row("MQTT-2.1.3-1: DISCONNECT flags 0000", V5,
            &[0xE2, 0x00], flags(T::Disconnect, 0x2), MALFORMED),
        row_max("3.2.2.3.6 / 3.1.2.11.4: packet of 131 bytes (remaining length 128) above a maximum of 100", V5,
            &[0x30, 0x80, 0x01], 100, E::PacketTooLarge { size: 131, max: 100 }, PACKET_TOO_LARGE),
        row("1.5.5: a variable byte integer has at most 4 bytes (remaining length)", V3_1_1,
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], E::MalformedVariableByteInteger, MALFORMED),
        row("1.5.5: at most 4 bytes (property length)", V5,
            &[0x40, 0x08, 0x00, 0x01, 0x10, 0x80, 0x80, 0x80, 0x80, 0x01],
            E::MalformedVariableByteInteger, MALFORMED),
        row("1.5.5: at most 4 bytes (Subscription Identifier)", V5,
            &[0x82, 0x0D, 0x00, 0x01, 0x06, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x01, b'a', 0x00],
            E::MalformedVariableByteInteger, MALFORMED),

        // ---- UTF-8 Encoded Strings (section 1.5.4) ----
        row("MQTT-1.5.4-1 / 3.1.1 MQTT-1.5.3-1: U+D800 encoded as ED A0 80", V3_1_1,
            &[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80], utf8("topic name"), MALFORMED),
        row("MQTT-1.5.4-1: ill-formed UTF-8 (lone continuation byte) in client id", V3_1_1,
            &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x01, 0x80],
            utf8("client identifier"), MALFORMED),
        row("MQTT-1.5.4-1: overlong encoding C0 AF of '/' in a topic filter", V3_1_1,
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, 0xC0, 0xAF, 0x00], utf8("topic filter"), MALFORMED),
        row("MQTT-1.5.7-1: both strings of a User Property are UTF-8 strings", V5,
            &[0x40, 0x0B, 0x00, 0x01, 0x00, 0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, 0xFF],
            utf8("User Property"), MALFORMED),
        row("MQTT-1.5.4-2 / 3.1.1 MQTT-1.5.3-2: U+0000 in a topic name", V3_1_1,
            &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'], null("topic name"), MALFORMED),
        row("MQTT-1.5.4-2: U+0000 in a user name", V5,
            &[0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x82, 0x00, 0x00, 0x00,
              0x00, 0x00, 0x00, 0x02, b'u', 0x00],
            null("user name"), MALFORMED),

        // ---- PUBLISH (section 3.3) ----
        row("MQTT-3.3.1-4: both QoS bits set", V3_1_1,
            &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], E::InvalidQoS, MALFORMED),
        row("MQTT-3.3.1-2: DUP set on QoS 0", V5,
            &[0x38, 0x04, 0x00, 0x01, b'a', 0x00], E::DupWithQoS0, MALFORMED),
        row("MQTT-2.2.1-3 / 3.1.1 MQTT-2.3.1-1: PUBLISH packet identifier 0", V3_1_1,
            &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], E::PacketIdZero(T::Publish), PROTOCOL_ERROR),
        row("MQTT-2.2.1-3: PUBACK packet identifier 0 (section 3.4.2)", V5,
            &[0x40, 0x02, 0x00, 0x00], E::PacketIdZero(T::PubAck), PROTOCOL_ERROR),
        row("MQTT-2.2.1-3: SUBSCRIBE packet identifier 0", V5,
            &[0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x00], E::PacketIdZero(T::Subscribe), PROTOCOL_ERROR),
        row("MQTT-2.2.1-3: UNSUBSCRIBE packet identifier 0", V3_1_1,
            &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'], E::PacketIdZero(T::Unsubscribe), PROTOCOL_ERROR),
        row("MQTT-3.3.2-2: '+' in a topic name", V3_1_1,
            &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'], E::TopicNameWildcard, TOPIC_NAME_INVALID),
        row("MQTT-3.3.2-2: '#' in a topic name", V5,
            &[0x30, 0x04, 0x00, 0x01, b'#', 0x00], E::TopicNameWildcard, TOPIC_NAME_INVALID),
        row("3.1.1 MQTT-4.7.3-1: empty topic name", V3_1_1,
            &[0x30, 0x02, 0x00, 0x00], E::TopicNameEmpty, PROTOCOL_ERROR),
        row("5.0 3.3.2.1: empty topic name without a Topic Alias", V5,
            &[0x30, 0x03, 0x00, 0x00, 0x00], E::TopicNameEmpty, PROTOCOL_ERROR),
        row("MQTT-3.3.2-8: Topic Alias 0", V5,
            &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00], E::TopicAliasZero, TOPIC_ALIAS_INVALID),
        row("3.3.2.2: QoS 1 PUBLISH ends before its packet identifier", V3_1_1,
            &[0x32, 0x03, 0x00, 0x01, b'a'], end(T::Publish, "packet identifier"), MALFORMED),
        row("1.5.4: string length runs past the packet", V3_1_1,
            &[0x30, 0x03, 0x00, 0x05, b'a'], end(T::Publish, "topic name"), MALFORMED),
        row("3.3.2.3.1: 5.0 PUBLISH without its property length", V5,
            &[0x30, 0x03, 0x00, 0x01, b'a'], end(T::Publish, "property length"), MALFORMED),

        // ---- CONNECT (section 3.1) ----
        row("MQTT-3.1.2-1: protocol name \"MQTX\"", V3_1_1,
            &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00],
            E::InvalidProtocolName, UNSUPPORTED_VERSION),
        row("MQTT-3.1.2-1: protocol name \"mqtt\" (case matters)", V5,
            &[0x10, 0x0C, 0x00, 0x04, b'm', b'q', b't', b't', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00],
            E::InvalidProtocolName, UNSUPPORTED_VERSION),
        row("MQTT-3.1.2-2: protocol level 6", V3_1_1,
            &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x00, 0x00, 0x00],
            E::UnsupportedProtocolLevel(6), UNSUPPORTED_VERSION),
        row("MQTT-3.1.2-2: \"MQTT\" with level 3 (3.1 is \"MQIsdp\")", V3_1_1,
            &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x03, 0x02, 0x00, 0x00, 0x00, 0x00],
            E::UnsupportedProtocolLevel(3), UNSUPPORTED_VERSION),
        row("MQTT-3.1.2-2: \"MQIsdp\" with level 4", V3_1,
            &[0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00],
            E::UnsupportedProtocolLevel(4), UNSUPPORTED_VERSION),
        row("MQTT-3.1.2-3: reserved connect flag (bit 0) set", V3_1_1,
            &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x00, 0x00, 0x00],
            E::ConnectReservedFlag, MALFORMED),
        row("MQTT-3.1.2-11 / 3.1.1 MQTT-3.1.2-13: will QoS 1 without the will flag", V3_1_1,
            &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x0A, 0x00, 0x00, 0x00, 0x00],
            E::WillFlagsWithoutWill, MALFORMED),
        row("MQTT-3.1.2-13 / 3.1.1 MQTT-3.1.2-15: will retain without the will flag", V5,
            &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x22, 0x00, 0x00, 0x00, 0x00, 0x00],
            E::WillFlagsWithoutWill, MALFORMED),
        row("MQTT-3.1.2-12 / 3.1.1 MQTT-3.1.2-14: will QoS 3", V3_1_1,
            // flags 0x1E: will QoS 11, will flag, clean session; will topic "t", empty message
            &[0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1E, 0x00, 0x00,
              0x00, 0x00, 0x00, 0x01, b't', 0x00, 0x00],
            E::InvalidQoS, MALFORMED),
        row("3.1.1 MQTT-3.1.2-22: password flag without user name flag", V3_1_1,
            &[0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x42, 0x00, 0x00,
              0x00, 0x00, 0x00, 0x01, b'p'],
            E::PasswordWithoutUsername, MALFORMED),
        row("MQTT-3.1.2-19: password flag set but no password", V5,
            &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00],
            end(T::Connect, "password"), MALFORMED),
        row("3.1.1 MQTT-3.1.2-9: will flag set but no will topic", V3_1_1,
            &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x00, 0x00, 0x00],
            end(T::Connect, "will topic"), MALFORMED),
        row("3.1.3: bytes after the last payload field", V3_1_1,
            &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0xAA],
            trailing(T::Connect, 1), MALFORMED),

        // ---- CONNACK (section 3.2) ----
        row("MQTT-3.2.2-1 / 3.1.1 3.2.2.1: acknowledge flags bits 7-1 reserved", V3_1_1,
            &[0x20, 0x02, 0x02, 0x00], E::ConnAckReservedFlags, MALFORMED),
        row("MQTT-3.2.2-1: acknowledge flags bits 7-1 reserved", V5,
            &[0x20, 0x03, 0x80, 0x00, 0x00], E::ConnAckReservedFlags, MALFORMED),
        row("3.1.1 3.2.2.3 table 3.1: return codes 6-255 reserved", V3_1_1,
            &[0x20, 0x02, 0x00, 0x06], E::InvalidConnectReturnCode(6), MALFORMED),
        row("3.2.2.2: 0x04 is not a CONNACK reason code", V5,
            &[0x20, 0x03, 0x00, 0x04, 0x00], bad_code(T::ConnAck, 0x04), MALFORMED),
        row("3.1.1 3.2: CONNACK remaining length is 2", V3_1_1,
            &[0x20, 0x03, 0x00, 0x00, 0x00], trailing(T::ConnAck, 1), MALFORMED),
        row("3.2.2.3.1: 5.0 CONNACK needs its property length", V5,
            &[0x20, 0x02, 0x00, 0x00], end(T::ConnAck, "property length"), MALFORMED),

        // ---- PUBACK, PUBREC, PUBREL, PUBCOMP (sections 3.4 - 3.7) ----
        row("3.4.2.1: 0x81 is not a PUBACK reason code", V5,
            &[0x40, 0x03, 0x00, 0x01, 0x81], bad_code(T::PubAck, 0x81), MALFORMED),
        row("3.5.2.1: 0x92 is not a PUBREC reason code", V5,
            &[0x50, 0x03, 0x00, 0x01, 0x92], bad_code(T::PubRec, 0x92), MALFORMED),
        row("3.6.2.1: 0x10 is not a PUBREL reason code", V5,
            &[0x62, 0x03, 0x00, 0x01, 0x10], bad_code(T::PubRel, 0x10), MALFORMED),
        row("3.7.2.1: 0x80 is not a PUBCOMP reason code", V5,
            &[0x70, 0x04, 0x00, 0x01, 0x80, 0x00], bad_code(T::PubComp, 0x80), MALFORMED),
        row("3.4.2: PUBACK ends inside its packet identifier", V5,
            &[0x40, 0x01, 0x00], end(T::PubAck, "packet identifier"), MALFORMED),
        row("3.1.1 3.4: PUBACK remaining length is 2", V3_1_1,
            &[0x40, 0x03, 0x00, 0x01, 0x00], trailing(T::PubAck, 1), MALFORMED),
        row("3.4.2.2: bytes after the properties", V5,
            &[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xAA], trailing(T::PubAck, 1), MALFORMED),
        row("2.2.2.1: property length runs past the packet", V5,
            &[0x40, 0x05, 0x00, 0x01, 0x00, 0x03, 0x1F], end(T::PubAck, "properties"), MALFORMED),
        row("2.2.2.2: a property value runs past the property length", V5,
            // property length 2 holds only the id and one byte of the Reason String length
            &[0x40, 0x08, 0x00, 0x01, 0x00, 0x02, 0x1F, 0x00, 0x01, b'x'],
            end(T::PubAck, "Reason String"), MALFORMED),

        // ---- SUBSCRIBE (section 3.8) ----
        row("MQTT-3.8.3-2 / 3.1.1 MQTT-3.8.3-3: no topic filter", V3_1_1,
            &[0x82, 0x02, 0x00, 0x01], E::SubscribeWithoutFilters, PROTOCOL_ERROR),
        row("MQTT-3.8.3-2: no topic filter after the properties", V5,
            &[0x82, 0x03, 0x00, 0x01, 0x00], E::SubscribeWithoutFilters, PROTOCOL_ERROR),
        row("MQTT-4.7.3-1: empty topic filter", V3_1_1,
            &[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], E::TopicFilterEmpty, MALFORMED),
        row("3.1.1 MQTT-3-8.3-4: reserved options bits 7-2", V3_1_1,
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04], E::SubscriptionOptionsReserved, MALFORMED),
        row("3.1 SUBSCRIBE payload: the upper 6 bits of the QoS byte are reserved", V3_1,
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x80], E::SubscriptionOptionsReserved, MALFORMED),
        row("MQTT-3.8.3-5: reserved options bits 7-6", V5,
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40], E::SubscriptionOptionsReserved, MALFORMED),
        row("3.8.3.1: Retain Handling 3 is a Protocol Error", V5,
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30], E::InvalidRetainHandling, PROTOCOL_ERROR),
        row("3.1.1 MQTT-3-8.3-4 / 3.8.3.1: requested QoS 3", V3_1_1,
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03], E::InvalidQoS, MALFORMED),
        row("3.8.3: topic filter without its options byte", V5,
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'], end(T::Subscribe, "subscription options"), MALFORMED),

        // ---- SUBACK (section 3.9) ----
        row("3.1.1 3.9.3: return codes 0x00, 0x01, 0x02, 0x80 only", V3_1_1,
            &[0x90, 0x03, 0x00, 0x01, 0x03], bad_code(T::SubAck, 0x03), MALFORMED),
        row("3.1.1 3.9.3: 5.0 code 0x87 is not a 3.1.1 return code", V3_1,
            &[0x90, 0x03, 0x00, 0x01, 0x87], bad_code(T::SubAck, 0x87), MALFORMED),
        row("3.9.3: 0x03 is not a SUBACK reason code", V5,
            &[0x90, 0x04, 0x00, 0x01, 0x00, 0x03], bad_code(T::SubAck, 0x03), MALFORMED),

        // ---- UNSUBSCRIBE / UNSUBACK (sections 3.10, 3.11) ----
        row("MQTT-3.10.3-2: no topic filter", V3_1_1,
            &[0xA2, 0x02, 0x00, 0x01], E::UnsubscribeWithoutFilters, PROTOCOL_ERROR),
        row("MQTT-3.10.3-2: no topic filter after the properties", V5,
            &[0xA2, 0x03, 0x00, 0x01, 0x00], E::UnsubscribeWithoutFilters, PROTOCOL_ERROR),
        row("MQTT-4.7.3-1: empty topic filter in UNSUBSCRIBE", V5,
            &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00], E::TopicFilterEmpty, MALFORMED),
        row("3.11.3: 0x87 is valid, 0x01 is not an UNSUBACK reason code", V5,
            &[0xB0, 0x05, 0x00, 0x01, 0x00, 0x87, 0x01], bad_code(T::UnsubAck, 0x01), MALFORMED),
        row("3.1.1 3.11: UNSUBACK remaining length is 2", V3_1_1,
            &[0xB0, 0x03, 0x00, 0x01, 0x00], trailing(T::UnsubAck, 1), MALFORMED),

        // ---- PINGREQ, PINGRESP, DISCONNECT, AUTH (sections 3.12 - 3.15) ----
        row("3.12.1: PINGREQ remaining length is 0", V5,
            &[0xC0, 0x01, 0x00], trailing(T::PingReq, 1), MALFORMED),
        row("3.13.1: PINGRESP remaining length is 0", V3_1_1,
            &[0xD0, 0x02, 0x00, 0x00], trailing(T::PingResp, 2), MALFORMED),
        row("3.1.1 3.14: DISCONNECT has no variable header", V3_1_1,
            &[0xE0, 0x01, 0x00], trailing(T::Disconnect, 1), MALFORMED),
        row("3.14.2.1: 0x05 is not a DISCONNECT reason code", V5,
            &[0xE0, 0x01, 0x05], bad_code(T::Disconnect, 0x05), MALFORMED),
        row("3.15.2.1: 0x01 is not an AUTH reason code", V5,
            &[0xF0, 0x02, 0x01, 0x00], bad_code(T::Auth, 0x01), MALFORMED),

        // ---- Properties (section 2.2.2) ----
        row("2.2.2.2: 0x05 is not a property identifier", V5,
            &[0x40, 0x06, 0x00, 0x01, 0x00, 0x02, 0x05, 0x00], E::UnknownProperty(0x05), MALFORMED),
        row("2.2.2.2: Topic Alias is not allowed in PUBACK", V5,
            &[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
            not_allowed(PropertyId::TopicAlias, "PUBACK/PUBREC/PUBREL/PUBCOMP"), MALFORMED),
        row("2.2.2.2: Will Delay Interval is not allowed in CONNECT properties", V5,
            &[0x10, 0x12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00,
              0x05, 0x18, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
            not_allowed(PropertyId::WillDelayInterval, "CONNECT"), MALFORMED),
        row("2.2.2.2: Session Expiry Interval is not allowed in Will Properties", V5,
            &[0x10, 0x18, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x00, 0x00,
              0x00, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, b't', 0x00, 0x00],
            not_allowed(PropertyId::SessionExpiryInterval, "Will Properties"), MALFORMED),
        row("2.2.2.2: Subscription Identifier is not allowed in SUBACK", V5,
            &[0x90, 0x06, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00],
            not_allowed(PropertyId::SubscriptionIdentifier, "SUBACK"), MALFORMED),
        row("2.2.2.2: Reason String is not allowed in PUBLISH", V5,
            &[0x30, 0x08, 0x00, 0x01, b'a', 0x04, 0x1F, 0x00, 0x01, b'x'],
            not_allowed(PropertyId::ReasonString, "PUBLISH"), MALFORMED),
        row("3.3.2.3.4: Topic Alias more than once", V5,
            &[0x30, 0x0A, 0x00, 0x01, b'a', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02],
            E::DuplicateProperty(PropertyId::TopicAlias), PROTOCOL_ERROR),
        row("3.8.2.1.2: Subscription Identifier more than once in SUBSCRIBE", V5,
            &[0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00],
            E::DuplicateProperty(PropertyId::SubscriptionIdentifier), PROTOCOL_ERROR),
        row("3.1.2.11.2: Session Expiry Interval more than once", V5,
            &[0x10, 0x17, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x0A,
              0x11, 0x00, 0x00, 0x00, 0x01, 0x11, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00],
            E::DuplicateProperty(PropertyId::SessionExpiryInterval), PROTOCOL_ERROR),
        row("3.3.2.3.2: Payload Format Indicator is 0 or 1", V5,
            &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x01, 0x02],
            E::InvalidPropertyValue(PropertyId::PayloadFormatIndicator), PROTOCOL_ERROR),
        row("3.1.2.11.7: Request Problem Information other than 0 or 1", V5,
            &[0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00,
              0x02, 0x17, 0x02, 0x00, 0x00],
            E::InvalidPropertyValue(PropertyId::RequestProblemInformation), PROTOCOL_ERROR),
        row("3.1.2.11.6: Request Response Information other than 0 or 1", V5,
            &[0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00,
              0x02, 0x19, 0xFF, 0x00, 0x00],
            E::InvalidPropertyValue(PropertyId::RequestResponseInformation), PROTOCOL_ERROR),
        row("3.2.2.3.4: Maximum QoS other than 0 or 1", V5,
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02],
            E::InvalidPropertyValue(PropertyId::MaximumQoS), PROTOCOL_ERROR),
        row("3.2.2.3.5: Retain Available other than 0 or 1", V5,
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x02],
            E::InvalidPropertyValue(PropertyId::RetainAvailable), PROTOCOL_ERROR),
        row("3.2.2.3.11: Wildcard Subscription Available other than 0 or 1", V5,
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x28, 0x02],
            E::InvalidPropertyValue(PropertyId::WildcardSubscriptionAvailable), PROTOCOL_ERROR),
        row("3.2.2.3.12: Subscription Identifiers Available other than 0 or 1", V5,
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x29, 0x02],
            E::InvalidPropertyValue(PropertyId::SubscriptionIdentifierAvailable), PROTOCOL_ERROR),
        row("3.2.2.3.13: Shared Subscription Available other than 0 or 1", V5,
            &[0x20, 0x05, 0x00, 0x00, 0x02, 0x2A, 0x02],
            E::InvalidPropertyValue(PropertyId::SharedSubscriptionAvailable), PROTOCOL_ERROR),
        row("3.1.2.11.3: Receive Maximum 0", V5,
            &[0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00,
              0x03, 0x21, 0x00, 0x00, 0x00, 0x00],
            E::InvalidPropertyValue(PropertyId::ReceiveMaximum), PROTOCOL_ERROR),
        row("3.2.2.3.3: Receive Maximum 0 in CONNACK", V5,
            &[0x20, 0x06, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00],
            E::InvalidPropertyValue(PropertyId::ReceiveMaximum), PROTOCOL_ERROR),
        row("3.1.2.11.4: Maximum Packet Size 0", V5,
            &[0x10, 0x12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00,
              0x05, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            E::InvalidPropertyValue(PropertyId::MaximumPacketSize), PROTOCOL_ERROR),
        row("3.8.2.1.2: Subscription Identifier 0", V5,
            &[0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00],
            E::InvalidPropertyValue(PropertyId::SubscriptionIdentifier), PROTOCOL_ERROR),
    ]
}

/// Check a row at the given version and maximum packet size.
#[track_caller]
fn check(r: &Row) {
    let mut buf = BytesMut::from(r.bytes);
    let got = decode(&mut buf, r.version, r.max);
    assert_eq!(
        got,
        Err(r.expected.clone()),
        "[{}] {:02X?} ({})",
        r.cite,
        r.bytes,
        r.version
    );
    assert_eq!(
        r.expected.reason_code(),
        r.reason,
        "[{}] reason code of {:?}",
        r.cite,
        r.expected
    );
}

#[test]
fn each_malformed_input_gives_its_error_and_reason_code() {
    let rows = rows();
    let mut failures = Vec::new();
    for r in &rows {
        // Report every failing row at once rather than the first.
        if let Err(e) = std::panic::catch_unwind(|| check(r)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "non-string panic".into());
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

/// Every `DecodeError` variant is covered by at least one row.
#[test]
fn table_covers_every_variant() {
    let rows = rows();
    let name = |e: &DecodeError| {
        format!("{e:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("")
            .to_string()
    };
    let covered: std::collections::BTreeSet<String> =
        rows.iter().map(|r| name(&r.expected)).collect();
    let all = [
        "PacketTooLarge",
        "MalformedVariableByteInteger",
        "ReservedPacketType",
        "InvalidFixedHeaderFlags",
        "InvalidQoS",
        "DupWithQoS0",
        "UnexpectedEnd",
        "TrailingBytes",
        "InvalidUtf8",
        "NullCharacter",
        "InvalidProtocolName",
        "UnsupportedProtocolLevel",
        "ConnectReservedFlag",
        "WillFlagsWithoutWill",
        "PasswordWithoutUsername",
        "ConnAckReservedFlags",
        "InvalidConnectReturnCode",
        "InvalidReasonCode",
        "PacketIdZero",
        "TopicNameWildcard",
        "TopicNameEmpty",
        "TopicFilterEmpty",
        "SubscribeWithoutFilters",
        "UnsubscribeWithoutFilters",
        "SubscriptionOptionsReserved",
        "InvalidRetainHandling",
        "UnknownProperty",
        "PropertyNotAllowed",
        "DuplicateProperty",
        "InvalidPropertyValue",
        "TopicAliasZero",
    ];
    let missing: Vec<_> = all.iter().filter(|v| !covered.contains(**v)).collect();
    assert!(missing.is_empty(), "variants without a row: {missing:?}");
}

/// Fixed-header errors are reported from the header alone: they do not wait
/// for the body (the peer may never send it).
#[test]
fn fixed_header_errors_need_no_body() {
    for r in rows() {
        // Type and flags live in byte 1; QoS/DUP errors count here only for
        // PUBLISH (CONNECT and SUBSCRIBE carry theirs in the body).
        let is_publish = r.bytes[0] >> 4 == 3;
        let header_only = match r.expected {
            E::ReservedPacketType(_) | E::InvalidFixedHeaderFlags { .. } => 1,
            E::InvalidQoS | E::DupWithQoS0 if is_publish => 1,
            _ => continue,
        };
        let mut buf = BytesMut::from(&r.bytes[..header_only]);
        assert_eq!(
            decode(&mut buf, r.version, r.max),
            Err(r.expected.clone()),
            "[{}] from the first byte only",
            r.cite
        );
    }
    // Four remaining-length bytes that all say "more follows" are already malformed.
    let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80, 0x80][..]);
    assert_eq!(
        decode(&mut buf, V3_1_1, MAX_PACKET_SIZE),
        Err(E::MalformedVariableByteInteger)
    );
}

// ---------------------------------------------------------------------------
// Incremental decoding contract
// ---------------------------------------------------------------------------

/// 3.3.2.3.6 / 3.1.2.11.4: a packet above the Maximum Packet Size is
/// rejected with 0x95, from the fixed header alone, before the body has
/// arrived (so it is never buffered).
#[test]
fn packet_too_large_from_fixed_header_alone() {
    // PUBLISH, remaining length 2,097,151 (0xFF 0xFF 0x7F): 4 + 2,097,151 bytes.
    let header = [0x30u8, 0xFF, 0xFF, 0x7F];
    for version in [V3_1, V3_1_1, V5] {
        let mut buf = BytesMut::from(&header[..]);
        let err = decode(&mut buf, version, 1024).expect_err("too large");
        assert_eq!(
            err,
            E::PacketTooLarge {
                size: 2_097_155,
                max: 1024
            }
        );
        assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    }
    // The limit counts the whole packet, fixed header included (5.0 section
    // 3.1.2.11.4): remaining length 1024 (0x80 0x08) is 1027 bytes.
    let header = [0x30u8, 0x80, 0x08];
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(
        decode(&mut buf, V5, 1026),
        Err(E::PacketTooLarge {
            size: 1027,
            max: 1026
        })
    );
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(
        decode(&mut buf, V5, 1027),
        Ok(None),
        "exactly the maximum is fine"
    );
    assert_eq!(&buf[..], &header[..], "nothing consumed");
    // A PINGREQ (2 bytes) passes a maximum of 2, fails 1.
    let mut buf = BytesMut::from(&[0xC0u8, 0x00][..]);
    assert_eq!(decode(&mut buf, V5, 2), Ok(Some(Packet::PingReq)));
    let mut buf = BytesMut::from(&[0xC0u8, 0x00][..]);
    assert_eq!(
        decode(&mut buf, V5, 1),
        Err(E::PacketTooLarge { size: 2, max: 1 })
    );
}

/// Incomplete input is not an error: `Ok(None)`, nothing consumed, for every
/// strict prefix of a packet, including an empty buffer and a half-read
/// remaining length.
#[test]
fn incomplete_input_returns_none_and_consumes_nothing() {
    let samples: &[(&[u8], ProtocolVersion)] = &[
        // 3.1.1 CONNECT, figure 3.6 variable header.
        (
            &[
                0x10, 0x1D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A, 0x00, 0x02,
                b'c', b'1', 0x00, 0x01, b'w', 0x00, 0x03, b'b', b'y', b'e', 0x00, 0x01, b'u', 0x00,
                0x02, b'p', b'w',
            ],
            V3_1_1,
        ),
        // 5.0 PUBLISH with properties.
        (
            &[
                0x32, 0x0F, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, 0x05, 0x01, 0x01, 0x23, 0x00,
                0x05, b'h', b'i',
            ],
            V5,
        ),
        (&[0xC0, 0x00], V3_1),
        (&[0xE0, 0x00], V5),
    ];
    for &(bytes, version) in samples {
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(
                decode(&mut buf, version, MAX_PACKET_SIZE),
                Ok(None),
                "prefix of {cut} bytes of {bytes:02X?}"
            );
            assert_eq!(&buf[..], &bytes[..cut], "a prefix must not be consumed");
        }
        let mut buf = BytesMut::from(bytes);
        assert!(matches!(
            decode(&mut buf, version, MAX_PACKET_SIZE),
            Ok(Some(_))
        ));
        assert!(buf.is_empty());
    }
    // A remaining length whose first byte says "more follows".
    assert_eq!(parse_fixed_header(&[0x30, 0x80], V5), Ok(None));
    assert_eq!(parse_fixed_header(&[], V5), Ok(None));
}

/// A complete packet consumes exactly its bytes: what follows stays in the
/// buffer, and several packets decode one per call.
#[test]
fn packets_in_one_buffer_decode_one_at_a_time() {
    let puback = Packet::PubAck(PubResponse::new(common::pid(7)));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&encode_checked(&puback, V3_1_1));
    buf.extend_from_slice(&[0xC0, 0x00]); // PINGREQ
    buf.extend_from_slice(&[0x30, 0x05, 0x00, 0x01, b'a']); // PUBLISH, 2 of its 7 bytes missing
    assert_eq!(decode(&mut buf, V3_1_1, MAX_PACKET_SIZE), Ok(Some(puback)));
    assert_eq!(buf.len(), 7, "only the PUBACK's 4 bytes were consumed");
    assert_eq!(
        decode(&mut buf, V3_1_1, MAX_PACKET_SIZE),
        Ok(Some(Packet::PingReq))
    );
    assert_eq!(&buf[..], &[0x30, 0x05, 0x00, 0x01, b'a']);
    assert_eq!(decode(&mut buf, V3_1_1, MAX_PACKET_SIZE), Ok(None));
    assert_eq!(buf.len(), 5, "incomplete PUBLISH untouched");
    buf.extend_from_slice(b"hi");
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V3_1_1, MAX_PACKET_SIZE) else {
        panic!("expected the PUBLISH once complete");
    };
    assert_eq!((&p.topic[..], &p.payload[..]), ("a", &b"hi"[..]));
    assert!(buf.is_empty());
}
