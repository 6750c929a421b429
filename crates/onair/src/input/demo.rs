//! The demo station: with nothing else configured, `[demo] mount` (default `/stream`) plays
//! the built-in generated programme (`onair_media::synth::Programme`: endless procedurally
//! composed pieces, each with its own title), encoded live through the encoder input with
//! the mount's encoding settings (default MP3 128k, 44.1 kHz stereo).
//!
//! The demo is a stand-in: it holds its mount as a *yielding* source, so any real source
//! that connects to that mount takes it over at once (listeners stay and hear the new
//! source); when that source leaves, the demo comes back within [`RETRY`]. It is on by
//! default only when the configuration defines no mounts, and off with `[demo] enabled =
//! false`; anything that brings its own programme (AutoDJ `--music DIR`) sets
//! `config.demo.enabled = false` before `station::start`.
//!
//! Invariants: synthesis runs on its own std thread, paced by the encoder's bounded queue;
//! the programme continues across takeovers rather than restarting.

use std::{sync::Arc, time::Duration};

use onair_media::{pcm::Pcm, synth::Programme};
use onair_proto::icy::StreamMeta;

use crate::{
    input::encoder::{self, EncoderOptions, Message, PcmSender, Stop},
    station::Station,
};

/// How often a busy demo mount is checked for being free again.
pub const RETRY: Duration = Duration::from_secs(1);
/// Sample frames generated per block (100 ms at 44.1 kHz).
const BLOCK_FRAMES: usize = 4410;

/// Plays the demo programme until shutdown.
pub async fn run(station: Arc<Station>) -> Result<(), String> {
    let config = station.config();
    let demo = config.demo.clone();
    let token = station.supervisor.token().clone();
    let encoding = config
        .mount(&demo.mount)
        .map_or(&config.defaults.encoding, |m| &m.settings.encoding);
    let settings = encoding.for_input(44_100, 2);
    let mut programme = Some(Programme::new(settings.rate, settings.channels, demo.seed));
    let mut opts = EncoderOptions::new(settings, "onair demo programme");
    opts.headers.name = Some("onair demo".into());
    opts.headers.description = Some("A generated programme: connect a source to replace it".into());
    loop {
        // Never a takeover: the demo only takes a free mount.
        let max_sources = station.config().limits.max_sources;
        let attached =
            station
                .mounts
                .attach_source(&demo.mount, opts.source_info(), max_sources, None);
        let Ok((mount, claim)) = attached else {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RETRY) => continue,
            }
        };
        mount.set_yields(claim.ticket);
        let (tx, task) = encoder::spawn(mount.clone(), claim, opts.clone(), token.clone())
            .map_err(|e| format!("{}: {e}", demo.mount))?;
        tracing::info!(mount = %demo.mount, "demo programme playing");
        // invariant: `programme` is put back after every turn below.
        let Some(p) = programme.take() else {
            return Err("demo programme lost".into());
        };
        let generator = std::thread::Builder::new()
            .name("demo programme".into())
            .spawn(move || generate(p, &tx))
            .map_err(|e| format!("cannot start the demo generator: {e}"))?;
        let stop = task.finished().await;
        programme = tokio::task::spawn_blocking(move || generator.join().ok())
            .await
            .ok()
            .flatten();
        station.mounts.release(&mount);
        match stop {
            Ok(Stop::Replaced) => {
                tracing::info!(mount = %demo.mount, "demo programme yielded to a source")
            }
            Ok(_) => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", demo.mount)),
        }
        if programme.is_none() {
            return Err("the demo generator panicked".into());
        }
    }
}

/// Renders blocks into the encoder until it stops; returns the programme to continue later.
fn generate(mut programme: Programme, tx: &PcmSender) -> Programme {
    let title = |t: String| {
        Message::Title(StreamMeta {
            title: t,
            url: None,
        })
    };
    loop {
        let (pcm, start) = programme.next_block(BLOCK_FRAMES);
        let sent = match start {
            None => tx.send(Message::Pcm(pcm)),
            Some((at, name)) => {
                let split = at * usize::from(pcm.channels);
                let (a, b) = pcm.samples.split_at(split.min(pcm.samples.len()));
                let part = |s: &[f32]| Message::Pcm(Pcm::new(pcm.rate, pcm.channels, s.to_vec()));
                tx.send(part(a))
                    .and_then(|()| tx.send(title(name)))
                    .and_then(|()| tx.send(part(b)))
            }
        };
        if sent.is_err() {
            return programme;
        }
    }
}
