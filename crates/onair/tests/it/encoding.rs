//! Live encoding: the encoder input, raw PCM sources, transcoded mounts and the demo
//! station, checked by decoding what listeners get with ffmpeg (a required peer: a missing
//! ffmpeg fails the tests).

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use onair::input::encoder::{self, EncoderOptions, Message};
use onair_media::{
    encode::{Codec, EncoderSettings},
    pcm::Pcm,
};
use onair_proto::{
    frame::{Format, Framer, UnitKind},
    icy::StreamMeta,
};
use tokio::{io::AsyncReadExt, time::timeout};

use crate::support::*;

pub fn require_ffmpeg() {
    let found = Command::new("sh")
        .args(["-c", "command -v ffmpeg"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "test peer `ffmpeg` is not installed: run `bash .ci/run`, which installs it"
    );
}

/// Decodes a complete MP3/Ogg byte stream with ffmpeg to mono f32 at `rate`.
pub fn ffmpeg_pcm(data: &[u8], rate: u32) -> Vec<f32> {
    require_ffmpeg();
    let mut child = Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1",
        ])
        .args(["-ar", &rate.to_string(), "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg could not decode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Power of `freq` in `samples` (Goertzel), normalised by length.
pub fn power(samples: &[f32], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (samples.len().max(1) as f64).powi(2)
}

/// The strongest frequency of `samples` between `lo` and `hi` Hz, in `step` Hz steps.
pub fn peak_frequency(samples: &[f32], rate: u32, lo: u32, hi: u32, step: u32) -> f64 {
    (lo..=hi)
        .step_by(step as usize)
        .map(f64::from)
        .max_by(|a, b| power(samples, rate, *a).total_cmp(&power(samples, rate, *b)))
        .unwrap_or(0.0)
}

pub fn rms(samples: &[f32]) -> f64 {
    (samples.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / samples.len().max(1) as f64)
        .sqrt()
}

/// A sine block: `frames` at `rate`, `channels` copies, starting at sample `start`.
pub fn sine(freq: f64, rate: u32, channels: u16, start: u64, frames: usize) -> Pcm {
    let mut samples = Vec::with_capacity(frames * usize::from(channels));
    for i in 0..frames as u64 {
        let t = (start + i) as f64 / f64::from(rate);
        let v = (0.4 * (2.0 * std::f64::consts::PI * freq * t).sin()) as f32;
        samples.extend(std::iter::repeat_n(v, usize::from(channels)));
    }
    Pcm::new(rate, channels, samples)
}

/// Reads a listener to the end of the stream (bounded).
pub async fn read_to_end(l: &mut Listener, limit: Duration) {
    let mut buf = vec![0u8; 16384];
    loop {
        match timeout(limit, l.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => l.body.extend_from_slice(&buf[..n]),
            Err(_) => panic!("stream did not end within {limit:?}"),
        }
    }
}

/// Sample frames in the MPEG frames of `mp3` before byte `offset`.
pub fn samples_before(mp3: &[u8], offset: usize) -> u64 {
    let mut framer = Framer::new(Format::Mpeg);
    let (mut pos, mut samples) = (0usize, 0u64);
    while let Some(u) = framer.next_unit(&mp3[pos..offset.min(mp3.len())]) {
        if u.kind == UnitKind::Audio {
            samples += u64::from(u.samples);
        }
        pos += u.len;
    }
    samples
}

/// First window (of `win` samples) from which `to` dominates `from`.
fn change_point(samples: &[f32], rate: u32, from: f64, to: f64, win: usize) -> usize {
    samples
        .chunks(win)
        .position(|w| rms(w) > 0.1 && power(w, rate, to) > power(w, rate, from))
        .map(|i| i * win)
        .expect("the second tone never appears")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoder_input_resamples_and_sets_titles_at_their_sample() {
    require_ffmpeg();
    // A small metaint: ICY can only announce a title at a metadata block.
    let srv = start("[defaults]\nmetaint = 512\n[[mount]]\nname = \"/enc\"\n").await;
    let addr = srv.local_addr();
    let mount = srv.station.mounts.get("/enc").unwrap();
    let settings = EncoderSettings {
        codec: Codec::Mp3,
        bitrate_kbps: 128,
        vbr: false,
        rate: 44_100,
        channels: 2,
    };
    let token = srv.station.supervisor.token().clone();
    let (tx, task) = encoder::start(mount, EncoderOptions::new(settings, "test"), token).unwrap();
    let mut listener = Listener::get(addr, "/enc", true).await;
    let metaint = listener.metaint().unwrap();
    // 24 kHz mono in, 100 ms blocks: 1.5 s of 440 Hz, then 1.5 s of 660 Hz under a new
    // title. The producer thread blocks on the bounded queue (faster than real time).
    let producer = std::thread::spawn(move || {
        let title = |t: &str| {
            Message::Title(StreamMeta {
                title: t.into(),
                url: None,
            })
        };
        tx.send(title("first tone")).unwrap();
        let mut at = 0u64;
        for block in 0..30 {
            if block == 15 {
                tx.send(title("second tone")).unwrap();
            }
            let f = if block < 15 { 440.0 } else { 660.0 };
            tx.send(Message::Pcm(sine(f, 24_000, 1, at, 2400))).unwrap();
            at += 2400;
        }
        tx.send(Message::End).unwrap();
    });
    let started = std::time::Instant::now();
    read_to_end(&mut listener, Duration::from_secs(15)).await;
    producer.join().unwrap();
    assert_eq!(task.finished().await.unwrap(), encoder::Stop::End);
    // Paced: 3 s of audio is not delivered in much less than 3 s - lead.
    assert!(
        started.elapsed() >= Duration::from_millis(1800),
        "not paced: {:?}",
        started.elapsed()
    );
    let (audio, titles) = deinterleave(&listener.body, metaint);
    assert_eq!(titles.first().map(|t| t.1.as_str()), Some("first tone"));
    let second = titles
        .iter()
        .find(|t| t.1 == "second tone")
        .expect("second title announced")
        .0;
    let decoded = ffmpeg_pcm(&audio, 44_100);
    let secs = decoded.len() as f64 / 44_100.0;
    assert!((2.9..3.3).contains(&secs), "decoded {secs} s");
    let mid = &decoded[20_000..50_000];
    assert_eq!(peak_frequency(mid, 44_100, 200, 1000, 5), 440.0);
    let late = &decoded[decoded.len() - 40_000..decoded.len() - 10_000];
    assert_eq!(peak_frequency(late, 44_100, 200, 1000, 5), 660.0);
    // The title lands on the frame that holds the first 660 Hz sample as decoded (within
    // a frame, the 256-sample analysis window, and the next 512-byte ICY block).
    let change = change_point(&decoded, 44_100, 440.0, 660.0, 256) as i64;
    let title_at = samples_before(&audio, second) as i64;
    assert!(
        (-(1152 + 1414 + 300)..1152 + 300).contains(&(change - title_at)),
        "tone changes at sample {change}, title at {title_at}"
    );
    srv.shutdown(Duration::from_secs(2)).await;
}

/// Sends `pcm` as a raw PCM source with `content_type`, listens, and returns (listener
/// head, the stream's audio bytes without ICY blocks).
async fn pcm_source_round_trip(toml: &str, content_type: &str, body: Vec<u8>) -> (String, Vec<u8>) {
    let srv = start(toml).await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/voice", content_type).await;
    // The first 100 ms make the mount live; the listener then gets everything (burst).
    let first = body.len() / 30;
    src.send(&body[..first]).await;
    let mut listener = loop {
        let l = Listener::get(addr, "/voice", false).await;
        if l.head.starts_with("HTTP/1.0 200") || l.head.starts_with("HTTP/1.1 200") {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The rest at once: the server reads it no faster than real time.
    let rest = body[first..].to_vec();
    let sender = tokio::spawn(async move {
        src.send(&rest).await;
        src
    });
    let src = timeout(Duration::from_secs(15), sender)
        .await
        .unwrap()
        .unwrap();
    drop(src);
    read_to_end(&mut listener, Duration::from_secs(15)).await;
    srv.shutdown(Duration::from_secs(2)).await;
    (listener.head, listener.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float32_pcm_source_is_encoded_to_mp3() {
    require_ffmpeg();
    // 3 s of 1 kHz at 24 kHz mono, float32 little-endian, as numpy's tobytes() makes it.
    let pcm = sine(1000.0, 24_000, 1, 0, 72_000);
    let body: Vec<u8> = pcm.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let (head, audio) =
        pcm_source_round_trip("", "audio/x-raw;format=F32LE;rate=24000;channels=1", body).await;
    assert_eq!(header(&head, "content-type"), Some("audio/mpeg"), "{head}");
    let mut framer = Framer::new(Format::Mpeg);
    let first = framer.next_unit(&audio).unwrap();
    assert_eq!(
        first.kind,
        UnitKind::Audio,
        "the stream starts on an MP3 frame"
    );
    assert_eq!(framer.stream_info().sample_rate, 24_000);
    assert_eq!(framer.stream_info().bitrate, 128_000);
    let decoded = ffmpeg_pcm(&audio, 24_000);
    let secs = decoded.len() as f64 / 24_000.0;
    assert!((2.9..3.3).contains(&secs), "decoded {secs} s");
    let mid = &decoded[12_000..60_000];
    assert_eq!(peak_frequency(mid, 24_000, 100, 5000, 10), 1000.0);
    assert!(rms(mid) > 0.2, "level kept: rms {}", rms(mid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l16_pcm_source_is_encoded_to_the_mounts_codec() {
    require_ffmpeg();
    // Big-endian s16 stereo at 16 kHz into a mount configured for Opus at 48 kHz.
    let pcm = sine(700.0, 16_000, 2, 0, 48_000);
    let body: Vec<u8> = pcm
        .samples
        .iter()
        .flat_map(|&s| onair_media::pcm::to_s16(s).to_be_bytes())
        .collect();
    let (head, audio) = pcm_source_round_trip(
        "[[mount]]\nname = \"/voice\"\ncodec = \"opus\"\nbitrate = 64\nsample_rate = 48000\n",
        "audio/L16;rate=16000;channels=2",
        body,
    )
    .await;
    assert_eq!(header(&head, "content-type"), Some("audio/ogg"), "{head}");
    assert!(
        audio.starts_with(b"OggS"),
        "the stream starts on an Ogg page"
    );
    let decoded = ffmpeg_pcm(&audio, 48_000);
    let secs = decoded.len() as f64 / 48_000.0;
    assert!((2.9..3.3).contains(&secs), "decoded {secs} s");
    let mid = &decoded[24_000..120_000];
    assert_eq!(peak_frequency(mid, 48_000, 100, 5000, 10), 700.0);
}
