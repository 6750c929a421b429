//! The AutoDJ end to end: music folders made by ffmpeg (tagged CBR/VBR MP3s with ID3v2 and
//! a Xing/Info frame, FLAC, WAV, a corrupt file, a non-audio file) played into a mount and
//! checked as a listener gets them: ffmpeg decodes across track boundaries without an
//! error, ICY titles change at the byte where each track starts, the operator API skips,
//! queues requests and reports history, upcoming tracks and scan progress. ffmpeg is a
//! required peer (a missing ffmpeg fails these tests).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::time::timeout;

use crate::encoding::{peak_frequency, require_ffmpeg, samples_before};
use crate::support::*;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onair-autodj-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Makes `path` with ffmpeg: a `freq` Hz sine of `secs`, encoded with `codec_args`,
/// tagged with `artist`/`title` when given.
fn make(
    path: &Path,
    freq: u32,
    secs: f64,
    rate: u32,
    channels: u32,
    codec_args: &[&str],
    tags: Option<(&str, &str)>,
) {
    require_ffmpeg();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency={freq}:duration={secs}:sample_rate={rate}"
        ))
        .args(["-ac", &channels.to_string()])
        .args(codec_args);
    if let Some((artist, title)) = tags {
        cmd.args([
            "-metadata",
            &format!("artist={artist}"),
            "-metadata",
            &format!("title={title}"),
        ]);
    }
    let out = cmd.arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CBR: &[&str] = &[
    "-c:a",
    "libmp3lame",
    "-b:a",
    "128k",
    "-id3v2_version",
    "3",
    "-write_id3v1",
    "1",
];
const VBR: &[&str] = &["-c:a", "libmp3lame", "-q:a", "4", "-id3v2_version", "3"];

