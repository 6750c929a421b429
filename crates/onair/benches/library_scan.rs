//! Library scan speed: `ONAIR_BENCH_FILES` (default 100,000) small tagged MP3 files in 100
//! folders, scanned cold (every file's tags read) and then rescanned (nothing changed: a
//! directory walk). The peer, on the same tree in the same run: `find DIR -name '*.mp3'`
//! (the walk alone) and `ffprobe` on a sample of files (tag reading by a common tool),
//! extrapolated.
//!
//! Run: `cargo bench -p onair --bench library_scan` (needs ffmpeg/ffprobe).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use onair::input::autodj::library::Library;

fn main() {
    let n: usize = std::env::var("ONAIR_BENCH_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("onair-library-bench-{n}"));
    let seed = dir.join("seed.mp3.src");
    if !dir.join("done").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "sine=duration=0.05",
                "-c:a",
                "libmp3lame",
                "-b:a",
                "32k",
            ])
            .args([
                "-metadata",
                "artist=Bench Artist",
                "-metadata",
                "title=Bench",
                "-f",
                "mp3",
            ])
            .arg(&seed)
            .output()
            .expect("ffmpeg is required for this benchmark");
        assert!(out.status.success());
        let bytes = std::fs::read(&seed).unwrap();
        for i in 0..n {
            let sub = dir.join(format!("d{:03}", i % 100));
            if i < 100 {
                std::fs::create_dir_all(&sub).unwrap();
            }
            std::fs::write(
                sub.join(format!("Artist {}_-_Song {i}.mp3", i % 997)),
                &bytes,
            )
            .unwrap();
        }
        std::fs::write(dir.join("done"), b"").unwrap();
    }
    let size = std::fs::metadata(&seed).unwrap().len();
    println!("library scan: {n} files of {size} bytes in 100 folders");
    let lib = Library::new(dir.clone());
    let t = Instant::now();
    let cold = lib.rescan();
    let cold_t = t.elapsed();
    let t = Instant::now();
    let warm = lib.rescan();
    let warm_t = t.elapsed();
    assert_eq!(
        (cold.tracks, warm.tracks, warm.added, warm.removed),
        (n, n, 0, 0)
    );
    let t = Instant::now();
    let found = Command::new("find")
        .arg(&dir)
        .args(["-name", "*.mp3"])
        .output()
        .unwrap();
    let find_t = t.elapsed();
    let listed = found.stdout.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(listed, n);
    let sample = 200.min(n);
    let t = Instant::now();
    for i in 0..sample {
        let f = dir
            .join(format!("d{:03}", i % 100))
            .join(format!("Artist {}_-_Song {i}.mp3", i % 997));
        probe(&f);
    }
    let probe_each = t.elapsed() / sample as u32;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("| what | time (s) | files/s |");
    println!("|---|---:|---:|");
    println!(
        "| onair cold scan (walk + lofty tags) | {:.2} | {:.0} |",
        cold_t.as_secs_f64(),
        rate(cold_t)
    );
    println!(
        "| onair rescan (unchanged: walk only) | {:.2} | {:.0} |",
        warm_t.as_secs_f64(),
        rate(warm_t)
    );
    println!(
        "| find -name '*.mp3' (walk only) | {:.2} | {:.0} |",
        find_t.as_secs_f64(),
        rate(find_t)
    );
    println!(
        "| ffprobe per file, {sample} sampled, × {n} | {:.2} | {:.0} |",
        (probe_each * n as u32).as_secs_f64(),
        1.0 / probe_each.as_secs_f64()
    );
}

fn probe(f: &Path) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format_tags=artist,title",
            "-of",
            "csv=p=0",
        ])
        .arg(f)
        .output()
        .unwrap();
    assert!(out.status.success());
}
