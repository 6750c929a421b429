//! decode: ffmpeg-made files of every supported format decode to the right tone, length,
//! rate and channel count; damaged and foreign input fails softly.

use std::io::Read;
use std::path::Path;

use onair_media::decode::{DecodeError, Decoder};
use onair_media::pcm::Pcm;

use crate::fixture::{ffmpeg_decoded_frames, tone, TempDir};
use crate::spectrum::{channel, dominant};

const SECS: f64 = 3.0;

struct Case {
    file: &'static str,
    freq: u32,
    rate: u32,
    channels: u16,
    opts: &'static [&'static str],
    codec: &'static str,
    /// Allowed error of the decoded length, in frames: one packet, plus the encoder's
    /// priming/padding where the container cannot say how much to trim.
    slack: u64,
}

const CASES: &[Case] = &[
    Case {
        file: "cbr.mp3",
        freq: 440,
        rate: 44_100,
        channels: 2,
        opts: &["-c:a", "libmp3lame", "-b:a", "128k"],
        codec: "mp3",
        slack: 1152,
    },
    Case {
        file: "vbr.mp3",
        freq: 523,
        rate: 48_000,
        channels: 1,
        opts: &["-c:a", "libmp3lame", "-q:a", "4"],
        codec: "mp3",
        slack: 1152,
    },
    Case {
        file: "adts.aac",
        freq: 660,
        rate: 44_100,
        channels: 2,
        opts: &["-c:a", "aac", "-b:a", "128k", "-f", "adts"],
        codec: "aac",
        slack: 3 * 1024,
    },
    Case {
        file: "tone.m4a",
        freq: 880,
        rate: 48_000,
        channels: 2,
        opts: &["-c:a", "aac", "-b:a", "128k"],
        codec: "aac",
        slack: 2 * 1024,
    },
    Case {
        file: "tone.flac",
        freq: 1000,
        rate: 44_100,
        channels: 1,
        opts: &["-c:a", "flac"],
        codec: "flac",
        slack: 0,
    },
    Case {
        file: "tone.ogg",
        freq: 440,
        rate: 48_000,
        channels: 2,
        opts: &["-c:a", "libvorbis", "-q:a", "4"],
        codec: "vorbis",
        slack: 2048,
    },
    Case {
        file: "s16.wav",
        freq: 523,
        rate: 44_100,
        channels: 2,
        opts: &["-c:a", "pcm_s16le"],
        codec: "pcm_s16le",
        slack: 0,
    },
    Case {
        file: "f32.wav",
        freq: 660,
        rate: 48_000,
        channels: 1,
        opts: &["-c:a", "pcm_f32le"],
        codec: "pcm_f32le",
        slack: 0,
    },
    Case {
        file: "tone.aiff",
        freq: 880,
        rate: 44_100,
        channels: 2,
        opts: &["-c:a", "pcm_s16be"],
        codec: "pcm_s16be",
        slack: 0,
    },
];

/// Decodes to the end; returns the concatenated samples and the last block's format.
fn decode_all(d: &mut Decoder) -> (Vec<f32>, u32, u16) {
    let (mut all, mut rate, mut channels) = (Vec::new(), 0, 0);
    while let Some(b) = d.next_block().expect("decode") {
        assert_eq!(b.samples.len() % usize::from(b.channels), 0);
        rate = b.rate;
        channels = b.channels;
        all.extend_from_slice(&b.samples);
    }
    (all, rate, channels)
}

fn frames_of(secs: f64, rate: u32) -> u64 {
    (secs * f64::from(rate)).round() as u64
}

fn check_tone(samples: &[f32], rate: u32, channels: u16, freq: u32, what: &str) {
    for ch in 0..usize::from(channels) {
        let x = channel(samples, channels, ch);
        // Skip the first 0.2 s (encoder priming, fade-in) and use 1 s of signal.
        let start = (rate / 5) as usize;
        let x = &x[start..start + rate as usize];
        let f = dominant(x, rate, 100.0, 4000.0);
        assert!(
            (f - f64::from(freq)).abs() <= 5.0,
            "{what} ch{ch}: dominant {f} Hz, want {freq}"
        );
        let peak = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        // lavfi's sine source is at 1/8 full scale.
        assert!((0.08..0.2).contains(&peak), "{what} ch{ch}: peak {peak}");
    }
}

