//! WHEP pull: receive one remote stream's audio over WebRTC and produce s16le PCM blocks.
//!
//! Three parts: [`signal`] (the WHEP HTTP exchange), the session driver here (one async task
//! owning the UDP socket and a sans-IO str0m `Rtc`), and [`decode`] (a dedicated thread:
//! jitter buffer, codec, resampler, timeline).
//!
//! Invariants:
//! - ICE uses host candidates only unless `--ice-server` names a STUN server: no public
//!   server is ever contacted by default. The host candidate is the local address the OS
//!   routes towards the WHEP server (so loopback for a local server).
//! - Every session that got a `201` is DELETEd when it ends, whatever ended it.
//! - A session that fails (signaling error, ICE/DTLS failure, no media) is retried with
//!   exponential backoff (honouring `Retry-After`); only setup mistakes (bad URL, 4xx other
//!   than 408/409/429) end the pull.
//! - The driver never blocks on the decode stage: packets go through a bounded channel and
//!   are counted as dropped if it is full.

pub mod decode;
pub mod signal;
pub mod stun;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec as StrCodec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::bridge::Stats;
use decode::{Codec, Inbound};
use signal::{Endpoint, SignalError};

/// ICE + DTLS must complete within this after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connected session with no RTP for this long is dead (server gone without a word).
const MEDIA_TIMEOUT: Duration = Duration::from_secs(3);
/// ICE `Disconnected` for this long ends the session (it may recover before).
const DISCONNECTED_GRACE: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Longest wait honoured from a `Retry-After`.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum WhepError {
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("no local address routes to {0}")]
    NoRoute(String),
    #[error("ICE server: {0}")]
    IceServer(String),
    #[error("ICE/DTLS did not connect within {0:?}")]
    ConnectTimeout(Duration),
    #[error("no media for {0:?}")]
    MediaTimeout(Duration),
    #[error("peer connection lost ({0})")]
    Lost(String),
    #[error("the decode stage ended")]
    DecodeGone,
}

impl WhepError {
    fn is_transient(&self) -> bool {
        match self {
            WhepError::Signal(e) => e.is_transient(),
            WhepError::IceServer(_) | WhepError::DecodeGone => false,
            _ => true,
        }
    }
}

/// What to pull and how.
#[derive(Debug, Clone)]
pub struct WhepConfig {
    pub endpoint: Endpoint,
    /// `stun:host:port` URLs; empty means host candidates only.
    pub ice_servers: Vec<String>,
}

