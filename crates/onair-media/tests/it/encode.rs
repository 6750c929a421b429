//! Encoders against a real decoder: what onair encodes, ffmpeg must decode without
//! complaint, at the right length and pitch; the bitstream structure (whole frames / whole
//! pages per append, granules, chain links, tags) is checked with onair-proto's parsers.

use std::path::PathBuf;
use std::process::Command;

use onair_media::encode::{new_encoder, Codec, Encoder, EncoderSettings};
use onair_proto::frame::{mpeg, ogg, Format, Framer, Unit, UnitKind};

const FFMPEG: &str = "/usr/bin/ffmpeg";
const FFPROBE: &str = "/usr/bin/ffprobe";

/// `secs` of a sine per channel (channel 0 at `freqs[0]`, channel 1 at `freqs[1]`), 0.5 peak.
fn tone(rate: u32, channels: u16, secs: f64, freqs: [f64; 2]) -> Vec<f32> {
    let n = (f64::from(rate) * secs).round() as usize;
    let mut v = Vec::with_capacity(n * usize::from(channels));
    for i in 0..n {
        let t = i as f64 / f64::from(rate);
        for f in &freqs[..usize::from(channels)] {
            v.push((0.5 * (2.0 * std::f64::consts::PI * f * t).sin()) as f32);
        }
    }
    v
}

