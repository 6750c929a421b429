#![no_main]
use libfuzzer_sys::fuzz_target;
use onair_media::opus::{OpusDecoder, OPUS_RATES};

// One decoder fed a sequence of length-prefixed packets, as a lossy RTP stream would
// deliver them: decoding, concealment and FEC recovery must never panic, and every call
// appends exactly frames * channels samples or nothing.
fuzz_target!(|data: &[u8]| {
    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let rate = OPUS_RATES[usize::from(setup % 5)];
    let channels = 1 + u16::from(setup >> 7);
    let Ok(mut dec) = OpusDecoder::new(rate, channels) else {
        return;
    };
    let ch = usize::from(channels);
    let mut out = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len & 0x7f).min(tail.len());
        let (packet, tail) = tail.split_at(n);
        rest = tail;
        out.clear();
        let frames = (rate as usize / 400) * (1 + usize::from(len >> 7) * 7);
        let r = match len % 3 {
            _ if len & 0x80 != 0 && n == 0 => dec.conceal(frames, &mut out),
            0 if len & 0x80 != 0 => dec.decode_fec(packet, frames, &mut out),
            _ => dec.decode(packet, &mut out),
        };
        match r {
            Ok(f) => assert_eq!(out.len(), f * ch),
            Err(_) => assert!(out.is_empty()),
        }
        let _ = OpusDecoder::packet_frames(packet, rate);
    }
});
