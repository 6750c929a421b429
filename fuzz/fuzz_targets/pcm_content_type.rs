#![no_main]
use libfuzzer_sys::fuzz_target;
use onair_media::pcm::{parse_pcm_content_type, MAX_PCM_CHANNELS, MAX_PCM_RATE};

// Any header value: never panics, and whatever it accepts is in range.
fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((_, rate, channels)) = parse_pcm_content_type(s) {
        assert!((1..=MAX_PCM_RATE).contains(&rate));
        assert!((1..=MAX_PCM_CHANNELS).contains(&channels));
    }
});