/// Feeds `samples` in uneven chunks (none a multiple of a codec frame), then finishes;
/// returns what each call appended, in order.
fn run(enc: &mut dyn Encoder, samples: &[f32]) -> Vec<Vec<u8>> {
    let ch = usize::from(enc.channels());
    let sizes = [1000, 37, 4410, 2885, 1];
    let mut appends = Vec::new();
    let mut rest = samples;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (sizes[i % sizes.len()] * ch).min(rest.len());
        let mut out = Vec::new();
        enc.encode(&rest[..n], &mut out).unwrap();
        appends.push(out);
        rest = &rest[n..];
        i += 1;
    }
    let mut out = Vec::new();
    enc.finish(&mut out).unwrap();
    appends.push(out);
    appends
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(ext: &str, bytes: &[u8]) -> TempFile {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "onair-media-it-{}-{}.{ext}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Decodes with ffmpeg to interleaved f32 at the stream's own rate and channel count;
/// fails on any message ffmpeg prints at level "error".
fn ffmpeg_decode(bytes: &[u8], ext: &str) -> Vec<f32> {
    let f = TempFile::new(ext, bytes);
    let out = Command::new(FFMPEG)
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&f.0)
        .args(["-f", "f32le", "-"])
        .output()
        .unwrap_or_else(|e| panic!("{FFMPEG} is needed for this test: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg reported: {stderr}");
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn channel(x: &[f32], channels: usize, c: usize) -> Vec<f32> {
    x.iter().skip(c).step_by(channels).copied().collect()
}

/// Power of `freq` in `x` (Goertzel).
fn power(x: &[f32], rate: f64, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let k = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - k * s1 * s2
}

/// The frequency with the most power, searched coarsely then refined to 1 Hz.
fn dominant(x: &[f32], rate: f64) -> f64 {
    let best = |freqs: &mut dyn Iterator<Item = f64>| {
        freqs
            .map(|f| (f, power(x, rate, f)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0
    };
    let top = (rate / 2.0 - 100.0).min(16_000.0);
    let coarse = best(&mut (1..).map(|i| f64::from(i) * 20.0).take_while(|&f| f < top));
    best(&mut (-20..=20).map(|d| coarse + f64::from(d)))
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Checks pitch and level of each decoded channel over 2 s in the middle.
fn assert_tones(decoded: &[f32], rate: u32, channels: u16, freqs: [f64; 2], what: &str) {
    let ch = usize::from(channels);
    let from = rate as usize;
    let to = 3 * rate as usize;
    for (c, &want) in freqs.iter().enumerate().take(ch) {
        let x = channel(decoded, ch, c);
        let w = &x[from..to];
        let got = dominant(w, f64::from(rate));
        assert!(
            (got - want).abs() <= 3.0,
            "{what}: channel {c} peaks at {got} Hz, want {want}"
        );
        let level = rms(w);
        assert!(
            (0.25..0.45).contains(&level),
            "{what}: channel {c} RMS {level}, want about 0.354"
        );
    }
}

fn settings(codec: Codec, rate: u32, channels: u16, kbps: u32, vbr: bool) -> EncoderSettings {
    EncoderSettings {
        codec,
        bitrate_kbps: kbps,
        vbr,
        rate,
        channels,
    }
}

/// Splits an append into MPEG frames; panics unless it is whole frames exactly.
fn mp3_frames(bytes: &[u8]) -> Vec<mpeg::Header> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = bytes
            .get(at..at + 4)
            .and_then(|b| mpeg::parse_header([b[0], b[1], b[2], b[3]]))
            .unwrap_or_else(|| panic!("no frame header at byte {at}"));
        assert!(at + h.frame_len <= bytes.len(), "frame cut at byte {at}");
        frames.push(h);
        at += h.frame_len;
    }
    frames
}

#[test]
fn mp3_decodes_with_ffmpeg_in_every_mode() {
    // (rate, channels, kbps, vbr)
    let cases = [
        (44_100, 2, 128, false),
        (48_000, 2, 320, false),
        (32_000, 1, 56, false),
        (24_000, 2, 144, false),
        (22_050, 1, 32, false),
        (44_100, 2, 190, true),
        (22_050, 2, 64, true),
    ];
    let freqs = [440.0, 1000.0];
    for (rate, channels, kbps, vbr) in cases {
        let what = format!("MP3 {rate} Hz {channels} ch {kbps} kbit/s vbr={vbr}");
        let mut enc = new_encoder(&settings(Codec::Mp3, rate, channels, kbps, vbr)).unwrap();
        assert_eq!(enc.content_type(), "audio/mpeg");
        let input = tone(rate, channels, 5.0, freqs);
        let appends = run(enc.as_mut(), &input);
        let mut frames = Vec::new();
        for a in &appends {
            frames.extend(mp3_frames(a));
        }
        let stream = appends.concat();
        assert!(!frames.is_empty(), "{what}: no frames");
        let spf = frames[0].samples as usize;
        for f in &frames {
            assert_eq!(f.layer, 3, "{what}");
            assert_eq!(f.sample_rate, rate, "{what}");
            assert_eq!(u16::from(f.channels), channels, "{what}");
            if !vbr {
                assert_eq!(f.bitrate, kbps * 1000, "{what}: CBR frame bitrate");
            }
        }
        if vbr {
            let distinct: std::collections::BTreeSet<u32> =
                frames.iter().map(|f| f.bitrate).collect();
            assert!(distinct.len() > 1, "{what}: VBR frames all at one bitrate");
        }
        // No Xing/Info tag frame at the start of a live stream: LAME's placeholder for one
        // is a header followed by zeros (filled in only when a file is rewritten).
        let first = &stream[..frames[0].frame_len];
        assert!(
            first[4..].iter().any(|&b| b != 0)
                && !first.windows(4).any(|w| w == b"Xing" || w == b"Info"),
            "{what}: the first frame is a tag frame"
        );

        // A mount cuts the same frames, with no junk, timed by their sample counts.
        let units = mount_units(Format::Mpeg, &stream);
        assert_eq!(units.len(), frames.len(), "{what}");
        assert!(units.iter().all(|u| u.kind == UnitKind::Audio
            && u.samples as usize == spf
            && u.sample_rate == rate));

        let decoded = ffmpeg_decode(&stream, "mp3");
        let got = decoded.len() / usize::from(channels);
        let want = input.len() / usize::from(channels);
        assert_eq!(
            got,
            frames.len() * spf,
            "{what}: ffmpeg decoded every frame"
        );
        // A tagless stream cannot signal LAME's delay (576 + 529 decoder samples), so the
        // decoded length is the input plus that delay, padded to whole frames.
        let delay = 576 + 529;
        assert!(
            got >= want + delay && got - (want + delay) <= spf,
            "{what}: decoded {got} samples for {want} input (+{delay} delay)"
        );
        assert_tones(&decoded, rate, channels, freqs, &what);
    }
}

/// One Ogg page as parsed back, with its packets completed on it.
struct Page {
    header: ogg::PageHeader,
    packets: Vec<Vec<u8>>,
}

/// Splits an append into pages, checking each CRC; panics unless it is whole pages.
fn ogg_pages(bytes: &[u8]) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let header = ogg::parse_page_header(rest)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no whole page header"));
        let page = rest
            .get(..header.len)
            .unwrap_or_else(|| panic!("page cut short"));
        assert!(ogg::page_crc_ok(page), "page CRC");
        let segs = usize::from(header.segments);
        let lacing = &page[27..27 + segs];
        let mut body = &page[27 + segs..];
        let mut packets = Vec::new();
        let mut cur = Vec::new();
        for &l in lacing {
            cur.extend_from_slice(&body[..usize::from(l)]);
            body = &body[usize::from(l)..];
            if l < 255 {
                packets.push(std::mem::take(&mut cur));
            }
        }
        assert!(cur.is_empty(), "test streams keep packets within a page");
        pages.push(Page { header, packets });
        rest = &rest[header.len..];
    }
    pages
}

/// One chain link as seen in the pages.
#[derive(Debug)]
struct Link {
    serial: u32,
    pre_skip: i64,
    comments: Vec<String>,
    /// Granules of the audio pages, in order.
    granules: Vec<i64>,
    audio_packets: usize,
}

/// Checks RFC 7845 structure of a whole stream and returns its links.
fn ogg_links(pages: &[Page]) -> Vec<Link> {
    let mut links: Vec<Link> = Vec::new();
    let mut i = 0;
    while i < pages.len() {
        let head = &pages[i];
        assert!(head.header.is_bos(), "link starts with BOS at page {i}");
        assert_eq!(head.header.granule, 0);
        assert_eq!(head.packets.len(), 1, "OpusHead alone on its page");
        let h = &head.packets[0];
        assert!(h.starts_with(b"OpusHead") && h.len() == 19);
        let pre_skip = i64::from(u16::from_le_bytes([h[10], h[11]]));
        let tags = &pages[i + 1];
        assert_eq!(tags.header.serial, head.header.serial);
        assert_eq!(tags.packets.len(), 1, "OpusTags ends its page");
        let comments = parse_tags(&tags.packets[0]);
        let mut link = Link {
            serial: head.header.serial,
            pre_skip,
            comments,
            granules: Vec::new(),
            audio_packets: 0,
        };
        if let Some(prev) = links.last() {
            assert_ne!(prev.serial, link.serial, "each link has a new serial");
        }
        i += 2;
        let mut seq = 2;
        loop {
            let p = &pages[i];
            assert_eq!(p.header.serial, link.serial, "no interleaving");
            assert_eq!(p.header.sequence, seq);
            assert!(!p.header.is_bos());
            if let Some(&last) = link.granules.last() {
                assert!(p.header.granule > last, "granules increase within a link");
            }
            link.granules.push(p.header.granule);
            link.audio_packets += p.packets.len();
            seq += 1;
            i += 1;
            if p.header.is_eos() {
                break;
            }
            // Intermediate pages hold whole 20 ms packets: granule = 960 x packets so far.
            assert_eq!(p.header.granule, 960 * link.audio_packets as i64);
            assert!(p.packets.len() <= 10, "a page at least every 200 ms");
        }
        links.push(link);
    }
    links
}

fn parse_tags(p: &[u8]) -> Vec<String> {
    assert!(p.starts_with(b"OpusTags"));
    let u32_at = |at: usize| u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]) as usize;
    let vendor_len = u32_at(8);
    assert_eq!(&p[12..12 + vendor_len], b"onair");
    let mut at = 12 + vendor_len;
    let n = u32_at(at);
    at += 4;
    (0..n)
        .map(|_| {
            let len = u32_at(at);
            let s = String::from_utf8(p[at + 4..at + 4 + len].to_vec()).unwrap();
            at += 4 + len;
            s
        })
        .collect()
}

