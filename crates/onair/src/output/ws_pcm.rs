//! WebSocket PCM output: cuts a PCM stream into fixed-length chunks and sends each as one JSON
//! text message `{"traceId","stmId","timestamp","data"}` (plus opt-in fields) to a WebSocket
//! consumer (speech recognition and the like), reconnecting when the connection drops.
//! `ws://` or `wss://` (TLS through [`ClientTls`], SNI and certificate check against the
//! URL's host).
//!
//! Invariants:
//! - Every chunk is exactly `chunk_ms` of audio (whole sample frames), except the last one of
//!   the stream and the one before a timeline jump, which are shorter but still whole frames.
//! - `timestamp` is the Unix time of the chunk's first sample, from the sample count: it
//!   never repeats and grows by exactly the chunk duration between contiguous chunks.
//! - While the socket is down, messages wait in a queue of at most `buffer` of audio; when
//!   it overflows the oldest are dropped and counted. Nothing is sent twice on one
//!   connection; a message whose send failed is sent again on the next connection.
//! - Shutdown sends what is queued (bounded by [`DRAIN_TIMEOUT`]) and then a normal close.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::bridge::Stats;
use crate::client_tls::{self, ClientTls};
use crate::input::whep::decode::Block;

/// How long shutdown may spend delivering queued audio (including reconnecting).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A send that takes longer means the consumer stopped reading: treat as a drop.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Audio the channel from the decode worker holds: more than a connect attempt plus a
/// send timeout, during which the task does not read it.
const CHUNK_CHANNEL: Duration = Duration::from_secs(15);
/// Dropped-chunk warnings are summed over this long, not one line per chunk.
const DROP_LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("WebSocket URL {0:?} is not a ws:// or wss:// URL with a host")]
    Url(String),
    #[error("bad --ws-header {0:?}: {1}")]
    Header(String, String),
}

/// How each message carries its audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Raw s16le interleaved.
    Pcm,
    /// A complete WAV file (44-byte header + the same s16le data).
    Wav,
}

/// Opt-in extra JSON fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields {
    pub seq: bool,
    pub sample_rate: bool,
    pub channels: bool,
}

impl Fields {
    /// `seq,sampleRate,channels` (any subset, any order).
    pub fn parse(list: &str) -> Result<Fields, String> {
        let mut f = Fields::default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "seq" => f.seq = true,
                "sampleRate" => f.sample_rate = true,
                "channels" => f.channels = true,
                other => return Err(format!("unknown message field {other:?}")),
            }
        }
        Ok(f)
    }
}

#[derive(Debug, Clone)]
pub struct WsConfig {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub trace_id: String,
    pub stm_id: String,
    pub rate: u32,
    pub channels: u16,
    pub chunk_ms: u32,
    pub payload: Payload,
    pub fields: Fields,
    /// Audio kept while disconnected.
    pub buffer: Duration,
    /// Used for `wss://`.
    pub tls: ClientTls,
}

impl WsConfig {
    pub fn validate(&self) -> Result<(), WsError> {
        let bad = || WsError::Url(self.url.clone());
        let request = self.url.as_str().into_client_request().map_err(|_| bad())?;
        let uri = request.uri();
        if !matches!(uri.scheme_str(), Some("ws" | "wss")) || uri.host().is_none_or(str::is_empty) {
            return Err(bad());
        }
        for (k, v) in &self.headers {
            HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| WsError::Header(k.clone(), e.to_string()))?;
            HeaderValue::from_str(v).map_err(|e| WsError::Header(k.clone(), e.to_string()))?;
        }
        Ok(())
    }

    /// Capacity of the channel from the decode worker: [`CHUNK_CHANNEL`] of audio.
    pub fn chunk_queue(&self) -> usize {
        let chunk = u128::from(self.chunk_ms.max(1));
        (CHUNK_CHANNEL.as_millis().div_ceil(chunk) as usize).max(4)
    }

    fn max_queued(&self) -> usize {
        let chunk = u128::from(self.chunk_ms.max(1));
        (self.buffer.as_millis().div_ceil(chunk) as usize).max(1)
    }
}

/// A cut chunk: whole frames of s16le and the Unix time of its first sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub start: f64,
    pub data: Vec<u8>,
}

/// Cuts contiguous blocks into fixed-size chunks. Pure: no I/O, no clock.
#[derive(Debug)]
pub struct Chunker {
    rate: u32,
    frame_bytes: usize,
    chunk_bytes: usize,
    pending: Vec<u8>,
    /// Time of `pending[0]`.
    pending_start: f64,
}

