//! AutoDJ pacing drift: plays a CBR and a VBR MP3 library (made by ffmpeg) through the
//! playout engine for `ONAIR_BENCH_SECS` (default 600) of wall time and reports how far the
//! release of each block strays from its media-time deadline (origin + media − lead), and
//! the drift between media time and wall time at the end. The peer, measured in the same
//! run on the same files: `ffmpeg -re -f concat -i list -c copy -f mp3 pipe:1`, whose output
//! is framed as it arrives and compared with wall time the same way.
//!
//! Run: `cargo bench -p onair --bench autodj_drift` (needs ffmpeg).

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use onair::input::playout::{
    Delivery, Playout, Settings, Sink, Target, Track, TrackList, DEFAULT_LEAD,
};
use onair_proto::frame::{Format, Framer, StreamInfo, Unit, UnitKind};
use tokio_util::sync::CancellationToken;

const TRACKS: usize = 6;
const TRACK_SECS: u32 = 45;

fn make_library(dir: &Path, vbr: bool) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..TRACKS)
        .map(|i| {
            let path = dir.join(format!("{i}.mp3"));
            if !path.exists() {
                let quality: &[&str] = if vbr {
                    &["-q:a", "2"]
                } else {
                    &["-b:a", "128k"]
                };
                let out = Command::new("ffmpeg")
                    .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
                    .arg(format!(
                        "sine=frequency={}:duration={TRACK_SECS}:sample_rate=44100,volume=0.5",
                        220 + 110 * i
                    ))
                    .args([
                        "-f",
                        "lavfi",
                        "-i",
                        &format!("anoisesrc=d={TRACK_SECS}:a=0.05"),
                    ])
                    .args([
                        "-filter_complex",
                        "amix=inputs=2",
                        "-ac",
                        "2",
                        "-c:a",
                        "libmp3lame",
                    ])
                    .args(quality)
                    .args(["-metadata", &format!("title=Track {i}")])
                    .arg(&path)
                    .output()
                    .expect("ffmpeg is required for this benchmark");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            path
        })
        .collect()
}

#[derive(Default)]
struct Stats {
    /// (lateness of each release vs its deadline, in ns; positive = late)
    lateness: Vec<i128>,
    final_drift_ns: i128,
    media: Duration,
    blocks: u64,
}

struct Measure {
    origin: Option<Instant>,
    media: Duration,
    stats: Arc<Mutex<Stats>>,
    stop_at: Instant,
}

impl Sink for Measure {
    fn track_start(&mut self, _t: &Track, _i: &StreamInfo) -> Delivery {
        Delivery::Taken
    }

    fn audio(&mut self, _data: &[u8], units: &[Unit], _info: StreamInfo) -> Delivery {
        let now = Instant::now();
        if now >= self.stop_at {
            return Delivery::Closed;
        }
        let origin = *self.origin.get_or_insert(now);
        let due = self.media.saturating_sub(DEFAULT_LEAD);
        let wall = now - origin;
        let mut st = self.stats.lock().unwrap();
        if self.media > DEFAULT_LEAD {
            st.lateness
                .push(wall.as_nanos() as i128 - due.as_nanos() as i128);
        }
        // Drift between media time and wall time: what was released minus the lead,
        // against the time elapsed.
        st.final_drift_ns = wall.as_nanos() as i128 - due.as_nanos() as i128;
        for u in units.iter().filter(|u| u.kind == UnitKind::Audio) {
            self.media += Duration::from_nanos(
                u64::from(u.samples) * 1_000_000_000 / u64::from(u.sample_rate),
            );
        }
        st.media = self.media;
        st.blocks += 1;
        Delivery::Taken
    }
}

fn onair_run(
    rt: &tokio::runtime::Runtime,
    files: Vec<PathBuf>,
    secs: u64,
) -> tokio::task::JoinHandle<Stats> {
    let tracks = files
        .into_iter()
        .enumerate()
        .map(|(i, path)| Track {
            id: i as u64,
            title: format!("Track {i}"),
            path,
            replaygain_db: None,
        })
        .collect();
    let stats = Arc::new(Mutex::new(Stats::default()));
    let sink = Measure {
        origin: None,
        media: Duration::ZERO,
        stats: stats.clone(),
        stop_at: Instant::now() + Duration::from_secs(secs),
    };
    let target = Target {
        codec: "mp3",
        sample_rate: 44_100,
        channels: 2,
        bitrate_kbps: 128,
    };
    let (_p, task) = Playout::start(
        Settings::new("bench"),
        target,
        TrackList::new(tracks, false, true),
        sink,
        CancellationToken::new(),
    );
    rt.spawn(async move {
        task.await.unwrap();
        std::mem::take(&mut *stats.lock().unwrap())
    })
}

