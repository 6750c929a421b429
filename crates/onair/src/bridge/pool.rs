//! Bridge media workers: a few std threads that run the media side of every bridge — the
//! negotiated WebRTC session ([`Media`](crate::input::whep::media::Media): str0m and its UDP socket) and the decode
//! stage ([`Stage`]: jitter buffer, codec, resampler) — and hand its audio on, cut into
//! WebSocket chunks and, for a bridge with a mount, as full-rate PCM for the mount's encoder.
//!
//! Why shared workers on a tick rather than tasks and threads woken per packet: decoding a
//! 20 ms Opus packet takes tens of µs, but waking the session task for it, then a decode
//! thread, then the WebSocket task for every 20 ms block cost more than the decoding (the
//! profile of 100 bridges: ~30 % of their CPU went to wake-ups). A worker wakes every
//! [`TICK`], reads every member's socket without waiting, decodes what arrived and passes on
//! only whole chunks, so a WebSocket task wakes once per chunk (100 ms by default).
//! docs/BENCHMARKS.md ("WHEP bridge at 100 streams") has the figures.
//!
//! Invariants:
//! - Packets read in one tick carry that tick's arrival time; the jitter buffer's delay
//!   (60 ms) is several ticks, so batching changes no reorder or loss decision, and adds at
//!   most one tick to the latency, well under a chunk.
//! - A worker never waits on a member's consumers: a full queue drops (and counts) the
//!   chunk, so one stuck consumer cannot delay other bridges.
//! - A member ends when its link sender is dropped (its WHEP driver ended) and no session
//!   is running: the stage is flushed, the last partial chunk sent, the encoder told `End`,
//!   and its senders dropped, which ends the WebSocket task. A session ends (its `done`
//!   answered) on failure, on its token, or when a newer one arrives.
//! - A worker with no members sleeps on its command channel instead of ticking.
//! - A panic while stepping one member drops that member only (logged); the others go on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;

use super::Stats;
use crate::input::encoder::{Message, PcmSender};
use crate::input::whep::decode::{Block, Inbound, Stage};
use crate::input::whep::media::Link;
use crate::input::whep::WhepError;
use crate::output::ws_pcm::{Chunk, Chunker};

/// How often a worker steps its members.
pub const TICK: Duration = Duration::from_millis(10);
/// Workers at most (fewer on a one-core machine). One keeps up with 100 bridges at a
/// fraction of a core; the second is headroom for mount bridges, which decode at 48 kHz.
const MAX_WORKERS: usize = 2;
/// Dropped chunks or mount blocks are logged at most this often per bridge.
const DROP_LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot start a bridge decode worker: {0}")]
pub struct PoolError(std::io::Error);

/// Where a member's WebSocket chunks go.
pub struct WsSink {
    pub chunker: Chunker,
    pub tx: tokio::sync::mpsc::Sender<Chunk>,
}

/// One bridge's decode stage and its consumers.
pub struct Member {
    pub stage: Stage,
    /// Negotiated sessions from the bridge's WHEP driver, one at a time.
    pub links: Receiver<Link>,
    pub ws: Option<WsSink>,
    /// The mount's encoder; the stage must have a tap ([`Stage::with_tap`]).
    pub encoder: Option<PcmSender>,
    pub stats: Arc<Stats>,
    /// The bridge's span (trace and stream ids) for the worker's log lines.
    pub span: tracing::Span,
    /// Stops the whole bridge: used when its only output, the mount, went away.
    pub stop: tokio_util::sync::CancellationToken,
}

/// Reused buffers of one worker.
#[derive(Default)]
struct Scratch {
    blocks: Vec<Block>,
    chunks: Vec<Chunk>,
}

struct Running {
    member: Member,
    /// The session whose media is running.
    link: Option<Link>,
    last_drop_log: Option<Instant>,
}

impl Running {
    /// Read, decode and pass on what arrived since the last tick; false once the member
    /// has ended.
    fn step(&mut self, now: Instant, scratch: &mut Scratch) -> bool {
        let mut driver_gone = false;
        loop {
            match self.member.links.try_recv() {
                Ok(link) => {
                    self.end_link(Ok(()));
                    self.member
                        .stage
                        .handle(Inbound::Session, now, &mut scratch.blocks);
                    self.link = Some(link);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    driver_gone = true;
                    break;
                }
            }
        }
        let m = &mut self.member;
        if let Some(link) = &mut self.link {
            let outcome = if link.cancel.is_cancelled() {
                Some(Ok(()))
            } else {
                let _span = m.span.enter();
                link.media.step(now, &mut m.stage, &mut scratch.blocks)
            };
            if let Some(result) = outcome {
                self.end_link(result);
            }
        }
        let m = &mut self.member;
        m.stage.poll(now, &mut scratch.blocks);
        let ended = driver_gone && self.link.is_none();
        if ended {
            m.stage.finish(&mut scratch.blocks);
        }
        self.deliver(scratch, ended, now);
        !ended
    }

    /// Close the running session, if any, and tell its driver why it ended.
    fn end_link(&mut self, result: Result<(), WhepError>) {
        if let Some(link) = self.link.take() {
            let _span = self.member.span.enter();
            link.media.close();
            let _ = link.done.send(result);
        }
    }