/// Pull until cancelled (Ok) or a non-retryable failure (Err). Dropping `decode` on return
/// ends the decode stage.
pub async fn run(
    config: WhepConfig,
    decode: SyncSender<Inbound>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
) -> Result<(), WhepError> {
    let mut backoff = BACKOFF_MIN;
    loop {
        stats.set_state("connecting");
        let started = Instant::now();
        let result = session(&config, &decode, &stats, &cancel).await;
        if cancel.is_cancelled() {
            stats.set_state("stopped");
            return Ok(());
        }
        let err = match result {
            Ok(()) => WhepError::Lost("session ended".into()),
            Err(e) => e,
        };
        if !err.is_transient() {
            tracing::error!(error = %err, "WHEP pull failed");
            stats.set_state("failed");
            return Err(err);
        }
        // A session that ran for a while resets the backoff: this is a new failure.
        if started.elapsed() > BACKOFF_MAX * 3 {
            backoff = BACKOFF_MIN;
        }
        let wait = match &err {
            WhepError::Signal(s) => s.retry_after().map_or(backoff, |r| r.min(RETRY_AFTER_MAX)),
            _ => backoff,
        };
        stats.whep_retries.fetch_add(1, Ordering::Relaxed);
        stats.set_state("retrying");
        tracing::warn!(error = %err, retry_in = ?wait, "WHEP session failed");
        tokio::select! {
            _ = cancel.cancelled() => {
                stats.set_state("stopped");
                return Ok(());
            }
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The local address the OS would use to reach `remote` (no packet is sent).
fn route_to(remote: SocketAddr) -> Result<IpAddr, WhepError> {
    let any: SocketAddr = if remote.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(remote)?;
    let ip = probe.local_addr()?.ip();
    if ip.is_unspecified() {
        return Err(WhepError::NoRoute(remote.to_string()));
    }
    Ok(ip)
}

/// One WHEP session, from POST to DELETE.
async fn session(
    config: &WhepConfig,
    decode: &SyncSender<Inbound>,
    stats: &Arc<Stats>,
    cancel: &CancellationToken,
) -> Result<(), WhepError> {
    let server = tokio::net::lookup_host(config.endpoint.authority())
        .await
        .map_err(|e| SignalError::Network(e.to_string()))?
        .next()
        .ok_or_else(|| SignalError::Network("WHEP host has no address".into()))?;
    let socket = UdpSocket::bind((route_to(server)?, 0)).await?;
    let local = socket.local_addr()?;

    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_pcmu(true, false)
        .enable_pcma(true, false)
        .build(Instant::now());
    let host = Candidate::host(local, "udp").map_err(|e| WhepError::Rtc(e.to_string()))?;
    rtc.add_local_candidate(host);
    for url in &config.ice_servers {
        let mapped = stun::binding(&socket, url).await?;
        tracing::info!(%url, %mapped, "server-reflexive candidate");
        let srflx = Candidate::server_reflexive(mapped, local, "udp")
            .map_err(|e| WhepError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(srflx);
    }
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change
        .apply()
        .ok_or_else(|| WhepError::Rtc("no offer to make".into()))?;

    stats.set_state("signaling");
    let offer = offer.to_sdp_string();
    let opened = tokio::select! {
        _ = cancel.cancelled() => return Ok(()),
        r = config.endpoint.open(&offer) => r?,
    };
    tracing::info!(resource = %opened.resource, "WHEP session created");
    let result = async {
        let answer = SdpAnswer::from_sdp_string(&opened.answer)
            .map_err(|e| WhepError::Rtc(format!("bad SDP answer: {e}")))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| WhepError::Rtc(e.to_string()))?;
        // Full only if decoding stalls; the jitter buffer's reset covers a missed marker.
        if let Err(TrySendError::Disconnected(_)) = decode.try_send(Inbound::Session) {
            return Err(WhepError::DecodeGone);
        }
        drive(&mut rtc, &socket, decode, stats, cancel).await
    }
    .await;
    rtc.disconnect();
    match config.endpoint.close(&opened.resource).await {
        Ok(()) => tracing::info!(resource = %opened.resource, "WHEP session deleted"),
        Err(e) => tracing::warn!(error = %e, "WHEP DELETE failed"),
    }
    stats.set_ice("closed");
    result
}

/// Map an RTP payload type to the codec the decode stage knows.
fn codec_of(pt: str0m::format::PayloadParams) -> Option<Codec> {
    match pt.spec().codec {
        StrCodec::Opus => Some(Codec::Opus),
        StrCodec::PCMU => Some(Codec::Pcmu),
        StrCodec::PCMA => Some(Codec::Pcma),
        _ => None,
    }
}

/// The str0m run loop: drain output, wait for a packet, a timeout or cancellation.
async fn drive(
    rtc: &mut Rtc,
    socket: &UdpSocket,
    decode: &SyncSender<Inbound>,
    stats: &Arc<Stats>,
    cancel: &CancellationToken,
) -> Result<(), WhepError> {
    let local = socket.local_addr()?;
    let answered = Instant::now();
    let mut connected_at: Option<Instant> = None;
    let mut last_media = Instant::now();
    let mut disconnected_since: Option<Instant> = None;
    let mut buf = vec![0u8; 2000];
    loop {
        let deadline = loop {
            let out = rtc
                .poll_output()
                .map_err(|e| WhepError::Rtc(e.to_string()))?;
            match out {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    // A lost datagram is what UDP is for; ICE and SRTP cope.
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(event) => match event {
                    Event::IceConnectionStateChange(state) => {
                        tracing::info!(?state, "ICE state");
                        stats.set_ice(&format!("{state:?}").to_lowercase());
                        match state {
                            IceConnectionState::Disconnected => {
                                disconnected_since.get_or_insert_with(Instant::now);
                            }
                            _ => disconnected_since = None,
                        }
                    }
                    Event::Connected => {
                        tracing::info!("peer connection connected (ICE + DTLS)");
                        stats.set_state("connected");
                        connected_at = Some(Instant::now());
                        last_media = Instant::now();
                    }
                    Event::RtpPacket(packet) => {
                        let params = rtc
                            .codec_config()
                            .params()
                            .iter()
                            .find(|p| p.pt() == packet.header.payload_type)
                            .copied();
                        let Some(codec) = params.and_then(codec_of) else {
                            stats.dropped_packets.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        last_media = Instant::now();
                        stats.rtp_packets.fetch_add(1, Ordering::Relaxed);
                        let msg = Inbound::Rtp {
                            codec,
                            seq: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            payload: packet.payload.clone(),
                            arrived: packet.timestamp,
                        };
                        match decode.try_send(msg) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                stats.dropped_packets.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(TrySendError::Disconnected(_)) => {
                                return Err(WhepError::DecodeGone);
                            }
                        }
                    }
                    _ => {}
                },
            }
        };
        if !rtc.is_alive() {
            return Err(WhepError::Lost("peer connection closed".into()));
        }
        let now = Instant::now();
        match connected_at {
            None if now.duration_since(answered) > CONNECT_TIMEOUT => {
                return Err(WhepError::ConnectTimeout(CONNECT_TIMEOUT));
            }
            Some(_) if now.duration_since(last_media) > MEDIA_TIMEOUT => {
                return Err(WhepError::MediaTimeout(MEDIA_TIMEOUT));
            }
            _ => {}
        }
        if let Some(since) = disconnected_since {
            if now.duration_since(since) > DISCONNECTED_GRACE {
                return Err(WhepError::Lost("ICE disconnected".into()));
            }
        }
        // Wake at least once a second for the watchdogs above.
        let deadline = deadline.min(now + Duration::from_secs(1));
        let input = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(deadline.into()) => Input::Timeout(Instant::now()),
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                let Ok(contents) = buf[..n].try_into() else {
                    continue;
                };
                Input::Receive(
                    Instant::now(),
                    Receive { proto: Protocol::Udp, source, destination: local, contents },
                )
            }
        };
        if rtc.accepts(&input) {
            rtc.handle_input(input)
                .map_err(|e| WhepError::Rtc(e.to_string()))?;
        }
    }
}
