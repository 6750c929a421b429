//! Decodes a file, then measures its loudness and limits it to the target, timing each
//! stage (used by bench/media.sh).
//!
//! `cargo run --release -p onair-media --example decode -- FILE`

use std::path::Path;
use std::time::Instant;

use onair_media::decode::Decoder;
use onair_media::loudness::{Limiter, LoudnessMeter, DEFAULT_CEILING_DBTP, DEFAULT_TARGET_LUFS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: decode FILE")?;
    let t = Instant::now();
    let mut d = Decoder::open(Path::new(&path))?;
    let mut pcm = Vec::new();
    while let Some(b) = d.next_block()? {
        pcm.extend_from_slice(&b.samples);
    }
    let decode_s = t.elapsed().as_secs_f64();
    let info = d.info().clone();
    let media_s = pcm.len() as f64 / f64::from(info.channels) / f64::from(info.rate);

    let t = Instant::now();
    let mut m = LoudnessMeter::new(info.rate, info.channels)?;
    for chunk in pcm.chunks(4096) {
        m.push(chunk);
    }
    let lufs = m.integrated_lufs().unwrap_or(f64::NEG_INFINITY);
    let meter_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let gain = DEFAULT_TARGET_LUFS - lufs;
    let mut lim = Limiter::new(info.rate, info.channels, gain, DEFAULT_CEILING_DBTP);
    let mut out = Vec::with_capacity(pcm.len());
    for chunk in pcm.chunks(4096) {
        lim.process(chunk, &mut out);
    }
    lim.flush(&mut out);
    let limit_s = t.elapsed().as_secs_f64();

    println!(
        "{path}: {} {} Hz {} ch, {media_s:.1} s, corrupt {}",
        info.codec,
        info.rate,
        info.channels,
        d.corrupt_packets()
    );
    println!(
        "decode  {decode_s:.3} s  {:.0} x real time",
        media_s / decode_s
    );
    println!(
        "meter   {meter_s:.3} s  {:.0} x real time  ({lufs:.2} LUFS)",
        media_s / meter_s
    );
    println!(
        "limit   {limit_s:.3} s  {:.0} x real time  (gain {gain:+.2} dB)",
        media_s / limit_s
    );
    Ok(())
}
