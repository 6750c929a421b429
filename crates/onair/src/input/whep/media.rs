//! The media half of a WHEP session: the sans-IO str0m `Rtc` and its UDP socket, stepped by
//! a bridge decode worker ([`crate::bridge::pool`]) on its tick, with the RTP packets going
//! straight into the bridge's decode stage (no channel, no wake-up per packet).
//!
//! The async session driver ([`super::session`]) does the signaling, builds the `Rtc`,
//! and hands it over as a [`Link`]; it gets the session's outcome back on the link's
//! `done` channel, then DELETEs the session. Cancelling the link's token ends the media at
//! the next tick.
//!
//! Invariants:
//! - The socket is non-blocking: a step reads what has arrived (at most
//!   [`MAX_DATAGRAMS_PER_STEP`]) and never waits, so one bridge cannot hold up the others.
//! - The watchdogs of a live session (connect timeout, media timeout, ICE disconnected
//!   grace) are checked every step; whatever ends the media, `done` gets the reason.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::decode::{Block, Inbound, Stage};
use super::{codec_of, WhepError, CONNECT_TIMEOUT, DISCONNECTED_GRACE, MEDIA_TIMEOUT};
use crate::bridge::Stats;

/// Datagrams read per step at most (≈ 5 s of 20 ms packets): fairness between bridges.
const MAX_DATAGRAMS_PER_STEP: usize = 256;

/// A negotiated session handed to the worker.
pub struct Link {
    pub media: Media,
    /// Why the media ended (`Ok` when cancelled).
    pub done: oneshot::Sender<Result<(), WhepError>>,
    pub cancel: CancellationToken,
}

/// One session's `Rtc`, socket and watchdog state.
pub struct Media {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    stats: Arc<Stats>,
    answered: Instant,
    connected_at: Option<Instant>,
    last_media: Instant,
    disconnected_since: Option<Instant>,
    /// When str0m wants its next timeout.
    timeout: Instant,
    buf: Vec<u8>,
}

impl Media {
    /// `socket` must be non-blocking; `rtc` has accepted the answer.
    pub fn new(rtc: Rtc, socket: UdpSocket, stats: Arc<Stats>) -> Result<Media, WhepError> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        Ok(Media {
            rtc,
            socket,
            local,
            stats,
            answered: now,
            connected_at: None,
            last_media: now,
            disconnected_since: None,
            timeout: now,
            buf: vec![0u8; 2000],
        })
    }

    /// Read what arrived, run str0m's timers, feed RTP into `stage`. `Some` once the media
    /// has ended (failure, or the peer closed).
    pub fn step(
        &mut self,
        now: Instant,
        stage: &mut Stage,
        blocks: &mut Vec<Block>,
    ) -> Option<Result<(), WhepError>> {
        let result = self.pump(now, stage, blocks);
        match result {
            Ok(()) => self.watchdogs(Instant::now()).err().map(Err),
            Err(e) => Some(Err(e)),
        }
    }

    fn pump(
        &mut self,
        now: Instant,
        stage: &mut Stage,
        blocks: &mut Vec<Block>,
    ) -> Result<(), WhepError> {
        self.drain(stage, blocks)?;
        for _ in 0..MAX_DATAGRAMS_PER_STEP {
            let (n, source) = match self.socket.recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP port unreachable and the like: the watchdogs decide.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.into()),
            };
            let Ok(contents) = self.buf[..n].try_into() else {
                continue;
            };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.local,
                    contents,
                },
            );
            if self.rtc.accepts(&input) {
                self.rtc
                    .handle_input(input)
                    .map_err(|e| WhepError::Rtc(e.to_string()))?;
            }
            self.drain(stage, blocks)?;
        }
        if now >= self.timeout {
            self.rtc
                .handle_input(Input::Timeout(now))
                .map_err(|e| WhepError::Rtc(e.to_string()))?;
            self.drain(stage, blocks)?;
        }
        if !self.rtc.is_alive() {
            return Err(WhepError::Lost("peer connection closed".into()));
        }
        Ok(())
    }

    /// Everything str0m has to say until it asks for a timeout.
    fn drain(&mut self, stage: &mut Stage, blocks: &mut Vec<Block>) -> Result<(), WhepError> {
        loop {
            let out = self
                .rtc
                .poll_output()
                .map_err(|e| WhepError::Rtc(e.to_string()))?;
            match out {
                Output::Timeout(t) => {
                    self.timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) => {
                    // A lost datagram is what UDP is for; ICE and SRTP cope.
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Output::Event(event) => self.event(event, stage, blocks),
            }
        }
    }

    fn event(&mut self, event: Event, stage: &mut Stage, blocks: &mut Vec<Block>) {
        match event {
            Event::IceConnectionStateChange(state) => {
                tracing::info!(?state, "ICE state");
                self.stats.set_ice(&format!("{state:?}").to_lowercase());
                match state {
                    IceConnectionState::Disconnected => {
                        self.disconnected_since.get_or_insert_with(Instant::now);
                    }
                    _ => self.disconnected_since = None,
                }
            }
            Event::Connected => {
                tracing::info!("peer connection connected (ICE + DTLS)");
                self.stats.set_state("connected");
                self.stats.set_whep_error("");
                self.connected_at = Some(Instant::now());
                self.last_media = Instant::now();
            }
            Event::RtpPacket(packet) => {
                let params = self
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| p.pt() == packet.header.payload_type)
                    .copied();
                let Some(codec) = params.and_then(codec_of) else {
                    self.stats.dropped_packets.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                self.last_media = Instant::now();
                self.stats.rtp_packets.fetch_add(1, Ordering::Relaxed);
                let arrived = packet.timestamp;
                let msg = Inbound::Rtp {
                    codec,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    payload: packet.payload,
                    arrived,
                };
                stage.handle(msg, arrived, blocks);
            }
            _ => {}
        }
    }

    fn watchdogs(&self, now: Instant) -> Result<(), WhepError> {
        match self.connected_at {
            None if now.duration_since(self.answered) > CONNECT_TIMEOUT => {
                return Err(WhepError::ConnectTimeout(CONNECT_TIMEOUT));
            }
            Some(_) if now.duration_since(self.last_media) > MEDIA_TIMEOUT => {
                return Err(WhepError::MediaTimeout(MEDIA_TIMEOUT));
            }
            _ => {}
        }
        if let Some(since) = self.disconnected_since {
            if now.duration_since(since) > DISCONNECTED_GRACE {
                return Err(WhepError::Lost("ICE disconnected".into()));
            }
        }
        Ok(())
    }

    /// End the peer connection (str0m's last datagrams are sent).
    pub fn close(mut self) {
        self.rtc.disconnect();
        for _ in 0..64 {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    let _ = self.socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
    }
}

/// How long the driver waits for the worker to hand back a cancelled link.
pub const HANDBACK: Duration = Duration::from_secs(2);