/// ffmpeg -re on a looped concat list of the same files, copied (no re-encode).
fn ffmpeg_run(dir: &Path, files: &[PathBuf], secs: u64) -> std::thread::JoinHandle<Stats> {
    let list = dir.join("list.txt");
    // The list repeats the files for the whole run (ffmpeg 5.1's -stream_loop does not
    // loop the concat demuxer).
    let passes = secs as usize / (TRACKS * TRACK_SECS as usize) + 2;
    let text: String = (0..passes)
        .flat_map(|_| files.iter())
        .map(|f| format!("file '{}'\n", f.display()))
        .collect();
    std::fs::write(&list, text).unwrap();
    let mut child = Command::new("ffmpeg")
        .args([
            "-nostdin", "-v", "error", "-re", "-f", "concat", "-safe", "0", "-i",
        ])
        .arg(&list)
        .args([
            "-c",
            "copy",
            "-f",
            "mp3",
            "-write_xing",
            "0",
            "-id3v2_version",
            "0",
            "pipe:1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg is required for this benchmark");
    let mut out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let stop_at = Instant::now() + Duration::from_secs(secs);
        let mut framer = Framer::new(Format::Mpeg);
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 8192];
        let mut st = Stats::default();
        let mut origin = None;
        let mut media = Duration::ZERO;
        while Instant::now() < stop_at {
            let n = match out.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            let origin = *origin.get_or_insert(now);
            buf.extend_from_slice(&chunk[..n]);
            let mut pos = 0;
            while let Some(u) = framer.next_unit(&buf[pos..]) {
                pos += u.len;
                if u.kind == UnitKind::Audio {
                    media += Duration::from_nanos(
                        u64::from(u.samples) * 1_000_000_000 / u64::from(u.sample_rate),
                    );
                }
            }
            buf.drain(..pos);
            let wall = now - origin;
            let d = wall.as_nanos() as i128 - media.as_nanos() as i128;
            if media > Duration::from_secs(1) {
                st.lateness.push(d);
            }
            st.final_drift_ns = d;
            st.blocks += 1;
        }
        st.media = media;
        let _ = child.kill();
        let _ = child.wait();
        st
    })
}

/// Drift is measured from the first release after the lead is built up: the fixed offset
/// there (start-up: reading the first file, ffmpeg's read-ahead) is not drift.
fn report(name: &str, st: &Stats) {
    let start = st.lateness.first().copied().unwrap_or(0);
    let mut dev: Vec<i128> = st.lateness.iter().map(|l| (l - start).abs()).collect();
    dev.sort_unstable();
    let pct = |p: f64| {
        dev.get(((dev.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1e6
    };
    println!(
        "| {name} | {:.1} | {} | {:+.3} | {:+.3} | {:.3} | {:.3} |",
        st.media.as_secs_f64(),
        st.blocks,
        start as f64 / 1e6,
        (st.final_drift_ns - start) as f64 / 1e6,
        pct(0.99),
        pct(1.0),
    );
}

fn main() {
    let secs: u64 = std::env::var("ONAIR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let base = std::env::temp_dir().join("onair-autodj-bench");
    let cbr = make_library(&base.join("cbr"), false);
    let vbr = make_library(&base.join("vbr"), true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("AutoDJ pacing drift, {secs} s wall time per run, all four runs at once");
    let a = onair_run(&rt, cbr.clone(), secs);
    let b = onair_run(&rt, vbr.clone(), secs);
    let c = ffmpeg_run(&base.join("cbr"), &cbr, secs);
    let d = ffmpeg_run(&base.join("vbr"), &vbr, secs);
    let (a, b) = rt.block_on(async { (a.await.unwrap(), b.await.unwrap()) });
    let (c, d) = (c.join().unwrap(), d.join().unwrap());
    println!("| run | media s | releases | offset at start (ms) | drift at end (ms, + = media behind wall) | p99 deviation (ms) | max deviation (ms) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    report("onair playout, CBR 128k", &a);
    report("onair playout, VBR (LAME -V2)", &b);
    report("ffmpeg -re -c copy, CBR 128k", &c);
    report("ffmpeg -re -c copy, VBR (LAME -V2)", &d);
}
