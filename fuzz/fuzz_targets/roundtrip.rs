//! Every packet that decodes (in 3.1, 3.1.1 and 5.0) encodes to exactly
//! `encoded_len` bytes and decodes back to an equal packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sansmq_fuzz::fuzz_roundtrip(data);
});