#[test]
fn opus_decodes_with_ffmpeg_in_every_mode() {
    // (rate, channels, kbps, vbr)
    let cases = [
        (48_000, 2, 128, true),
        (48_000, 1, 64, false),
        (24_000, 2, 48, true),
        (16_000, 1, 24, true),
        (8_000, 1, 12, false),
    ];
    let freqs = [440.0, 1000.0];
    for (rate, channels, kbps, vbr) in cases {
        let what = format!("Opus {rate} Hz {channels} ch {kbps} kbit/s vbr={vbr}");
        let mut enc = new_encoder(&settings(Codec::Opus, rate, channels, kbps, vbr)).unwrap();
        assert_eq!(enc.content_type(), "audio/ogg");
        let input = tone(rate, channels, 5.0, freqs);
        let appends = run(enc.as_mut(), &input);
        let mut pages = Vec::new();
        for a in &appends {
            pages.extend(ogg_pages(a));
        }
        let links = ogg_links(&pages);
        assert_eq!(links.len(), 1, "{what}");
        let link = &links[0];
        let want_48k = (input.len() / usize::from(channels)) as i64 * i64::from(48_000 / rate);
        assert_eq!(
            *link.granules.last().unwrap() - link.pre_skip,
            want_48k,
            "{what}: final granule trims to the input length"
        );
        assert_eq!(link.pre_skip, 312, "{what}: libopus lookahead at 48 kHz");
        assert_eq!(link.comments, Vec::<String>::new());

        let decoded = ffmpeg_decode(&appends.concat(), "opus");
        let got = (decoded.len() / usize::from(channels)) as i64;
        assert!(
            (got - want_48k).abs() <= 960,
            "{what}: decoded {got} samples at 48 kHz, input {want_48k}"
        );
        assert_tones(&decoded, 48_000, channels, freqs, &what);
    }
}

