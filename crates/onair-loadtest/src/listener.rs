//! One simulated listener: connect (optionally from a chosen local address), send the
//! hand-written `GET`, parse the response head, then read the body until told to stop,
//! counting audio bytes, ICY metadata blocks and stalls.
//!
//! Invariants:
//! - every phase is bounded in time: the connect, and the response head up to the first
//!   body byte, by [`SETUP_TIMEOUT`] each; the body by the stop signal;
//! - no allocation per read and no per-listener read buffer: reads go into one buffer per
//!   runtime worker thread, so a listener holds only its socket, a few counters and (with
//!   metadata) a de-interleaver;
//! - the coordinator sees live progress only through the listener's [`Slot`] (atomics); the
//!   rest of the outcome is returned when the task ends.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use onair_proto::icy::Deinterleaver;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::host::set_recv_low_watermark;
use crate::response::{parse_response_head, ResponseHead};

/// Limit for the TCP connect, and separately for sending the request and receiving the
/// response head and the first body byte.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A gap longer than this between two reads of body bytes is a stall. (With a receive
/// low-water mark, a stream arriving at less than one batch per this time counts too.)
pub const STALL_AFTER: Duration = Duration::from_secs(2);
/// Size of the per-worker-thread read buffer.
const READ_BUF_LEN: usize = 64 * 1024;
/// A response head longer than this is treated as invalid.
const MAX_HEAD_LEN: usize = 16 * 1024;
/// Full-buffer reads per wake-up before yielding back to the scheduler (fairness).
const READS_PER_WAKE: usize = 4;

thread_local! {
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF_LEN].into_boxed_slice());
}

/// What every listener connects to and sends.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub request: Vec<u8>,
    /// De-interleave ICY metadata (the request asked for it).
    pub metadata: bool,
    /// Receive low-water mark once the stream flows (`SO_RCVLOWAT`): the listener is woken
    /// only when this many bytes are queued. `None`: woken for every segment.
    pub read_batch: Option<u32>,
}

/// State shared by the coordinator and all listener tasks.
#[derive(Debug)]
pub struct Shared {
    pub target: Target,
    /// Time zero for [`Slot::last_byte_ms`].
    pub epoch: Instant,
    pub slots: Box<[Slot]>,
    /// True during the hold window: listeners then note their reads in [`Outcome::window`].
    pub hold_active: AtomicBool,
}

impl Shared {
    /// Milliseconds since [`Shared::epoch`].
    pub fn ms_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }
}

/// Where a listener is in its life, as seen by the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    NotStarted = 0,
    Setup = 1,
    Streaming = 2,
    Ended = 3,
}

/// A listener's live counters, readable by the coordinator at any time.
#[derive(Debug)]
pub struct Slot {
    phase: AtomicU8,
    audio_bytes: AtomicU64,
    /// Milliseconds since the epoch of the last body byte; `NO_BYTE` before the first.
    last_byte_ms: AtomicU64,
}

const NO_BYTE: u64 = u64::MAX;

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            phase: AtomicU8::new(Phase::NotStarted as u8),
            audio_bytes: AtomicU64::new(0),
            last_byte_ms: AtomicU64::new(NO_BYTE),
        }
    }
}

/// A point-in-time copy of a [`Slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSnapshot {
    pub phase: Phase,
    pub audio_bytes: u64,
    pub last_byte_ms: Option<u64>,
}

impl Slot {
    pub fn snapshot(&self) -> SlotSnapshot {
        let phase = match self.phase.load(Ordering::Relaxed) {
            0 => Phase::NotStarted,
            1 => Phase::Setup,
            2 => Phase::Streaming,
            _ => Phase::Ended,
        };
        let last = self.last_byte_ms.load(Ordering::Relaxed);
        SlotSnapshot {
            phase,
            audio_bytes: self.audio_bytes.load(Ordering::Relaxed),
            last_byte_ms: (last != NO_BYTE).then_some(last),
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }
}

/// Why a listener did not connect or did not last until the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Creating or binding the local socket failed (e.g. out of file descriptors or ports).
    Socket(String),
    Refused,
    ConnectTimeout,
    Connect(String),
    HeadTimeout,
    /// A 200 head but no body byte within [`SETUP_TIMEOUT`].
    FirstByteTimeout,
    /// The response head was unparsable or too long.
    BadHead,
    /// A response other than 200.
    Status(u16),
    /// The server closed the connection before the end of the response head.
    ClosedBeforeHead,
    /// The server closed the connection while streaming, before the end of the run.
    ClosedEarly,
    /// A read or write error other than a clean close (e.g. reset by peer).
    Io(String),
    /// The run ended while the listener was still connecting.
    SetupUnfinished,
}