#[test]
fn every_format_decodes_to_the_right_tone_length_and_layout() {
    let dir = TempDir::new("formats");
    for c in CASES {
        let path = dir.path(c.file);
        tone(&path, c.freq, c.rate, c.channels, SECS, c.opts);
        let mut d = Decoder::open(&path).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        let info = d.info().clone();
        assert_eq!(
            (info.rate, info.channels),
            (c.rate, c.channels),
            "{}",
            c.file
        );
        assert_eq!(info.codec, c.codec, "{}", c.file);
        let (samples, rate, channels) = decode_all(&mut d);
        assert_eq!((rate, channels), (c.rate, c.channels), "{}", c.file);
        let frames = (samples.len() / usize::from(channels)) as u64;
        let truth = frames_of(SECS, c.rate);
        assert!(
            frames.abs_diff(truth) <= c.slack,
            "{}: decoded {frames} frames, truth {truth}, slack {}",
            c.file,
            c.slack
        );
        if let Some(dur) = info.duration {
            let stated = (dur.as_secs_f64() * f64::from(c.rate)).round() as u64;
            assert!(
                stated.abs_diff(truth) <= c.slack.max(1),
                "{}: container says {dur:?}",
                c.file
            );
        }
        check_tone(&samples, rate, channels, c.freq, c.file);
        assert_eq!(d.corrupt_packets(), 0, "{}", c.file);
    }
}

#[test]
fn mp3_with_id3v2_tags_and_cover_art_decodes() {
    // Library files often carry a large ID3v2 tag (cover art) before the first frame.
    let dir = TempDir::new("id3");
    let (png, mp3) = (dir.path("cover.png"), dir.path("tagged.mp3"));
    let p = |x: &std::path::Path| x.to_str().expect("utf-8 path").to_string();
    crate::fixture::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=800x800:rate=1",
        "-frames:v",
        "1",
        &p(&png),
    ]);
    crate::fixture::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=523:sample_rate=44100:duration=3",
        "-i",
        &p(&png),
        "-map",
        "0",
        "-map",
        "1",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        "-c:v",
        "copy",
        "-id3v2_version",
        "3",
        "-metadata",
        "title=T\u{e4}st ' ; =",
        &p(&mp3),
    ]);
    assert!(
        std::fs::metadata(&mp3).expect("mp3").len() > 20_000,
        "cover art is in the tag"
    );
    let mut d = Decoder::open(&mp3).expect("tagged mp3");
    let (samples, rate, channels) = decode_all(&mut d);
    assert_eq!((rate, channels), (44_100, 1));
    assert!(((samples.len() as f64 / 44_100.0) - 3.0).abs() < 0.03);
    check_tone(&samples, rate, channels, 523, "tagged.mp3");
}

#[test]
fn lossless_containers_state_their_duration() {
    let dir = TempDir::new("duration");
    for (file, opts) in [
        ("a.flac", &["-c:a", "flac"][..]),
        ("a.wav", &["-c:a", "pcm_s16le"]),
        ("a.m4a", &["-c:a", "aac"]),
    ] {
        let path = dir.path(file);
        tone(&path, 440, 48_000, 2, 2.5, opts);
        let d = Decoder::open(&path).expect(file);
        let dur = d
            .info()
            .duration
            .unwrap_or_else(|| panic!("{file}: no duration"));
        assert!((dur.as_secs_f64() - 2.5).abs() < 0.03, "{file}: {dur:?}");
    }
}

