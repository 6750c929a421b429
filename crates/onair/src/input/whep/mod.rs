//! WHEP pull: receive one remote stream's audio over WebRTC and produce s16le PCM blocks.
//!
//! Four parts: [`signal`] (the WHEP HTTP exchange), the session driver here (an async task:
//! signaling, retries, DELETE), [`media`] (the negotiated session's str0m `Rtc` and UDP
//! socket) and [`decode`] (jitter buffer, codec, resampler, timeline). The last two are
//! stepped together by a bridge decode worker thread ([`crate::bridge::pool`]).
//!
//! Invariants:
//! - ICE uses host candidates only unless `--ice-server` names a STUN server: no public
//!   server is ever contacted by default. The host candidate is the local address the OS
//!   routes towards the WHEP server (so loopback for a local server).
//! - Every session that got a `201` is DELETEd when it ends, whatever ended it.
//! - A session that fails (signaling error, ICE/DTLS failure, no media) is retried with
//!   exponential backoff (honouring `Retry-After`); only setup mistakes (bad URL, 4xx other
//!   than 408/409/429) end the pull.
//! - The driver never blocks on the worker: a negotiated session is handed over through a
//!   bounded channel, and the driver only waits for its outcome (or cancellation).

pub mod decode;
pub mod media;
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
use str0m::{Candidate, Rtc};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::bridge::Stats;
use decode::Codec;
use media::{Link, Media};
use signal::{Endpoint, SignalError};
use tokio::sync::oneshot;

/// ICE + DTLS must complete within this after the answer.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A connected session with no RTP for this long is dead (server gone without a word).
pub(crate) const MEDIA_TIMEOUT: Duration = Duration::from_secs(3);
/// ICE `Disconnected` for this long ends the session (it may recover before).
pub(crate) const DISCONNECTED_GRACE: Duration = Duration::from_secs(5);
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

/// Pull until cancelled (Ok) or a non-retryable failure (Err). Each negotiated session goes
/// to the bridge's worker on `links`; dropping it on return ends the bridge's decode stage.
pub async fn run(
    config: WhepConfig,
    decode: SyncSender<Link>,
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
        stats.set_whep_error(&err.to_string());
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
    decode: &SyncSender<Link>,
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
        let socket = socket.into_std()?;
        let (done, outcome) = oneshot::channel();
        let link_cancel = cancel.child_token();
        let link = Link {
            media: Media::new(rtc, socket, stats.clone())?,
            done,
            cancel: link_cancel.clone(),
        };
        match decode.try_send(link) {
            Ok(()) => {}
            // One session at a time: the channel only fills if the worker is wedged.
            Err(TrySendError::Full(_)) => return Err(WhepError::Rtc("decode worker busy".into())),
            Err(TrySendError::Disconnected(_)) => return Err(WhepError::DecodeGone),
        }
        let mut outcome = outcome;
        tokio::select! {
            r = &mut outcome => r.unwrap_or(Err(WhepError::DecodeGone)),
            _ = cancel.cancelled() => {
                // The worker sees the token at its next tick and closes the connection.
                let _ = tokio::time::timeout(media::HANDBACK, outcome).await;
                Ok(())
            }
        }
    }
    .await;
    match config.endpoint.close(&opened.resource).await {
        Ok(()) => tracing::info!(resource = %opened.resource, "WHEP session deleted"),
        Err(e) => tracing::warn!(error = %e, "WHEP DELETE failed"),
    }
    stats.set_ice("closed");
    result
}

/// Map an RTP payload type to the codec the decode stage knows.
pub(crate) fn codec_of(pt: str0m::format::PayloadParams) -> Option<Codec> {
    match pt.spec().codec {
        StrCodec::Opus => Some(Codec::Opus),
        StrCodec::PCMU => Some(Codec::Pcmu),
        StrCodec::PCMA => Some(Codec::Pcma),
        _ => None,
    }
}