impl Failure {
    /// A short, stable category name for reports.
    pub fn category(&self) -> String {
        match self {
            Failure::Socket(e) => format!("socket: {e}"),
            Failure::Refused => "refused".to_string(),
            Failure::ConnectTimeout => "connect_timeout".to_string(),
            Failure::Connect(e) => format!("connect: {e}"),
            Failure::HeadTimeout => "head_timeout".to_string(),
            Failure::FirstByteTimeout => "first_byte_timeout".to_string(),
            Failure::BadHead => "bad_head".to_string(),
            Failure::Status(s) => format!("status_{s}"),
            Failure::ClosedBeforeHead => "closed_before_head".to_string(),
            Failure::ClosedEarly => "closed_early".to_string(),
            Failure::Io(e) => format!("io: {e}"),
            Failure::SetupUnfinished => "setup_unfinished".to_string(),
        }
    }
}

/// ICY metadata blocks seen by one listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaCounts {
    pub blocks: u64,
    pub non_empty: u64,
    /// Non-empty blocks without a `StreamTitle='` field: what a misaligned de-interleave
    /// (wrong metaint, lost bytes) produces.
    pub parse_errors: u64,
}

impl MetaCounts {
    fn record(&mut self, payload: &[u8]) {
        self.blocks += 1;
        if !payload.is_empty() {
            self.non_empty += 1;
            if !payload.windows(13).any(|w| w == b"StreamTitle='") {
                self.parse_errors += 1;
            }
        }
    }
}

/// A listener's first and last read inside the hold window: (time, audio bytes received so
/// far) after each.
///
/// Each read drains the socket, so the bytes between the two reads are exactly what arrived
/// between them: the rate is exact whatever the read batching, unlike counters sampled at
/// fixed instants (which miss whatever is still queued in the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSpan {
    pub first: (Instant, u64),
    pub last: (Instant, u64),
}

impl ReadSpan {
    pub fn duration(&self) -> Duration {
        self.last.0.saturating_duration_since(self.first.0)
    }

    /// Audio bitrate between the two reads, kbit/s; `None` if they coincide.
    pub fn kbps(&self) -> Option<f64> {
        let secs = self.duration().as_secs_f64();
        let bytes = self.last.1.saturating_sub(self.first.1);
        (secs > 0.0).then(|| bytes as f64 * 8.0 / secs / 1000.0)
    }
}

/// Everything one listener measured, returned when its task ends.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// A 200 response head was received.
    pub connected: bool,
    /// From the start of the connect to the first body byte.
    pub ttfb: Option<Duration>,
    /// Set when the listener failed to connect or was cut off before the end.
    pub failure: Option<Failure>,
    /// Gaps of more than [`STALL_AFTER`] after the first body byte (including one still
    /// open when the run ended).
    pub stalls: u32,
    pub body_bytes: u64,
    pub audio_bytes: u64,
    pub meta: MetaCounts,
    /// Metadata was requested but the response had no `icy-metaint`.
    pub missing_metaint: bool,
    /// Reads during the hold window, for the received bitrate.
    pub window: Option<ReadSpan>,
}

