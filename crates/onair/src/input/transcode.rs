//! Transcoded mounts: `[[mount]] name = "/live-64.mp3" transcode_from = "/live" codec =
//! "mp3" bitrate = 64` re-encodes another mount's stream into this one.
//!
//! A transcoder is an input that reads its source mount like a listener (an async task that
//! subscribes and reads chunks; it never holds the mount back: a transcoder that falls too
//! far behind is dropped by the ring like any slow listener and resubscribes), feeds the
//! bytes through a bounded channel to a decoder thread (`onair_media::decode::Decoder`),
//! which hands PCM to the encoder input of the target mount.
//!
//! Following: titles follow the source mount (each title is handed to the encoder when the
//! decoder reaches the media time of the chunk that carried it, so it lands where it does
//! in the source, within one decoded packet). When the source mount ends, the transcoder
//! follows its fallback like a listener does (`Registry::fallback_for`; back to the source
//! when it returns, if it recalls its listeners or the fallback was a file); with nowhere to
//! go, the transcoded mount ends too, and starts again when the source comes back (checked
//! every [`RETRY`]). Each followed stream gets a fresh decoder; the encoder, and so the
//! transcoded mount's listeners, carry on across the switch.
//!
//! Any stream the decoder reads can be a source: MP3, AAC, Ogg Vorbis/FLAC and Ogg Opus
//! (including another transcoded mount).

use std::{
    collections::VecDeque,
    io::Read,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use onair_media::decode::Decoder;
use onair_proto::{
    frame::{Framer, StreamInfo, UnitKind},
    icy::{parse_block, StreamMeta},
};
use tokio::sync::mpsc;

use crate::{
    input::encoder::{self, EncoderOptions, Message, PcmSender},
    mount::{Mount, Read as MountRead, StreamFacts},
    station::Station,
};

/// How often an absent source mount is looked for.
pub const RETRY: Duration = Duration::from_millis(500);
/// Chunks in flight between the reader and the decoder thread.
const FEED_CHUNKS: usize = 8;
/// Titles waiting for the decoder to reach them; beyond that the oldest is dropped.
const MAX_TITLES: usize = 16;

/// Keeps `target` transcoded from its `transcode_from` mount until shutdown.
pub async fn run(station: Arc<Station>, target: String) -> Result<(), String> {
    let token = station.supervisor.token().clone();
    let mount = station
        .mounts
        .get(&target)
        .ok_or_else(|| format!("{target}: not a configured mount"))?;
    let cfg = mount
        .conf()
        .config
        .clone()
        .ok_or_else(|| format!("{target}: not a configured mount"))?;
    let home = cfg
        .transcode_from
        .clone()
        .ok_or_else(|| format!("{target}: no transcode_from"))?;
    loop {
        let first = live_stream(&station, &home);
        let Some(first) = first else {
            tokio::select! {
                _ = token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RETRY) => continue,
            }
        };
        let compat = first.compat();
        let (rate, channels) = compat.map_or((44_100, 2), |c| {
            (
                if c.sample_rate == 0 {
                    44_100
                } else {
                    c.sample_rate
                },
                u16::from(c.channels.max(1)),
            )
        });
        let mut opts = EncoderOptions::new(
            cfg.settings.encoding.for_input(rate, channels),
            format!("onair transcoder of {home}"),
        );
        if let Some(src) = first.status().source {
            opts.headers = src.headers;
        }
        let (tx, task) = match encoder::start(mount.clone(), opts, token.clone()) {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(mount = %target, error = %e, "transcoder cannot start; retrying");
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(RETRY * 4) => continue,
                }
            }
        };
        tracing::info!(mount = %target, from = %first.name, "transcoding");
        let why = follow(&station, &home, first, &tx).await;
        let _ = tx.send_async(Message::End).await;
        let _ = task.finished().await;
        match why {
            Ok(why) => tracing::info!(mount = %target, "transcoding paused: {why}"),
            Err(why) => tracing::warn!(mount = %target, "transcoding stopped: {why}"),
        }
        if token.is_cancelled() {
            return Ok(());
        }
    }
}

