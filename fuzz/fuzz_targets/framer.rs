#![no_main]
use libfuzzer_sys::fuzz_target;
use onair_proto::frame::{Format, Framer};

// Every format over the same bytes, fed in the pieces a network would deliver: units must
// tile the consumed prefix exactly and never be empty.
fuzz_target!(|data: &[u8]| {
    for format in [Format::Mpeg, Format::Adts, Format::Ogg, Format::Opaque] {
        let mut framer = Framer::new(format);
        let mut buf = Vec::new();
        for piece in data.chunks(97) {
            buf.extend_from_slice(piece);
            let mut used = 0;
            while let Some(unit) = framer.next_unit(&buf[used..]) {
                assert!(unit.len > 0 && used + unit.len <= buf.len());
                used += unit.len;
            }
            buf.drain(..used);
        }
        let _ = framer.stream_info();
    }
});
