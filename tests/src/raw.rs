//! A raw, blocking MQTT client over `std::net::TcpStream`, built on the
//! core's codec: it sends exactly the bytes a test asks for (including
//! malformed ones) and never does anything on its own (no pings, no acks),
//! which is what keepalive and error tests need.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_core::codec::{
    decode, encode, ByteString, ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion,
    PubResponse, Publish, QoS, SubAck, Subscribe, SubscriptionOptions, Will,
};

/// Why [`RawClient::recv`] returned no packet.
#[derive(Debug)]
pub enum RecvError {
    Timeout,
    /// The broker closed the connection (EOF or reset).
    Closed,
    Decode(DecodeError),
    Io(io::Error),
}

pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl RawClient {
    /// A TCP connection, nothing sent yet.
    pub fn tcp(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Connect, send CONNECT, and expect a successful CONNACK.
    pub fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        keep_alive: u16,
        will: Option<Will>,
    ) -> (Self, ConnAck) {
        let mut c = Self::tcp(addr, version);
        c.send(&connect_packet(version, client_id, keep_alive, will));
        let ack = match c.recv(Duration::from_secs(5)) {
            Ok(Packet::ConnAck(a)) => a,
            other => panic!("{client_id}: expected CONNACK, got {other:?}"),
        };
        assert!(
            ack.reason_code.0 == 0,
            "{client_id}: CONNACK refused: {:?}",
            ack.reason_code
        );
        (c, ack)
    }

    pub fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out).expect("encode a test packet");
        self.send_raw(&out);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the broker");
    }

    /// SUBSCRIBE to one filter and expect a SUBACK granting something.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: nz(1),
            filters: vec![(ByteString::from(filter), SubscriptionOptions::new(qos))],
            properties: Properties::default(),
        }));
        match self.recv(Duration::from_secs(5)) {
            Ok(Packet::SubAck(a)) => a,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// PUBLISH at QoS 0.
    pub fn publish0(&mut self, topic: &str, payload: &[u8]) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteString::from(topic),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload),
        }));
    }

    /// The next packet, waiting up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Packet, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            match decode(&mut self.buf, self.version, u32::MAX) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(RecvError::Decode(e)),
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(RecvError::Timeout)?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(RecvError::Io)?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(RecvError::Timeout)
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(RecvError::Closed)
                }
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// The next PUBLISH, skipping other packets, waiting up to `timeout`.
    pub fn recv_publish(&mut self, timeout: Duration) -> Result<Publish, RecvError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or(RecvError::Timeout)?;
            if let Packet::Publish(p) = self.recv(left)? {
                return Ok(p);
            }
        }
    }

    /// Receive QoS 1 PUBLISHes whose payloads are "1", "2", ... `count`,
    /// each once, in order, never marked DUP, acknowledging each; panics
    /// with the first one that is missing, late, out of order or repeated.
    pub fn expect_numbered_qos1(&mut self, count: u32, timeout: Duration) {
        for want in 1..=count {
            let p = self
                .recv_publish(timeout)
                .unwrap_or_else(|e| panic!("waiting for message {want}: {e:?}"));
            assert_eq!(
                p.payload,
                Bytes::from(want.to_string()),
                "message {want} out of order or duplicated"
            );
            assert!(!p.dup, "no resend without a reconnect");
            let id = p.packet_id.expect("QoS 1 has a packet id");
            self.send(&Packet::PubAck(PubResponse::new(id)));
        }
    }

    /// Read until the broker closes the connection (at most `timeout`):
    /// the packets received before, and when the close was seen.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<(Vec<Packet>, Instant), RecvError> {
        let deadline = Instant::now() + timeout;
        let mut packets = Vec::new();
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or(RecvError::Timeout)?;
            match self.recv(left) {
                Ok(p) => packets.push(p),
                Err(RecvError::Closed) => return Ok((packets, Instant::now())),
                Err(e) => return Err(e),
            }
        }
    }

    /// Close our side without DISCONNECT (as a crashed client would).
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A CONNECT with clean start and no credentials.
pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    keep_alive: u16,
    will: Option<Will>,
) -> Packet {
    Packet::Connect(Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive,
        client_id: ByteString::from(client_id),
        will,
        username: None,
        password: None,
        properties: Properties::default(),
    })
}

/// A will message at QoS 0.
pub fn will(topic: &str, payload: &[u8]) -> Will {
    Will {
        topic: ByteString::from(topic),
        payload: Bytes::copy_from_slice(payload),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    }
}

fn nz(v: u16) -> mqtt_core::codec::PacketId {
    mqtt_core::codec::PacketId::new(v).expect("non-zero packet id")
}