/// Runs one listener until it fails or `stop` turns true. `permit` (bounding concurrent
/// connects) is released when setup ends: at the first body byte, or on failure.
pub async fn run(
    shared: Arc<Shared>,
    index: usize,
    bind: Option<IpAddr>,
    mut stop: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) -> Outcome {
    let slot = &shared.slots[index];
    slot.set_phase(Phase::Setup);
    let started = Instant::now();
    let mut outcome = Outcome::default();

    let setup = tokio::select! {
        biased;
        _ = stop.wait_for(|&s| s) => Err(Failure::SetupUnfinished),
        r = setup(&shared.target, bind) => r,
    };
    drop(permit);
    let (mut stream, head, first_bytes) = match setup {
        Ok(ok) => ok,
        Err(failure) => {
            outcome.failure = Some(failure);
            slot.set_phase(Phase::Ended);
            return outcome;
        }
    };
    if head.status != 200 {
        outcome.failure = Some(Failure::Status(head.status));
        slot.set_phase(Phase::Ended);
        return outcome;
    }
    outcome.connected = true;
    slot.set_phase(Phase::Streaming);

    let deinterleaver = match (shared.target.metadata, head.metaint) {
        (true, Some(metaint)) => Some(Deinterleaver::new(metaint)),
        (true, None) => {
            outcome.missing_metaint = true;
            None
        }
        (false, _) => None,
    };
    let mut body = Body {
        shared: &shared,
        slot,
        started,
        last_byte: None,
        deinterleaver,
        outcome,
    };
    body.on_bytes(&first_bytes, Instant::now());
    drop(first_bytes);

    // Reading each segment as it arrives would cost an epoll event, a wake-up, a `recv` and
    // (from inside the `recv`) an ACK per server write: about as much CPU as the server spends
    // sending it. With a low-water mark the kernel wakes the listener once per batch, like a
    // player with a buffer. The server's side is unchanged: the kernel still receives and
    // ACKs every segment at once. (TTFB is measured before this is set.)
    if let Some(batch) = shared.target.read_batch {
        if let Err(e) = set_recv_low_watermark(&stream, batch) {
            body.outcome.failure = Some(Failure::Socket(format!("SO_RCVLOWAT: {e}")));
        }
    }
    // Both futures live for the whole body phase, so a wake-up costs one read and no
    // re-registration with the stop signal.
    let end = tokio::select! {
        biased;
        _ = stop.wait_for(|&s| s) => None,
        failure = std::future::poll_fn(|cx| body.poll_stream(&mut stream, cx)) => Some(failure),
    };
    if end.is_none() {
        // Closing first with a reset keeps tens of thousands of TIME_WAIT sockets (and their
        // local ports) from piling up between back-to-back runs.
        let _ = stream.set_zero_linger();
    }
    drop(stream);
    body.finish(Instant::now(), end)
}

/// Connects, sends the request and reads the response head — for a 200, up to the first body
/// byte. Returns the stream, the parsed head and the body bytes received so far.
async fn setup(
    target: &Target,
    bind: Option<IpAddr>,
) -> Result<(TcpStream, ResponseHead, Vec<u8>), Failure> {
    let mut stream = connect(target.addr, bind).await?;
    let mut head_seen = false;
    let exchange = exchange_head(&mut stream, &target.request, &mut head_seen);
    match tokio::time::timeout(SETUP_TIMEOUT, exchange).await {
        Ok(Ok((head, body))) => Ok((stream, head, body)),
        Ok(Err(failure)) => Err(failure),
        Err(_) if head_seen => Err(Failure::FirstByteTimeout),
        Err(_) => Err(Failure::HeadTimeout),
    }
}