impl Chunker {
    pub fn new(rate: u32, channels: u16, chunk_ms: u32) -> Chunker {
        let frame_bytes = 2 * usize::from(channels.max(1));
        let frames = (u64::from(rate) * u64::from(chunk_ms) / 1000).max(1) as usize;
        Chunker {
            rate,
            frame_bytes,
            chunk_bytes: frames * frame_bytes,
            pending: Vec::new(),
            pending_start: 0.0,
        }
    }

    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    fn time_of(&self, bytes: usize) -> f64 {
        self.pending_start + (bytes / self.frame_bytes) as f64 / f64::from(self.rate)
    }

    /// Add a block; returns the chunks it completed.
    pub fn push(&mut self, block: Block, out: &mut Vec<Chunk>) {
        let expected = self.time_of(self.pending.len());
        // A jump of more than half a frame is a re-anchored timeline: close the chunk.
        let half_frame = 0.5 / f64::from(self.rate);
        if !self.pending.is_empty() && (block.start - expected).abs() > half_frame {
            self.finish(out);
        }
        if self.pending.is_empty() {
            self.pending_start = block.start;
        }
        // Blocks are whole frames; a stray odd tail would shift every later sample.
        let whole = block.data.len() - block.data.len() % self.frame_bytes;
        self.pending.extend_from_slice(&block.data[..whole]);
        let mut at = 0;
        while self.pending.len() - at >= self.chunk_bytes {
            out.push(Chunk {
                start: self.time_of(at),
                data: self.pending[at..at + self.chunk_bytes].to_vec(),
            });
            at += self.chunk_bytes;
        }
        if at > 0 {
            self.pending_start = self.time_of(at);
            self.pending.drain(..at);
        }
    }

    /// The partial chunk left, if any (end of stream or timeline jump).
    pub fn finish(&mut self, out: &mut Vec<Chunk>) {
        if !self.pending.is_empty() {
            out.push(Chunk {
                start: self.pending_start,
                data: std::mem::take(&mut self.pending),
            });
        }
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "traceId")]
    trace_id: &'a str,
    #[serde(rename = "stmId")]
    stm_id: &'a str,
    timestamp: f64,
    data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(rename = "sampleRate", skip_serializing_if = "Option::is_none")]
    sample_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<u16>,
}

/// A WAV file holding `pcm` (s16le).
pub fn encode_wav(rate: u32, channels: u16, pcm: &[u8]) -> Vec<u8> {
    let block_align = 2 * u32::from(channels);
    let mut out = Vec::with_capacity(44 + pcm.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * block_align).to_le_bytes());
    out.extend_from_slice(&(block_align as u16).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

/// The JSON text of chunk number `seq`.
pub fn encode_message(config: &WsConfig, chunk: &Chunk, seq: u64) -> String {
    let audio = match config.payload {
        Payload::Pcm => base64::engine::general_purpose::STANDARD.encode(&chunk.data),
        Payload::Wav => base64::engine::general_purpose::STANDARD.encode(encode_wav(
            config.rate,
            config.channels,
            &chunk.data,
        )),
    };
    let wire = Wire {
        trace_id: &config.trace_id,
        stm_id: &config.stm_id,
        timestamp: chunk.start,
        data: audio,
        seq: config.fields.seq.then_some(seq),
        sample_rate: config.fields.sample_rate.then_some(config.rate),
        channels: config.fields.channels.then_some(config.channels),
    };
    // invariant: a struct of strings and numbers always serializes (non-finite floats
    // become null, which the timeline never produces).
    serde_json::to_string(&wire).unwrap_or_default()
}

struct Queued {
    text: Utf8Bytes,
    /// Wall-clock end of the chunk's audio, for latency.
    end: f64,
}

type Ws = WebSocketStream<client_tls::Stream>;

/// TCP (+ TLS for `wss://`) through the bridge's [`ClientTls`], then the WebSocket handshake.
async fn connect(config: &WsConfig) -> Result<Ws, String> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (k, v) in &config.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
        request.headers_mut().append(name, value);
    }
    let uri = request.uri();
    let tls = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or_default().to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let handshake = async {
        let stream = config
            .tls
            .connect(tls, &host, port)
            .await
            .map_err(|e| e.to_string())?;
        tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| e.to_string())
    };
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| "connect timed out".to_string())??;
    Ok(ws)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Send until `blocks` closes and the queue is delivered (or [`DRAIN_TIMEOUT`] passes).