#[test]
fn opus_chain_links_carry_titles_for_ffmpeg() {
    let rate = 48_000;
    let mut enc = new_encoder(&settings(Codec::Opus, rate, 2, 96, true)).unwrap();
    let mut appends = Vec::new();
    let mut out = Vec::new();
    enc.set_title("Band One - First Song", &mut out).unwrap();
    appends.push(out);
    appends.extend(run_without_finish(
        enc.as_mut(),
        &tone(rate, 2, 2.0, [440.0, 440.0]),
    ));
    let mut out = Vec::new();
    enc.set_title("Band Two - Second Song", &mut out).unwrap();
    appends.push(out);
    appends.extend(run_without_finish(
        enc.as_mut(),
        &tone(rate, 2, 2.5, [1000.0, 1000.0]),
    ));
    let mut out = Vec::new();
    enc.finish(&mut out).unwrap();
    appends.push(out);

    let mut pages = Vec::new();
    for a in &appends {
        pages.extend(ogg_pages(a));
    }
    let links = ogg_links(&pages);
    assert_eq!(links.len(), 2);
    assert_eq!(links[0].comments, ["TITLE=First Song", "ARTIST=Band One"]);
    assert_eq!(links[1].comments, ["TITLE=Second Song", "ARTIST=Band Two"]);
    assert_eq!(
        *links[0].granules.last().unwrap() - links[0].pre_skip,
        96_000
    );
    assert_eq!(
        *links[1].granules.last().unwrap() - links[1].pre_skip,
        120_000
    );

    let stream = appends.concat();
    // A mount sees two header pages per link, the BOS one marked as a new link, and times
    // the audio pages from their granules: the whole of each link including pre-skip.
    let units = mount_units(Format::Ogg, &stream);
    let headers: Vec<bool> = units
        .iter()
        .filter(|u| u.kind == UnitKind::CodecHeader)
        .map(|u| u.begins_stream)
        .collect();
    assert_eq!(headers, [true, false, true, false]);
    assert!(units.iter().all(|u| u.kind != UnitKind::Junk));
    let timed: u64 = units.iter().map(|u| u64::from(u.samples)).sum();
    assert_eq!(timed, 96_000 + 312 + 120_000 + 312);

    let decoded = ffmpeg_decode(&stream, "opus");
    let got = (decoded.len() / 2) as i64;
    assert!(
        (got - 216_000).abs() <= 2 * 960,
        "decoded {got} samples for two links of 96000 + 120000"
    );
    let left = channel(&decoded, 2, 0);
    assert!((dominant(&left[24_000..72_000], 48_000.0) - 440.0).abs() <= 3.0);
    assert!((dominant(&left[120_000..192_000], 48_000.0) - 1000.0).abs() <= 3.0);

    // ffprobe, reading every packet, merges the tags of each link it meets, in order.
    let f = TempFile::new("opus", &stream);
    let probe = Command::new(FFPROBE)
        .args(["-v", "error", "-count_packets", "-of", "default=nw=1"])
        .args(["-show_entries", "stream=nb_read_packets:stream_tags"])
        .arg(&f.0)
        .output()
        .unwrap_or_else(|e| panic!("{FFPROBE} is needed for this test: {e}"));
    let text = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let packets = links[0].audio_packets + links[1].audio_packets;
    assert_eq!(
        lines,
        [
            format!("nb_read_packets={packets}").as_str(),
            "TAG:TITLE=First Song;Second Song",
            "TAG:ARTIST=Band One;Band Two"
        ],
        "ffprobe output: {text}"
    );
}