/// The home mount if it is live, else where its listeners would fall back to.
fn live_stream(station: &Station, home: &str) -> Option<Arc<Mount>> {
    let m = station.mounts.get(home)?;
    if m.is_live() {
        return Some(m);
    }
    station.mounts.fallback_for(&m)
}

/// How reading one followed stream ended.
enum Next {
    Ended,
    Switch(Arc<Mount>),
    Resubscribe,
    Shutdown,
}

/// Reads `current` (and whatever it falls back to) into the encoder until nothing is left
/// to follow.
async fn follow(
    station: &Station,
    home: &str,
    mut current: Arc<Mount>,
    tx: &PcmSender,
) -> Result<&'static str, String> {
    loop {
        let Some(sub) = current.subscribe_moving() else {
            match live_stream(station, home) {
                Some(m) if !Arc::ptr_eq(&m, &current) => {
                    current = m;
                    continue;
                }
                _ => return Ok("source ended"),
            }
        };
        let session = DecodeSession::start(&sub.facts, tx.clone())?;
        let next = pump(station, home, &current, sub, &session).await;
        session.close().await;
        match next? {
            Next::Shutdown => return Ok("server shutting down"),
            Next::Resubscribe => {}
            Next::Switch(to) => {
                tracing::info!(from = %current.name, to = %to.name, "transcoder follows");
                current = to;
            }
            Next::Ended => {
                let next = station
                    .mounts
                    .get(home)
                    .filter(|h| h.is_live() && !Arc::ptr_eq(h, &current))
                    .or_else(|| station.mounts.fallback_for(&current));
                match next {
                    Some(to) if to.compat().is_some() => {
                        tracing::info!(from = %current.name, to = %to.name, "transcoder follows: source ended");
                        current = to;
                    }
                    _ => return Ok("source ended"),
                }
            }
        }
    }
}