async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> Result<TcpStream, Failure> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| Failure::Socket(e.to_string()))?;
    if let Some(ip) = bind {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| Failure::Socket(format!("bind {ip}: {e}")))?;
    }
    match tokio::time::timeout(SETUP_TIMEOUT, socket.connect(addr)).await {
        Err(_) => Err(Failure::ConnectTimeout),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err(Failure::Refused),
        Ok(Err(e)) => Err(Failure::Connect(e.to_string())),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Sends `request` and reads until the response head has been parsed and, for a 200, at
/// least one body byte has arrived. Sets `head_seen` once the head is parsed.
async fn exchange_head(
    stream: &mut TcpStream,
    request: &[u8],
    head_seen: &mut bool,
) -> Result<(ResponseHead, Vec<u8>), Failure> {
    stream
        .write_all(request)
        .await
        .map_err(|e| Failure::Io(e.to_string()))?;
    let mut received = Vec::new();
    let mut parsed: Option<ResponseHead> = None;
    loop {
        let n = std::future::poll_fn(|cx| {
            READ_BUF.with_borrow_mut(|buf| {
                let mut read = ReadBuf::new(buf);
                match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        received.extend_from_slice(read.filled());
                        Poll::Ready(Ok(read.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
        })
        .await;
        match n {
            Ok(0) if parsed.is_some() => return Err(Failure::ClosedEarly),
            Ok(0) => return Err(Failure::ClosedBeforeHead),
            Ok(_) => {}
            Err(e) => return Err(Failure::Io(e.to_string())),
        }
        if let Some(head) = parsed.take() {
            return Ok((head, received));
        }
        match parse_response_head(&received) {
            Ok(Some((head, len))) => {
                received.drain(..len);
                if head.status != 200 || !received.is_empty() {
                    return Ok((head, received));
                }
                *head_seen = true;
                parsed = Some(head);
            }
            Ok(None) if received.len() > MAX_HEAD_LEN => return Err(Failure::BadHead),
            Ok(None) => {}
            Err(_) => return Err(Failure::BadHead),
        }
    }
}

/// Per-listener body accounting while streaming.
struct Body<'a> {
    shared: &'a Shared,
    slot: &'a Slot,
    started: Instant,
    last_byte: Option<Instant>,
    deinterleaver: Option<Deinterleaver>,
    outcome: Outcome,
}

impl Body<'_> {
    fn on_bytes(&mut self, bytes: &[u8], now: Instant) {
        match self.last_byte {
            Some(last) if now.saturating_duration_since(last) > STALL_AFTER => {
                self.outcome.stalls += 1;
            }
            Some(_) => {}
            None => self.outcome.ttfb = Some(now.saturating_duration_since(self.started)),
        }
        self.last_byte = Some(now);
        self.outcome.body_bytes += bytes.len() as u64;
        let audio = match &mut self.deinterleaver {
            Some(de) => {
                let mut audio = 0u64;
                let meta = &mut self.outcome.meta;
                de.push(bytes, |a| audio += a.len() as u64, |m| meta.record(m));
                audio
            }
            None => bytes.len() as u64,
        };
        self.outcome.audio_bytes += audio;
        if self.shared.hold_active.load(Ordering::Relaxed) {
            let read = (now, self.outcome.audio_bytes);
            match &mut self.outcome.window {
                Some(span) => span.last = read,
                None => {
                    self.outcome.window = Some(ReadSpan {
                        first: read,
                        last: read,
                    })
                }
            }
        }
        self.slot.audio_bytes.fetch_add(audio, Ordering::Relaxed);
        self.slot
            .last_byte_ms
            .store(self.shared.ms_since_epoch(now), Ordering::Relaxed);
    }

    /// Reads whatever is ready (at most [`READS_PER_WAKE`] full buffers per wake-up, for
    /// fairness) into the worker thread's buffer and accounts for it. Completes only when the
    /// stream ends: with the reason.
    fn poll_stream(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Failure> {
        READ_BUF.with_borrow_mut(|buf| {
            for _ in 0..READS_PER_WAKE {
                let mut read = ReadBuf::new(buf);
                // A short read clears the readiness, so the next poll costs no syscall until
                // the kernel reports more data.
                match Pin::new(&mut *stream).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if read.filled().is_empty() => {
                        return Poll::Ready(Failure::ClosedEarly);
                    }
                    Poll::Ready(Ok(())) => self.on_bytes(read.filled(), Instant::now()),
                    Poll::Ready(Err(e)) => return Poll::Ready(Failure::Io(e.to_string())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    fn finish(mut self, now: Instant, failure: Option<Failure>) -> Outcome {
        if let Some(last) = self.last_byte {
            if now.saturating_duration_since(last) > STALL_AFTER {
                self.outcome.stalls += 1;
            }
        }
        if failure.is_some() {
            self.outcome.failure = failure;
        }
        self.slot.set_phase(Phase::Ended);
        self.outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_counting() {
        let mut m = MetaCounts::default();
        m.record(b"");
        m.record(b"StreamTitle='a';");
        m.record(b"StreamUrl='x';StreamTitle='b';");
        m.record(b"\x13\x88garbage");
        assert_eq!(
            m,
            MetaCounts {
                blocks: 4,
                non_empty: 3,
                parse_errors: 1
            }
        );
    }

    #[test]
    fn read_span_rate() {
        let t0 = Instant::now();
        let span = ReadSpan {
            first: (t0, 1_000),
            last: (t0 + Duration::from_secs(10), 161_000),
        };
        assert_eq!(span.kbps(), Some(128.0));
        let empty = ReadSpan {
            first: (t0, 5),
            last: (t0, 5),
        };
        assert_eq!(empty.kbps(), None);
    }

    #[test]
    fn failure_categories() {
        assert_eq!(Failure::Status(403).category(), "status_403");
        assert_eq!(Failure::Refused.category(), "refused");
        assert_eq!(Failure::ClosedEarly.category(), "closed_early");
    }

    #[test]
    fn slot_snapshot() {
        let slot = Slot::default();
        assert_eq!(
            slot.snapshot(),
            SlotSnapshot {
                phase: Phase::NotStarted,
                audio_bytes: 0,
                last_byte_ms: None
            }
        );
        slot.set_phase(Phase::Streaming);
        slot.audio_bytes.fetch_add(10, Ordering::Relaxed);
        slot.last_byte_ms.store(5, Ordering::Relaxed);
        assert_eq!(
            slot.snapshot(),
            SlotSnapshot {
                phase: Phase::Streaming,
                audio_bytes: 10,
                last_byte_ms: Some(5)
            }
        );
    }
}
