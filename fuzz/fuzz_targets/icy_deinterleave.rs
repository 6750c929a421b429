#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&metaint, rest)) = data.split_first() else { return };
    let mut de = onair_proto::icy::Deinterleaver::new(usize::from(metaint));
    de.push(rest, |_| {}, |m| {
        let _ = onair_proto::icy::parse_block(m);
    });
});
