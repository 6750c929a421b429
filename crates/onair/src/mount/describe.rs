//! How a mount describes its stream to listeners and status pages: labels (configured
//! values win over what the source sent), nominal bitrate and `ice-audio-info`. One place,
//! so response headers, `/status-json.xsl`, `/api/status` and playlists always agree.

use onair_proto::{
    frame::StreamInfo,
    icecast::{audio_info_value, StreamInfoHeaders},
};

use crate::config::MountConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamLabels {
    pub name: Option<String>,
    pub description: Option<String>,
    pub genre: Option<String>,
    pub url: Option<String>,
    pub public: bool,
}

pub fn labels(config: Option<&MountConfig>, sent: &StreamInfoHeaders) -> StreamLabels {
    let pick =
        |configured: Option<&String>, sent: &Option<String>| configured.or(sent.as_ref()).cloned();
    StreamLabels {
        name: pick(config.and_then(|c| c.stream_name.as_ref()), &sent.name),
        description: pick(
            config.and_then(|c| c.description.as_ref()),
            &sent.description,
        ),
        genre: pick(config.and_then(|c| c.genre.as_ref()), &sent.genre),
        url: pick(config.and_then(|c| c.url.as_ref()), &sent.url),
        public: sent.public == Some(true),
    }
}

/// Nominal bitrate in kbit/s: what the source declared, else what its frames say.
pub fn bitrate_kbps(sent: &StreamInfoHeaders, codec: &StreamInfo) -> Option<u32> {
    sent.bitrate
        .as_deref()
        .and_then(|b| b.trim().parse().ok())
        .or_else(|| {
            sent.audio_info
                .as_deref()
                .and_then(|a| audio_info_value(a, "bitrate")?.parse().ok())
        })
        .or((codec.bitrate > 0).then_some(codec.bitrate / 1000))
}

/// `ice-audio-info`: as the source sent it, else built from the frames.
pub fn audio_info(sent: &StreamInfoHeaders, codec: &StreamInfo) -> Option<String> {
    if let Some(a) = &sent.audio_info {
        return Some(a.clone());
    }
    let mut parts = Vec::new();
    if codec.channels > 0 {
        parts.push(format!("channels={}", codec.channels));
    }
    if codec.sample_rate > 0 {
        parts.push(format!("samplerate={}", codec.sample_rate));
    }
    if let Some(b) = bitrate_kbps(sent, codec) {
        parts.push(format!("bitrate={b}"));
    }
    (!parts.is_empty()).then(|| parts.join(";"))
}
