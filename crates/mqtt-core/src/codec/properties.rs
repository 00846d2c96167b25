//! MQTT 5.0 properties (section 2.2.2).
//!
//! One [`Properties`] struct serves every packet: each field is a property,
//! and the decoder rejects a property that the packet may not carry
//! ([`PropertyId::allowed_in`]). Keeping one type keeps the broker simple
//! (a PUBLISH's properties are forwarded as they are) and costs no heap
//! allocation when no multi-valued property is present.

use bytes::Bytes;
use bytestring::ByteString;

use super::types::QoS;

/// Property identifiers (section 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQoS = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

/// Where a property list appears. Will properties are their own context:
/// they sit inside CONNECT's payload but allow a different set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP share one set.
    PubResponse,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyId {
    pub const ALL: [PropertyId; 27] = [
        PropertyId::PayloadFormatIndicator,
        PropertyId::MessageExpiryInterval,
        PropertyId::ContentType,
        PropertyId::ResponseTopic,
        PropertyId::CorrelationData,
        PropertyId::SubscriptionIdentifier,
        PropertyId::SessionExpiryInterval,
        PropertyId::AssignedClientIdentifier,
        PropertyId::ServerKeepAlive,
        PropertyId::AuthenticationMethod,
        PropertyId::AuthenticationData,
        PropertyId::RequestProblemInformation,
        PropertyId::WillDelayInterval,
        PropertyId::RequestResponseInformation,
        PropertyId::ResponseInformation,
        PropertyId::ServerReference,
        PropertyId::ReasonString,
        PropertyId::ReceiveMaximum,
        PropertyId::TopicAliasMaximum,
        PropertyId::TopicAlias,
        PropertyId::MaximumQoS,
        PropertyId::RetainAvailable,
        PropertyId::UserProperty,
        PropertyId::MaximumPacketSize,
        PropertyId::WildcardSubscriptionAvailable,
        PropertyId::SubscriptionIdentifierAvailable,
        PropertyId::SharedSubscriptionAvailable,
    ];

    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x01 => PropertyId::PayloadFormatIndicator,
            0x02 => PropertyId::MessageExpiryInterval,
            0x03 => PropertyId::ContentType,
            0x08 => PropertyId::ResponseTopic,
            0x09 => PropertyId::CorrelationData,
            0x0B => PropertyId::SubscriptionIdentifier,
            0x11 => PropertyId::SessionExpiryInterval,
            0x12 => PropertyId::AssignedClientIdentifier,
            0x13 => PropertyId::ServerKeepAlive,
            0x15 => PropertyId::AuthenticationMethod,
            0x16 => PropertyId::AuthenticationData,
            0x17 => PropertyId::RequestProblemInformation,
            0x18 => PropertyId::WillDelayInterval,
            0x19 => PropertyId::RequestResponseInformation,
            0x1A => PropertyId::ResponseInformation,
            0x1C => PropertyId::ServerReference,
            0x1F => PropertyId::ReasonString,
            0x21 => PropertyId::ReceiveMaximum,
            0x22 => PropertyId::TopicAliasMaximum,
            0x23 => PropertyId::TopicAlias,
            0x24 => PropertyId::MaximumQoS,
            0x25 => PropertyId::RetainAvailable,
            0x26 => PropertyId::UserProperty,
            0x27 => PropertyId::MaximumPacketSize,
            0x28 => PropertyId::WildcardSubscriptionAvailable,
            0x29 => PropertyId::SubscriptionIdentifierAvailable,
            0x2A => PropertyId::SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// The table of section 2.2.2.2: which packets may carry the property.
    pub const fn allowed_in(self, ctx: PropertyContext) -> bool {
        use PropertyContext as C;
        use PropertyId as P;
        match self {
            P::PayloadFormatIndicator
            | P::MessageExpiryInterval
            | P::ContentType
            | P::ResponseTopic
            | P::CorrelationData => matches!(ctx, C::Publish | C::Will),
            P::SubscriptionIdentifier => matches!(ctx, C::Publish | C::Subscribe),
            P::SessionExpiryInterval => matches!(ctx, C::Connect | C::ConnAck | C::Disconnect),
            P::AssignedClientIdentifier
            | P::ServerKeepAlive
            | P::ResponseInformation
            | P::MaximumQoS
            | P::RetainAvailable
            | P::WildcardSubscriptionAvailable
            | P::SubscriptionIdentifierAvailable
            | P::SharedSubscriptionAvailable => matches!(ctx, C::ConnAck),
            P::AuthenticationMethod | P::AuthenticationData => {
                matches!(ctx, C::Connect | C::ConnAck | C::Auth)
            }
            P::RequestProblemInformation | P::RequestResponseInformation => {
                matches!(ctx, C::Connect)
            }
            P::WillDelayInterval => matches!(ctx, C::Will),
            P::ServerReference => matches!(ctx, C::ConnAck | C::Disconnect),
            P::ReasonString => matches!(
                ctx,
                C::ConnAck | C::PubResponse | C::SubAck | C::UnsubAck | C::Disconnect | C::Auth
            ),
            P::ReceiveMaximum | P::TopicAliasMaximum | P::MaximumPacketSize => {
                matches!(ctx, C::Connect | C::ConnAck)
            }
            P::TopicAlias => matches!(ctx, C::Publish),
            P::UserProperty => true,
        }
    }

    /// Properties that may appear more than once: User Property anywhere,
    /// Subscription Identifier in PUBLISH only (section 3.3.2.3.8; a
    /// SUBSCRIBE carries at most one, section 3.8.2.1.2).
    pub const fn may_repeat(self, ctx: PropertyContext) -> bool {
        match self {
            PropertyId::UserProperty => true,
            PropertyId::SubscriptionIdentifier => matches!(ctx, PropertyContext::Publish),
            _ => false,
        }
    }
}

/// The largest value a variable byte integer can hold (section 1.5.5),
/// also the maximum Subscription Identifier.
pub const VARIABLE_BYTE_INTEGER_MAX: u32 = 268_435_455;

/// Every MQTT 5.0 property. `None` / empty means absent. For 3.x packets the
/// struct stays empty: the encoder writes no properties and the decoder
/// reads none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01. `true` = payload is UTF-8 (value 1), `false` = unspecified bytes (0).
    pub payload_format_indicator: Option<bool>,
    /// 0x02, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03.
    pub content_type: Option<ByteString>,
    /// 0x08.
    pub response_topic: Option<ByteString>,
    /// 0x09.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, 1..=268,435,455; several in a PUBLISH to a client, at most one in SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x13, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15.
    pub authentication_method: Option<ByteString>,
    /// 0x16.
    pub authentication_data: Option<Bytes>,
    /// 0x17, 0 or 1.
    pub request_problem_information: Option<bool>,
    /// 0x18, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19, 0 or 1.
    pub request_response_information: Option<bool>,
    /// 0x1A.
    pub response_information: Option<ByteString>,
    /// 0x1C.
    pub server_reference: Option<ByteString>,
    /// 0x1F.
    pub reason_string: Option<ByteString>,
    /// 0x21, never 0.
    pub receive_maximum: Option<u16>,
    /// 0x22.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, never 0.
    pub topic_alias: Option<u16>,
    /// 0x24, only 0 or 1 on the wire.
    pub maximum_qos: Option<QoS>,
    /// 0x25, 0 or 1.
    pub retain_available: Option<bool>,
    /// 0x26, in order; names may repeat.
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// 0x27, never 0.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, 0 or 1.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29, 0 or 1.
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A, 0 or 1.
    pub shared_subscription_available: Option<bool>,
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}
