#![no_main]
use libfuzzer_sys::fuzz_target;

// Any bytes: never a panic; the transaction id is taken from the input so that matching
// responses reach the attribute walk.
fuzz_target!(|data: &[u8]| {
    let mut tx = [0u8; 12];
    if data.len() >= 20 {
        tx.copy_from_slice(&data[8..20]);
    }
    let _ = onair_proto::stun::parse_binding_response(data, tx);
});
