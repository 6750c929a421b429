#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = onair_proto::icecast::ChunkedDecoder::default();
    let mut out = Vec::new();
    for piece in data.chunks(7) {
        if d.decode(piece, &mut out).is_err() {
            break;
        }
    }
});
