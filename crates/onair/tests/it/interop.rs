//! Interop with real third-party peers: ffmpeg (source and decoding listener), libshout via
//! python-shout, ezstream, and Ogg Vorbis/Opus late joiners. A missing peer fails the test
//! loudly (`bash .ci/run` installs them).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::*;

fn require_python_shout() {
    let ok = Command::new("python3")
        .args(["-c", "import shout"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python-shout is not installed: run `bash .ci/run`, which installs it"
    );
}

/// Kills the child when the test ends, however it ends.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onair-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A music-like test signal (two tones that change every second) encoded by ffmpeg.
fn make_input(dir: &Path, file: &str, codec_args: &[&str], seconds: u32) -> PathBuf {
    require("ffmpeg");
    let out = dir.join(file);
    let expr = "0.3*sin(2*PI*(330+110*floor(mod(t\\,4)))*t)+0.2*sin(2*PI*550*t)";
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("aevalsrc={expr}|{expr}:s=44100:d={seconds}"))
        .args(codec_args)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not make {file}");
    out
}

fn ffmpeg_source(input: &Path, url: &str, content_type: &str, format: &str) -> Peer {
    Peer(
        Command::new("ffmpeg")
            .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(input)
            .args([
                "-c",
                "copy",
                "-content_type",
                content_type,
                "-f",
                format,
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Waits (bounded) until the mount has a live source.
async fn wait_live(addr: std::net::SocketAddr, mount: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let (_, status) = http_get(addr, "/api/status", None).await;
        let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        let live = v["mounts"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| {
                m["name"] == mount
                    && m["live"] == true
                    && m["source"]["bytes_in"].as_u64() > Some(0)
            })
        });
        if live {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "mount {mount} never went live: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Decodes `seconds` of a listen URL with ffmpeg; returns (decoded seconds, ffmpeg's errors).
async fn ffmpeg_decode(url: &str, seconds: u32) -> (f64, String) {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("timeout")
            .arg((seconds + 20).to_string())
            .args([
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-i",
                &url,
                "-t",
                &seconds.to_string(),
                "-f",
                "s16le",
                "-ac",
                "1",
                "-ar",
                "8000",
                "-",
            ])
            .output()
            .unwrap();
        let decoded = out.stdout.len() as f64 / 2.0 / 8000.0;
        (decoded, String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await
    .unwrap()
}

/// A real-time ffmpeg source of a sine tone, encoded live to 128k MP3.
fn ffmpeg_tone_source(freq: u32, url: &str) -> Peer {
    require("ffmpeg");
    Peer(
        Command::new("ffmpeg")
            .args(["-v", "error", "-re", "-f", "lavfi", "-i"])
            .arg(format!("sine=f={freq}:r=44100"))
            .args(["-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k"])
            .args(["-content_type", "audio/mpeg", "-f", "mp3", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// The strongest of `candidates` (Hz) in 8 kHz mono samples.
fn dominant(samples: &[i16], candidates: &[f64]) -> f64 {
    let power = |f: f64| {
        let w = 2.0 * std::f64::consts::PI * f / 8000.0;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s0 = f64::from(x) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
    };
    candidates
        .iter()
        .copied()
        .max_by(|a, b| power(*a).total_cmp(&power(*b)))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_listener_keeps_decoding_across_a_fallback_switch() {
    let srv = start(
        "[defaults]\nchunk_ms = 200\n[[mount]]\nname = \"/main\"\nfallback = \"/backup\"\n[[mount]]\nname = \"/backup\"\n",
    )
    .await;
    let addr = srv.local_addr();
    let _backup = ffmpeg_tone_source(1000, &format!("icecast://source:{PASS}@{addr}/backup"));
    let main = ffmpeg_tone_source(440, &format!("icecast://source:{PASS}@{addr}/main"));
    wait_live(addr, "/backup").await;
    wait_live(addr, "/main").await;
    let url = format!("http://{addr}/main");
    let listener = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["30", "ffmpeg", "-nostdin", "-v", "error", "-i", &url])
            .args(["-t", "9", "-f", "s16le", "-ac", "1", "-ar", "8000", "-"])
            .output()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(main); // the live source dies; the listener must go on with /backup
    let out = listener.await.unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.trim().is_empty(), "ffmpeg decode errors: {errors}");
    let samples: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(
        samples.len() >= 8000 * 85 / 10,
        "decoded {} samples",
        samples.len()
    );
    let tones = [440.0, 1000.0];
    assert_eq!(dominant(&samples[..8000], &tones), 440.0, "starts on /main");
    let tail = &samples[samples.len() - 8000..];
    assert_eq!(dominant(tail, &tones), 1000.0, "ends on the fallback");
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_source_and_ffmpeg_listener() {
    let dir = scratch("ffmpeg");
    let input = make_input(&dir, "in.mp3", &["-c:a", "libmp3lame", "-b:a", "128k"], 20);
    let srv = start("").await;
    let addr = srv.local_addr();
    let _src = ffmpeg_source(
        &input,
        &format!("icecast://source:{PASS}@{addr}/live"),
        "audio/mpeg",
        "mp3",
    );
    wait_live(addr, "/live").await;
    let (decoded, errors) = ffmpeg_decode(&format!("http://{addr}/live"), 6).await;
    assert!(
        errors.trim().is_empty(),
        "ffmpeg reported decode errors: {errors}"
    );
    assert!(decoded >= 5.9, "decoded only {decoded:.2} s");
    let (_, status) = http_get(addr, "/api/status", None).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["mounts"][0]["codec"], "mp3");
    assert_eq!(v["mounts"][0]["sample_rate"], 44100);
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libshout_source_sets_titles_listeners_see_them() {
    require_python_shout();
    let dir = scratch("shout");
    let input = make_input(&dir, "in.mp3", &["-c:a", "libmp3lame", "-b:a", "128k"], 10);
    let srv = start("[defaults]\nmetaint = 8192\nchunk_ms = 200\n").await;
    let addr = srv.local_addr();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/peers/shout_source.py");
    let titles = [
        "First Song",
        "Guns N' Roses - Sweet Child o' Mine; live=1",
        "Björk – Jóga",
    ];
    let mut child = Peer(
        Command::new("python3")
            .arg(&script)
            .args(["127.0.0.1", &addr.port().to_string(), "/shout", PASS])
            .arg(&input)
            .args(titles)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_live(addr, "/shout").await;
    let mut l = Listener::get(addr, "/shout", true).await;
    let metaint = l.metaint().unwrap();
    // ~6 s of audio at 128k covers all three titles.
    l.fill(80_000).await;
    let (_, seen) = deinterleave(&l.body, metaint);
    let seen: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
    for t in &titles[1..] {
        assert!(seen.contains(t), "title {t:?} not seen in {seen:?}");
    }
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "python-shout source failed");
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ezstream_source_with_metadata() {
    require("ezstream");
    let dir = scratch("ezstream");
    let input = make_input(
        &dir,
        "track.mp3",
        &[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-metadata",
            "artist=Ez Artist",
            "-metadata",
            "title=Ez Title",
        ],
        8,
    );
    let srv = start("").await;
    let addr = srv.local_addr();
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ezstream>
  <servers><server><hostname>127.0.0.1</hostname><port>{port}</port><password>{PASS}</password><protocol>HTTP</protocol></server></servers>
  <streams><stream><mountpoint>/ez</mountpoint><format>MP3</format></stream></streams>
  <intakes><intake><type>file</type><filename>{file}</filename><stream_once>No</stream_once></intake></intakes>
  <metadata><format_str>@a@ - @t@</format_str></metadata>
</ezstream>
"#,
        port = addr.port(),
        file = input.display()
    );
    let cfg = dir.join("ezstream.xml");
    std::fs::write(&cfg, xml).unwrap();
    // ezstream refuses configs readable by others.
    Command::new("chmod").arg("600").arg(&cfg).status().unwrap();
    let _ez = Peer(
        Command::new("ezstream")
            .arg("-c")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_live(addr, "/ez").await;
    let deadline = Instant::now() + STEP;
    loop {
        let (_, status) = http_get(addr, "/status-json.xsl", None).await;
        if status.contains("\"title\":\"Ez Artist - Ez Title\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ezstream's title never arrived: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (decoded, errors) = ffmpeg_decode(&format!("http://{addr}/ez"), 3).await;
    assert!(
        errors.trim().is_empty() && decoded >= 2.9,
        "{decoded} s, {errors}"
    );
    srv.shutdown(Duration::from_secs(2)).await;
}

async fn ogg_late_joiner(codec: &[&str], file: &str, mount: &str, expect_codec: &str) {
    let dir = scratch(file);
    let input = make_input(&dir, file, codec, 20);
    let srv = start("").await;
    let addr = srv.local_addr();
    let _src = ffmpeg_source(
        &input,
        &format!("icecast://source:{PASS}@{addr}{mount}"),
        "application/ogg",
        "ogg",
    );
    wait_live(addr, mount).await;
    // Join well after the headers went by: the burst alone cannot contain them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (decoded, errors) = ffmpeg_decode(&format!("http://{addr}{mount}"), 4).await;
    assert!(
        errors.trim().is_empty(),
        "late joiner decode errors: {errors}"
    );
    assert!(decoded >= 3.9, "late joiner decoded only {decoded:.2} s");
    let (_, status) = http_get(addr, "/api/status", None).await;
    assert!(
        status.contains(&format!("\"codec\":\"{expect_codec}\"")),
        "{status}"
    );
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ogg_vorbis_late_joiner_decodes() {
    ogg_late_joiner(
        &["-c:a", "libvorbis", "-q:a", "3"],
        "in.ogg",
        "/vorbis.ogg",
        "vorbis",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ogg_opus_late_joiner_decodes() {
    ogg_late_joiner(
        &["-c:a", "libopus", "-b:a", "96k", "-ar", "48000"],
        "in.opus",
        "/opus.ogg",
        "opus",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_ogg_late_joiner_gets_the_new_links_headers() {
    let dir = scratch("chain");
    // Two independently encoded links (different serials, different headers).
    let a = make_input(&dir, "a.ogg", &["-c:a", "libvorbis", "-q:a", "2"], 3);
    let b = make_input(
        &dir,
        "b.ogg",
        &["-c:a", "libvorbis", "-q:a", "6", "-ar", "48000"],
        30,
    );
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let srv = start("[defaults]\nchunk_ms = 200\n").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/chain.ogg", "application/ogg").await;
    // The first link at once, then the second paced at ~4x real time so the stream lives on.
    src.send(&a).await;
    let pace = b.len() / 30 * 4;
    let sender = tokio::spawn(async move {
        for piece in b.chunks(pace / 10) {
            src.send(piece).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        src
    });
    // Join once the second link's headers are far behind the burst.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (decoded, errors) = ffmpeg_decode(&format!("http://{addr}/chain.ogg"), 2).await;
    assert!(
        errors.trim().is_empty(),
        "late joiner decode errors: {errors}"
    );
    assert!(decoded >= 1.9, "late joiner decoded only {decoded:.2} s");
    let (_, status) = http_get(addr, "/api/status", None).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        v["mounts"][0]["sample_rate"], 48000,
        "stream info follows the new link: {status}"
    );
    sender.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libshout_shoutcast_v1_source_with_titles() {
    require_python_shout();
    let dir = scratch("shout-icy");
    let input = make_input(&dir, "in.mp3", &["-c:a", "libmp3lame", "-b:a", "128k"], 10);
    let srv = start_with_shoutcast("[defaults]\nmetaint = 8192\nchunk_ms = 200\n").await;
    let addr = srv.local_addr();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/peers/shout_source.py");
    let titles = ["One", "Two – ünïcode; 'quoted'"];
    let mut child = Peer(
        Command::new("python3")
            .arg(&script)
            .args(["127.0.0.1", &addr.port().to_string(), "/ignored", PASS])
            .arg(&input)
            .args(titles)
            .env("SHOUT_PROTOCOL", "icy")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_live(addr, "/stream").await;
    let mut l = Listener::get(addr, "/stream", true).await;
    let metaint = l.metaint().unwrap();
    l.fill(50_000).await;
    let (_, seen) = deinterleave(&l.body, metaint);
    assert!(
        seen.iter().any(|(_, t)| t == titles[1]),
        "titles seen: {seen:?}"
    );
    let status = tokio::task::spawn_blocking(move || child.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "python-shout (icy) source failed");
    srv.shutdown(Duration::from_secs(2)).await;
}