/// Cuts a stream the way a mount does.
fn mount_units(format: Format, stream: &[u8]) -> Vec<Unit> {
    let mut f = Framer::new(format);
    let mut units = Vec::new();
    let mut at = 0;
    while let Some(u) = f.next_unit(&stream[at..]) {
        at += u.len;
        units.push(u);
    }
    assert_eq!(at, stream.len(), "the framer consumed the whole stream");
    units
}

fn run_without_finish(enc: &mut dyn Encoder, samples: &[f32]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    enc.encode(samples, &mut out).unwrap();
    vec![out]
}

/// Encodes `input` in pieces of `piece` sample frames; returns the stream.
fn encode_in_pieces(s: &EncoderSettings, input: &[f32], piece: usize) -> Vec<u8> {
    let mut enc = new_encoder(s).unwrap();
    let mut out = Vec::new();
    for p in input.chunks(piece * usize::from(s.channels)) {
        enc.encode(p, &mut out).unwrap();
    }
    enc.finish(&mut out).unwrap();
    out
}

#[test]
fn chunking_does_not_change_the_bitstream() {
    let input = tone(48_000, 2, 1.5, [440.0, 1000.0]);
    let mp3 = settings(Codec::Mp3, 48_000, 2, 128, false);
    let whole = encode_in_pieces(&mp3, &input, input.len());
    for piece in [1, 7, 1152, 5000] {
        assert!(
            encode_in_pieces(&mp3, &input, piece) == whole,
            "MP3 in pieces of {piece}"
        );
    }
    // Opus serials differ per encoder: compare everything else, page by page.
    let opus = settings(Codec::Opus, 48_000, 2, 96, true);
    let strip = |stream: &[u8]| -> Vec<(i64, u32, Vec<Vec<u8>>)> {
        ogg_pages(stream)
            .into_iter()
            .map(|p| (p.header.granule, p.header.sequence, p.packets))
            .collect()
    };
    let whole = strip(&encode_in_pieces(&opus, &input, input.len()));
    for piece in [1, 7, 960, 5000] {
        assert!(
            strip(&encode_in_pieces(&opus, &input, piece)) == whole,
            "Opus in pieces of {piece}"
        );
    }
}
