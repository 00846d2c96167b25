//! MQTT 5.0: arbitrary bytes as a connection's input stream must never panic
//! and must respect the decode contract.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_core::codec::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    sansmq_fuzz::fuzz_decode(data, &[ProtocolVersion::V5]);
});