pub async fn run(config: WsConfig, mut chunks: Receiver<Chunk>, stats: Arc<Stats>) {
    let max_queued = config.max_queued();
    let bytes_per_sec = 2.0 * f64::from(config.channels) * f64::from(config.rate);
    let mut queue: VecDeque<Queued> = VecDeque::new();
    let mut seq = 0u64;
    let mut ws: Option<Ws> = None;
    let mut retry_at = Instant::now();
    let mut backoff = BACKOFF_MIN;
    let mut input_done = false;
    let mut drain_deadline: Option<Instant> = None;
    let mut dropped_logged = 0u64;
    let mut last_drop_log = Instant::now() - DROP_LOG_EVERY;

    loop {
        // Deliver what is queued while connected.
        if let Some(socket) = ws.as_mut() {
            let mut failed = None;
            while let Some(front) = queue.front() {
                let msg = Message::Text(front.text.clone());
                match tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await {
                    Ok(Ok(())) => {
                        let latency = unix_now() - front.end;
                        stats.record_sent(latency);
                        queue.pop_front();
                    }
                    Ok(Err(e)) => {
                        failed = Some(e.to_string());
                        break;
                    }
                    Err(_) => {
                        failed = Some("send timed out".into());
                        break;
                    }
                }
            }
            if let Some(why) = failed {
                tracing::warn!(error = %why, queued = queue.len(), "WebSocket dropped");
                stats.set_ws("disconnected");
                stats.set_ws_error(&format!("dropped: {why}"));
                stats.ws_reconnects.fetch_add(1, Ordering::Relaxed);
                ws = None;
                retry_at = Instant::now() + backoff;
            }
        }
        if input_done && queue.is_empty() {
            break;
        }
        if let Some(deadline) = drain_deadline {
            if Instant::now() >= deadline {
                tracing::warn!(
                    undelivered = queue.len(),
                    "shutdown: WebSocket not reachable, queued audio dropped"
                );
                break;
            }
        }
        let dropped = stats.ws_dropped.load(Ordering::Relaxed);
        if dropped > dropped_logged && last_drop_log.elapsed() >= DROP_LOG_EVERY {
            tracing::warn!(
                dropped = dropped - dropped_logged,
                dropped_total = dropped,
                "WebSocket buffer full: oldest chunks dropped"
            );
            dropped_logged = dropped;
            last_drop_log = Instant::now();
        }

        if ws.is_none() && Instant::now() >= retry_at {
            // Connecting is awaited here; the decode worker keeps filling the bounded
            // chunk channel meanwhile ([`WsConfig::chunk_queue`]: room for longer than a
            // connect attempt), so no audio is lost.
            stats.set_ws("connecting");
            match connect(&config).await {
                Ok(socket) => {
                    tracing::info!(url = %config.url, queued = queue.len(), "WebSocket connected");
                    stats.set_ws("connected");
                    stats.set_ws_error("");
                    ws = Some(socket);
                    backoff = BACKOFF_MIN;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(url = %config.url, error = %e, retry_in = ?backoff, "WebSocket connect failed");
                    stats.set_ws("disconnected");
                    stats.set_ws_error(&format!("connect: {e}"));
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }

        let wake = match drain_deadline {
            Some(d) if ws.is_none() => retry_at.min(d),
            _ => retry_at,
        };
        let mut arrived = None;
        tokio::select! {
            chunk = chunks.recv(), if !input_done => match chunk {
                Some(chunk) => arrived = Some(chunk),
                None => {
                    input_done = true;
                    drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                }
            },
            incoming = async {
                match ws.as_mut() {
                    Some(socket) => socket.next().await,
                    None => std::future::pending().await,
                }
            } => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    tracing::warn!(queued = queue.len(), "WebSocket closed by the consumer");
                    stats.set_ws("disconnected");
                    stats.set_ws_error("closed by the consumer");
                    stats.ws_reconnects.fetch_add(1, Ordering::Relaxed);
                    ws = None;
                    retry_at = Instant::now() + BACKOFF_MIN;
                }
                // Pings are answered by tungstenite; other messages are not ours to read.
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(wake), if ws.is_none() => {}
        }
        if let Some(chunk) = arrived {
            let text = encode_message(&config, &chunk, seq);
            seq += 1;
            if queue.len() >= max_queued {
                queue.pop_front();
                stats.ws_dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(Queued {
                text: Utf8Bytes::from(text),
                end: chunk.start + chunk.data.len() as f64 / bytes_per_sec,
            });
        }
    }
    if let Some(mut socket) = ws {
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "stream ended".into(),
        };
        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.close(Some(close))).await;
        // Read until the consumer's close reply so the close handshake completes.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    }
    stats.set_ws("closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(payload: Payload, fields: Fields) -> WsConfig {
        WsConfig {
            url: "ws://127.0.0.1:1/audio".into(),
            headers: vec![],
            trace_id: "T1".into(),
            stm_id: "S1".into(),
            rate: 16_000,
            channels: 1,
            chunk_ms: 100,
            payload,
            fields,
            buffer: Duration::from_secs(30),
            tls: ClientTls::new(None).unwrap(),
        }
    }

    fn block(start: f64, frames: usize, channels: usize) -> Block {
        Block {
            start,
            data: (0..frames * channels * 2).map(|i| i as u8).collect(),
        }
    }

    #[test]
    fn chunks_are_exact_and_contiguous_whatever_the_block_sizes() {
        let mut c = Chunker::new(16_000, 1, 100);
        let mut out = Vec::new();
        let mut t = 1000.0;
        // 20 ms, 7 ms, 33 ms ... blocks: 1.0 s in total.
        for frames in [320, 112, 528, 1600, 9440, 4000] {
            c.push(block(t, frames, 1), &mut out);
            t += frames as f64 / 16_000.0;
        }
        assert_eq!(out.len(), 10);
        for (i, chunk) in out.iter().enumerate() {
            assert_eq!(chunk.data.len(), 3200);
            let want = 1000.0 + i as f64 * 0.1;
            assert!(
                (chunk.start - want).abs() < 1e-9,
                "{} vs {want}",
                chunk.start
            );
        }
        let mut tail = Vec::new();
        c.finish(&mut tail);
        assert!(tail.is_empty());
    }

    #[test]
    fn stereo_chunks_are_whole_frames_and_a_jump_closes_the_chunk() {
        let mut c = Chunker::new(8_000, 2, 100);
        let mut out = Vec::new();
        c.push(block(10.0, 500, 2), &mut out);
        assert_eq!(out.len(), 0);
        // Timeline jump: the 500 frames leave as a short chunk of whole frames.
        c.push(block(50.0, 800, 2), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data.len(), 500 * 4);
        assert_eq!(out[0].start, 10.0);
        assert_eq!(out[1].data.len(), 800 * 4);
        assert_eq!(out[1].start, 50.0);
        // An odd byte never shifts the frame grid.
        c.push(
            Block {
                start: 50.1,
                data: vec![0; 4 * 3 + 1],
            },
            &mut out,
        );
        let mut tail = Vec::new();
        c.finish(&mut tail);
        assert_eq!(tail[0].data.len() % 4, 0);
    }

    #[test]
    fn message_has_exactly_the_four_fields_by_default() {
        let cfg = config(Payload::Pcm, Fields::default());
        let chunk = Chunk {
            start: 1700000000.25,
            data: vec![1, 0, 255, 127],
        };
        let text = encode_message(&cfg, &chunk, 7);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["data", "stmId", "timestamp", "traceId"]);
        assert_eq!(obj["traceId"], "T1");
        assert_eq!(obj["stmId"], "S1");
        assert_eq!(obj["timestamp"].as_f64(), Some(1700000000.25));
        let data = base64::engine::general_purpose::STANDARD
            .decode(obj["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, chunk.data);
    }

    #[test]
    fn extra_fields_only_when_asked_and_wav_is_a_complete_file() {
        let fields = Fields::parse("seq, sampleRate,channels").unwrap();
        assert!(Fields::parse("seq,bogus").is_err());
        let cfg = config(Payload::Wav, fields);
        let chunk = Chunk {
            start: 5.0,
            data: vec![0; 3200],
        };
        let v: serde_json::Value = serde_json::from_str(&encode_message(&cfg, &chunk, 42)).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["sampleRate"], 16000);
        assert_eq!(v["channels"], 1);
        let wav = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(wav.len(), 44 + 3200);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(wav[4..8].try_into().unwrap()), 36 + 3200);
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 16000);
        assert_eq!(u32::from_le_bytes(wav[28..32].try_into().unwrap()), 32000);
        assert_eq!(&wav[36..40], b"data");
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 3200);
    }

    #[test]
    fn queue_bound_comes_from_the_buffer_duration() {
        let mut cfg = config(Payload::Pcm, Fields::default());
        assert_eq!(cfg.max_queued(), 300);
        cfg.buffer = Duration::from_millis(50);
        assert_eq!(cfg.max_queued(), 1);
    }

    #[test]
    fn ws_and_wss_urls_with_a_host_are_accepted() {
        let mut cfg = config(Payload::Pcm, Fields::default());
        for ok in [
            "ws://127.0.0.1:1/audio",
            "wss://asr.example/audio",
            "wss://[::1]:9443/a?x=1",
        ] {
            cfg.url = ok.into();
            assert!(cfg.validate().is_ok(), "{ok}");
        }
        for bad in ["http://x/a", "https://x/a", "wss:///a", "asr:9000", ""] {
            cfg.url = bad.into();
            assert!(cfg.validate().is_err(), "{bad}");
        }
        cfg.url = "ws://x/a".into();
        cfg.headers = vec![("Bad Name".into(), "v".into())];
        assert!(cfg.validate().is_err());
    }
}
