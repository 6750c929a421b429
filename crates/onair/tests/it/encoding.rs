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
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::timeout,
};

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

/// Frequencies (60..2000 Hz, 10 Hz grid, local maxima) with at least 5 % of the strongest
/// one's power, strongest first.
pub fn strong_frequencies(samples: &[f32], rate: u32) -> Vec<u64> {
    let grid: Vec<(u64, f64)> = (60..=2000)
        .step_by(10)
        .map(|f| (f as u64, power(samples, rate, f64::from(f))))
        .collect();
    let max = grid.iter().map(|g| g.1).fold(0.0, f64::max);
    let mut peaks: Vec<(u64, f64)> = grid
        .windows(3)
        .filter(|w| w[1].1 >= w[0].1 && w[1].1 >= w[2].1 && w[1].1 >= 0.05 * max)
        .map(|w| w[1])
        .collect();
    peaks.sort_by(|a, b| b.1.total_cmp(&a.1));
    peaks.into_iter().map(|p| p.0).collect()
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

/// Raw PCM source of a sine tone: 44.1 kHz stereo s16le.
pub fn s16_tone(freq: f64, seconds: f64) -> Vec<u8> {
    let frames = (44_100.0 * seconds) as usize;
    sine(freq, 44_100, 2, 0, frames)
        .samples
        .iter()
        .flat_map(|&s| onair_media::pcm::to_s16(s).to_le_bytes())
        .collect()
}

const S16_CT: &str = "audio/x-raw;format=S16LE;rate=44100;channels=2";

/// Connects a listener once the mount is live (bounded).
async fn listen_when_live(addr: std::net::SocketAddr, mount: &str, icy: bool) -> Listener {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let l = Listener::get(addr, mount, icy).await;
        if l.head.contains(" 200 ") {
            return l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{mount} never went live: {}",
            l.head
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until `n` body bytes are held or the stream ends.
async fn read_some(l: &mut Listener, n: usize) {
    let mut buf = vec![0u8; 16384];
    while l.body.len() < n {
        match timeout(STEP, l.stream.read(&mut buf))
            .await
            .expect("listener starved")
        {
            Ok(0) | Err(_) => return,
            Ok(k) => l.body.extend_from_slice(&buf[..k]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoded_mounts_follow_audio_titles_and_the_end_of_their_source() {
    require_ffmpeg();
    let srv = start(
        "[defaults]\nmetaint = 1024\nchunk_ms = 100\n\
         [[mount]]\nname = \"/live\"\n\
         [[mount]]\nname = \"/live-64.mp3\"\ntranscode_from = \"/live\"\ncodec = \"mp3\"\nbitrate = 64\n\
         [[mount]]\nname = \"/live.opus\"\ntranscode_from = \"/live\"\ncodec = \"opus\"\nbitrate = 48\n",
    )
    .await;
    let addr = srv.local_addr();
    let body = s16_tone(440.0, 7.0);
    let mut src = Source::put(addr, "/live", S16_CT).await;
    src.send(&body[..body.len() / 7]).await;
    let mut mp3 = listen_when_live(addr, "/live-64.mp3", true).await;
    let mut opus = listen_when_live(addr, "/live.opus", false).await;
    assert_eq!(header(&mp3.head, "content-type"), Some("audio/mpeg"));
    assert_eq!(header(&opus.head, "content-type"), Some("audio/ogg"));
    assert_eq!(
        set_title(addr, "/live", "song=Transcoded%20Title", ADMIN).await,
        200
    );
    let rest = body[body.len() / 7..].to_vec();
    let sender = tokio::spawn(async move {
        src.send(&rest).await;
        src
    });
    tokio::join!(
        read_to_end(&mut mp3, Duration::from_secs(20)),
        read_to_end(&mut opus, Duration::from_secs(20)),
        async {
            // The source leaves after sending: both transcoded streams must end.
            drop(sender.await.unwrap());
        }
    );
    let metaint = mp3.metaint().unwrap();
    let (audio, titles) = deinterleave(&mp3.body, metaint);
    assert!(
        titles.iter().any(|t| t.1 == "Transcoded Title"),
        "the source's title reaches the transcoded mount: {titles:?}"
    );
    let mut framer = Framer::new(Format::Mpeg);
    framer.next_unit(&audio).unwrap();
    assert_eq!(framer.stream_info().bitrate, 64_000, "re-encoded at 64k");
    let decoded = ffmpeg_pcm(&audio, 44_100);
    assert!(
        decoded.len() > 44_100 * 3,
        "decoded {} samples",
        decoded.len()
    );
    let mid = &decoded[44_100..decoded.len() - 44_100];
    assert_eq!(peak_frequency(mid, 44_100, 200, 2000, 5), 440.0);
    let decoded = ffmpeg_pcm(&opus.body, 48_000);
    assert!(
        decoded.len() > 48_000 * 3,
        "decoded {} samples",
        decoded.len()
    );
    let mid = &decoded[48_000..decoded.len() - 48_000];
    assert_eq!(peak_frequency(mid, 48_000, 200, 2000, 5), 440.0);
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ogg_opus_mount_is_transcoded_to_mp3() {
    // PCM source -> Opus mount (encoded here) -> MP3 mount transcoded from the Opus one.
    require_ffmpeg();
    let srv = start(
        "[defaults]\nchunk_ms = 100\n\
         [[mount]]\nname = \"/live\"\n\
         [[mount]]\nname = \"/live.opus\"\ntranscode_from = \"/live\"\ncodec = \"opus\"\nbitrate = 64\n\
         [[mount]]\nname = \"/back.mp3\"\ntranscode_from = \"/live.opus\"\ncodec = \"mp3\"\nbitrate = 96\n",
    )
    .await;
    let addr = srv.local_addr();
    let body = s16_tone(660.0, 7.0);
    let mut src = Source::put(addr, "/live", S16_CT).await;
    src.send(&body[..body.len() / 7]).await;
    let mut mp3 = listen_when_live(addr, "/back.mp3", false).await;
    assert_eq!(header(&mp3.head, "content-type"), Some("audio/mpeg"));
    let rest = body[body.len() / 7..].to_vec();
    let sender = tokio::spawn(async move {
        src.send(&rest).await;
        src
    });
    tokio::join!(read_to_end(&mut mp3, Duration::from_secs(20)), async {
        drop(sender.await.unwrap());
    });
    let decoded = ffmpeg_pcm(&mp3.body, 44_100);
    assert!(
        decoded.len() > 44_100 * 3,
        "decoded {} samples",
        decoded.len()
    );
    let mid = &decoded[44_100..decoded.len() - 44_100];
    assert_eq!(peak_frequency(mid, 44_100, 200, 2000, 5), 660.0);
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcoder_follows_its_source_to_the_fallback() {
    require_ffmpeg();
    let srv = start(
        "[defaults]\nchunk_ms = 100\n\
         [[mount]]\nname = \"/live\"\nfallback = \"/backup\"\n\
         [[mount]]\nname = \"/backup\"\n\
         [[mount]]\nname = \"/t\"\ntranscode_from = \"/live\"\nbitrate = 96\n",
    )
    .await;
    let addr = srv.local_addr();
    // The transcoder must start on /live (a transcoder that finds /live down would start
    // on its fallback and, like a listener, stay there): /backup connects afterwards.
    let live = s16_tone(440.0, 4.0);
    let mut src = Source::put(addr, "/live", S16_CT).await;
    src.send(&live[..live.len() / 4]).await;
    let mut listener = listen_when_live(addr, "/t", false).await;
    let backup = s16_tone(1000.0, 30.0);
    let mut bsrc = Source::put(addr, "/backup", S16_CT).await;
    bsrc.send(&backup[..backup.len() / 30]).await;
    let backup_rest = backup[backup.len() / 30..].to_vec();
    let _backup = tokio::spawn(async move {
        bsrc.send(&backup_rest).await;
        bsrc
    });
    src.send(&live[live.len() / 4..]).await;
    drop(src);
    // 96 kbit/s is 12 kB/s: read well past the live source's end (about 4 s).
    read_some(&mut listener, 12_000 * 10).await;
    assert!(
        listener.body.len() >= 12_000 * 10,
        "the transcoded stream ended with its source instead of following the fallback: {} bytes",
        listener.body.len()
    );
    let decoded = ffmpeg_pcm(&listener.body, 44_100);
    let head = &decoded[22_050..66_150];
    assert_eq!(peak_frequency(head, 44_100, 200, 2000, 5), 440.0);
    let tail = &decoded[decoded.len() - 66_150..decoded.len() - 22_050];
    assert_eq!(peak_frequency(tail, 44_100, 200, 2000, 5), 1000.0);
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_station_plays_the_demo_and_yields_to_a_source() {
    require_ffmpeg();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // Exactly what `onair serve` does with no config file (bind and secrets overridden).
    let ov = onair::config::Overrides {
        bind: Some("127.0.0.1:0".parse().unwrap()),
        source_password: Some(PASS.into()),
        admin_user: Some(ADMIN.0.into()),
        admin_password: Some(ADMIN.1.into()),
        ..Default::default()
    };
    let config = onair::config::Config::load(None, &ov).unwrap();
    assert!(config.demo.enabled, "the demo is on without a config");
    let srv = onair::station::start(config).await.unwrap();
    let addr = srv.local_addr();
    let mut listener = listen_when_live(addr, "/stream", true).await;
    assert_eq!(header(&listener.head, "content-type"), Some("audio/mpeg"));
    let metaint = listener.metaint().unwrap();
    // 6 s of 128 kbit/s.
    listener.fill_audio(metaint, 16_000 * 6).await;
    let (audio, titles) = deinterleave(&listener.body, metaint);
    let title = &titles.first().expect("the demo announces a title").1;
    assert!(title.starts_with("onair demo"), "title {title:?}");
    let decoded = ffmpeg_pcm(&audio, 22_050);
    assert!(
        decoded.len() >= 22_050 * 5,
        "decoded {} samples",
        decoded.len()
    );
    let music = &decoded[22_050..];
    assert!(
        rms(music) > 0.01,
        "the demo is not silent: rms {}",
        rms(music)
    );
    // Music, not a tone: each half second holds several strong partials (a chord, not a sine), and which are
    // strongest changes over time (a melody over changing chords).
    let windows: Vec<Vec<u64>> = music
        .chunks(11_025)
        .filter(|w| w.len() == 11_025 && rms(w) > 0.005)
        .map(|w| strong_frequencies(w, 22_050))
        .collect();
    assert!(
        windows.len() >= 6,
        "too few audible windows: {}",
        windows.len()
    );
    let rich = windows.iter().filter(|f| f.len() >= 3).count();
    assert!(rich * 2 > windows.len(), "mostly single tones: {windows:?}");
    let mut tops: Vec<&[u64]> = windows.iter().map(|f| &f[..f.len().min(3)]).collect();
    tops.sort_unstable();
    tops.dedup();
    assert!(tops.len() >= 3, "the same sound throughout: {windows:?}");

    // A real source on /stream takes over; the listener stays and hears it.
    // 12 s of tone, sent in the background (the server takes it at real-time speed).
    let tone = s16_tone(440.0, 12.0);
    let mut src = Source::put(addr, "/stream", S16_CT).await;
    let had = listener.body.len();
    let feed = tokio::spawn(async move {
        let _ = src.stream.write_all(&tone).await;
        src
    });
    // 5 s more: the rest of the demo's lead, then the tone.
    listener.fill(had + 16_000 * 5).await;
    let (audio, _) = deinterleave(&listener.body[had..], metaint);
    let decoded = ffmpeg_pcm(&audio, 22_050);
    let heard_tone = decoded
        .chunks(11_025)
        .filter(|w| w.len() == 11_025)
        .any(|w| peak_frequency(w, 22_050, 60, 2000, 10) == 440.0 && rms(w) > 0.1);
    assert!(heard_tone, "the listener hears the source that took over");
    feed.abort();
    // When it leaves, the demo comes back for new listeners.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = listen_when_live(addr, "/stream", false).await;
    assert!(back.head.contains(" 200 "));
    srv.shutdown(Duration::from_secs(2)).await;
}

/// Runs `onair encode` with `args`, piping `pcm` into its stdin; returns its exit status.
fn run_encode_cli(args: &[String], pcm: Vec<u8>) -> std::process::ExitStatus {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .arg("encode")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // Ignore EPIPE: the test checks the exit status and what the server got.
        let _ = stdin.write_all(&pcm);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("onair encode did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    writer.join().unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encode_command_streams_stdin_to_an_onair_server() {
    require_ffmpeg();
    let srv = start("[defaults]\nmetaint = 2048\n").await;
    let addr = srv.local_addr();
    let pcm: Vec<u8> = sine(523.0, 24_000, 1, 0, 96_000)
        .samples
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let args: Vec<String> = [
        "--rate",
        "24000",
        "--channels",
        "1",
        "--format",
        "f32le",
        "--bitrate",
        "64",
        "--title",
        "From the command line",
        "--name",
        "CLI test",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--to".to_string(),
        format!("http://source:{PASS}@{addr}/cli"),
    ])
    .collect();
    let cli = tokio::task::spawn_blocking(move || run_encode_cli(&args, pcm));
    let mut listener = listen_when_live(addr, "/cli", true).await;
    assert_eq!(
        header(&listener.head, "icy-name"),
        Some("CLI test"),
        "{}",
        listener.head
    );
    read_to_end(&mut listener, Duration::from_secs(20)).await;
    assert!(cli.await.unwrap().success(), "onair encode failed");
    let (audio, titles) = deinterleave(&listener.body, listener.metaint().unwrap());
    assert!(
        titles.iter().any(|t| t.1 == "From the command line"),
        "title sent: {titles:?}"
    );
    let decoded = ffmpeg_pcm(&audio, 24_000);
    let secs = decoded.len() as f64 / 24_000.0;
    assert!(
        secs > 2.5,
        "decoded {secs} s of 4 s (the listener joined late: burst covers the start)"
    );
    let mid = &decoded[12_000..decoded.len() - 12_000];
    assert_eq!(peak_frequency(mid, 24_000, 100, 3000, 1), 523.0);
    srv.shutdown(Duration::from_secs(2)).await;
}

/// A running icecast2 (a required peer) on a free loopback port, stopped on drop.
struct Icecast2 {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: std::path::PathBuf,
}

impl Drop for Icecast2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_icecast2() -> Icecast2 {
    let found = Command::new("sh")
        .args(["-c", "command -v icecast2"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "test peer `icecast2` is not installed: run `bash .ci/run`, which installs it"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("onair-it-icecast2-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("log")).unwrap();
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut changeowner = String::new();
    if root {
        // icecast2 refuses to run as root unless told which user to become.
        changeowner =
            "<changeowner><user>icecast2</user><group>icecast</group></changeowner>".into();
        let _ = Command::new("chmod").arg("755").arg(&dir).status();
        let _ = Command::new("chown")
            .arg("icecast2:icecast")
            .arg(dir.join("log"))
            .status();
    }
    let template = include_str!("../../../../bench/icecast.xml.in");
    let xml = template
        .replace("@CLIENTS@", "10")
        .replace("@PORT@", &port.to_string())
        .replace("@PASSWORD@", PASS)
        .replace("@LOGDIR@", &dir.join("log").display().to_string())
        .replace("@CHANGEOWNER@", &changeowner);
    std::fs::write(dir.join("icecast.xml"), xml).unwrap();
    let child = Command::new("icecast2")
        .arg("-c")
        .arg(dir.join("icecast.xml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + STEP;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "icecast2 did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Icecast2 {
        child,
        addr,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encode_command_streams_stdin_to_icecast2() {
    require_ffmpeg();
    let ice = start_icecast2();
    let addr = ice.addr;
    // 6 s of 48 kHz stereo s16le at 440 Hz.
    let pcm: Vec<u8> = sine(440.0, 48_000, 2, 0, 288_000)
        .samples
        .iter()
        .flat_map(|&s| onair_media::pcm::to_s16(s).to_le_bytes())
        .collect();
    let args: Vec<String> = vec![
        "--rate".into(),
        "48000".into(),
        "--channels".into(),
        "2".into(),
        "--title".into(),
        "Sent to icecast2".into(),
        "--to".into(),
        format!("http://source:{PASS}@{addr}/live"),
    ];
    let cli = tokio::task::spawn_blocking(move || run_encode_cli(&args, pcm));
    let mut listener = listen_when_live(addr, "/live", false).await;
    // 2 s of 128 kbit/s, then check icecast2's idea of the title.
    read_some(&mut listener, 32_000).await;
    let (_, status) = http_get(addr, "/status-json.xsl", None).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        v["icestats"]["source"]["title"], "Sent to icecast2",
        "{status}"
    );
    assert_eq!(
        v["icestats"]["source"]["server_type"], "audio/mpeg",
        "{status}"
    );
    read_to_end(&mut listener, Duration::from_secs(20)).await;
    assert!(cli.await.unwrap().success(), "onair encode failed");
    let decoded = ffmpeg_pcm(&listener.body, 48_000);
    assert!(
        decoded.len() > 48_000 * 2,
        "decoded {} samples",
        decoded.len()
    );
    let mid = &decoded[24_000..decoded.len() - 24_000];
    assert_eq!(peak_frequency(mid, 48_000, 100, 3000, 5), 440.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encode_command_sends_opus_titles_in_band_through_icecast2() {
    require_ffmpeg();
    let ice = start_icecast2();
    let addr = ice.addr;
    // 4 s of 48 kHz mono s16le.
    let pcm: Vec<u8> = sine(440.0, 48_000, 1, 0, 192_000)
        .samples
        .iter()
        .flat_map(|&s| onair_media::pcm::to_s16(s).to_le_bytes())
        .collect();
    let args: Vec<String> = vec![
        "--rate".into(),
        "48000".into(),
        "--codec".into(),
        "opus".into(),
        "--title".into(),
        "Opus to icecast2".into(),
        "--to".into(),
        format!("http://source:{PASS}@{addr}/live.opus"),
    ];
    let cli = tokio::task::spawn_blocking(move || run_encode_cli(&args, pcm));
    let mut listener = listen_when_live(addr, "/live.opus", false).await;
    read_to_end(&mut listener, Duration::from_secs(20)).await;
    assert!(cli.await.unwrap().success(), "onair encode failed");
    // The title reaches icecast2's listeners inside the stream, in an OpusTags header.
    let tag = b"TITLE=Opus to icecast2";
    let tags_at = listener.body.windows(8).position(|w| w == b"OpusTags");
    assert!(
        tags_at.is_some_and(|p| listener.body[p..].windows(tag.len()).any(|w| w == tag)),
        "no OpusTags with the title in {} bytes",
        listener.body.len()
    );
    let decoded = ffmpeg_pcm(&listener.body, 48_000);
    assert!(
        decoded.len() > 48_000 * 2,
        "decoded {} samples",
        decoded.len()
    );
}

/// Encodes 1 s of tone, stalls for 3 s, ends; returns the seconds a listener decoded.
async fn stalled_producer_seconds(silence_fill: bool) -> f64 {
    let srv = start("[defaults]\nchunk_ms = 100\n[[mount]]\nname = \"/stall\"\n").await;
    let addr = srv.local_addr();
    let mount = srv.station.mounts.get("/stall").unwrap();
    let settings = EncoderSettings {
        codec: Codec::Mp3,
        bitrate_kbps: 64,
        vbr: false,
        rate: 24_000,
        channels: 1,
    };
    let mut opts = EncoderOptions::new(settings, "stall test");
    opts.silence_fill = silence_fill;
    let token = srv.station.supervisor.token().clone();
    let (tx, task) = encoder::start(mount, opts, token).unwrap();
    let mut listener = Listener::get(addr, "/stall", false).await;
    tx.send_async(Message::Pcm(sine(440.0, 24_000, 1, 0, 24_000)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    tx.send_async(Message::End).await.unwrap();
    read_to_end(&mut listener, Duration::from_secs(10)).await;
    task.finished().await.unwrap();
    srv.shutdown(Duration::from_secs(2)).await;
    ffmpeg_pcm(&listener.body, 24_000).len() as f64 / 24_000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_producer_gets_silence_only_when_asked() {
    require_ffmpeg();
    let (plain, filled) = tokio::join!(
        stalled_producer_seconds(false),
        stalled_producer_seconds(true)
    );
    assert!(
        plain < 1.3,
        "without silence_fill only the audio sent: {plain} s"
    );
    // The mount runs dry 1 s in; filling starts 150 ms later and keeps real time to 3 s.
    assert!(
        filled > 2.4,
        "silence_fill keeps the stream going: {filled} s"
    );
}
