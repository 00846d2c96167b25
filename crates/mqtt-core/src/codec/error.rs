//! Codec errors. Decode errors are the peer's fault and each maps to the 5.0
//! reason code the broker puts in its DISCONNECT (or CONNACK);
//! encode errors are ours (a packet that cannot be represented).

use super::properties::PropertyId;
use super::types::{PacketType, ReasonCode};

/// Why a byte string is not a valid packet. Every variant names the rule it
/// checks; [`DecodeError::reason_code`] gives the 5.0 reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The fixed header announces a packet bigger than the maximum packet
    /// size; detected before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: u32 },
    /// A variable byte integer (the remaining length or a property) uses more
    /// than 4 bytes (section 1.5.5, MQTT-2.1.4? / 2.2.3).
    #[error("variable byte integer longer than 4 bytes")]
    MalformedVariableByteInteger,
    /// Packet type 0, or 15 (AUTH) before 5.0.
    #[error("reserved or unsupported packet type {0}")]
    ReservedPacketType(u8),
    /// Fixed header flags other than those the packet type requires (MQTT-2.1.3-1).
    #[error("invalid fixed header flags {flags:#06b} for {packet_type}")]
    InvalidFixedHeaderFlags { packet_type: PacketType, flags: u8 },
    /// A QoS of 3 in PUBLISH, a will, or a subscription (MQTT-3.3.1-4, MQTT-3.1.2-14).
    #[error("invalid QoS value 3")]
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH (MQTT-3.3.1-2).
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupWithQoS0,
    /// The packet ended before a field it announced.
    #[error("{packet_type} ended before its {field}")]
    UnexpectedEnd {
        packet_type: PacketType,
        field: &'static str,
    },
    /// Bytes left over inside the packet after its last field.
    #[error("{count} unexpected bytes at the end of {packet_type}")]
    TrailingBytes {
        packet_type: PacketType,
        count: usize,
    },
    /// A string that is not well-formed UTF-8, which includes UTF-16
    /// surrogates encoded as UTF-8 (MQTT-1.5.4-1).
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    /// A string containing U+0000 (MQTT-1.5.4-2).
    #[error("{field} contains the null character U+0000")]
    NullCharacter { field: &'static str },
    /// CONNECT protocol name is not "MQTT" (or "MQIsdp" for level 3) (MQTT-3.1.2-1).
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// CONNECT protocol level not 3, 4 or 5, or not matching the name (MQTT-3.1.2-2).
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT reserved flag bit 0 set (MQTT-3.1.2-3).
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set while the Will Flag is 0 (MQTT-3.1.2-11, -13, -15).
    #[error("will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// 3.1.1: password flag set without the user name flag (MQTT-3.1.2-22).
    #[error("password flag set without the user name flag")]
    PasswordWithoutUsername,
    /// CONNACK reserved bits of the acknowledge flags set (MQTT-3.2.2-1).
    #[error("CONNACK reserved flags are set")]
    ConnAckReservedFlags,
    /// 3.x CONNACK return code above 5.
    #[error("invalid CONNACK return code {0}")]
    InvalidConnectReturnCode(u8),
    /// A reason code the packet may not carry (section 2.4).
    #[error("reason code {code:#04x} is not valid in {packet_type}")]
    InvalidReasonCode { packet_type: PacketType, code: u8 },
    /// A packet identifier of 0 where one is required (MQTT-2.2.1-3).
    #[error("packet identifier 0 in {0}")]
    PacketIdZero(PacketType),
    /// A PUBLISH topic name containing `+` or `#` (MQTT-3.3.2-2).
    #[error("topic name contains a wildcard character")]
    TopicNameWildcard,
    /// An empty PUBLISH topic name with no Topic Alias (MQTT-4.7.3-1, 5.0 section 3.3.2.1).
    #[error("empty topic name without a topic alias")]
    TopicNameEmpty,
    /// A SUBSCRIBE or UNSUBSCRIBE topic filter of length zero (MQTT-4.7.3-1).
    #[error("empty topic filter")]
    TopicFilterEmpty,
    /// SUBSCRIBE with no topic filter (MQTT-3.8.3-2; 3.1.1 MQTT-3.8.3-3).
    #[error("SUBSCRIBE without any topic filter")]
    SubscribeWithoutFilters,
    /// UNSUBSCRIBE with no topic filter (MQTT-3.10.3-2).
    #[error("UNSUBSCRIBE without any topic filter")]
    UnsubscribeWithoutFilters,
    /// Reserved bits of a subscription options byte set (MQTT-3.8.3-5; 3.1.1 MQTT-3.8.3-4).
    #[error("reserved bits set in subscription options")]
    SubscriptionOptionsReserved,
    /// Retain Handling value 3 (section 3.8.3.1).
    #[error("retain handling value 3")]
    InvalidRetainHandling,
    /// A property identifier that does not exist (section 2.2.2.2).
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property the packet may not carry (section 2.2.2.2).
    #[error("property {property:?} is not allowed in {context}")]
    PropertyNotAllowed {
        property: PropertyId,
        context: &'static str,
    },
    /// A property that may appear once appears twice (e.g. section 3.1.2.11.2).
    #[error("property {0:?} appears more than once")]
    DuplicateProperty(PropertyId),
    /// A property value outside its range: Receive Maximum 0, Maximum Packet
    /// Size 0, a 0/1 flag with another value, Subscription Identifier 0, ...
    #[error("invalid value for property {0:?}")]
    InvalidPropertyValue(PropertyId),
    /// Topic Alias 0 (MQTT-3.3.2-8).
    #[error("topic alias 0")]
    TopicAliasZero,
}

