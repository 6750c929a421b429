//! Raw PCM sources: a `PUT` (or legacy `SOURCE`) whose Content-Type is a raw PCM type —
//! `audio/L16;rate=R;channels=C` (big-endian s16, RFC 2586) or
//! `audio/x-raw;format=F32LE|S16LE|S16BE;rate=R;channels=C` — is encoded live to the mount's
//! configured codec (`codec`, `bitrate`, `sample_rate`, `channels`; default MP3 128k)
//! through the encoder input, so listeners get ordinary MP3 or Ogg/Opus.
//!
//! Invariants: only whole sample frames reach the encoder (a partial sample or frame is
//! kept for the next read); the body is read no faster than the encoder takes it (its
//! bounded queue pushes back on the TCP connection), so a client sending faster than real
//! time is slowed to real time rather than buffered.

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use bytes::{Bytes, BytesMut};
use onair_media::pcm::{decode_samples, Pcm, SampleFormat};
use onair_proto::icecast::{ChunkedDecoder, RequestHead, StreamInfoHeaders};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::Instant,
};

use crate::{
    conn::Conn,
    input::{
        encoder::{self, EncoderOptions, Message, PcmSender},
        source::{claim_or_refuse, finish, log_connected, reply},
    },
    station::Station,
};

/// Bytes read from the socket per step (~85 ms of 48 kHz stereo f32; smaller for s16).
const READ_BYTES: usize = 32 * 1024;

/// A raw PCM stream's layout, from its Content-Type.
#[derive(Debug, Clone, Copy)]
pub struct PcmLayout {
    pub format: SampleFormat,
    pub rate: u32,
    pub channels: u16,
}

/// Serves an authenticated source connection whose body is raw PCM.
pub async fn run(
    mut stream: Conn,
    peer: SocketAddr,
    head: RequestHead,
    body: Bytes,
    station: Arc<Station>,
    layout: PcmLayout,
) {
    let mount_name = head.path().to_string();
    let config = station.config();
    let encoding = config
        .mount(&mount_name)
        .map_or(&config.defaults.encoding, |m| &m.settings.encoding);
    let settings = encoding.for_input(layout.rate, layout.channels);
    if let Err(e) = onair_media::encode::new_encoder(&settings) {
        tracing::info!(%peer, mount = %mount_name, "PCM source refused: {e}");
        reply(&mut stream, 400, "Bad Request", &format!("{e}\n")).await;
        return;
    }
    let user_agent = head.header("user-agent").unwrap_or("").to_string();
    let mut opts = EncoderOptions::new(settings.clone(), user_agent);
    opts.headers = StreamInfoHeaders::from_head(&head);
    let mut info = opts.source_info();
    info.peer = peer;
    info.connected_at = SystemTime::now();
    let format = info.format;
    let Some((mount, claim)) = claim_or_refuse(&station, &mut stream, &mount_name, info).await
    else {
        return;
    };
    log_connected(peer, &mount_name, &head.method, format, &claim);
    let ticket = claim.ticket;
    let cancel = claim.cancel.clone();
    let token = station.supervisor.token().clone();
    let (tx, task) = match encoder::spawn(mount.clone(), claim, opts, token.clone()) {
        Ok(ok) => ok,
        Err(e) => {
            reply(
                &mut stream,
                500,
                "Internal Server Error",
                "cannot start the encoder\n",
            )
            .await;
            finish(&station, &mount, ticket, peer, Err(e.to_string()));
            return;
        }
    };
    tracing::info!(%peer, mount = %mount_name, format = ?layout.format, rate = layout.rate, channels = layout.channels, codec = settings.codec.name(), kbps = settings.bitrate_kbps, "raw PCM source: encoding live");
    let mut ok = Vec::new();
    if head.expects_continue() {
        ok.extend_from_slice(b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n");
    }
    ok.extend_from_slice(b"HTTP/1.0 200 OK\r\n\r\n");
    let outcome = match stream.write_all(&ok).await {
        Ok(()) => {
            let chunked = head.is_chunked().then(ChunkedDecoder::default);
            let pumped = tokio::select! {
                r = pump(&mut stream, chunked, body, layout, &tx, &station) => r,
                _ = token.cancelled() => Ok("server shutting down"),
                _ = cancel.cancelled() => Ok("killed or taken over"),
            };
            let _ = tx.send_async(Message::End).await;
            match task.finished().await {
                Err(e) => Err(format!("encoder failed: {e}")),
                Ok(_) => pumped,
            }
        }
        Err(e) => Err(format!("cannot answer: {e}")),
    };
    finish(&station, &mount, ticket, peer, outcome);
}

/// Reads the body, decodes whole sample frames and hands them to the encoder.
async fn pump(
    stream: &mut Conn,
    mut chunked: Option<ChunkedDecoder>,
    first: Bytes,
    layout: PcmLayout,
    tx: &PcmSender,
    station: &Station,
) -> Result<&'static str, String> {
    let source_timeout = station.config().limits.source_timeout;
    let frame_bytes = layout.format.bytes_per_sample() * usize::from(layout.channels);
    let mut raw = BytesMut::from(&first[..]);
    // Body bytes not yet decoded: less than one sample frame after each step.
    let mut held: Vec<u8> = Vec::with_capacity(READ_BYTES + frame_bytes);
    loop {
        match chunked.as_mut() {
            Some(dec) => {
                dec.decode(&raw, &mut held)
                    .map_err(|e| format!("bad chunked body: {e}"))?;
            }
            None => held.extend_from_slice(&raw),
        }
        raw.clear();
        let whole = held.len() / frame_bytes * frame_bytes;
        if whole > 0 {
            let mut samples = Vec::with_capacity(whole / layout.format.bytes_per_sample());
            decode_samples(layout.format, &held[..whole], &mut samples);
            held.drain(..whole);
            let pcm = Pcm::new(layout.rate, layout.channels, samples);
            if tx.send_async(Message::Pcm(pcm)).await.is_err() {
                return Err("the encoder stopped".into());
            }
        }
        if chunked.as_ref().is_some_and(|d| d.is_done()) {
            return Ok("end of chunked body");
        }
        raw.reserve(READ_BYTES);
        let started = Instant::now();
        let read = tokio::time::timeout(source_timeout, async {
            // Read at most READ_BYTES per step so one block stays ~100 ms or less.
            let mut limited = (&mut *stream).take(READ_BYTES as u64);
            limited.read_buf(&mut raw).await
        })
        .await;
        match read {
            Ok(Ok(0)) => return Ok("connection closed"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("read error: {e}")),
            Err(_) => {
                return Err(format!(
                    "no data for {:?} (source_timeout)",
                    started.elapsed()
                ))
            }
        }
    }
}