    fn deliver(&mut self, scratch: &mut Scratch, ended: bool, now: Instant) {
        let m = &mut self.member;
        let mut dropped = false;
        if let Some(encoder) = &m.encoder {
            let mut closed = false;
            for pcm in m.stage.take_tap() {
                match encoder.try_send(Message::Pcm(pcm)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        m.stats.mount_dropped.fetch_add(1, Ordering::Relaxed);
                        dropped = true;
                    }
                    Err(TrySendError::Closed(_)) => closed = true,
                }
            }
            if ended {
                let _ = encoder.try_send(Message::End);
            }
            if closed {
                let _span = m.span.enter();
                m.encoder = None;
                if m.ws.is_none() {
                    // Like any source client that is kicked: the bridge ends.
                    tracing::warn!("the mount's encoder stopped (source killed?): bridge stops");
                    m.stop.cancel();
                } else {
                    tracing::warn!(
                        "the mount's encoder stopped (source killed?): mount feed ended"
                    );
                }
            }
        }
        match &mut m.ws {
            Some(ws) => {
                for block in scratch.blocks.drain(..) {
                    ws.chunker.push(block, &mut scratch.chunks);
                }
                if ended {
                    ws.chunker.finish(&mut scratch.chunks);
                }
                for chunk in scratch.chunks.drain(..) {
                    match ws.tx.try_send(chunk) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            m.stats.ws_dropped.fetch_add(1, Ordering::Relaxed);
                            dropped = true;
                        }
                        // The WebSocket task ended (it gave up draining): nothing to do.
                        Err(TrySendError::Closed(_)) => {}
                    }
                }
            }
            None => scratch.blocks.clear(),
        }
        if dropped && self.last_drop_log.is_none_or(|t| now - t >= DROP_LOG_EVERY) {
            self.last_drop_log = Some(now);
            let _span = m.span.enter();
            let s = m.stats.snapshot();
            tracing::warn!(
                ws_dropped = s.messages_dropped,
                mount_dropped = s.mount_dropped,
                "a consumer is not keeping up: audio dropped"
            );
        }
    }
}

fn work(commands: Receiver<Member>, load: Arc<AtomicUsize>) {
    let mut members: Vec<Running> = Vec::new();
    let mut scratch = Scratch::default();
    let mut next = Instant::now();
    let admit = |m: Member| Running {
        member: m,
        link: None,
        last_drop_log: None,
    };
    loop {
        if members.is_empty() {
            match commands.recv() {
                Ok(m) => members.push(admit(m)),
                Err(_) => return,
            }
            next = Instant::now();
        }
        while let Ok(m) = commands.try_recv() {
            members.push(admit(m));
        }
        let now = Instant::now();
        members.retain_mut(|m| {
            // A bug in one bridge must not take the others down: it alone is dropped (its
            // driver then sees the worker gone and the bridge fails with that reason).
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                m.step(now, &mut scratch)
            }));
            stepped.unwrap_or_else(|_| {
                let _span = m.member.span.enter();
                tracing::error!("bridge media step panicked: bridge dropped");
                scratch.blocks.clear();
                scratch.chunks.clear();
                false
            })
        });
        load.store(members.len(), Ordering::Relaxed);
        next += TICK;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            // Behind (an overloaded machine): go on at once, without a burst of catch-up.
            None => next = Instant::now(),
        }
    }
}

struct Worker {
    commands: mpsc::Sender<Member>,
    /// Members it runs (published each tick; the sender adds one on assignment).
    load: Arc<AtomicUsize>,
}

/// The process's decode workers, started on first use.
pub struct Pool {
    workers: Mutex<Vec<Worker>>,
    max: usize,
}

impl Pool {
    /// The pool every bridge of this process uses.
    pub fn global() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Pool {
                workers: Mutex::new(Vec::new()),
                max: cores.clamp(1, MAX_WORKERS),
            }
        })
    }

    /// Run `member` on the least loaded worker (starting one if fewer than the maximum run).
    pub fn add(&self, member: Member) -> Result<(), PoolError> {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let mut member = member;
        loop {
            let idle = workers
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.load.load(Ordering::Relaxed))
                .map(|(i, w)| (i, w.load.load(Ordering::Relaxed)));
            let index = match idle {
                Some((i, 0)) => i,
                Some((i, _)) if workers.len() >= self.max => i,
                _ => {
                    let worker = spawn_worker(workers.len())?;
                    workers.push(worker);
                    workers.len() - 1
                }
            };
            let worker = &workers[index];
            match worker.commands.send(member) {
                Ok(()) => {
                    worker.load.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                // Its thread is gone (a panic): replace it and try again.
                Err(mpsc::SendError(back)) => {
                    tracing::error!("a bridge decode worker died; starting a new one");
                    member = back;
                    workers.remove(index);
                }
            }
        }
    }
}

fn spawn_worker(n: usize) -> Result<Worker, PoolError> {
    let (commands, rx) = mpsc::channel();
    let load = Arc::new(AtomicUsize::new(0));
    let published = load.clone();
    std::thread::Builder::new()
        .name(format!("bridge-decode-{n}"))
        .spawn(move || work(rx, published))
        .map_err(PoolError)?;
    Ok(Worker { commands, load })
}