impl DecodeError {
    /// The 5.0 reason code a broker reports for this error (DISCONNECT, or
    /// CONNACK when it happens in CONNECT).
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::InvalidProtocolName | DecodeError::UnsupportedProtocolLevel(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::TopicNameWildcard => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            DecodeError::PacketIdZero(_)
            | DecodeError::TopicNameEmpty
            | DecodeError::SubscribeWithoutFilters
            | DecodeError::UnsubscribeWithoutFilters
            | DecodeError::InvalidRetainHandling
            | DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::MalformedVariableByteInteger
            | DecodeError::ReservedPacketType(_)
            | DecodeError::InvalidFixedHeaderFlags { .. }
            | DecodeError::InvalidQoS
            | DecodeError::DupWithQoS0
            | DecodeError::UnexpectedEnd { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::InvalidUtf8 { .. }
            | DecodeError::NullCharacter { .. }
            | DecodeError::ConnectReservedFlag
            | DecodeError::WillFlagsWithoutWill
            | DecodeError::PasswordWithoutUsername
            | DecodeError::ConnAckReservedFlags
            | DecodeError::InvalidConnectReturnCode(_)
            | DecodeError::InvalidReasonCode { .. }
            | DecodeError::TopicFilterEmpty
            | DecodeError::SubscriptionOptionsReserved
            | DecodeError::UnknownProperty(_)
            | DecodeError::PropertyNotAllowed { .. } => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet cannot be encoded. These are programming or configuration
/// errors on our side, never the peer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Remaining length above 268,435,455 bytes (section 2.1.4).
    #[error("packet body of {0} bytes exceeds the 268,435,455 byte limit")]
    PacketTooLarge(usize),
    /// A string or binary field longer than 65,535 bytes (section 1.5.4, 1.5.6).
    #[error("{field} is {len} bytes, more than 65,535")]
    FieldTooLong { field: &'static str, len: usize },
    /// QoS 1/2 PUBLISH without packet identifier, or QoS 0 with one.
    #[error("PUBLISH packet identifier does not match its QoS")]
    PacketIdMismatch,
    /// A packet or field the protocol version does not have (AUTH before 5.0).
    #[error("{0} cannot be encoded in this protocol version")]
    UnsupportedInVersion(&'static str),
    /// A value outside what the wire format can hold (a subscription
    /// identifier above 268,435,455, ...).
    #[error("value of {0} is out of range")]
    ValueOutOfRange(&'static str),
}
