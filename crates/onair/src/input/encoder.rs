//! The encoder input: the one "PCM → mount" pipeline. AutoDJ, raw PCM sources, transcoded
//! mounts, the demo station and bridges hand it [`Pcm`] blocks of any rate and channel
//! count; a dedicated std thread resamples them to the encoder's format, encodes them
//! (MP3 or Ogg/Opus, `onair_media::encode`), cuts the bitstream into whole frames/pages
//! and ingests them into its mount at real-time speed.
//!
//! # Use
//!
//! ```ignore
//! let opts = EncoderOptions::new(EncoderSettings { codec: Codec::Mp3, bitrate_kbps: 128,
//!     vbr: false, rate: 44_100, channels: 2 }, "my generator");
//! // Claims `mount` (attach_source) and starts the thread; needs a tokio runtime context.
//! let (tx, task) = encoder::start(mount, opts, station.supervisor.token().clone())?;
//! tx.send(Message::Title(StreamMeta { title: "Artist - Song".into(), url: None }))?; // blocking
//! tx.send(Message::Pcm(pcm))?;            // from a std thread: blocks while the queue is full
//! tx.send_async(Message::End).await?;     // from async code: awaits instead of blocking
//! let why = task.finished().await;        // Ok(Stop::...) or Err(EncoderError)
//! ```
//!
//! A caller that already holds a claim (a network source: `Registry::attach_source` did the
//! `max_sources` check) uses [`spawn`] instead of [`start`].
//!
//! # Behaviour
//!
//! - **Backpressure**: the channel holds [`EncoderOptions::queue`] messages (default 8).
//!   [`PcmSender::send`] blocks and [`PcmSender::send_async`] awaits while it is full, so a
//!   producer faster than real time is slowed to real time. Producers should send blocks of
//!   at most ~100 ms: the queue bounds messages, not samples.
//! - **Pacing**: output is released on `onair_proto::pace::Pacer` deadlines from the
//!   encoded frames' own sample counts, at most [`LEAD`] (1 s) ahead of real time.
//! - **Stalls**: a producer that stalls is not caught up with a burst: when data resumes
//!   more than [`MAX_BEHIND`] late the pacer re-anchors (`resync_if_late`). Nothing is sent
//!   meanwhile (pending audio is flushed to listeners after [`IDLE_FLUSH`]), unless
//!   [`EncoderOptions::silence_fill`] is set: then silence is encoded whenever no PCM has
//!   arrived 150 ms after the mount ran dry, so listeners never starve (producers using it
//!   should send blocks of at most 100 ms, or their own jitter becomes silence).
//! - **Titles**: `Title` applies at the stream byte where the title's first sample lands.
//!   MP3: the sample position (input so far, including what the resampler holds) is shifted
//!   by LAME's delay ([`MP3_DELAY`] samples: 576 encoder + 529 decoder), and the title is
//!   set just before the first frame whose samples reach that position. Opus: the encoder
//!   closes the chain link at that sample and the new link's OpusTags carry the title; the
//!   mount's title is set at the new link's first page. (The resampler's few-ms filter
//!   delay is not accounted for with Opus.)
//! - **Stop**: on `End` (the codec delay is drained and the last frames/EOS page are sent),
//!   the supervisor token, a kill/takeover of the mount, or every sender being dropped. The
//!   thread detaches its source and logs why.
//!
//! The thread waits through a handle to the tokio runtime it was started from, so the
//! runtime must outlive it: stop encoders (token, `End`) before dropping the runtime, as the
//! supervisor's shutdown does.
//!
//! Invariants: only whole frames/pages reach the mount; nothing codec-related runs on the
//! async executor (the thread only uses the runtime handle to wait on the channel, timers
//! and tokens); memory is bounded by the queue plus one encoder frame.

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use onair_media::{
    encode::{new_encoder, Codec, EncodeError, Encoder, EncoderSettings},
    pcm::Pcm,
    resample::{ResampleError, Resampler},
};
use onair_proto::{
    frame::{Format, Framer, Unit, UnitKind},
    icecast::StreamInfoHeaders,
    icy::StreamMeta,
    pace::Pacer,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::mount::{registry::AttachError, Mount, SourceClaim, SourceInfo};

/// How far ahead of real time encoded audio may be handed to the mount.
pub const LEAD: Duration = Duration::from_secs(1);
/// Data arriving later than this behind its real-time slot re-anchors the pacer.
pub const MAX_BEHIND: Duration = Duration::from_millis(250);
/// With no message for this long, pending audio is published.
pub const IDLE_FLUSH: Duration = Duration::from_millis(100);
/// LAME's delay from an input sample to the same sample in decoded output (576 encoder
/// delay + 529 decoder delay), in samples at the encoder's rate.
pub const MP3_DELAY: u64 = 576 + 529;
/// Silence encoded per step when `silence_fill` is on.
const SILENCE_STEP: Duration = Duration::from_millis(100);
/// Most titles waiting for their first sample to be encoded; beyond that the oldest is
/// applied at once.
const MAX_PENDING_TITLES: usize = 16;

/// What producers send.
#[derive(Debug, Clone)]
pub enum Message {
    /// Audio at any rate/channel count (resampled to the encoder's). Whole sample frames:
    /// a trailing partial frame is dropped.
    Pcm(Pcm),
    /// Title from the next sample on.
    Title(StreamMeta),
    /// End of stream: drain, send the last frames, detach.
    End,
}

#[derive(Debug, Error)]
pub enum EncoderError {
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("cannot resample {from_rate} Hz/{from_channels} ch input: {source}")]
    Resample {
        from_rate: u32,
        from_channels: u16,
        source: ResampleError,
    },
    #[error("cannot claim the mount: {0}")]
    Attach(#[from] AttachError),
    #[error("the encoder input needs a tokio runtime (start it from async code)")]
    NoRuntime,
    #[error("cannot start the encoder thread: {0}")]
    Spawn(std::io::Error),
    #[error("the encoder thread panicked")]
    Panicked,
}

/// The encoder stopped; every later send fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the encoder input has stopped")]
pub struct Closed;

/// Why an encoder input ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The producer sent `End`.
    End,
    /// Every [`PcmSender`] was dropped.
    SendersGone,
    /// The supervisor token was cancelled.
    Shutdown,
    /// The mount's source was killed or taken over by another source.
    Replaced,
}

