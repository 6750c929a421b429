//! Renders the built-in demo programme to a WAV file and reports the render speed.
//!
//! `cargo run --release -p onair-media --example demo -- OUT.wav [SECONDS] [SEED] [RATE]`

use std::io::Write;
use std::time::Instant;

use onair_media::synth::Programme;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).map_or("demo.wav", String::as_str);
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20.0);
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let rate: u32 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(44_100);
    let mut p = Programme::new(rate, 2, seed);
    let frames = (secs * f64::from(rate)) as usize;
    let mut samples = Vec::with_capacity(frames * 2);
    let started = Instant::now();
    let mut done = 0;
    while done < frames {
        let n = 1152.min(frames - done);
        let (pcm, start) = p.next_block(n);
        if let Some((at, title)) = start {
            let t = (done + at) as f64 / f64::from(rate);
            eprintln!("{t:8.2} s  {title}");
        }
        samples.extend_from_slice(&pcm.samples);
        done += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "rendered {secs} s in {:.3} s: {:.0} x real time",
        elapsed,
        secs / elapsed
    );
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    let data_len = (samples.len() * 4) as u32;
    f.write_all(b"RIFF")?;
    f.write_all(&(36 + data_len).to_le_bytes())?;
    f.write_all(b"WAVEfmt ")?;
    f.write_all(&16u32.to_le_bytes())?;
    f.write_all(&3u16.to_le_bytes())?;
    f.write_all(&2u16.to_le_bytes())?;
    f.write_all(&rate.to_le_bytes())?;
    f.write_all(&(rate * 8).to_le_bytes())?;
    f.write_all(&8u16.to_le_bytes())?;
    f.write_all(&32u16.to_le_bytes())?;
    f.write_all(b"data")?;
    f.write_all(&data_len.to_le_bytes())?;
    for s in &samples {
        f.write_all(&s.to_le_bytes())?;
    }
    f.flush()
}