#[test]
fn truncated_file_decodes_what_it_has() {
    let dir = TempDir::new("truncated");
    for (file, opts) in [
        ("t.mp3", &["-c:a", "libmp3lame", "-b:a", "128k"][..]),
        ("t.ogg", &["-c:a", "libvorbis"]),
        ("t.flac", &["-c:a", "flac"]),
        ("t.wav", &["-c:a", "pcm_s16le"]),
        ("t.aac", &["-c:a", "aac", "-f", "adts"]),
    ] {
        let path = dir.path(file);
        tone(&path, 440, 44_100, 2, 4.0, opts);
        let bytes = std::fs::read(&path).expect("read");
        let cut = dir.path(&format!("cut-{file}"));
        // Keep the first ~half: cut mid-packet on purpose (odd byte count).
        std::fs::write(&cut, &bytes[..bytes.len() / 2 + 7]).expect("write");
        let mut d = Decoder::open(&cut).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut frames = 0usize;
        loop {
            match d.next_block() {
                Ok(Some(b)) => frames += b.frames(),
                Ok(None) => break,
                Err(e) => panic!("{file}: truncated file errored: {e}"),
            }
        }
        // What is there to decode: ffmpeg's own decode of the same cut file.
        let reference = ffmpeg_decoded_frames(&cut, 2);
        let secs = frames as f64 / 44_100.0;
        assert!(
            secs > 0.5,
            "{file}: decoded only {secs} s of a 4 s file cut in half"
        );
        assert!(
            (frames as u64).abs_diff(reference) <= 2 * 2048,
            "{file}: decoded {frames} frames, ffmpeg decodes {reference} from the same cut file"
        );
        // After the end, the decoder stays at the end.
        assert!(d.next_block().expect("after end").is_none());
    }
}