/// Decodes an MP3 byte stream with ffmpeg; returns mono f32 at `rate` and ffmpeg's
/// complaints (empty when the stream is clean).
fn decode(data: &[u8], rate: u32) -> (Vec<f32>, String) {
    let mut child = Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-f", "mp3", "-i", "pipe:0", "-f", "f32le", "-ac", "1",
        ])
        .args(["-ar", &rate.to_string(), "pipe:1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let owned = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&owned);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pcm = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (pcm, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Reads an ICY listener until `titles` distinct titles were seen and `after` more audio
/// bytes followed the last change (bounded by `limit`).
async fn listen_for_titles(
    l: &mut Listener,
    metaint: usize,
    titles: usize,
    after: usize,
    limit: Duration,
) -> (Vec<u8>, Vec<(usize, String)>) {
    let started = Instant::now();
    loop {
        let (audio, seen) = deinterleave(&l.body, metaint);
        let mut distinct: Vec<&(usize, String)> = Vec::new();
        for t in &seen {
            if distinct.last().is_none_or(|d| d.1 != t.1) {
                distinct.push(t);
            }
        }
        if distinct.len() >= titles && audio.len() >= distinct[titles - 1].0 + after {
            return (audio, distinct.into_iter().cloned().collect());
        }
        assert!(
            started.elapsed() < limit,
            "saw only {distinct:?} in {limit:?}"
        );
        let have = l.body.len();
        l.fill(have + 1).await;
    }
}

/// A test-side reading of an MP3 file: the bytes after its ID3v2 tag and its first
/// (Xing/Info) frame.
fn first_audio(raw: &[u8]) -> &[u8] {
    assert_eq!(&raw[..3], b"ID3");
    let size = raw[6..10]
        .iter()
        .fold(0usize, |a, &b| (a << 7) | usize::from(b & 0x7F));
    let at = 10 + size;
    let h = onair_proto::frame::mpeg::parse_header(raw[at..at + 4].try_into().unwrap()).unwrap();
    &raw[at + h.frame_len..]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn passthrough_copies_whole_frames_without_tags_and_titles_at_track_starts() {
    let dir = temp_dir("pass");
    make(
        &dir.join("01.mp3"),
        440,
        2.0,
        44_100,
        2,
        CBR,
        Some(("Alpha", "First")),
    );
    make(
        &dir.join("02.mp3"),
        1000,
        2.0,
        44_100,
        2,
        CBR,
        Some(("Beta", "Second")),
    );
    // VBR at the same rate: passthrough plays it too; the FLAC and the corrupt and
    // non-audio files are skipped with a log line.
    make(
        &dir.join("Gamma_-_Third.mp3"),
        2500,
        2.0,
        44_100,
        2,
        VBR,
        None,
    );
    make(
        &dir.join("02b.flac"),
        700,
        1.0,
        44_100,
        2,
        &["-c:a", "flac"],
        None,
    );
    std::fs::write(dir.join("02c.mp3"), vec![0x5Au8; 20_000]).unwrap();
    std::fs::write(dir.join("notes.txt"), b"not music").unwrap();
    let raw: Vec<Vec<u8>> = ["01.mp3", "02.mp3", "Gamma_-_Third.mp3"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert!(
        contains(&raw[0], b"Info") && contains(&raw[2], b"Xing") && contains(&raw[0], b"ID3\x03"),
        "fixtures carry tags and header frames"
    );
    let server = start(&format!(
        "[[mount]]\nname = \"/dj\"\nmetaint = 8000\n[mount.autodj]\nmusic_dir = \"{}\"\norder = \"sequential\"\npassthrough = true\n",
        dir.display()
    ))
    .await;
    let addr = server.local_addr();
    let mut l = Listener::get(addr, "/dj", true).await;
    assert!(l.head.contains("200"), "{}", l.head);
    let (audio, titles) = listen_for_titles(&mut l, 8000, 3, 4000, Duration::from_secs(20)).await;
    let titles = &titles[..3];
    let names: Vec<&str> = titles.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(names, ["Alpha - First", "Beta - Second", "Gamma - Third"]);
    // Byte level: no tag, no Xing/Info frame reached the listener.
    for bad in [&b"ID3\x03"[..], b"Xing", b"Info", b"TAGFirst", b"TAGSecond"] {
        assert!(
            !contains(&audio, bad),
            "{:?} on air",
            String::from_utf8_lossy(bad)
        );
    }
    // Each track's first frame follows the previous track's last frame directly, and its
    // title is announced in the first ICY block at or after that byte (ICY can only speak
    // at block boundaries: never before the track, less than one block after).
    for (i, (at, _)) in titles.iter().enumerate().skip(1) {
        let first = &first_audio(&raw[i])[..1000];
        let starts: Vec<usize> = (0..audio.len() - 1000)
            .filter(|&p| &audio[p..p + 1000] == first)
            .collect();
        assert_eq!(starts.len(), 1, "track {i} starts once");
        let p = starts[0];
        assert!(
            contains(&raw[i - 1], &audio[p - 2000..p]),
            "bytes before track {i} are the previous track's end"
        );
        assert!(
            (p..p + 8000).contains(at),
            "track {i} starts at byte {p}, its title at {at}"
        );
    }
    // ffmpeg decodes straight across both boundaries.
    let (pcm, errors) = decode(&audio, 44_100);
    assert!(errors.is_empty(), "decode errors: {errors}");
    assert!(pcm.len() > 44_100 * 4);
    // The status agrees, and shows the skipped files.
    let (_, st) = http_json(addr, "GET", "/api/status", None, None).await;
    let dj = &st["mounts"][0]["autodj"];
    assert_eq!(dj["mode"], "passthrough");
    assert_eq!(dj["tracks"], 4, "{dj}");
    assert_eq!(
        dj["scan"]["skipped"], 1,
        "the corrupt mp3 is left out of the library: {dj}"
    );
    assert!(
        dj["tracks_rejected"].as_u64().unwrap() >= 1,
        "the FLAC is skipped in passthrough: {dj}"
    );
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn encoded_mixed_library_decodes_cleanly_and_titles_change_on_time() {
    let dir = temp_dir("enc");
    let nested = dir.join("a/b/c");
    std::fs::create_dir_all(&nested).unwrap();
    // Different formats, rates and channel counts: one MP3 128k 44.1 kHz stereo on air.
    make(
        &dir.join("1.flac"),
        500,
        2.0,
        44_100,
        2,
        &["-c:a", "flac"],
        Some(("Flac Artist", "Lossless")),
    );
    make(
        &nested.join("2.mp3"),
        1500,
        2.0,
        48_000,
        1,
        VBR,
        Some(("Vbr Artist", "Variable")),
    );
    make(
        &dir.join("3.wav"),
        3000,
        2.0,
        22_050,
        2,
        &["-c:a", "pcm_s16le"],
        None,
    );
    make(
        &dir.join("4.opus"),
        2000,
        2.0,
        44_100,
        1,
        &["-c:a", "libopus"],
        None,
    );
    std::fs::write(dir.join("0-corrupt.flac"), b"fLaC\x00\x00\x00\x22garbage").unwrap();
    std::fs::write(dir.join(".hidden.mp3"), b"hidden").unwrap();
    let server = start(&format!(
        "[[mount]]\nname = \"/enc\"\nmetaint = 512\n[mount.autodj]\nmusic_dir = \"{}\"\norder = \"sequential\"\ncodec = \"mp3\"\nbitrate = 128\n",
        dir.display()
    ))
    .await;
    let addr = server.local_addr();
    let mut l = Listener::get(addr, "/enc", true).await;
    let (audio, titles) = listen_for_titles(&mut l, 512, 4, 8000, Duration::from_secs(30)).await;
    let titles = &titles[..4];
    let names: Vec<&str> = titles.iter().map(|(_, t)| t.as_str()).collect();
    // Path order: "1.flac" < "3.wav" < "4.opus" < "a/b/c/2.mp3".
    assert_eq!(
        names,
        ["Flac Artist - Lossless", "3", "4", "Vbr Artist - Variable"]
    );
    let (pcm, errors) = decode(&audio, 44_100);
    assert!(
        errors.is_empty(),
        "decode errors across track boundaries: {errors}"
    );
    // Each title lands where its tone begins. ICY announces it at the first 512-byte block
    // boundary at or after the track's first sample (< 33 ms late): 60..120 ms before the
    // title's sample the old tone dominates, 40..100 ms after it the new one (past any
    // encoder padding at the file's start).
    let tones = [500.0, 3000.0, 2000.0, 1500.0];
    let ms = |n: usize| n * 441 / 10;
    for (i, (at, _)) in titles.iter().enumerate().skip(1) {
        let s = samples_before(&audio, *at) as usize;
        let before = &pcm[s - ms(120)..s - ms(60)];
        let after = &pcm[s + ms(40)..s + ms(100)];
        let f_before = peak_frequency(before, 44_100, 250, 3500, 250);
        let f_after = peak_frequency(after, 44_100, 250, 3500, 250);
        assert_eq!(
            (f_before, f_after),
            (tones[i - 1], tones[i]),
            "title {i} at sample {s}"
        );
    }
    let (code, h) = http_json(addr, "GET", "/api/mounts/enc/history", Some(ADMIN), None).await;
    assert_eq!(code, 200);
    let played: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert!(
        played
            .windows(4)
            .any(|w| w == ["Flac Artist - Lossless", "3", "4", "Vbr Artist - Variable"]),
        "{played:?}"
    );
    let (_, st) = http_json(addr, "GET", "/api/status", None, None).await;
    let dj = &st["mounts"][0]["autodj"];
    assert_eq!(
        (dj["mode"].as_str(), dj["tracks"].as_u64()),
        (Some("encode"), Some(4)),
        "{dj}"
    );
    assert_eq!(
        dj["scan"]["skipped"], 1,
        "the corrupt FLAC is left out: {dj}"
    );
    // /status-json.xsl shows the title on air: one the listener heard.
    let (_, status) = http_get(addr, "/status-json.xsl", None).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let title = v["icestats"]["source"]["title"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ["Flac Artist - Lossless", "3", "Vbr Artist - Variable"].contains(&title.as_str()),
        "{status}"
    );
    server.shutdown(Duration::from_secs(2)).await;
}

async fn autodj_state(addr: std::net::SocketAddr, mount: &str) -> serde_json::Value {
    let (code, v) = http_json(
        addr,
        "GET",
        &format!("/api/mounts/{mount}/autodj"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v
}

async fn upcoming(addr: std::net::SocketAddr, mount: &str) -> Vec<String> {
    let (code, v) = http_json(
        addr,
        "GET",
        &format!("/api/mounts/{mount}/upcoming"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v["upcoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["display"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `check` every 100 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let done = timeout(Duration::from_secs(10), async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "timed out waiting for: {what}");
}

#[tokio::test]
async fn library_changes_join_and_leave_the_rotation_and_the_api_controls_it() {
    let dir = temp_dir("live");
    make(&dir.join("Old_-_One.mp3"), 440, 6.0, 44_100, 2, CBR, None);
    let upcoming_file = dir.join("../onair-autodj-upcoming.txt");
    let server = start(&format!(
        "[[mount]]\nname = \"/live\"\n[mount.autodj]\nmusic_dir = \"{}\"\npassthrough = true\nrescan = 0.2\nupcoming_file = \"{}\"\n",
        dir.display(),
        upcoming_file.display()
    ))
    .await;
    let addr = server.local_addr();
    eventually("the first track on air", || async {
        autodj_state(addr, "live").await["now_playing"]["title"] == "Old - One"
    })
    .await;
    // Admin auth like the rest of /api.
    let (code, _) = http_json(addr, "POST", "/api/mounts/live/next", None, None).await;
    assert_eq!(code, 401);
    let (code, _) = http_json(
        addr,
        "GET",
        "/api/mounts/nosuch/upcoming",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(code, 404);
    // Added files join without a restart.
    make(&dir.join("New_-_Two.mp3"), 880, 6.0, 44_100, 2, CBR, None);
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    make(
        &sub.join("Third_-_Three.mp3"),
        1200,
        6.0,
        44_100,
        2,
        CBR,
        None,
    );
    // A symlink loop must not hang or duplicate the scan.
    #[cfg(unix)]
    std::os::unix::fs::symlink(&dir, sub.join("loop")).unwrap();
    eventually("new files in the library", || async {
        autodj_state(addr, "live").await["tracks"] == 3
    })
    .await;
    eventually("new files upcoming", || async {
        let u = upcoming(addr, "live").await;
        u.contains(&"New - Two".to_string()) && u.contains(&"Third - Three".to_string())
    })
    .await;
    // A request plays next.
    let (code, r) = http_json(
        addr,
        "POST",
        "/api/mounts/live/queue",
        Some(ADMIN),
        Some(json!({"path": "sub/Third_-_Three.mp3"})),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    let (code, _) = http_json(
        addr,
        "POST",
        "/api/mounts/live/queue",
        Some(ADMIN),
        Some(json!({"path": "/etc/passwd"})),
    )
    .await;
    assert_eq!(code, 404, "only library tracks can be requested");
    let (code, _) = http_json(addr, "POST", "/api/mounts/live/next", Some(ADMIN), None).await;
    assert_eq!(code, 200);
    eventually("the request on air after a skip", || async {
        autodj_state(addr, "live").await["now_playing"]["title"] == "Third - Three"
    })
    .await;
    // The upcoming file follows the list.
    eventually("upcoming_file written", || {
        let f = upcoming_file.clone();
        async move {
            std::fs::read_to_string(&f)
                .is_ok_and(|t| t.lines().count() == 10 && t.contains("New - Two"))
        }
    })
    .await;
    // Removed files leave it.
    std::fs::remove_file(dir.join("New_-_Two.mp3")).unwrap();
    eventually("removed file gone from upcoming", || async {
        let u = upcoming(addr, "live").await;
        !u.is_empty() && !u.contains(&"New - Two".to_string())
    })
    .await;
    let (_, h) = http_json(addr, "GET", "/api/mounts/live/history", Some(ADMIN), None).await;
    let h: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(h.first(), Some(&"Third - Three"), "{h:?}");
    assert!(h.contains(&"Old - One"));
    let st = autodj_state(addr, "live").await;
    assert!(st["scan"]["scans_done"].as_u64().unwrap() >= 2, "{st}");
    server.shutdown(Duration::from_secs(2)).await;
}

/// Power of `freq` in `pcm` (Goertzel), normalised by the window length.
fn tone_power(pcm: &[f32], rate: u32, freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in pcm {
        let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (pcm.len() as f64).powi(2)
}

#[tokio::test]
async fn crossfade_mixes_both_tones_over_the_overlap_and_the_title_changes_at_its_start() {
    let dir = temp_dir("xfade");
    let wav = &["-c:a", "pcm_s16le"];
    make(&dir.join("1.wav"), 440, 4.0, 44_100, 2, wav, None);
    make(&dir.join("2.wav"), 880, 4.0, 44_100, 2, wav, None);
    let server = start(&format!(
        "[[mount]]\nname = \"/x\"\nmetaint = 512\n[mount.autodj]\nmusic_dir = \"{}\"\norder = \"sequential\"\ncodec = \"mp3\"\nbitrate = 128\ncrossfade = 2\n",
        dir.display()
    ))
    .await;
    let addr = server.local_addr();
    let mut l = Listener::get(addr, "/x", true).await;
    // 3.5 s of 128 kbit/s after the second title: the whole overlap and beyond.
    let (audio, titles) = listen_for_titles(&mut l, 512, 2, 56_000, Duration::from_secs(30)).await;
    let names: Vec<&str> = titles.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(&names[..2], ["1", "2"]);
    let (pcm, errors) = decode(&audio, 44_100);
    assert!(errors.is_empty(), "decode errors: {errors}");
    // The second title is announced where the overlap starts (ICY: at the first 512-byte
    // block at or after that sample, < 33 ms late).
    let s = samples_before(&audio, titles[1].0) as usize;
    let at = |from: f64, to: f64| {
        let a = (s as f64 + from * 44_100.0) as usize;
        let b = (s as f64 + to * 44_100.0) as usize;
        let w = &pcm[a..b];
        (tone_power(w, 44_100, 440.0), tone_power(w, 44_100, 880.0))
    };
    // Before the overlap: 440 Hz alone.
    let (a, b) = at(-1.0, -0.1);
    assert!(b < a * 1e-3, "before: 440 {a:e}, 880 {b:e}");
    // Just after the title: 880 Hz fading in (sin of 0.05..0.2 of a quarter turn).
    let (a, b) = at(0.1, 0.4);
    assert!(b > a * 5e-3 && b < a, "fade-in start: 440 {a:e}, 880 {b:e}");
    // Mid-overlap: both at about the same level (cos = sin at 1 s).
    let (a, b) = at(0.8, 1.2);
    assert!(
        b > a / 3.0 && b < a * 3.0,
        "mid overlap: 440 {a:e}, 880 {b:e}"
    );
    // After the overlap: 880 Hz alone.
    let (a, b) = at(2.1, 3.0);
    assert!(a < b * 1e-3, "after: 440 {a:e}, 880 {b:e}");
    server.shutdown(Duration::from_secs(2)).await;
}