impl Stop {
    pub fn describe(self) -> &'static str {
        match self {
            Stop::End => "end of stream",
            Stop::SendersGone => "producer went away",
            Stop::Shutdown => "server shutting down",
            Stop::Replaced => "killed or taken over",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EncoderOptions {
    pub settings: EncoderSettings,
    /// Encode silence whenever the producer falls behind real time (default off).
    pub silence_fill: bool,
    /// Messages the channel holds before producers wait.
    pub queue: usize,
    /// Shown as the source's user agent in status pages ("onair demo", "transcoder of /x").
    pub description: String,
    /// Stream headers announced to listeners (icy-name, ...).
    pub headers: StreamInfoHeaders,
}

impl EncoderOptions {
    pub fn new(settings: EncoderSettings, description: impl Into<String>) -> EncoderOptions {
        EncoderOptions {
            settings,
            silence_fill: false,
            queue: 8,
            description: description.into(),
            headers: StreamInfoHeaders::default(),
        }
    }

    /// The `SourceInfo` a mount shows for this encoder.
    pub fn source_info(&self) -> SourceInfo {
        SourceInfo {
            content_type: self.settings.codec.content_type().to_string(),
            format: format_of(self.settings.codec),
            headers: self.headers.clone(),
            peer: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            user_agent: self.description.clone(),
            connected_at: SystemTime::now(),
        }
    }
}

/// The bitstream family an encoder produces.
pub fn format_of(codec: Codec) -> Format {
    match codec {
        Codec::Mp3 => Format::Mpeg,
        Codec::Opus => Format::Ogg,
    }
}

/// The producer's end of the channel (cheap to clone).
#[derive(Debug, Clone)]
pub struct PcmSender {
    tx: mpsc::Sender<Message>,
}

impl PcmSender {
    /// Blocks while the queue is full. Call from a std thread, never from async code
    /// (tokio panics if this blocks a runtime thread): use [`PcmSender::send_async`] there.
    pub fn send(&self, msg: Message) -> Result<(), Closed> {
        self.tx.blocking_send(msg).map_err(|_| Closed)
    }

    /// Awaits room in the queue.
    pub async fn send_async(&self, msg: Message) -> Result<(), Closed> {
        self.tx.send(msg).await.map_err(|_| Closed)
    }

    /// Never waits: a full queue gives the message back (`TrySendError::Full`), for
    /// producers that must not stall (a bridge decode worker serves many bridges).
    pub fn try_send(&self, msg: Message) -> Result<(), mpsc::error::TrySendError<Message>> {
        self.tx.try_send(msg)
    }

    /// Whether the encoder has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The running encoder thread.
#[derive(Debug)]
pub struct EncoderTask {
    done: oneshot::Receiver<Result<Stop, EncoderError>>,
}

impl EncoderTask {
    /// Waits for the thread to end: why it stopped, or the error that stopped it.
    pub async fn finished(self) -> Result<Stop, EncoderError> {
        self.done.await.unwrap_or(Err(EncoderError::Panicked))
    }

    /// Blocking variant of [`EncoderTask::finished`] (std threads only).
    pub fn wait(self) -> Result<Stop, EncoderError> {
        self.done
            .blocking_recv()
            .unwrap_or(Err(EncoderError::Panicked))
    }
}

/// Claims `mount` and starts encoding into it.
pub fn start(
    mount: Arc<Mount>,
    opts: EncoderOptions,
    token: CancellationToken,
) -> Result<(PcmSender, EncoderTask), EncoderError> {
    // Fail before claiming: bad settings must not leave a claimed, silent mount.
    new_encoder(&opts.settings)?;
    let claim = mount.attach_source(opts.source_info(), None)?;
    spawn(mount, claim, opts, token)
}

/// Starts encoding into `mount`, which `claim` already holds (its `SourceInfo` should come
/// from [`EncoderOptions::source_info`]). On error the claim is released.
pub fn spawn(
    mount: Arc<Mount>,
    claim: SourceClaim,
    opts: EncoderOptions,
    token: CancellationToken,
) -> Result<(PcmSender, EncoderTask), EncoderError> {
    let setup = (|| {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EncoderError::NoRuntime)?;
        let encoder = new_encoder(&opts.settings)?;
        Ok((handle, encoder))
    })();
    let (handle, encoder) = match setup {
        Ok(ok) => ok,
        Err(e) => {
            mount.detach_source(claim.ticket);
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel(opts.queue.max(1));
    let (done_tx, done) = oneshot::channel();
    let name = format!("encoder {}", mount.name);
    let ticket = claim.ticket;
    let mount2 = mount.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let mut pipeline = Pipeline::new(mount2, claim, opts, encoder, handle);
        let result = pipeline.run(rx, &token);
        pipeline.mount.detach_source(pipeline.claim.ticket);
        match &result {
            Ok(stop) => {
                tracing::info!(mount = %pipeline.mount.name, "encoder stopped: {}", stop.describe())
            }
            Err(e) => tracing::warn!(mount = %pipeline.mount.name, error = %e, "encoder failed"),
        }
        let _ = done_tx.send(result);
    });
    if let Err(e) = spawned {
        mount.detach_source(ticket);
        return Err(EncoderError::Spawn(e));
    }
    Ok((PcmSender { tx }, EncoderTask { done }))
}

/// A title waiting for its first sample to be encoded.
struct PendingTitle {
    /// Output sample position (encoder rate, codec delay included) where it starts.
    at: u64,
    meta: StreamMeta,
}

/// The input format last seen, and the resampler for it (`None`: already the encoder's).
struct InputFormat {
    rate: u32,
    channels: u16,
    resampler: Option<Resampler>,
}

struct Pipeline {
    mount: Arc<Mount>,
    claim: SourceClaim,
    opts: EncoderOptions,
    encoder: Box<dyn Encoder>,
    handle: tokio::runtime::Handle,
    framer: Framer,
    input: Option<InputFormat>,
    pacer: Option<Pacer>,
    /// Sample frames handed to the encoder.
    encoded_in: u64,
    /// Sample frames in the MP3 frames ingested so far.
    emitted: u64,
    titles: VecDeque<PendingTitle>,
    scratch: Vec<f32>,
    /// Encoder output not yet ingested (after `ingest`: less than one frame/page).
    out: Vec<u8>,
    units: Vec<Unit>,
    /// Nothing is pending in the mount since the last flush.
    flushed: bool,
}

enum Event {
    Msg(Option<Message>),
    Idle,
    Cancelled(Stop),
}

/// Silence fill starts this long after the mount ran out of audio (a producer running at
/// real time delivers each block a little after its slot; that must not count). Below
/// [`MAX_BEHIND`], so filled silence itself never counts as a stall and keeps real time.
const FILL_GRACE: Duration = Duration::from_millis(150);

impl Pipeline {
    fn new(
        mount: Arc<Mount>,
        claim: SourceClaim,
        opts: EncoderOptions,
        encoder: Box<dyn Encoder>,
        handle: tokio::runtime::Handle,
    ) -> Pipeline {
        Pipeline {
            framer: Framer::new(format_of(opts.settings.codec)),
            mount,
            claim,
            opts,
            encoder,
            handle,
            input: None,
            pacer: None,
            encoded_in: 0,
            emitted: 0,
            titles: VecDeque::new(),
            scratch: Vec::new(),
            out: Vec::new(),
            units: Vec::new(),
            flushed: true,
        }
    }

    fn run(
        &mut self,
        mut rx: mpsc::Receiver<Message>,
        token: &CancellationToken,
    ) -> Result<Stop, EncoderError> {
        let started = Instant::now();
        loop {
            let wait = self.idle_wait(started);
            let cancel = self.claim.cancel.clone();
            let event = self.handle.block_on(async {
                tokio::select! {
                    biased;
                    _ = token.cancelled() => Event::Cancelled(Stop::Shutdown),
                    _ = cancel.cancelled() => Event::Cancelled(Stop::Replaced),
                    m = rx.recv() => Event::Msg(m),
                    _ = tokio::time::sleep(wait) => Event::Idle,
                }
            });
            match event {
                Event::Cancelled(Stop::Replaced) => return Ok(Stop::Replaced),
                Event::Cancelled(stop) => return self.finish(stop),
                Event::Msg(None) => return self.finish(Stop::SendersGone),
                Event::Msg(Some(Message::End)) => return self.finish(Stop::End),
                Event::Msg(Some(Message::Pcm(pcm))) => self.push_pcm(&pcm)?,
                Event::Msg(Some(Message::Title(meta))) => self.push_title(meta)?,
                Event::Idle => {
                    if !self.flushed {
                        self.mount.flush();
                        self.flushed = true;
                    }
                    if self.opts.silence_fill && Instant::now() >= self.starve_at(started) {
                        self.push_silence()?;
                    }
                }
            }
            if !self.ingest() {
                return Ok(Stop::Replaced);
            }
            if let Some(stop) = self.wait_for_pacer(token) {
                return match stop {
                    Stop::Replaced => Ok(stop),
                    _ => self.finish(stop),
                };
            }
        }
    }

    /// When the mount would run dry without more audio (silence fill).
    fn starve_at(&self, started: Instant) -> Instant {
        match &self.pacer {
            Some(p) => p.deadline() + LEAD + FILL_GRACE,
            None => started + FILL_GRACE,
        }
    }

    /// How long to wait for a message before publishing (or filling silence).
    fn idle_wait(&self, started: Instant) -> Duration {
        if !self.opts.silence_fill {
            return IDLE_FLUSH;
        }
        let fill = self
            .starve_at(started)
            .saturating_duration_since(Instant::now());
        if self.flushed {
            fill
        } else {
            fill.min(IDLE_FLUSH)
        }
    }

    fn push_pcm(&mut self, pcm: &Pcm) -> Result<(), EncoderError> {
        if pcm.rate == 0 || pcm.channels == 0 || pcm.samples.is_empty() {
            return Ok(());
        }
        let same = self
            .input
            .as_ref()
            .is_some_and(|f| f.rate == pcm.rate && f.channels == pcm.channels);
        if !same {
            self.drain_resampler()?;
            let (rate, channels) = (self.encoder.rate(), self.encoder.channels());
            let resampler = if (pcm.rate, pcm.channels) == (rate, channels) {
                None
            } else {
                Some(
                    Resampler::new(pcm.rate, pcm.channels, rate, channels).map_err(|source| {
                        EncoderError::Resample {
                            from_rate: pcm.rate,
                            from_channels: pcm.channels,
                            source,
                        }
                    })?,
                )
            };
            self.input = Some(InputFormat {
                rate: pcm.rate,
                channels: pcm.channels,
                resampler,
            });
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let resampler = self.input.as_mut().and_then(|f| f.resampler.as_mut());
        let result = match resampler {
            Some(r) => {
                r.process(&pcm.samples, &mut buf);
                self.encode(&buf)
            }
            None => {
                // Whole sample frames only: a stray partial frame would fail the encoder.
                let whole = pcm.frames() * usize::from(pcm.channels);
                self.encode(&pcm.samples[..whole])
            }
        };
        self.scratch = buf;
        result
    }

    /// Emits what the current resampler still holds (input format change, end).
    fn drain_resampler(&mut self) -> Result<(), EncoderError> {
        let Some(r) = self.input.as_mut().and_then(|f| f.resampler.as_mut()) else {
            return Ok(());
        };
        let mut tail = Vec::new();
        r.flush(&mut tail);
        self.encode(&tail)
    }

    fn encode(&mut self, samples: &[f32]) -> Result<(), EncoderError> {
        if samples.is_empty() {
            return Ok(());
        }
        self.encoder.encode(samples, &mut self.out)?;
        self.encoded_in += (samples.len() / usize::from(self.encoder.channels().max(1))) as u64;
        Ok(())
    }

    fn push_silence(&mut self) -> Result<(), EncoderError> {
        let frames = u64::from(self.encoder.rate()) * SILENCE_STEP.as_millis() as u64 / 1000;
        let silence = vec![0.0; frames as usize * usize::from(self.encoder.channels())];
        self.encode(&silence)
    }

    fn push_title(&mut self, meta: StreamMeta) -> Result<(), EncoderError> {
        match self.opts.settings.codec {
            Codec::Opus => {
                // The encoder ends the chain link here; what it drains is the old title's.
                self.encoder.set_title(&meta.title, &mut self.out)?;
                self.ingest();
                self.mount.set_metadata(meta);
            }
            Codec::Mp3 => {
                let held = self
                    .input
                    .as_ref()
                    .and_then(|f| f.resampler.as_ref())
                    .map_or(0, |r| r.delay_frames() as u64);
                let at = self.encoded_in + held + MP3_DELAY;
                if self.titles.len() >= MAX_PENDING_TITLES {
                    if let Some(old) = self.titles.pop_front() {
                        self.mount.set_metadata(old.meta);
                    }
                }
                self.titles.push_back(PendingTitle { at, meta });
            }
        }
        Ok(())
    }

    /// Cuts the encoder output into units and ingests the whole ones, setting pending
    /// titles at their frame and advancing the pacer. Returns false if the mount was lost.
    fn ingest(&mut self) -> bool {
        self.units.clear();
        let mut used = 0;
        while let Some(unit) = self.framer.next_unit(&self.out[used..]) {
            used += unit.len;
            self.units.push(unit);
        }
        if used == 0 {
            return true;
        }
        let now = Instant::now();
        let pacer = self.pacer.get_or_insert_with(|| Pacer::new(now, LEAD));
        pacer.resync_if_late(now, MAX_BEHIND);
        let info = self.framer.stream_info();
        let (mut from, mut pos, mut first_unit) = (0usize, 0usize, 0usize);
        let mut ok = true;
        for (i, unit) in self.units.iter().enumerate() {
            if unit.kind == UnitKind::Audio && self.opts.settings.codec == Codec::Mp3 {
                let end = self.emitted + u64::from(unit.samples);
                while self.titles.front().is_some_and(|t| t.at < end) {
                    if pos > from {
                        ok &= self.mount.ingest(
                            self.claim.ticket,
                            &self.out[from..pos],
                            &self.units[first_unit..i],
                            info,
                        );
                        from = pos;
                        first_unit = i;
                    }
                    if let Some(t) = self.titles.pop_front() {
                        self.mount.set_metadata(t.meta);
                    }
                }
                self.emitted = end;
            }
            pacer.advance(u64::from(unit.samples), unit.sample_rate);
            pos += unit.len;
        }
        ok &= self.mount.ingest(
            self.claim.ticket,
            &self.out[from..used],
            &self.units[first_unit..],
            info,
        );
        self.out.drain(..used);
        self.flushed = false;
        ok
    }

    /// Sleeps until the pacer lets the next audio out; `Some` if told to stop meanwhile.
    fn wait_for_pacer(&self, token: &CancellationToken) -> Option<Stop> {
        let deadline = self.pacer.as_ref()?.deadline();
        if deadline <= Instant::now() {
            return None;
        }
        let cancel = self.claim.cancel.clone();
        self.handle.block_on(async {
            tokio::select! {
                biased;
                _ = token.cancelled() => Some(Stop::Shutdown),
                _ = cancel.cancelled() => Some(Stop::Replaced),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => None,
            }
        })
    }

    /// Drains the resampler and the codec, sends the last frames/EOS page.
    fn finish(&mut self, stop: Stop) -> Result<Stop, EncoderError> {
        self.drain_resampler()?;
        self.encoder.finish(&mut self.out)?;
        self.ingest();
        // Titles whose frames never came (the stream ended first) are dropped.
        self.titles.clear();
        Ok(stop)
    }
}