#[test]
fn corrupt_middle_decodes_to_full_length() {
    let dir = TempDir::new("corrupt");
    for (file, opts, rate) in [
        (
            "c.mp3",
            &["-c:a", "libmp3lame", "-b:a", "128k"][..],
            44_100u32,
        ),
        ("c.aac", &["-c:a", "aac", "-f", "adts"], 44_100),
        ("c.ogg", &["-c:a", "libvorbis"], 48_000),
        ("c.flac", &["-c:a", "flac"], 44_100),
    ] {
        let path = dir.path(file);
        tone(&path, 440, rate, 2, 4.0, opts);
        let mut bytes = std::fs::read(&path).expect("read");
        // Overwrite ~0.3 % of the file, in the middle, with a pseudo-random pattern.
        let (mid, n) = (bytes.len() / 2, bytes.len() / 300 + 16);
        let mut x = 0x9E37_79B9u32;
        for b in &mut bytes[mid..mid + n] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let bad = dir.path(&format!("bad-{file}"));
        std::fs::write(&bad, &bytes).expect("write");
        let mut d = Decoder::open(&bad).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut frames = 0usize;
        let mut error = None;
        loop {
            match d.next_block() {
                Ok(Some(b)) => frames += b.frames(),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let secs = frames as f64 / f64::from(rate);
        assert!(
            error.is_none(),
            "{file}: corrupt middle ended with {error:?} after {secs} s"
        );
        // Decoding goes on past the damage: about as much as ffmpeg recovers, and in any case
        // audio from after the damaged span.
        let reference = ffmpeg_decoded_frames(&bad, 2);
        eprintln!(
            "{file}: {secs:.3} s decoded (ffmpeg {:.3} s), {} corrupt packets skipped",
            reference as f64 / f64::from(rate),
            d.corrupt_packets()
        );
        assert!(
            secs > 2.6,
            "{file}: only {secs} s of 4 s decoded (corrupt {})",
            d.corrupt_packets()
        );
        assert!(
            frames as u64 + 2 * 2048 >= reference,
            "{file}: decoded {frames} frames, ffmpeg recovers {reference}"
        );
    }
}

#[test]
fn a_text_file_is_a_clear_error() {
    let dir = TempDir::new("text");
    for name in ["notes.txt", "fake.mp3", "fake.ogg", "fake.m4a"] {
        let path = dir.path(name);
        std::fs::write(&path, "This is a text file, not audio.\n".repeat(500)).expect("write");
        let e = Decoder::open(&path).expect_err(name);
        assert!(matches!(e, DecodeError::NotAudio), "{name}: {e:?}");
        assert!(e.to_string().contains("not an audio"), "{name}: {e}");
    }
    let e = Decoder::open(Path::new("/nonexistent/x.mp3")).expect_err("missing file");
    assert!(matches!(e, DecodeError::Open { .. }), "{e:?}");
}

/// 20 ms at 48 kHz: how far an Opus decode may be from ffmpeg's own.
const OPUS_SLACK: u64 = 960;

#[test]
fn opus_files_decode_like_ffmpeg() {
    let dir = TempDir::new("opus");
    for (file, freq, src_rate, channels) in [
        ("mono48.opus", 440, 48_000, 1),
        ("stereo48.opus", 660, 48_000, 2),
        // ffmpeg resamples to 48 kHz for libopus and records 44100 as the input rate.
        ("stereo44.opus", 880, 44_100, 2),
    ] {
        let path = dir.path(file);
        tone(&path, freq, src_rate, channels, SECS, &["-c:a", "libopus"]);
        let reference = ffmpeg_decoded_frames(&path, channels);
        // Same content under another name: found by its codec, not its name.
        let renamed = dir.path(&file.replace(".opus", ".ogg"));
        std::fs::copy(&path, &renamed).expect("copy");
        for p in [&path, &renamed] {
            let mut d = Decoder::open(p).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(d.info().codec, "opus", "{file}");
            assert_eq!((d.info().rate, d.info().channels), (48_000, channels));
            // The stated length excludes pre-skip and end padding.
            let stated = d
                .info()
                .duration
                .expect("seekable Ogg Opus states its length");
            assert!(
                (stated.as_secs_f64() - SECS).abs() <= 0.02,
                "{file}: {stated:?}"
            );
            let (samples, rate, ch) = decode_all(&mut d);
            assert_eq!((rate, ch), (48_000, channels), "{file}");
            let frames = samples.len() as u64 / u64::from(channels);
            assert!(
                frames.abs_diff(reference) <= OPUS_SLACK,
                "{file}: decoded {frames} frames, ffmpeg decodes {reference}"
            );
            assert!(
                frames.abs_diff(frames_of(SECS, 48_000)) <= OPUS_SLACK,
                "{file}: {frames} frames for {SECS} s"
            );
            check_tone(&samples, rate, channels, freq, file);
            assert_eq!(d.corrupt_packets(), 0, "{file}");
        }
    }
}

/// Ogg page checksum (RFC 3533: CRC-32, polynomial 0x04c11db7, no reflection, zero init).
fn ogg_crc(page: &[u8]) -> u32 {
    page.iter().fold(0u32, |mut crc, &b| {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// Rewrites the first page's OpusHead output gain (Q7.8 dB) and fixes the page checksum.
fn set_opus_head_gain(data: &mut [u8], gain_q8: i16) {
    let head = data
        .windows(8)
        .position(|w| w == b"OpusHead")
        .expect("OpusHead");
    data[head + 16..head + 18].copy_from_slice(&gain_q8.to_le_bytes());
    // The BOS page holds only OpusHead: it ends with it.
    let end = head + 19;
    data[22..26].fill(0);
    let crc = ogg_crc(&data[..end]);
    data[22..26].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn opus_head_output_gain_is_applied() {
    let dir = TempDir::new("opusgain");
    let path = dir.path("g.opus");
    tone(&path, 440, 48_000, 1, 2.0, &["-c:a", "libopus"]);
    let plain = std::fs::read(&path).expect("read");
    let mut quiet = plain.clone();
    // -6.02 dB: half amplitude.
    set_opus_head_gain(&mut quiet, -1541);
    let decode = |bytes: Vec<u8>| {
        let mut d = Decoder::from_bytes(bytes, Some("opus")).expect("open");
        let (samples, _, _) = decode_all(&mut d);
        assert_eq!(d.corrupt_packets(), 0);
        samples
    };
    let (a, b) = (decode(plain), decode(quiet));
    assert_eq!(a.len(), b.len());
    let rms = |x: &[f32]| (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt();
    let ratio = rms(&b) / rms(&a);
    assert!((ratio - 0.5).abs() < 0.01, "gain ratio {ratio}");
}

#[test]
fn opus_with_more_than_two_channels_is_refused_clearly() {
    let dir = TempDir::new("opus51");
    let path = dir.path("s.opus");
    tone(&path, 440, 48_000, 6, 1.0, &["-c:a", "libopus"]);
    let e = Decoder::open(&path).expect_err("5.1 Opus");
    assert!(matches!(e, DecodeError::Unsupported(_)), "{e:?}");
    assert!(e.to_string().contains("mapping family 1"), "{e}");
}

#[test]
fn damaged_opus_decodes_what_it_can() {
    let dir = TempDir::new("opusbad");
    let path = dir.path("t.opus");
    // 100 ms pages, as a live encoder makes (ffmpeg's default is 1 s).
    tone(
        &path,
        660,
        48_000,
        2,
        SECS,
        &["-c:a", "libopus", "-page_duration", "100000"],
    );
    let data = std::fs::read(&path).expect("read");

    // Cut short, as a copy interrupted mid-page.
    let cut = dir.path("cut.opus");
    std::fs::write(&cut, &data[..data.len() * 3 / 5]).expect("write");
    let reference = ffmpeg_decoded_frames(&cut, 2);
    let mut d = Decoder::open(&cut).expect("open cut");
    let (samples, _, _) = decode_all(&mut d);
    let frames = samples.len() as u64 / 2;
    assert!(
        frames.abs_diff(reference) <= OPUS_SLACK && frames > 48_000,
        "cut: decoded {frames} frames, ffmpeg decodes {reference}"
    );

    // Garbage over the middle: the pages it hits fail their checksum and are lost, as in
    // ffmpeg; the rest plays on.
    let mut bad = data.clone();
    let mid = bad.len() / 2;
    let mut x = 0x1234_5678u32;
    for b in &mut bad[mid..mid + 3000] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let bad_path = dir.path("bad.opus");
    std::fs::write(&bad_path, &bad).expect("write");
    let reference = ffmpeg_decoded_frames(&bad_path, 2);
    for (what, mut d) in [
        ("file", Decoder::open(&bad_path).expect("open bad")),
        (
            "stream",
            Decoder::from_reader(
                Box::new(Trickle {
                    data: bad.clone(),
                    pos: 0,
                    n: 0,
                }),
                Some("audio/ogg"),
            )
            .expect("open bad stream"),
        ),
    ] {
        let (samples, _, _) = decode_all(&mut d);
        let frames = samples.len() as u64 / 2;
        let secs = frames as f64 / 48_000.0;
        assert!(
            secs > SECS - 0.5 && frames.abs_diff(reference) <= OPUS_SLACK,
            "{what}: {secs:.3} s, {frames} frames (ffmpeg {reference})"
        );
        // The tone is intact after the damage.
        let tail = &samples[samples.len() - 96_000..samples.len() - 48_000];
        let f = dominant(&channel(tail, 2, 0), 48_000, 100.0, 4000.0);
        assert!((f - 660.0).abs() <= 5.0, "{what}: tail tone {f}");
    }

    // Pages intact but packets invalid for Opus (code 3 with zero frames): each is skipped
    // and counted, the stream goes on.
    let mut junk = data;
    let (mut pos, mut pages, mut spoiled) = (0, 0, 0u64);
    while pos + 27 <= junk.len() && &junk[pos..pos + 4] == b"OggS" {
        let nseg = usize::from(junk[pos + 26]);
        let lacing: Vec<usize> = junk[pos + 27..pos + 27 + nseg]
            .iter()
            .map(|&l| usize::from(l))
            .collect();
        let body = pos + 27 + nseg;
        let end = body + lacing.iter().sum::<usize>();
        pages += 1;
        if (10..13).contains(&pages) {
            let mut start = body;
            let mut at = body;
            for &l in &lacing {
                at += l;
                if l < 255 {
                    if at - start >= 2 {
                        junk[start] = 0x03;
                        junk[start + 1] = 0x00;
                        spoiled += 1;
                    }
                    start = at;
                }
            }
            junk[pos + 22..pos + 26].fill(0);
            let crc = ogg_crc(&junk[pos..end]);
            junk[pos + 22..pos + 26].copy_from_slice(&crc.to_le_bytes());
        }
        pos = end;
    }
    assert!(spoiled >= 10, "{spoiled} packets spoiled");
    let mut d = Decoder::from_bytes(junk, Some("opus")).expect("open junk");
    let (samples, _, _) = decode_all(&mut d);
    assert_eq!(d.corrupt_packets(), spoiled);
    let frames = samples.len() as u64 / 2;
    // ffmpeg makes 20 ms packets by default.
    let lost = spoiled * 960;
    assert!(
        frames.abs_diff(frames_of(SECS, 48_000) - lost) <= OPUS_SLACK,
        "{frames} frames after losing {spoiled} packets"
    );
}

#[test]
fn opus_streams_decode_in_small_chunks_and_across_chain_links() {
    // Two Ogg Opus files (mono then stereo) concatenated, as a mount does at a track change.
    let dir = TempDir::new("opuschain");
    let (a, b) = (dir.path("a.opus"), dir.path("b.opus"));
    tone(&a, 440, 48_000, 1, 1.5, &["-c:a", "libopus"]);
    tone(&b, 880, 44_100, 2, 1.5, &["-c:a", "libopus"]);
    let (ra, rb) = (ffmpeg_decoded_frames(&a, 1), ffmpeg_decoded_frames(&b, 2));
    let mut data = std::fs::read(&a).expect("read a");
    let one = data.clone();
    data.extend(std::fs::read(&b).expect("read b"));
    // A single link first, trickled.
    for hint in ["opus", "audio/opus", "audio/ogg", "ogg"] {
        let mut d = Decoder::from_reader(
            Box::new(Trickle {
                data: one.clone(),
                pos: 0,
                n: 0,
            }),
            Some(hint),
        )
        .unwrap_or_else(|e| panic!("{hint}: {e}"));
        assert_eq!(d.info().codec, "opus");
        let (samples, rate, ch) = decode_all(&mut d);
        assert_eq!((rate, ch), (48_000, 1));
        let frames = samples.len() as u64;
        assert!(
            frames.abs_diff(ra) <= OPUS_SLACK,
            "{hint}: {frames} vs ffmpeg {ra}"
        );
    }
    let mut d = Decoder::from_reader(Box::new(Trickle { data, pos: 0, n: 0 }), Some("opus"))
        .expect("open chain");
    let mut blocks: Vec<Pcm> = Vec::new();
    while let Some(p) = d.next_block().expect("decode") {
        blocks.push(p);
    }
    let mono: Vec<f32> = blocks
        .iter()
        .filter(|p| p.channels == 1)
        .flat_map(|p| p.samples.clone())
        .collect();
    let stereo: Vec<f32> = blocks
        .iter()
        .filter(|p| p.channels == 2)
        .flat_map(|p| p.samples.clone())
        .collect();
    assert_eq!(blocks[0].channels, 1);
    assert_eq!(blocks.last().expect("blocks").channels, 2);
    assert!(blocks.iter().all(|p| p.rate == 48_000));
    assert_eq!((d.info().rate, d.info().channels), (48_000, 2));
    // Each link is trimmed by its own pre-skip and end granule.
    let (fa, fb) = (mono.len() as u64, stereo.len() as u64 / 2);
    assert!(fa.abs_diff(ra) <= OPUS_SLACK, "link 1: {fa} vs ffmpeg {ra}");
    assert!(fb.abs_diff(rb) <= OPUS_SLACK, "link 2: {fb} vs ffmpeg {rb}");
    let f = dominant(&mono[9600..57_600], 48_000, 100.0, 4000.0);
    assert!((f - 440.0).abs() <= 5.0, "first link tone {f}");
    let f = dominant(&channel(&stereo, 2, 1)[9600..57_600], 48_000, 100.0, 4000.0);
    assert!((f - 880.0).abs() <= 5.0, "second link tone {f}");
    assert_eq!(d.corrupt_packets(), 0);
}

/// Hands out its bytes in small irregular chunks, like a socket.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    n: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.n += 1;
        let want = [417, 1, 1500, 63, 4096][self.n % 5];
        let k = want.min(buf.len()).min(self.data.len() - self.pos);
        buf[..k].copy_from_slice(&self.data[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

#[test]
fn from_reader_decodes_live_streams_in_chunks() {
    let dir = TempDir::new("reader");
    for (file, hint, opts, codec) in [
        (
            "s.mp3",
            "audio/mpeg",
            &[
                "-c:a",
                "libmp3lame",
                "-b:a",
                "128k",
                "-write_xing",
                "0",
                "-id3v2_version",
                "0",
            ][..],
            "mp3",
        ),
        ("s.aac", "aac", &["-c:a", "aac", "-f", "adts"], "aac"),
        ("s.ogg", "application/ogg", &["-c:a", "libvorbis"], "vorbis"),
    ] {
        let path = dir.path(file);
        tone(&path, 660, 44_100, 2, 3.0, opts);
        let data = std::fs::read(&path).expect("read");
        let mut d = Decoder::from_reader(Box::new(Trickle { data, pos: 0, n: 0 }), Some(hint))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(d.info().codec, codec);
        let (samples, rate, channels) = decode_all(&mut d);
        assert_eq!((rate, channels), (44_100, 2), "{file}");
        let secs = samples.len() as f64 / 2.0 / 44_100.0;
        assert!((secs - 3.0).abs() < 0.1, "{file}: {secs} s");
        check_tone(&samples, rate, channels, 660, file);
    }
}

#[test]
fn from_reader_joins_a_stream_mid_frame() {
    // A relay or late joiner of a non-aligned server starts at an arbitrary byte.
    let dir = TempDir::new("midjoin");
    for (file, hint, opts) in [
        (
            "m.mp3",
            "audio/mpeg",
            &[
                "-c:a",
                "libmp3lame",
                "-b:a",
                "128k",
                "-write_xing",
                "0",
                "-id3v2_version",
                "0",
            ][..],
        ),
        ("m.aac", "audio/aacp", &["-c:a", "aac", "-f", "adts"]),
    ] {
        let path = dir.path(file);
        tone(&path, 440, 44_100, 2, 3.0, opts);
        let data = std::fs::read(&path).expect("read");
        let joined = data[1001..].to_vec();
        let mut d = Decoder::from_reader(Box::new(std::io::Cursor::new(joined)), Some(hint))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let (samples, rate, channels) = decode_all(&mut d);
        assert_eq!((rate, channels), (44_100, 2), "{file}");
        let secs = samples.len() as f64 / 2.0 / 44_100.0;
        assert!(secs > 2.5, "{file}: {secs} s");
        check_tone(&samples, rate, channels, 440, file);
    }
}

#[test]
fn chained_ogg_reports_the_new_format_in_its_blocks() {
    // Two Ogg Vorbis links with different rates and layouts, concatenated as a live mount
    // does at a track change.
    let dir = TempDir::new("chained");
    let (a, b) = (dir.path("a.ogg"), dir.path("b.ogg"));
    tone(&a, 440, 44_100, 2, 1.5, &["-c:a", "libvorbis"]);
    tone(&b, 880, 22_050, 1, 1.5, &["-c:a", "libvorbis"]);
    let mut data = std::fs::read(&a).expect("read a");
    data.extend(std::fs::read(&b).expect("read b"));
    let mut d =
        Decoder::from_reader(Box::new(std::io::Cursor::new(data)), Some("ogg")).expect("open");
    let mut blocks: Vec<Pcm> = Vec::new();
    while let Some(p) = d.next_block().expect("decode") {
        blocks.push(p);
    }
    let first = &blocks[0];
    let last = blocks.last().expect("blocks");
    assert_eq!((first.rate, first.channels), (44_100, 2));
    assert_eq!((last.rate, last.channels), (22_050, 1));
    assert_eq!((d.info().rate, d.info().channels), (22_050, 1));
    let secs: f64 = blocks.iter().map(|p| p.duration().as_secs_f64()).sum();
    assert!((secs - 3.0).abs() < 0.15, "{secs} s");
    let tail: Vec<f32> = blocks
        .iter()
        .filter(|p| p.rate == 22_050)
        .flat_map(|p| p.samples.clone())
        .collect();
    let f = dominant(&tail[2205..13_230], 22_050, 100.0, 4000.0);
    assert!((f - 880.0).abs() <= 5.0, "second link tone {f}");
}

#[test]
fn mp3_stream_changing_rate_and_layout_reports_it() {
    // A live MP3 mount whose source reconnects with other settings: frames simply change.
    let dir = TempDir::new("mp3-switch");
    let (a, b) = (dir.path("a.mp3"), dir.path("b.mp3"));
    let bare = [
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        "-write_xing",
        "0",
        "-id3v2_version",
        "0",
    ];
    tone(&a, 440, 44_100, 2, 1.0, &bare);
    tone(&b, 880, 48_000, 1, 1.0, &bare);
    let mut data = std::fs::read(&a).expect("read a");
    data.extend(std::fs::read(&b).expect("read b"));
    let mut d =
        Decoder::from_reader(Box::new(std::io::Cursor::new(data)), Some("mp3")).expect("open");
    let mut formats = Vec::new();
    let mut tail = Vec::new();
    let mut secs = 0.0;
    while let Some(p) = d.next_block().expect("decode") {
        secs += p.duration().as_secs_f64();
        if formats.last() != Some(&(p.rate, p.channels)) {
            formats.push((p.rate, p.channels));
        }
        if p.rate == 48_000 {
            tail.extend_from_slice(&p.samples);
        }
    }
    assert_eq!(formats.first(), Some(&(44_100, 2)), "{formats:?}");
    assert_eq!(formats.last(), Some(&(48_000, 1)), "{formats:?}");
    assert_eq!((d.info().rate, d.info().channels), (48_000, 1));
    // Both halves are there: at most a couple of frames are lost at the switch.
    assert!((secs - 2.0).abs() < 0.1, "{secs} s of 2 s");
    assert!(d.corrupt_packets() <= 3, "{} corrupt", d.corrupt_packets());
    let f = dominant(&tail[4800..], 48_000, 100.0, 4000.0);
    assert!((f - 880.0).abs() <= 5.0, "after the switch: {f} Hz");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One small real file per format to mutate.
    fn seeds() -> &'static Vec<(Vec<u8>, &'static str)> {
        static SEEDS: OnceLock<Vec<(Vec<u8>, &'static str)>> = OnceLock::new();
        SEEDS.get_or_init(|| {
            let dir = TempDir::new("fuzz-seeds");
            let mut v = Vec::new();
            for (file, hint, opts) in [
                ("f.mp3", "mp3", &["-c:a", "libmp3lame", "-b:a", "64k"][..]),
                ("f.aac", "aac", &["-c:a", "aac", "-f", "adts"]),
                ("f.m4a", "m4a", &["-c:a", "aac"]),
                ("f.ogg", "ogg", &["-c:a", "libvorbis"]),
                ("f.flac", "flac", &["-c:a", "flac"]),
                ("f.wav", "wav", &["-c:a", "pcm_s16le"]),
                ("f.aiff", "aiff", &["-c:a", "pcm_s16be"]),
            ] {
                let path = dir.path(file);
                tone(&path, 440, 22_050, 1, 0.4, opts);
                v.push((std::fs::read(&path).expect("read"), hint));
            }
            v
        })
    }

    fn drain(mut d: Decoder) {
        // Bounded: a decoder must reach the end or an error on finite input.
        for _ in 0..100_000 {
            match d.next_block() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
        panic!("decoder did not finish a small input");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), hint in 0usize..8) {
            let hint = ["mp3", "aac", "m4a", "ogg", "flac", "wav", "aiff", "audio/mpeg"][hint];
            if let Ok(d) = Decoder::from_bytes(bytes.clone(), Some(hint)) { drain(d) }
            if let Ok(d) = Decoder::from_reader(Box::new(std::io::Cursor::new(bytes)), None) { drain(d) }
        }

        #[test]
        fn mutated_and_truncated_files(
            which in 0usize..7,
            cut in 0.0f64..1.0,
            flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..24),
        ) {
            let (orig, hint) = &seeds()[which];
            let mut bytes = orig[..(orig.len() as f64 * cut) as usize].to_vec();
            let len = bytes.len();
            for (at, v) in flips {
                if len > 0 {
                    bytes[((len - 1) as f64 * at) as usize] = v;
                }
            }
            if let Ok(d) = Decoder::from_bytes(bytes.clone(), Some(hint)) { drain(d) }
            if let Ok(d) = Decoder::from_reader(Box::new(std::io::Cursor::new(bytes)), Some(hint)) { drain(d) }
        }
    }
}