async fn pump(
    station: &Station,
    home: &str,
    mount: &Arc<Mount>,
    sub: crate::mount::Subscription,
    session: &DecodeSession,
) -> Result<Next, String> {
    let token = station.supervisor.token().clone();
    let mut start = sub.start;
    let mut framer = Framer::new(sub.facts.format);
    let mut media = MediaClock::default();
    let mut last_meta = Bytes::new();
    let note_meta = |meta: &Bytes, at: Duration, last: &mut Bytes| {
        if meta == last || meta.len() < 2 {
            return;
        }
        *last = meta.clone();
        let title = parse_block(&meta[1..]);
        let get = |k: &str| {
            title
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let meta = StreamMeta {
            title: get("StreamTitle").unwrap_or_default(),
            url: get("StreamUrl"),
        };
        session.title_at(at, meta);
    };
    note_meta(&start.current_meta.clone(), Duration::ZERO, &mut last_meta);
    for p in start.prefix.drain(..) {
        media.count(&mut framer, &p);
        session.feed(p).await?;
    }
    loop {
        start.ticks.borrow_and_update();
        if token.is_cancelled() {
            return Ok(Next::Shutdown);
        }
        if let Some(h) = station.mounts.get(home) {
            if !Arc::ptr_eq(&h, mount)
                && (h.recalls_listeners() || mount.is_file_fallback())
                && h.is_live()
            {
                return Ok(Next::Switch(h));
            }
        }
        let mut chunks = Vec::new();
        let read = mount.read(start.seq, &mut chunks);
        match read {
            MountRead::Data(next) => {
                for (i, c) in chunks.into_iter().enumerate() {
                    let meta = if start.seq + (i as u64) < start.live_seq {
                        start.current_meta.clone()
                    } else {
                        c.meta.clone()
                    };
                    note_meta(&meta, media.now(), &mut last_meta);
                    media.count(&mut framer, &c.audio);
                    session.feed(c.audio).await?;
                }
                start.seq = next;
                continue;
            }
            MountRead::Lagged => return Ok(Next::Resubscribe),
            MountRead::Ended => return Ok(Next::Ended),
            MountRead::Idle => {}
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(Next::Shutdown),
            r = start.ticks.changed() => if r.is_err() { return Ok(Next::Ended) },
        }
    }
}

/// Media time of the bytes read so far, from their frames' sample counts.
#[derive(Default)]
struct MediaClock {
    nanos: u128,
}

impl MediaClock {
    fn count(&mut self, framer: &mut Framer, mut data: &[u8]) {
        while let Some(u) = framer.next_unit(data) {
            data = &data[u.len..];
            if u.kind == UnitKind::Audio && u.sample_rate > 0 {
                self.nanos += u128::from(u.samples) * 1_000_000_000 / u128::from(u.sample_rate);
            }
        }
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(u64::try_from(self.nanos).unwrap_or(u64::MAX))
    }
}

type Titles = Arc<Mutex<VecDeque<(Duration, StreamMeta)>>>;

/// One followed stream's decoder thread and the channel feeding it.
struct DecodeSession {
    feed: mpsc::Sender<Bytes>,
    titles: Titles,
    thread: std::thread::JoinHandle<()>,
}

impl DecodeSession {
    fn start(facts: &StreamFacts, tx: PcmSender) -> Result<DecodeSession, String> {
        let (feed, rx) = mpsc::channel(FEED_CHUNKS);
        let titles: Titles = Arc::default();
        let hint = hint_for(&facts.content_type, facts.codec);
        let t = titles.clone();
        let thread = std::thread::Builder::new()
            .name("transcode decoder".into())
            .spawn(move || {
                let reader = FeedReader {
                    rx,
                    buf: Bytes::new(),
                };
                if let Err(e) = decode(reader, &hint, &t, &tx) {
                    tracing::warn!(error = %e, "transcoder: decoding stopped");
                }
            })
            .map_err(|e| format!("cannot start the decoder thread: {e}"))?;
        Ok(DecodeSession {
            feed,
            titles,
            thread,
        })
    }

    async fn feed(&self, bytes: Bytes) -> Result<(), String> {
        self.feed
            .send(bytes)
            .await
            .map_err(|_| "the decoder stopped".to_string())
    }

    fn title_at(&self, at: Duration, meta: StreamMeta) {
        let mut t = self.titles.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() >= MAX_TITLES {
            t.pop_front();
        }
        t.push_back((at, meta));
    }

    /// Ends the stream (the decoder drains what it has) and waits for the thread.
    async fn close(self) {
        drop(self.feed);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

fn hint_for(content_type: &str, codec: StreamInfo) -> String {
    match codec.codec {
        "" => content_type.to_string(),
        "mp3" | "mp2" | "mp1" => "mp3".into(),
        "aac" => "aac".into(),
        _ => "ogg".into(),
    }
}

/// Decodes the fed stream and hands PCM and titles to the encoder, each title once the
/// decoded media time reaches it.
fn decode(reader: FeedReader, hint: &str, titles: &Titles, tx: &PcmSender) -> Result<(), String> {
    let mut dec = Decoder::from_reader(Box::new(reader), Some(hint)).map_err(|e| e.to_string())?;
    let mut at = Duration::ZERO;
    while let Some(pcm) = dec.next_block().map_err(|e| e.to_string())? {
        let end = at + pcm.duration();
        loop {
            let due = {
                let mut t = titles.lock().unwrap_or_else(|p| p.into_inner());
                match t.front() {
                    Some((when, _)) if *when < end => t.pop_front(),
                    _ => None,
                }
            };
            let Some((_, meta)) = due else { break };
            if tx.send(Message::Title(meta)).is_err() {
                return Ok(());
            }
        }
        if tx.send(Message::Pcm(pcm)).is_err() {
            return Ok(());
        }
        at = end;
    }
    Ok(())
}

/// A blocking `Read` over the chunks the reader task sends; EOF when it closes the channel.
struct FeedReader {
    rx: mpsc::Receiver<Bytes>,
    buf: Bytes,
}

impl Read for FeedReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.buf = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}
