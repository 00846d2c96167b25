//! Wire primitives shared by the decoder and the encoder: variable byte
//! integers (section 1.5.5), two- and four-byte integers, UTF-8 strings
//! (section 1.5.4) and binary data (section 1.5.6).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::types::{PacketId, PacketType};

/// The longest UTF-8 string or binary field: its length is a two-byte integer.
pub(super) const MAX_FIELD_LEN: usize = 65_535;

/// Read a variable byte integer from the front of `buf`.
///
/// `Ok(None)` when `buf` ends before the last byte; a fourth byte with the
/// continuation bit set is malformed (section 1.5.5). Non-minimal encodings
/// (e.g. `0x80 0x00`) are accepted, as most brokers do: MQTT-1.5.5-1 binds
/// the sender, and the value is unambiguous.
#[inline]
pub(super) fn read_vbi(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedVariableByteInteger)
    } else {
        Ok(None)
    }
}

/// Bytes a variable byte integer takes for `value` (which must be at most
/// 268,435,455; callers check that first).
#[inline]
pub(super) const fn vbi_len(value: usize) -> usize {
    if value < 128 {
        1
    } else if value < 16_384 {
        2
    } else if value < 2_097_152 {
        3
    } else {
        4
    }
}

/// Append `value` as a variable byte integer (at most 268,435,455).
#[inline]
pub(super) fn put_vbi(buf: &mut BytesMut, mut value: u32) {
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

/// Length on the wire of a string or binary field (two-byte length prefix
/// included), or `FieldTooLong` above 65,535 bytes (section 1.5.4, 1.5.6).
#[inline]
pub(super) fn field_len(len: usize, field: &'static str) -> Result<usize, EncodeError> {
    if len > MAX_FIELD_LEN {
        Err(EncodeError::FieldTooLong { field, len })
    } else {
        Ok(2 + len)
    }
}

/// Append a length-prefixed string or binary field whose length was
/// checked by [`field_len`].
#[inline]
pub(super) fn put_field(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// Validate a UTF-8 string field: well-formed UTF-8 without surrogates or
/// overlong forms (MQTT-1.5.4-1) and without U+0000 (MQTT-1.5.4-2).
/// Zero-copy: the result shares `data`'s buffer.
#[inline]
pub(super) fn to_string(data: Bytes, field: &'static str) -> Result<ByteString, DecodeError> {
    // `try_from` checks ASCII first and only runs full UTF-8 validation
    // (`str::from_utf8`) when it sees a non-ASCII byte.
    let s = ByteString::try_from(data).map_err(|_| DecodeError::InvalidUtf8 { field })?;
    if s.as_bytes().contains(&0) {
        return Err(DecodeError::NullCharacter { field });
    }
    Ok(s)
}

/// Validate a topic name (PUBLISH, will topic): a UTF-8 string as
/// [`to_string`] checks, without the wildcards `+` and `#` (MQTT-3.3.2-2).
/// Emptiness is the caller's call (a 5.0 PUBLISH may use a Topic Alias).
#[inline]
pub(super) fn to_topic_name(data: Bytes, field: &'static str) -> Result<ByteString, DecodeError> {
    let s = ByteString::try_from(data).map_err(|_| DecodeError::InvalidUtf8 { field })?;
    // One pass for the three forbidden bytes; sort out which one only on failure.
    if has_nul_or_wildcard(s.as_bytes()) {
        if s.as_bytes().contains(&0) {
            return Err(DecodeError::NullCharacter { field });
        }
        return Err(DecodeError::TopicNameWildcard);
    }
    Ok(s)
}

/// True when `s` holds U+0000, `+` or `#`. Eight bytes at a time (SWAR):
/// topics are short and this runs on every PUBLISH.
#[inline]
fn has_nul_or_wildcard(s: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Non-zero iff some byte of `x` is 0 (exact for "any").
    #[inline(always)]
    fn zero_byte(x: u64) -> u64 {
        x.wrapping_sub(LO) & !x & HI
    }
    #[inline(always)]
    fn forbidden(w: u64) -> u64 {
        zero_byte(w) | zero_byte(w ^ (LO * u64::from(b'+'))) | zero_byte(w ^ (LO * u64::from(b'#')))
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        forbidden(u64::from_le_bytes(w))
    };
    if s.len() < 8 {
        return s.iter().any(|&b| b == 0 || b == b'+' || b == b'#');
    }
    let mut acc = 0;
    let mut at = 0;
    while at + 8 <= s.len() {
        acc |= word(at);
        at += 8;
    }
    // The tail as one more word that overlaps the previous one.
    if at < s.len() {
        acc |= word(s.len() - 8);
    }
    acc != 0
}

/// A cursor over one packet's body. Reads past `end` fail with
/// `UnexpectedEnd` naming the field; slices share the body's buffer.
pub(super) struct Reader {
    data: Bytes,
    pos: usize,
    /// Reads stop here: the body's end, or the end of a property list while
    /// one is being read.
    end: usize,
    pub(super) packet_type: PacketType,
}

impl Reader {
    #[inline]
    pub(super) fn new(data: Bytes, packet_type: PacketType) -> Self {
        let end = data.len();
        Self {
            data,
            pos: 0,
            end,
            packet_type,
        }
    }

    #[inline]
    pub(super) fn remaining(&self) -> usize {
        self.end - self.pos
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Restrict reads to the next `len` bytes (a property list); returns the
    /// previous limit for [`Reader::restore_end`].
    #[inline]
    pub(super) fn limit(&mut self, len: usize) -> usize {
        let outer = self.end;
        self.end = self.pos + len;
        outer
    }

    #[inline]
    pub(super) fn restore_end(&mut self, end: usize) {
        self.end = end;
    }

    #[inline]
    fn unexpected_end(&self, field: &'static str) -> DecodeError {
        DecodeError::UnexpectedEnd {
            packet_type: self.packet_type,
            field,
        }
    }

    /// The next `n` bytes as a slice, advancing past them.
    #[inline]
    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.unexpected_end(field));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.data[start..start + n])
    }

    #[inline]
    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    #[inline]
    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    #[inline]
    pub(super) fn vbi(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match read_vbi(&self.data[self.pos..self.end])? {
            Some((value, n)) => {
                self.pos += n;
                Ok(value)
            }
            None => Err(self.unexpected_end(field)),
        }
    }

    /// A packet identifier, which is never 0 (MQTT-2.2.1-3).
    #[inline]
    pub(super) fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        let id = self.u16("packet identifier")?;
        PacketId::new(id).ok_or(DecodeError::PacketIdZero(self.packet_type))
    }

    /// A length-prefixed field as a borrowed slice (for comparisons, such as
    /// the protocol name, where no copy needs to outlive the packet).
    #[inline]
    pub(super) fn field_slice(&mut self, field: &'static str) -> Result<&[u8], DecodeError> {
        let len = self.u16(field)? as usize;
        self.take(len, field)
    }

    /// Binary data (section 1.5.6), zero-copy.
    #[inline]
    pub(super) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)? as usize;
        if self.remaining() < len {
            return Err(self.unexpected_end(field));
        }
        let start = self.pos;
        self.pos += len;
        Ok(self.data.slice(start..start + len))
    }

    /// A UTF-8 string (section 1.5.4), validated, zero-copy.
    #[inline]
    pub(super) fn string(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        to_string(self.binary(field)?, field)
    }

    /// A topic name: a string without wildcards, possibly empty.
    #[inline]
    pub(super) fn topic_name(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        to_topic_name(self.binary(field)?, field)
    }

    /// The bytes not read yet, as a slice to peek at.
    #[inline]
    pub(super) fn peek_rest(&self) -> &[u8] {
        &self.data[self.pos..self.end]
    }

    /// Everything left in the body (a PUBLISH payload), without a second
    /// reference count increment: the body's handle is moved, not cloned.
    ///
    /// Always inlined: out of line, the advanced handle goes through memory
    /// and its 16-byte reload stalls on store forwarding (seen in perf).
    #[inline(always)]
    pub(super) fn into_rest(self) -> Bytes {
        let mut data = self.data;
        if self.end < data.len() {
            data.truncate(self.end);
        }
        data.advance(self.pos);
        data
    }

    /// The body must be fully consumed: anything left is `TrailingBytes`.
    #[inline]
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.end {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet_type: self.packet_type,
                count: self.end - self.pos,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_vbi(value: u32) -> Vec<u8> {
        let mut buf = BytesMut::new();
        put_vbi(&mut buf, value);
        buf.to_vec()
    }

    #[test]
    fn vbi_edge_values() {
        // Section 1.5.5, table 1-1: the boundaries of each length.
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            assert_eq!(encode_vbi(value), bytes, "encode {value}");
            assert_eq!(vbi_len(value as usize), bytes.len(), "len {value}");
            assert_eq!(
                read_vbi(bytes),
                Ok(Some((value, bytes.len()))),
                "decode {value}"
            );
            // Every strict prefix is incomplete, not an error.
            for cut in 0..bytes.len() {
                assert_eq!(read_vbi(&bytes[..cut]), Ok(None), "prefix {cut} of {value}");
            }
        }
    }

    #[test]
    fn vbi_fifth_byte_is_malformed() {
        assert_eq!(
            read_vbi(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
        // Known as soon as the fourth byte still says "continue".
        assert_eq!(
            read_vbi(&[0x80, 0x80, 0x80, 0x80]),
            Err(DecodeError::MalformedVariableByteInteger)
        );
    }

    #[test]
    fn strings_are_validated() {
        let s = |b: &'static [u8]| to_string(Bytes::from_static(b), "f");
        assert_eq!(s(b"a/b").unwrap(), "a/b");
        assert_eq!(s("é/ü".as_bytes()).unwrap(), "é/ü");
        // MQTT-1.5.4-1: a UTF-16 surrogate (U+D800) encoded as UTF-8, and an overlong "/".
        assert_eq!(
            s(b"\xED\xA0\x80"),
            Err(DecodeError::InvalidUtf8 { field: "f" })
        );
        assert_eq!(s(b"\xC0\xAF"), Err(DecodeError::InvalidUtf8 { field: "f" }));
        // MQTT-1.5.4-2.
        assert_eq!(s(b"a\0b"), Err(DecodeError::NullCharacter { field: "f" }));
        let t = |b: &'static [u8]| to_topic_name(Bytes::from_static(b), "t");
        assert_eq!(t(b"a/+"), Err(DecodeError::TopicNameWildcard));
        assert_eq!(t(b"#"), Err(DecodeError::TopicNameWildcard));
        assert_eq!(t(b"a\0#"), Err(DecodeError::NullCharacter { field: "t" }));
        assert_eq!(t(b"").unwrap(), "");
        // Every position of the SWAR scan, words and tail, and non-ASCII around it.
        for len in 1..20 {
            for at in 0..len {
                for bad in [0u8, b'+', b'#'] {
                    let mut v = vec![b'x'; len];
                    v[at] = bad;
                    assert!(has_nul_or_wildcard(&v), "{len} {at} {bad}");
                }
                let mut v = vec![0xC3u8; len];
                v[at] = b'a';
                assert!(!has_nul_or_wildcard(&v));
            }
        }
    }
}
